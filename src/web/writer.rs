//! The one task that sends every write to the primary. Writes that arrive while a batch is
//! in flight queue; when its replies are back, everything queued goes out as the next
//! batch: coalesced by [`batch::plan`] (concurrent increments become one `INCRBY n`),
//! in one pipeline, ending in one `WAIT k timeout` when SYNC_REPLICAS > 0.
//!
//! Why one batch at a time: the batch size then follows the load by itself (one write
//! alone goes out at once; under load a batch holds what arrived during one round trip),
//! and with SYNC_REPLICAS the `WAIT` blocks the connection server-side anyway.
//!
//! What a batch answers: a write is acknowledged only when its command succeeded and
//! (with SYNC_REPLICAS = k) the batch's `WAIT` counted k replicas. `WAIT` waits for the
//! connection's latest replication offset, so it covers every command of the batch: in a
//! failover a batch is confirmed as a whole or refused as a whole (503), never in part.
//! A broken connection or a timeout refuses the whole batch (503: its outcome is unknown).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Pipeline, RedisError, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::batch::{self, Command, Plan, Share, Write};
use super::counter::{COUNTER_KEY, Op, Written};
use super::error::Error;
use super::idempotency;
use super::metrics::Metrics;
use super::store::classify;
use super::upstream::Upstream;

/// How long a batch waits for a reconnect under way (after READONLY or a broken
/// connection) before its writes are answered 503.
pub const RECONNECT_WAIT: Duration = Duration::from_secs(1);
/// Most writes in one batch (one pipeline, one `WAIT`).
const MAX_BATCH: usize = 512;
/// Writes queued for the writer; more wait in their handlers (back-pressure).
const QUEUE: usize = 4096;
/// After Redis refused `INCRBY` (an ACL without it), writes go one command each on that
/// connection; the next connection, or this long, tries `INCRBY` again.
const INCRBY_RETRY_AFTER: Duration = Duration::from_secs(30);

/// What the writer needs to know.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// SYNC_REPLICAS: replicas that must confirm a batch (`WAIT`) before it is answered.
    pub sync_replicas: u32,
    /// SYNC_TIMEOUT_MS: the `WAIT` timeout.
    pub sync_timeout: Duration,
    /// COALESCE_WRITES: merge concurrent plain writes; off, every write is its own command.
    pub coalesce: bool,
}

/// Hands writes to the writer task.
pub struct Writer {
    node: &'static str,
    tx: mpsc::Sender<Job>,
}

struct Job {
    op: Op,
    key: Option<String>,
    /// Send as a command of its own: a run Redis refused as a whole (overflow of the
    /// whole run, or no `INCRBY` permission) is retried write by write.
    alone: bool,
    /// Already retried once after READONLY.
    retried: bool,
    reply: oneshot::Sender<Result<Written, Error>>,
}

impl Writer {
    /// Start the writer task on `upstream` (it ends when the `Writer` is dropped).
    pub fn start(upstream: Arc<Upstream>, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let node = upstream.node;
        let task = Task { upstream, settings, metrics, incrby_refused: None };
        tokio::spawn(task.run(rx));
        Self { node, tx }
    }

    /// Apply `op` (once per `idempotency_key`) in the next batch and return its answer.
    pub async fn write(&self, op: Op, idempotency_key: Option<&str>) -> Result<Written, Error> {
        let (reply, rx) = oneshot::channel();
        let job = Job { op, key: idempotency_key.map(str::to_owned), alone: false, retried: false, reply };
        self.tx.send(job).await.map_err(|_| Error::Unavailable(self.node))?;
        rx.await.map_err(|_| Error::Unavailable(self.node))?
    }
}

/// How one command of a batch ended, decided once for all the writes it carries.
enum Verdict {
    Applied(Value),
    /// READONLY: not applied (the node is a replica now); retry once on a new connection.
    ReadOnly,
    /// A run refused as a whole (it would overflow, or `INCRBY` is not permitted): not
    /// applied; retry its writes one command each.
    OneByOne,
    Failed(RedisError),
}

