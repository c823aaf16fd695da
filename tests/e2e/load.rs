//! Write load through the web Service and a record of every acknowledged increment.
//!
//! N clients loop `POST /api/counter/increment` through the API server's service proxy
//! (works on any cluster without reaching pod IPs). They share one kube `Client` whose
//! pooled connections stay open: one new TCP connection per request would run out of
//! ephemeral ports within seconds and look like an outage of the system under test. The
//! client must not retry by itself (`harness::client_without_retries`).
//! A reader checks that `GET /api/counter` never returns less than a value acknowledged
//! before the read was sent.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Ctx, counter_value, proxy};

/// Pause after a failed request before the client tries again.
const RETRY_AFTER: Duration = Duration::from_millis(50);
/// A request that takes longer counts as failed (the web service answers 503 well before).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const READ_INTERVAL: Duration = Duration::from_millis(100);
/// Error messages kept for the report.
const ERROR_SAMPLES: usize = 5;

/// Concurrent writers (E2E_LOAD_CLIENTS, default 8).
pub fn clients() -> usize {
    std::env::var("E2E_LOAD_CLIENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(8)
}

/// One acknowledged increment: the value the service answered and when the answer came.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    pub value: i64,
    pub at: Instant,
}

/// A read that returned less than a value acknowledged before it was sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backwards {
    pub floor: i64,
    pub read: i64,
}

#[derive(Default)]
struct Shared {
    acks: Mutex<Vec<Ack>>,
    max_acked: AtomicI64,
    errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
    reads: AtomicU64,
    backwards: Mutex<Vec<Backwards>>,
    stop: AtomicBool,
}

impl Shared {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        let mut samples = self.error_samples.lock().unwrap();
        if samples.len() < ERROR_SAMPLES && !samples.contains(&what) {
            samples.push(what);
        }
    }
}

/// Running load; `stop` it to get the [`LoadReport`].
pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `method path` on the web Service through the API server's service proxy.
async fn call(ctx: &Ctx, service: &str, port: i32, method: &str, path: &str) -> Result<i64, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, proxy(ctx, method, service, port, path)).await {
        Ok(body) => counter_value(&body?),
        Err(_) => Err(format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}")),
    }
}

impl Load {
    /// Start `clients` writers and one reader against the web Service `service:port`.
    pub fn start(ctx: &Ctx, service: &str, port: i32, clients: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (ctx, service, shared) = (ctx.clone(), service.to_string(), shared.clone());
            tasks.push(tokio::spawn(async move {
                while !shared.stop.load(Ordering::SeqCst) {
                    match call(&ctx, &service, port, "POST", "/api/counter/increment").await {
                        Ok(value) => {
                            shared.acks.lock().unwrap().push(Ack { value, at: Instant::now() });
                            shared.max_acked.fetch_max(value, Ordering::SeqCst);
                        }
                        Err(e) => {
                            shared.error(e);
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                    }
                }
            }));
        }
        let (ctx, service, reader) = (ctx.clone(), service.to_string(), shared.clone());
        tasks.push(tokio::spawn(async move {
            while !reader.stop.load(Ordering::SeqCst) {
                let floor = reader.max_acked.load(Ordering::SeqCst);
                if let Ok(read) = call(&ctx, &service, port, "GET", "/api/counter").await {
                    reader.reads.fetch_add(1, Ordering::SeqCst);
                    if read < floor {
                        reader.backwards.lock().unwrap().push(Backwards { floor, read });
                    }
                }
                tokio::time::sleep(READ_INTERVAL).await;
            }
        }));
        Load { shared, tasks }
    }

    /// Acknowledgements received after `t`.
    pub fn acked_after(&self, t: Instant) -> usize {
        self.shared.acks.lock().unwrap().iter().filter(|a| a.at > t).count()
    }

