//! A tiny stand-in for the operator around real `redis-server` processes: every ~200 ms
//! it builds the `PodView`s the operator would read from the API, runs the replication
//! `Manager` (the same decide + actuate code as in a cluster, over redis-rs), writes the
//! status back into the CounterApp, moves the role labels (the "primary Service" is the
//! port published in `primary_port`) and performs the pod deletions the manager asks for.
//!
//! Also: load clients that `INCR` + `WAIT k` and log every acknowledged value, a reader
//! that checks the counter never goes below an acknowledged value, and a per-node
//! dataset monitor.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use counterstack::api::{CounterApp, CounterAppSpec, CounterAppStatus};
use counterstack::replication::node::{LoopbackAddressing, RedisClient};
use counterstack::replication::{Manager, PodView, ReplicationEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::redis_server::RedisServer;

pub const APP: &str = "demo";
pub const PASSWORD: &str = "s3cret";
pub const KEY: &str = "counter:value";

pub fn pod(ordinal: usize) -> String {
    format!("{APP}-redis-{ordinal}")
}

/// What the driver has applied so far.
#[derive(Default)]
pub struct DriverState {
    pub app: Option<CounterApp>,
    pub labels: BTreeMap<String, String>,
    pub outdated: Vec<bool>,
    pub events: Vec<ReplicationEvent>,
    /// When each event was applied.
    pub event_log: Vec<(Instant, String)>,
    pub errors: Vec<String>,
    pub deleted: Vec<String>,
    pub passes: u64,
    /// Crash the operator once at this step of the next change of primary:
    /// `before-labels` (the pass changed Redis; nothing applied) or `before-status`
    /// (labels moved, status not written). A crash drops the manager's memory: the next
    /// pass runs with a fresh one, as a new leader would.
    pub crash_at: Option<&'static str>,
    /// Crashes so far (including failpoints in the manager itself).
    pub crashes: u32,
    /// Restart the operator before the next pass: a fresh manager (no memory, no
    /// monitor clock) that has only the status, as a restarted container has.
    pub restart_now: bool,
    /// Replication health of the last pass (what the operator turns into conditions).
    pub health: Option<counterstack::replication::Health>,
    /// A pod is ready only when PING answers PONG (a readiness probe that a primary
    /// refusing writes with MISCONF fails); by default any answer will do.
    pub ready_needs_pong: bool,
}

/// Redis "pods" plus the driver loop.
pub struct Stack {
    pub servers: Arc<Mutex<Vec<RedisServer>>>,
    pub ports: Vec<u16>,
    pub state: Arc<Mutex<DriverState>>,
    /// Port of the pod labelled primary (0: none) — what the primary Service points at.
    pub primary_port: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A spec with `n` replicas, `k` sync replicas and the given failover delay.
pub fn spec(n: i32, k: i32, after_seconds: i32) -> CounterAppSpec {
    let mut spec: CounterAppSpec = serde_json::from_value(serde_json::json!({})).unwrap();
    spec.redis.replicas = n;
    spec.web.sync_replicas = Some(k);
    spec.redis.failover.after_seconds = after_seconds;
    spec
}

async fn answers(port: u16, needs_pong: bool) -> bool {
    // A readiness probe: the process answers anything at all within 150 ms; with
    // `needs_pong`, PING (after AUTH) must answer PONG, as the pods' probe once wanted.
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        if !needs_pong {
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 64];
            return (s.read(&mut buf).await.ok()? > 0).then_some(());
        }
        s.write_all(format!("AUTH {PASSWORD}\r\nPING\r\n").as_bytes()).await.ok()?;
        let mut got = Vec::new();
        while got.iter().filter(|b| **b == b'\n').count() < 2 {
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got.ends_with(b"+PONG\r\n").then_some(())
    };
    matches!(tokio::time::timeout(Duration::from_millis(150), probe).await, Ok(Some(())))
}

impl Stack {
    /// Start `1 + n` fresh, empty, standalone servers and the driver loop.
    pub fn start(spec: CounterAppSpec) -> Self {
        Self::start_with(spec, &[])
    }

    /// Like [`Stack::start`], every server started with `extra` arguments (for example
    /// `--replicaof 127.0.0.1 1`, as the recommended pod start script does).
    pub fn start_with(spec: CounterAppSpec, extra: &[&str]) -> Self {
        Self::start_full(spec, extra, None)
    }

    /// Like [`Stack::start_with`], the nodes following each other by `host` (a name such
    /// as `localhost`) while the driver dials 127.0.0.1, as the operator dials pod IPs
    /// while Redis nodes follow stable DNS names.
    pub fn start_full(spec: CounterAppSpec, extra: &[&str], host: Option<&str>) -> Self {
        let count = 1 + spec.redis.replicas as usize;
        Self::start_each(spec, &vec![extra.to_vec(); count], host)
    }

    /// Like [`Stack::start_full`], with each server's own `extra` arguments (one list per
    /// server, e.g. pod 0's `--dir` on a small disk).
    pub fn start_each(spec: CounterAppSpec, extra: &[Vec<&str>], host: Option<&str>) -> Self {
        let count = 1 + spec.redis.replicas as usize;
        assert_eq!(extra.len(), count, "one argument list per server");
        let servers: Vec<RedisServer> =
            extra.iter().map(|args| RedisServer::start_with(Some(PASSWORD), args)).collect();
        let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
        let mut app = CounterApp::new(APP, spec);
        app.metadata.namespace = Some("default".into());
        app.status = Some(CounterAppStatus::default());
        let state = Arc::new(Mutex::new(DriverState {
            app: Some(app),
            outdated: vec![false; count],
            ..Default::default()
        }));
        let mut stack = Stack {
            servers: Arc::new(Mutex::new(servers)),
            ports,
            state,
            primary_port: Arc::new(AtomicU16::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            task: None,
        };
        stack.task = Some(tokio::spawn(drive(
            stack.servers.clone(),
            stack.ports.clone(),
            stack.state.clone(),
            stack.primary_port.clone(),
            stack.stop.clone(),
            host.map(str::to_string),
        )));
        stack
    }

    pub fn status(&self) -> counterstack::api::RedisStatus {
        let st = self.state.lock().unwrap();
        st.app.as_ref().and_then(|a| a.status.as_ref()).and_then(|s| s.redis.clone()).unwrap_or_default()
    }

    pub fn primary(&self) -> Option<String> {
        self.status().primary
    }

    pub fn ordinal_of(&self, pod_name: &str) -> usize {
        pod_name.rsplit('-').next().unwrap().parse().unwrap()
    }

    pub fn events(&self) -> Vec<ReplicationEvent> {
        self.state.lock().unwrap().events.clone()
    }

    pub fn set_spec(&self, f: impl FnOnce(&mut CounterAppSpec)) {
        let mut st = self.state.lock().unwrap();
        f(&mut st.app.as_mut().unwrap().spec);
    }

    /// Wait until a primary is labelled and `linked` other nodes report a live link.
    pub async fn wait_healthy(&self, linked: usize, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let s = self.status();
            if let Some(p) = &s.primary {
                let labelled = self.primary_port.load(Ordering::SeqCst) == self.ports[self.ordinal_of(p)];
                let up = s.nodes.iter().filter(|n| n.pod != *p && n.link_up).count();
                if labelled && up >= linked {
                    return p.clone();
                }
            }
            assert!(
                start.elapsed() < timeout,
                "stack not healthy after {timeout:?}: {s:#?}\nerrors: {:?}",
                self.state.lock().unwrap().errors
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the primary is some pod other than `old`; returns it and when it was seen.
    pub async fn wait_primary_change(&self, old: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(p) = self.primary()
                && p != old
            {
                return p;
            }
            assert!(start.elapsed() < timeout, "no failover after {timeout:?}: {:#?}", self.status());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) -> DriverState {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        std::mem::take(&mut *self.state.lock().unwrap())
    }
}

async fn drive(
    servers: Arc<Mutex<Vec<RedisServer>>>,
    ports: Vec<u16>,
    state: Arc<Mutex<DriverState>>,
    primary_port: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    host: Option<String>,
) {
    let mut manager = Manager::new();
    let client =
        RedisClient::new(PASSWORD).with_timeouts(Duration::from_millis(300), Duration::from_millis(300));
    let follow_host = host.clone().unwrap_or_else(|| "127.0.0.1".to_string());
    let addressing =
        LoopbackAddressing { ports: ports.iter().enumerate().map(|(i, p)| (i as u32, *p)).collect(), host };
    while !stop.load(Ordering::SeqCst) {
        let needs_pong = state.lock().unwrap().ready_needs_pong;
        let ready = futures::future::join_all(ports.iter().map(|p| answers(*p, needs_pong))).await;
        let (app, views) = {
            let st = state.lock().unwrap();
            let views: Vec<PodView> = (0..ports.len())
                .map(|i| PodView {
                    name: pod(i),
                    uid: None,
                    ordinal: i as u32,
                    ip: Some("127.0.0.1".into()),
                    ready: ready[i],
                    role_label: st.labels.get(&pod(i)).cloned(),
                    terminating: false,
                    outdated: st.outdated[i],
                })
                .collect();
            (st.app.clone().unwrap(), views)
        };
        {
            let mut st = state.lock().unwrap();
            if st.restart_now {
                st.restart_now = false;
                st.crashes += 1;
                manager = Manager::new();
            }
        }
        let outcome = manager.reconcile_with(&app, &views, &client, &addressing).await;
        // Whether this pass "dies" is read after it: a pass that began before the test
        // armed the crash point can still fail over (it waits out afterSeconds inside
        // reconcile_with), and that is the pass whose outcome must be lost. Read before
        // it, the crash was missed now and then ("the operator did not die at ...").
        // The epoch is still the one before the pass: only this loop writes the status.
        let crash = {
            let st = state.lock().unwrap();
            let epoch =
                st.app.as_ref().and_then(|a| a.status.as_ref()?.redis.as_ref()).map_or(0, |r| r.epoch);
            st.crash_at.map(|c| (c, epoch))
        };
        match outcome {
            Ok(out) if crash.is_some_and(|(_, epoch)| out.status.epoch != epoch) => {
                let (point, _) = crash.unwrap_or_default();
                let mut st = state.lock().unwrap();
                if point == "before-status" {
                    st.labels = out.role_labels.clone();
                    let primary = out.role_labels.iter().find(|(_, r)| r.as_str() == "primary");
                    primary_port.store(
                        primary.map_or(0, |(p, _)| {
                            ports[p.rsplit('-').next().unwrap().parse::<usize>().unwrap()]
                        }),
                        Ordering::SeqCst,
                    );
                }
                st.crash_at = None;
                st.crashes += 1;
                manager = Manager::new();
            }
            Err(counterstack::replication::Error::Failpoint(_)) => {
                state.lock().unwrap().crashes += 1;
                manager = Manager::new();
            }
            Ok(out) => {
                let primary =
                    out.role_labels.iter().find(|(_, r)| r.as_str() == "primary").map(|(p, _)| p.clone());
                primary_port.store(
                    primary
                        .as_deref()
                        .map_or(0, |p| ports[p.rsplit('-').next().unwrap().parse::<usize>().unwrap()]),
                    Ordering::SeqCst,
                );
                let mut st = state.lock().unwrap();
                st.app.as_mut().unwrap().status.as_mut().unwrap().redis = Some(out.status.clone());
                st.labels = out.role_labels.clone();
                st.events.extend(out.events.clone());
                st.health = Some(out.health.clone());
                let now = Instant::now();
                st.event_log.extend(out.events.iter().map(|e| (now, e.reason.clone())));
                st.passes += 1;
                for p in &out.pods_to_delete {
                    // A pod deletion (SIGTERM, then the StatefulSet recreates it at the
                    // new revision); its start script joins the current primary.
                    let i: usize = p.rsplit('-').next().unwrap().parse().unwrap();
                    let primary_port = out
                        .status
                        .primary
                        .as_deref()
                        .map(|pp| ports[pp.rsplit('-').next().unwrap().parse::<usize>().unwrap()])
                        .unwrap_or(0);
                    let port_s = primary_port.to_string();
                    tokio::task::block_in_place(|| {
                        servers.lock().unwrap()[i].restart_gracefully_with(&[
                            "--replicaof",
                            &follow_host,
                            &port_s,
                        ]);
                    });
                    st.outdated[i] = false;
                    st.deleted.push(p.clone());
                }
            }
            Err(e) => state.lock().unwrap().errors.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One acknowledged write.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    pub client: usize,
    /// Port of the primary that acknowledged it.
    pub port: u16,
    pub value: i64,
    pub at: Instant,
}

/// Concurrent `INCR` + `WAIT k` clients writing to the published primary, and a reader.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub acks: Arc<Mutex<Vec<Ack>>>,
    /// Reads that returned less than a value acknowledged before the read started.
    pub backwards: Arc<Mutex<Vec<(i64, i64)>>>,
    max_acked: Arc<AtomicI64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn connect(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://:{PASSWORD}@127.0.0.1:{port}")).ok()?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(300)))
        .set_response_timeout(Some(Duration::from_secs(3)));
    client.get_multiplexed_async_connection_with_config(&cfg).await.ok()
}

impl Load {
    pub fn start(primary_port: Arc<AtomicU16>, clients: usize, k: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let backwards = Arc::new(Mutex::new(Vec::new()));
        let max_acked = Arc::new(AtomicI64::new(0));
        let mut tasks = vec![];
        for client in 0..clients {
            let (stop, acks, max_acked, primary_port) =
                (stop.clone(), acks.clone(), max_acked.clone(), primary_port.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn: Option<(u16, redis::aio::MultiplexedConnection)> = None;
                while !stop.load(Ordering::SeqCst) {
                    let port = primary_port.load(Ordering::SeqCst);
                    if port == 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    if conn.as_ref().is_none_or(|(p, _)| *p != port) {
                        conn = connect(port).await.map(|c| (port, c));
                        if conn.is_none() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                    let Some((port, c)) = conn.as_mut() else { continue };
                    let port = *port;
                    let res: redis::RedisResult<(i64, i64)> = async {
                        let v: i64 = redis::cmd("INCR").arg(KEY).query_async(c).await?;
                        let n: i64 = redis::cmd("WAIT").arg(k).arg(1000).query_async(c).await?;
                        Ok((v, n))
                    }
                    .await;
                    match res {
                        Ok((v, n)) if n >= k as i64 => {
                            acks.lock().unwrap().push(Ack { client, port, value: v, at: Instant::now() });
                            max_acked.fetch_max(v, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            conn = None;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }));
        }
        {
            let (stop, backwards, max_acked) = (stop.clone(), backwards.clone(), max_acked.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let port = primary_port.load(Ordering::SeqCst);
                    let floor = max_acked.load(Ordering::SeqCst);
                    if port != 0
                        && let Some(mut c) = connect(port).await
                        && let Ok(role) = redis::cmd("ROLE").query_async::<redis::Value>(&mut c).await
                        && format!("{role:?}").contains("master")
                        && let Ok(Some(v)) =
                            redis::cmd("GET").arg(KEY).query_async::<Option<i64>>(&mut c).await
                        && v < floor
                    {
                        backwards.lock().unwrap().push((floor, v));
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }));
        }
        Load { stop, acks, backwards, max_acked, tasks }
    }

    pub fn max_acked(&self) -> i64 {
        self.max_acked.load(Ordering::SeqCst)
    }

    /// Acknowledgements after `t` by any primary but the one on `old_port` (0: any).
    pub fn acks_after(&self, t: Instant, old_port: u16) -> usize {
        self.acks.lock().unwrap().iter().filter(|a| a.at > t && a.port != old_port).count()
    }

    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut acks = self.acks.lock().unwrap().clone();
        acks.sort_by_key(|a| a.at);
        LoadReport { acks, backwards: self.backwards.lock().unwrap().clone() }
    }
}

/// What the load saw.
pub struct LoadReport {
    pub acks: Vec<Ack>,
    pub backwards: Vec<(i64, i64)>,
}

impl LoadReport {
    pub fn max_acked(&self) -> i64 {
        self.acks.iter().map(|a| a.value).max().unwrap_or(0)
    }

    /// First acknowledgement after `t` by a primary other than the one on `old_port`, as
    /// a delay from `t` (replies already in flight from the old primary do not count).
    pub fn first_ack_after(&self, t: Instant, old_port: u16) -> Option<Duration> {
        self.acks.iter().find(|a| a.at > t && a.port != old_port).map(|a| a.at - t)
    }

    /// The gap between the last acknowledgement before `t` and the first after it.
    pub fn gap_around(&self, t: Instant) -> Option<Duration> {
        let before = self.acks.iter().rev().find(|a| a.at <= t)?;
        let after = self.acks.iter().find(|a| a.at > t)?;
        Some(after.at - before.at)
    }

    /// Longest gap between consecutive acknowledgements inside [from, to].
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        self.longest_gap_at(from, to).map_or(Duration::ZERO, |(_, d)| d)
    }

    /// Where the longest gap inside [from, to] starts, and how long it is.
    pub fn longest_gap_at(&self, from: Instant, to: Instant) -> Option<(Instant, Duration)> {
        let times: Vec<Instant> = self.acks.iter().map(|a| a.at).filter(|t| *t >= from && *t <= to).collect();
        times.windows(2).map(|w| (w[0], w[1] - w[0])).max_by_key(|(_, d)| *d)
    }

    /// Acknowledged writes that are provably lost given the final counter value: every
    /// acknowledged value is unique (a value handed out twice means the counter went back)
    /// and none exceeds the final value. Returns the number of violations.
    pub fn lost(&self, final_value: i64) -> usize {
        let mut values: Vec<i64> = self.acks.iter().map(|a| a.value).collect();
        values.sort_unstable();
        let dups = values.windows(2).filter(|w| w[0] == w[1]).count();
        let above = values.iter().filter(|v| **v > final_value).count();
        // Per client, acknowledged values strictly increase.
        let mut last: BTreeMap<usize, i64> = BTreeMap::new();
        let mut regress = 0;
        for a in &self.acks {
            if let Some(prev) = last.insert(a.client, a.value)
                && a.value <= prev
            {
                regress += 1;
            }
        }
        dups + above + regress
    }
}

/// Samples every node's counter value; a node's series restarts when `mark_restart` is
/// called for it (its process was replaced).
pub struct DatasetMonitor {
    stop: Arc<AtomicBool>,
    pub series: Arc<Mutex<Vec<Vec<Vec<i64>>>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DatasetMonitor {
    pub fn start(ports: Vec<u16>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let series = Arc::new(Mutex::new(vec![vec![Vec::new()]; ports.len()]));
        let (s2, series2) = (stop.clone(), series.clone());
        let task = tokio::spawn(async move {
            while !s2.load(Ordering::SeqCst) {
                for (i, port) in ports.iter().enumerate() {
                    if let Some(mut c) = connect(*port).await
                        && let Ok(v) = redis::cmd("GET").arg(KEY).query_async::<Option<i64>>(&mut c).await
                    {
                        series2.lock().unwrap()[i].last_mut().unwrap().push(v.unwrap_or(0));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        DatasetMonitor { stop, series, task: Some(task) }
    }

    pub fn mark_restart(&self, i: usize) {
        self.series.lock().unwrap()[i].push(Vec::new());
    }

    /// (node, before, after) for every sample that is lower than the one before it.
    pub async fn stop(mut self) -> Vec<(usize, i64, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let series = self.series.lock().unwrap();
        let mut shrinks = vec![];
        for (i, segments) in series.iter().enumerate() {
            for seg in segments {
                for w in seg.windows(2) {
                    if w[1] < w[0] {
                        shrinks.push((i, w[0], w[1]));
                    }
                }
            }
        }
        shrinks
    }
}
