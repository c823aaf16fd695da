//! The counter in Redis: reads (primary or replicas with fallback), writes (plain
//! INCR/DECR/SET, or the idempotency script), `WAIT` for synchronous replicas, and the
//! READONLY-after-failover retry.

use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, RedisError, Value};
use tokio::sync::{mpsc, oneshot};

use super::config::{Config, ReadFrom};
use super::counter::{COUNTER_KEY, Op};
use super::error::Error;
use super::idempotency;
use super::metrics::Metrics;
use super::upstream::{Lease, RedisConn, Upstream};

/// How long a request waits for a reconnect under way (after READONLY or a broken
/// connection) before answering 503.
const READONLY_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Most writes one `WAIT` covers (group commit).
const MAX_BATCH: usize = 512;

/// What a write returns to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub value: i64,
    /// True when an `Idempotency-Key` replayed an earlier result.
    pub replayed: bool,
}

/// Commands built once: the hot path only packs them.
struct Commands {
    get: Cmd,
    /// `ROLE` + `GET` in one round trip: a read from the primary is only answered when
    /// the node still is the primary (a demoted one serves stale data until the next
    /// health check would notice).
    role_get: redis::Pipeline,
    incr: Cmd,
    decr: Cmd,
    reset: Cmd,
}

pub struct Store {
    /// Reads and readiness.
    primary: Arc<Upstream>,
    /// Writes: the same connection as `primary`, or with SYNC_REPLICAS its own, because
    /// `WAIT` blocks its connection server-side and reads must not queue behind it.
    writer: Arc<Upstream>,
    replica: Option<Arc<Upstream>>,
    read_from: ReadFrom,
    /// `SYNC_REPLICAS`: a primary must have this many replicas connected to be read.
    sync_replicas: u32,
    sync: Option<SyncWriter>,
    cmds: Commands,
    metrics: Arc<Metrics>,
}

impl Store {
    /// Build the store and start connecting in the background (Redis may be down).
    pub fn start(cfg: &Config, metrics: Arc<Metrics>) -> Result<Self, Error> {
        // The writer of SYNC_REPLICAS mode is a second connection to the primary, so
        // reads never queue behind a batch's WAIT.
        let start_primary = || {
            Upstream::start(
                "primary",
                cfg.primary.clone(),
                cfg.secrets.clone(),
                true,
                cfg.redis_client,
                cfg.redis_timeout,
                metrics.clone(),
            )
            .map_err(|e| Error::Config { setting: "REDIS_URL", reason: e.to_string() })
            .inspect(|ep| {
                if let Some(replicas) = &cfg.replica {
                    ep.ask_replicas_at(replicas.clone());
                }
            })
        };
        let primary = start_primary()?;
        let replica = match &cfg.replica {
            Some(info) => Some(
                Upstream::start(
                    "replica",
                    info.clone(),
                    cfg.secrets.clone(),
                    false,
                    cfg.redis_client,
                    cfg.redis_timeout,
                    metrics.clone(),
                )
                .map_err(|e| Error::Config { setting: "REDIS_REPLICA_URL", reason: e.to_string() })?,
            ),
            None => None,
        };
        let (writer, sync) = if cfg.sync_replicas > 0 {
            let writer = start_primary()?;
            let sync = SyncWriter::start(writer.clone(), cfg.sync_replicas, cfg.sync_timeout);
            (writer, Some(sync))
        } else {
            (primary.clone(), None)
        };
        let mut get = redis::cmd("GET");
        get.arg(COUNTER_KEY);
        let mut role_get = redis::pipe();
        role_get.cmd("ROLE").add_command(get.clone());
        let mut incr = redis::cmd("INCR");
        incr.arg(COUNTER_KEY);
        let mut decr = redis::cmd("DECR");
        decr.arg(COUNTER_KEY);
        let mut reset = redis::cmd("SET");
        reset.arg(COUNTER_KEY).arg(0);
        Ok(Self {
            primary,
            writer,
            replica,
            read_from: cfg.read_from,
            sync_replicas: cfg.sync_replicas,
            sync,
            cmds: Commands { get, role_get, incr, decr, reset },
            metrics,
        })
    }

    /// Whether the service has reached the primary (ROLE master) since it started. A
    /// later Redis outage does not make it unready: every web pod would leave the
    /// Service together (the outage is shared), clients would get no answer instead of a
    /// JSON 503, and after the failover the pods would wait for their readiness probes
    /// before serving again.
    pub fn primary_ready(&self) -> bool {
        self.primary.has_connected() && self.writer.has_connected()
    }

