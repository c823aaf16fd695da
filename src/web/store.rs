//! The counter in Redis: reads (primary or replicas with fallback, the primary's role
//! checked), writes through the writer task (coalesced batches, `WAIT` for synchronous
//! replicas, the READONLY-after-failover retry; `writer.rs`).

use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, RedisError, Value};

use super::config::{Config, ReadFrom};
use super::counter::{COUNTER_KEY, Op, Written};
use super::error::Error;
use super::metrics::Metrics;
use super::upstream::{Lease, RedisConn, Upstream};
use super::writer::{self, Writer};

/// How long a read waits for a reconnect under way (after READONLY or a broken
/// connection) before answering 503.
const READONLY_RETRY_WAIT: Duration = writer::RECONNECT_WAIT;

/// Commands built once: the hot path only packs them.
struct Commands {
    get: Cmd,
    /// `ROLE` + `GET` in one round trip: a read from the primary is only answered when
    /// the node still is the primary (a demoted one serves stale data until the next
    /// health check would notice).
    role_get: redis::Pipeline,
}

pub struct Store {
    /// Reads and readiness.
    primary: Arc<Upstream>,
    /// The connection writes use: `primary`, or with SYNC_REPLICAS its own, because
    /// `WAIT` blocks its connection server-side and reads must not queue behind it.
    write_conn: Arc<Upstream>,
    writer: Writer,
    replica: Option<Arc<Upstream>>,
    read_from: ReadFrom,
    /// `SYNC_REPLICAS`: a primary must have this many replicas connected to be read.
    sync_replicas: u32,
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
        let write_conn = if cfg.sync_replicas > 0 { start_primary()? } else { primary.clone() };
        let settings = writer::Settings {
            sync_replicas: cfg.sync_replicas,
            sync_timeout: cfg.sync_timeout,
            coalesce: cfg.coalesce_writes,
        };
        let writer = Writer::start(write_conn.clone(), settings, metrics.clone());
        let mut get = redis::cmd("GET");
        get.arg(COUNTER_KEY);
        let mut role_get = redis::pipe();
        role_get.cmd("ROLE").add_command(get.clone());
        Ok(Self {
            primary,
            write_conn,
            writer,
            replica,
            read_from: cfg.read_from,
            sync_replicas: cfg.sync_replicas,
            cmds: Commands { get, role_get },
            metrics,
        })
    }

    /// Whether the service has reached the primary (ROLE master) since it started. A
    /// later Redis outage does not make it unready: every web pod would leave the
    /// Service together (the outage is shared), clients would get no answer instead of a
    /// JSON 503, and after the failover the pods would wait for their readiness probes
    /// before serving again.
    pub fn primary_ready(&self) -> bool {
        self.primary.has_connected() && self.write_conn.has_connected()
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

    /// Apply `op` (once per `idempotency_key`) in the writer's next batch. A READONLY
    /// answer means the write was not applied (the primary URL now reaches a replica):
    /// the writer reconnects and retries it exactly once.
    pub async fn write(&self, op: Op, idempotency_key: Option<&str>) -> Result<Written, Error> {
        self.writer.write(op, idempotency_key).await
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
    } else if let Some(detail) = crate::replication::node::write_refusal_of(&e) {
        // Also inside a script's error (an Idempotency-Key write).
        Error::CannotPersist { node, detail }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misconf_means_the_primary_cannot_persist() {
        let e = redis::make_extension_error(
            "MISCONF".to_string(),
            Some("Errors writing to the AOF file: No space left on device".into()),
        );
        match classify("primary", e) {
            Error::CannotPersist { node, detail } => {
                assert_eq!(node, "primary");
                assert_eq!(detail, "MISCONF Errors writing to the AOF file: No space left on device");
            }
            other => panic!("{other:?}"),
        }
        let other = redis::make_extension_error("ERR".to_string(), Some("something else".into()));
        assert!(matches!(classify("primary", other), Error::Redis { .. }));
    }

    #[test]
    fn counter_replies() {
        assert_eq!(parse_counter(Value::Nil).unwrap(), 0);
        assert_eq!(parse_counter(Value::BulkString(b"-42".to_vec())).unwrap(), -42);
        assert!(matches!(parse_counter(Value::BulkString(b"x".to_vec())), Err(Error::NotAnInteger)));
    }
}