    /// Failed requests so far and a few of their messages.
    pub fn errors(&self) -> (u64, Vec<String>) {
        (self.shared.errors.load(Ordering::SeqCst), self.shared.error_samples.lock().unwrap().clone())
    }

    /// Stop every client (requests in flight finish) and return what they saw.
    pub async fn stop(self) -> LoadReport {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut acks = self.shared.acks.lock().unwrap().clone();
        acks.sort_by_key(|a| a.at);
        LoadReport {
            acks,
            errors: self.shared.errors.load(Ordering::SeqCst),
            error_samples: self.shared.error_samples.lock().unwrap().clone(),
            reads: self.shared.reads.load(Ordering::SeqCst),
            backwards: self.shared.backwards.lock().unwrap().clone(),
        }
    }
}

/// Everything one load run saw.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Acknowledged increments, in the order the answers arrived.
    pub acks: Vec<Ack>,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub reads: u64,
    pub backwards: Vec<Backwards>,
}

impl LoadReport {
    /// Longest time without an acknowledged write in [from, to], across all clients. A gap
    /// that began before `from` counts from the last acknowledgement before it; one still
    /// open at `to` counts up to `to`.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut points: Vec<Instant> = Vec::new();
        points.push(self.acks.iter().rev().map(|a| a.at).find(|t| *t < from).unwrap_or(from));
        points.extend(self.acks.iter().map(|a| a.at).filter(|t| *t >= from && *t <= to));
        points.push(to);
        points.windows(2).map(|w| w[1].saturating_duration_since(w[0])).max().unwrap_or_default()
    }
}

/// Acknowledged increments that are gone, given the counter's value read after the load
/// stopped: a lost write makes the counter hand out a value again (each duplicate counts),
/// and acknowledged values above the final one were rolled back.
pub fn lost(acked_values: impl IntoIterator<Item = i64>, final_value: i64) -> u64 {
    let mut values: Vec<i64> = acked_values.into_iter().collect();
    values.sort_unstable();
    let duplicates = values.windows(2).filter(|w| w[0] == w[1]).count() as u64;
    let above = values.last().map_or(0, |max| (max - final_value).max(0) as u64);
    duplicates + above
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(start: Instant, at_ms: &[u64]) -> LoadReport {
        let acks = at_ms
            .iter()
            .enumerate()
            .map(|(i, ms)| Ack { value: i as i64 + 1, at: start + Duration::from_millis(*ms) })
            .collect();
        LoadReport { acks, ..Default::default() }
    }

    #[test]
    fn the_longest_gap_includes_the_edges_of_the_window() {
        let t = Instant::now();
        let r = report(t, &[0, 100, 200, 1700, 1800, 5000]);
        let ms = |a: u64| t + Duration::from_millis(a);
        assert_eq!(r.longest_gap(ms(150), ms(1900)), Duration::from_millis(1500));
        // A stall that began before the window counts from the last acknowledgement.
        assert_eq!(r.longest_gap(ms(1000), ms(1750)), Duration::from_millis(1500));
        // Writes that have not resumed by the end of the window: the gap runs to its end.
        assert_eq!(r.longest_gap(ms(1750), ms(3000)), Duration::from_millis(1200));
        let silent = report(t, &[]);
        assert_eq!(silent.longest_gap(ms(0), ms(400)), Duration::from_millis(400));
    }

    #[test]
    fn lost_counts_values_handed_out_twice_and_rolled_back_ones() {
        assert_eq!(lost([1, 2, 3, 4], 4), 0);
        // Unacknowledged increments may still have happened: a higher final value is fine.
        assert_eq!(lost([1, 2, 3, 4], 9), 0);
        // The counter went back from 4 to 2 and handed out 3 and 4 again.
        assert_eq!(lost([1, 2, 3, 4, 3, 4], 4), 2);
        // Rolled back after the last acknowledgement.
        assert_eq!(lost([1, 2, 3, 4], 2), 2);
        assert_eq!(lost([], 0), 0);
    }
}