    /// `GET counter:value` (missing reads as 0), from a replica when configured and
    /// answering, else from the primary.
    pub async fn read(&self) -> Result<i64, Error> {
        if self.read_from == ReadFrom::Replicas
            && let Some(replica) = &self.replica
            && let Some(mut lease) = replica.lease()
        {
            match exec(&mut lease.conn, &self.cmds.get).await {
                Ok(v) => return parse_counter(v),
                Err(e) => {
                    let _ = self.failure(replica, lease.generation, e);
                }
            }
        }
        let lease =
            self.primary.lease_or_wait(READONLY_RETRY_WAIT).await.ok_or(Error::Unavailable("primary"))?;
        let generation = lease.generation;
        match self.read_primary(lease).await {
            Err(Error::ReadOnly) => {
                // The node behind the primary URL was demoted: reconnect and read once more.
                let lease =
                    self.primary.wait_newer(generation, READONLY_RETRY_WAIT).await.ok_or(Error::ReadOnly)?;
                self.read_primary(lease).await
            }
            other => other,
        }
    }

    /// `ROLE` + `GET` on the primary connection; a node that is no longer master gives
    /// `ReadOnly` (and its connection is dropped). So does a master with fewer than
    /// `SYNC_REPLICAS` replicas connected: it cannot acknowledge a write, and it is what a
    /// former primary looks like in the moment it resumes after a freeze, before the
    /// operator demotes it (its replicas follow the new primary; its data is stale).
    async fn read_primary(&self, mut lease: Lease) -> Result<i64, Error> {
        use redis::aio::ConnectionLike;
        let replies = lease
            .conn
            .req_packed_commands(&self.cmds.role_get, 0, 2)
            .await
            .map_err(|e| self.failure(&self.primary, lease.generation, e))?;
        let mut replies = replies.into_iter();
        let (role, value) = (replies.next().unwrap_or(Value::Nil), replies.next().unwrap_or(Value::Nil));
        if !super::upstream::is_master(&role) {
            self.metrics.redis_error("primary", "readonly");
            self.primary.invalidate(lease.generation);
            return Err(Error::ReadOnly);
        }
        if super::upstream::listed_replicas(&role) < usize::try_from(self.sync_replicas).unwrap_or(usize::MAX)
        {
            // Still the node behind the primary URL; not one to answer from now.
            self.metrics.redis_error("primary", "too_few_replicas");
            return Err(Error::Unavailable("primary"));
        }
        parse_counter(value.extract_error().map_err(|e| self.failure(&self.primary, lease.generation, e))?)
    }

    /// Apply `op` (once per `idempotency_key`). A READONLY answer means the write was not
    /// applied (the primary URL now reaches a replica): reconnect and retry exactly once.
    pub async fn write(&self, op: Op, idempotency_key: Option<&str>) -> Result<Written, Error> {
        let keyed = idempotency_key.map(|k| idempotency::command(op, k));
        let cmd = match (&keyed, op) {
            (Some(c), _) => c,
            (None, Op::Increment) => &self.cmds.incr,
            (None, Op::Decrement) => &self.cmds.decr,
            (None, Op::Reset) => &self.cmds.reset,
        };
        let lease =
            self.writer.lease_or_wait(READONLY_RETRY_WAIT).await.ok_or(Error::Unavailable("primary"))?;
        let generation = lease.generation;
        match self.write_once(op, keyed.is_some(), cmd, lease).await {
            Err(Error::ReadOnly) => {
                // `failure` already dropped that connection; wait for one to a master.
                tracing::warn!("write answered READONLY: reconnecting to the primary and retrying once");
                let lease =
                    self.writer.wait_newer(generation, READONLY_RETRY_WAIT).await.ok_or(Error::ReadOnly)?;
                self.write_once(op, keyed.is_some(), cmd, lease).await
            }
            other => other,
        }
    }

    async fn write_once(&self, op: Op, keyed: bool, cmd: &Cmd, mut lease: Lease) -> Result<Written, Error> {
        let reply = match &self.sync {
            None => exec(&mut lease.conn, cmd).await.map_err(|e| (lease.generation, e)),
            Some(sync) => sync.submit(cmd.clone()).await?,
        };
        let reply = reply.map_err(|(generation, e)| self.failure(&self.writer, generation, e))?;
        parse_write(op, keyed, reply)
    }

    /// Count, classify and (for broken connections) invalidate.
    fn failure(&self, ep: &Upstream, generation: u64, e: RedisError) -> Error {
        let err = classify(ep.node, e);
        self.metrics.redis_error(ep.node, err.metric_label());
        if let Error::Redis { source, .. } = &err
            && (source.is_unrecoverable_error() || source.is_connection_dropped())
        {
            ep.invalidate(generation);
        }
        if matches!(err, Error::ReadOnly) {
            ep.invalidate(generation);
        }
        err
    }
}