struct Task {
    upstream: Arc<Upstream>,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Connection generation on which `INCRBY` was refused (NOPERM), and when.
    incrby_refused: Option<(u64, Instant)>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        loop {
            if jobs.is_empty() {
                if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
                    return;
                }
            } else {
                // Writes carried over from the last batch go again now, with what queued.
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
            }
            jobs = self.batch(std::mem::take(&mut jobs)).await;
        }
    }

    /// Send one batch and answer its writes; returns the writes to send again.
    async fn batch(&mut self, jobs: Vec<Job>) -> Vec<Job> {
        let node = self.upstream.node;
        let Some(mut lease) = self.upstream.lease_or_wait(RECONNECT_WAIT).await else {
            for job in jobs {
                let e = if job.retried { Error::ReadOnly } else { Error::Unavailable(node) };
                let _ = job.reply.send(Err(e));
            }
            return Vec::new();
        };
        let generation = lease.generation;
        let coalesce = self.settings.coalesce && !self.incrby_refused_on(generation);
        let writes: Vec<Write> = jobs
            .iter()
            .map(|j| Write { op: j.op, keyed: j.key.is_some(), alone: j.alone || !coalesce })
            .collect();
        let plan = batch::plan(&writes);
        let pipe = self.pipeline(&plan, &jobs);
        self.metrics.write_batch(jobs.len(), plan.commands.len());
        let span = tracing::debug_span!("write_batch", writes = jobs.len(), commands = plan.commands.len());
        let sent = {
            use redis::aio::ConnectionLike;
            lease.conn.req_packed_commands(&pipe, 0, pipe.len()).instrument(span).await
        };
        let replies = match sent {
            Ok(replies) => replies,
            Err(e) => {
                // The outcome of every command is unknown: refuse them all.
                self.metrics.redis_error(node, classify(node, e.clone()).metric_label());
                if e.is_unrecoverable_error() || e.is_connection_dropped() {
                    self.upstream.invalidate(generation);
                }
                for job in jobs {
                    let _ = job.reply.send(Err(classify(node, e.clone())));
                }
                return Vec::new();
            }
        };
        let mut replies = replies.into_iter();
        let verdicts: Vec<Verdict> = plan
            .commands
            .iter()
            .map(|c| self.verdict(*c, replies.next().unwrap_or(Value::Nil), generation))
            .collect();
        let acked = match replies.next() {
            Some(Value::Int(n)) => n,
            _ => 0,
        };
        let wanted = self.settings.sync_replicas;
        let confirmed = wanted == 0 || acked >= i64::from(wanted);
        let timeout_ms = self.wait_timeout_ms();

        let mut again = Vec::new();
        for (job, share) in jobs.into_iter().zip(plan.shares.iter().copied()) {
            let command = share.command();
            let answer = match &verdicts[command] {
                Verdict::ReadOnly if !job.retried => {
                    again.push(Job { retried: true, ..job });
                    continue;
                }
                Verdict::ReadOnly => Err(Error::ReadOnly),
                Verdict::OneByOne => {
                    again.push(Job { alone: true, ..job });
                    continue;
                }
                Verdict::Failed(e) => Err(classify(node, e.clone())),
                Verdict::Applied(v) => {
                    match answer(job.op, job.key.is_some(), share, plan.commands[command], v) {
                        Ok(_) if !confirmed => Err(Error::NotConfirmed { wanted, acked, timeout_ms }),
                        other => other,
                    }
                }
            };
            let _ = job.reply.send(answer);
        }
        if again.iter().any(|j| j.retried && !j.alone) {
            tracing::warn!("write answered READONLY: reconnecting to the primary and retrying once");
        }
        again
    }

    /// The batch as one pipeline: its commands, then `WAIT` when SYNC_REPLICAS > 0.
    fn pipeline(&self, plan: &Plan, jobs: &[Job]) -> Pipeline {
        let mut pipe = redis::pipe();
        for c in &plan.commands {
            match *c {
                // INCR/DECR for single steps: the commands of a web user's ACL before
                // coalescing existed, and what coalescing off sends.
                Command::Add(1) => pipe.cmd("INCR").arg(COUNTER_KEY),
                Command::Add(-1) => pipe.cmd("DECR").arg(COUNTER_KEY),
                Command::Add(n) => pipe.cmd("INCRBY").arg(COUNTER_KEY).arg(n),
                Command::Reset => pipe.cmd("SET").arg(COUNTER_KEY).arg(0),
                Command::Keyed(i) => match jobs.get(i) {
                    Some(Job { op, key: Some(key), .. }) => pipe.add_command(idempotency::command(*op, key)),
                    // Unreachable: the plan names only keyed writes here. A read keeps the
                    // replies aligned, and `answer` refuses it for that write.
                    _ => pipe.cmd("GET").arg(COUNTER_KEY),
                },
            };
        }
        if self.settings.sync_replicas > 0 {
            pipe.cmd("WAIT").arg(self.settings.sync_replicas).arg(self.wait_timeout_ms());
        }
        pipe
    }

    fn wait_timeout_ms(&self) -> u64 {
        u64::try_from(self.settings.sync_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Classify one command's reply; count and act on failures once per command.
    fn verdict(&mut self, command: Command, reply: Value, generation: u64) -> Verdict {
        let node = self.upstream.node;
        let e = match reply.extract_error() {
            Ok(v) => return Verdict::Applied(v),
            Err(e) => e,
        };
        let run = matches!(command, Command::Add(n) if n.abs() > 1);
        if run && e.code() == Some("NOPERM") {
            if self.incrby_refused.is_none_or(|(g, _)| g != generation) {
                tracing::warn!(
                    node,
                    "the Redis user may not run INCRBY: writes go one command each (add +incrby to its ACL)"
                );
            }
            self.metrics.redis_error(node, "noperm_incrby");
            self.incrby_refused = Some((generation, Instant::now()));
            return Verdict::OneByOne;
        }
        let err = classify(node, e.clone());
        self.metrics.redis_error(node, err.metric_label());
        match err {
            Error::ReadOnly => {
                self.upstream.invalidate(generation);
                Verdict::ReadOnly
            }
            // Some writes of the run may fit: answer them as one-at-a-time writes would.
            Error::Overflow if run => Verdict::OneByOne,
            _ => Verdict::Failed(e),
        }
    }

    fn incrby_refused_on(&self, generation: u64) -> bool {
        matches!(self.incrby_refused, Some((g, at)) if g == generation && at.elapsed() < INCRBY_RETRY_AFTER)
    }
}

/// A write's answer from its command's reply.
fn answer(op: Op, keyed: bool, share: Share, command: Command, reply: &Value) -> Result<Written, Error> {
    if keyed {
        let (value, replayed) = idempotency::parse_reply(op, reply.clone())?;
        return Ok(Written { value, replayed });
    }
    let value = match (share, command, reply) {
        (Share::Step { step, .. }, Command::Add(delta), Value::Int(after)) => {
            batch::step_value(*after, delta, step).ok_or(Error::NotAnInteger)?
        }
        (Share::Whole { .. }, Command::Reset, Value::Okay | Value::SimpleString(_)) => 0,
        _ => return Err(Error::NotAnInteger),
    };
    Ok(Written { value, replayed: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_replies() {
        let step = |step| Share::Step { command: 0, step };
        let w = |value| Some(Written { value, replayed: false });
        assert_eq!(answer(Op::Increment, false, step(0), Command::Add(3), &Value::Int(10)).ok(), w(8));
        assert_eq!(answer(Op::Decrement, false, step(2), Command::Add(-3), &Value::Int(10)).ok(), w(10));
        let whole = Share::Whole { command: 0 };
        assert_eq!(answer(Op::Reset, false, whole, Command::Reset, &Value::Okay).ok(), w(0));
        assert!(matches!(
            answer(Op::Increment, false, step(0), Command::Add(1), &Value::Nil),
            Err(Error::NotAnInteger)
        ));
        let script = Value::Array(vec![
            Value::BulkString(b"increment".to_vec()),
            Value::BulkString(b"7".to_vec()),
            Value::Int(1),
        ]);
        assert_eq!(
            answer(Op::Increment, true, whole, Command::Keyed(0), &script).ok(),
            Some(Written { value: 7, replayed: true })
        );
        assert!(matches!(
            answer(Op::Decrement, true, whole, Command::Keyed(0), &script),
            Err(Error::IdempotencyKeyReused(op)) if op == "increment"
        ));
    }
}