/// Send a prebuilt command; a server error reply becomes `Err` (the raw send keeps it
/// as a value).
async fn exec(conn: &mut RedisConn, cmd: &Cmd) -> redis::RedisResult<Value> {
    use redis::aio::ConnectionLike;
    conn.req_packed_command(cmd).await.and_then(Value::extract_error)
}

/// Map a Redis failure to what the client is told.
pub fn classify(node: &'static str, e: RedisError) -> Error {
    let code = e.code().unwrap_or("");
    let text = e.to_string();
    if code == "READONLY" || text.contains("READONLY") {
        Error::ReadOnly
    } else if text.contains("would overflow") {
        Error::Overflow
    } else if text.contains("not an integer") {
        Error::NotAnInteger
    } else {
        Error::Redis { node, source: e }
    }
}

/// A GET reply: nil is 0.
pub fn parse_counter(v: Value) -> Result<i64, Error> {
    match v {
        Value::Nil => Ok(0),
        Value::Int(n) => Ok(n),
        Value::BulkString(b) => {
            std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()).ok_or(Error::NotAnInteger)
        }
        _ => Err(Error::NotAnInteger),
    }
}

/// A write reply: INCR/DECR give the value, SET gives OK (reset is 0), the script an array.
pub fn parse_write(op: Op, keyed: bool, v: Value) -> Result<Written, Error> {
    if keyed {
        let (value, replayed) = idempotency::parse_reply(op, v)?;
        return Ok(Written { value, replayed });
    }
    let value = match (op, v) {
        (Op::Reset, Value::Okay | Value::SimpleString(_)) => 0,
        (_, Value::Int(n)) => n,
        _ => return Err(Error::NotAnInteger),
    };
    Ok(Written { value, replayed: false })
}

type Reply = Result<Value, (u64, RedisError)>;

struct Job {
    cmd: Cmd,
    reply: oneshot::Sender<Result<Reply, Error>>,
}

/// Group commit for `SYNC_REPLICAS > 0`: writes queued while a batch is in flight go out
/// together as one pipeline ending in one `WAIT k timeout`. `WAIT` blocks its connection
/// server-side, so one WAIT per write would serialise every write behind a replica round
/// trip; one WAIT per batch covers all of the batch's writes (it waits for the
/// connection's latest replication offset).
struct SyncWriter {
    tx: mpsc::Sender<Job>,
}

impl SyncWriter {
    fn start(primary: Arc<Upstream>, replicas: u32, timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(commit_loop(primary, rx, replicas, timeout));
        Self { tx }
    }

    async fn submit(&self, cmd: Cmd) -> Result<Reply, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { cmd, reply }).await.map_err(|_| Error::Unavailable("primary"))?;
        rx.await.map_err(|_| Error::Unavailable("primary"))?
    }
}

async fn commit_loop(primary: Arc<Upstream>, mut rx: mpsc::Receiver<Job>, replicas: u32, timeout: Duration) {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let Some(mut lease) = primary.lease_or_wait(READONLY_RETRY_WAIT).await else {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(Error::Unavailable("primary")));
            }
            continue;
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for job in &jobs {
            pipe.add_command(job.cmd.clone());
        }
        pipe.cmd("WAIT").arg(replicas).arg(timeout_ms);
        let results: Result<Vec<redis::RedisResult<Value>>, RedisError> =
            pipe.query_async(&mut lease.conn).await;
        match results {
            Err(e) => {
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Ok(Err((lease.generation, e.clone()))));
                }
            }
            Ok(mut results) => {
                let acked = match results.pop() {
                    Some(Ok(Value::Int(n))) => n,
                    _ => 0,
                };
                for (job, result) in jobs.drain(..).zip(results) {
                    let answer = match result {
                        // A failed command changed nothing: its error is the answer.
                        Err(e) => Ok(Err((lease.generation, e))),
                        Ok(v) if acked >= i64::from(replicas) => Ok(Ok(v)),
                        Ok(_) => Err(Error::NotConfirmed { wanted: replicas, acked, timeout_ms }),
                    };
                    let _ = job.reply.send(answer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_replies() {
        assert_eq!(parse_counter(Value::Nil).unwrap(), 0);
        assert_eq!(parse_counter(Value::BulkString(b"-42".to_vec())).unwrap(), -42);
        assert!(matches!(parse_counter(Value::BulkString(b"x".to_vec())), Err(Error::NotAnInteger)));
        assert_eq!(parse_write(Op::Reset, false, Value::Okay).unwrap().value, 0);
        assert_eq!(parse_write(Op::Increment, false, Value::Int(7)).unwrap().value, 7);
    }
}
