//! One Redis node the service talks to (the primary, or the replicas' Service): a shared
//! multiplexed connection that a background task (re)establishes with exponential backoff
//! and jitter, and health-checks every second.
//!
//! Why a `MultiplexedConnection` we manage ourselves rather than redis-rs's
//! `ConnectionManager`: the manager only reconnects on I/O errors, but after a failover
//! the node behind the primary URL can answer `READONLY` on a perfectly healthy socket;
//! we must drop that socket (a Kubernetes Service routes the new one to the new primary)
//! and refuse to use a node whose `ROLE` is not master. Throughput is the same (both
//! pipeline every request on one socket; measured in docs/web.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, ConnectionInfo, Pipeline, RedisFuture, Value};
use tokio::sync::{Notify, watch};

use super::config::RedisClientKind;
use super::metrics::Metrics;

/// How often a connected node is health-checked (ROLE for the primary, PING otherwise).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// A ROLE/PING check (on connect and every HEALTH_INTERVAL) that takes longer has failed:
/// a frozen primary must not hold the next connect attempt for a whole command timeout.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Reconnects keep trying at least every 400 ms: after a failover the Service points at
/// the new primary within a moment, and the service must follow within a second. (One
/// connect attempt per 200-400 ms per pod is no load for Redis or the network.)
const BACKOFF_MAX: Duration = Duration::from_millis(400);

/// The current connection, with a generation that moves on every connect and every
/// invalidation, so a stale failure never tears down a newer connection.
#[derive(Clone, Default)]
struct Slot {
    generation: u64,
    conn: Option<RedisConn>,
}

/// The shared connection: a `MultiplexedConnection` (default), or redis-rs's
/// `ConnectionManager` (kept selectable with REDIS_CLIENT=manager for benchmarks).
#[derive(Clone)]
pub enum RedisConn {
    Multiplexed(MultiplexedConnection),
    Manager(ConnectionManager),
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Multiplexed(c) => c.req_packed_command(cmd),
            RedisConn::Manager(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Multiplexed(c) => c.req_packed_commands(p, offset, count),
            RedisConn::Manager(c) => c.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Multiplexed(c) => c.get_db(),
            RedisConn::Manager(c) => c.get_db(),
        }
    }
}

/// A connection handed to a request: use it, and report failures with its generation.
pub struct Lease {
    pub generation: u64,
    pub conn: RedisConn,
}

pub struct Endpoint {
    /// `primary` or `replica` (logs, metrics, error messages).
    pub node: &'static str,
    client: Client,
    kind: RedisClientKind,
    conn_config: AsyncConnectionConfig,
    command_timeout: Duration,
    connect_timeout: Duration,
    /// The primary must report `ROLE master`: a demoted node is not used for writes.
    require_master: bool,
    slot: watch::Sender<Slot>,
    /// True from an invalidation until the next connect attempt settles: requests that
    /// arrive meanwhile wait for it instead of failing (a failover takes milliseconds).
    reconnecting: AtomicBool,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl Endpoint {
    /// Create the endpoint and start its connector task (which ends when the endpoint is
    /// dropped). Never fails on an unreachable node: the service starts without Redis.
    pub fn start(
        node: &'static str,
        info: ConnectionInfo,
        require_master: bool,
        kind: RedisClientKind,
        command_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let client = Client::open(info)?;
        let connect_timeout = Duration::from_secs(1);
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout));
        let ep = Arc::new(Self {
            node,
            client,
            kind,
            conn_config,
            command_timeout,
            connect_timeout,
            require_master,
            slot: watch::Sender::new(Slot::default()),
            reconnecting: AtomicBool::new(false),
            wake: Notify::new(),
            metrics,
        });
        tokio::spawn(connector(Arc::downgrade(&ep)));
        Ok(ep)
    }

    /// The current connection, if any (cheap: an `Arc` clone under a read lock).
    pub fn lease(&self) -> Option<Lease> {
        let s = self.slot.borrow();
        s.conn.clone().map(|conn| Lease { generation: s.generation, conn })
    }

    pub fn is_connected(&self) -> bool {
        self.slot.borrow().conn.is_some()
    }

    /// Drop the connection of `generation` (if still current) and reconnect now.
    pub fn invalidate(&self, generation: u64) {
        let changed = self.slot.send_if_modified(|s| {
            if s.generation == generation && s.conn.is_some() {
                s.conn = None;
                s.generation += 1;
                true
            } else {
                false
            }
        });
        if changed {
            self.reconnecting.store(true, Ordering::Relaxed);
            tracing::info!(node = self.node, "redis connection dropped; reconnecting");
            self.metrics.reconnects.inc();
            self.wake.notify_one();
        }
    }

    /// The current connection; during a reconnect that is under way, wait up to
    /// `timeout` for it. `None` when the node is down.
    pub async fn lease_or_wait(&self, timeout: Duration) -> Option<Lease> {
        if let Some(lease) = self.lease() {
            return Some(lease);
        }
        if !self.reconnecting.load(Ordering::Relaxed) {
            return None;
        }
        let generation = self.slot.borrow().generation;
        self.wait_newer(generation, timeout).await
    }

    /// Wait up to `timeout` for a connection newer than `generation`.
    pub async fn wait_newer(&self, generation: u64, timeout: Duration) -> Option<Lease> {
        let mut rx = self.slot.subscribe();
        let fut = rx.wait_for(|s| s.conn.is_some() && s.generation > generation);
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(s)) => s.conn.clone().map(|conn| Lease { generation: s.generation, conn }),
            _ => None,
        }
    }

    async fn connect(&self) -> Result<RedisConn, String> {
        let fut = async {
            match self.kind {
                RedisClientKind::Multiplexed => self
                    .client
                    .get_multiplexed_async_connection_with_config(&self.conn_config)
                    .await
                    .map(RedisConn::Multiplexed),
                RedisClientKind::Manager => {
                    let cfg = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.connect_timeout))
                        .set_response_timeout(Some(self.command_timeout))
                        .set_number_of_retries(1);
                    self.client.get_connection_manager_with_config(cfg).await.map(RedisConn::Manager)
                }
            }
        };
        let mut conn = match tokio::time::timeout(self.connect_timeout * 2, fut).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("connect timed out".into()),
        };
        self.check(&mut conn).await?;
        Ok(conn)
    }

    /// ROLE must say master on the primary; PING must answer elsewhere; within
    /// [`CHECK_TIMEOUT`].
    async fn check(&self, conn: &mut RedisConn) -> Result<(), String> {
        tokio::time::timeout(CHECK_TIMEOUT, self.check_role(conn))
            .await
            .map_err(|_| format!("no answer within {} ms", CHECK_TIMEOUT.as_millis()))?
    }

    async fn check_role(&self, conn: &mut RedisConn) -> Result<(), String> {
        if self.require_master {
            let role: Value = redis::cmd("ROLE").query_async(conn).await.map_err(|e| e.to_string())?;
            if !is_master(&role) {
                return Err("node is not a master (ROLE says replica)".into());
            }
        } else {
            let _: String = redis::cmd("PING").query_async(conn).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Whether a `ROLE` reply is that of a master.
pub fn is_master(role: &Value) -> bool {
    match role {
        Value::Array(items) => matches!(items.first(), Some(Value::BulkString(b)) if b == b"master"),
        _ => false,
    }
}

/// Delay before reconnect attempt `attempt` (1-based): 50 ms doubling to 400 ms, scaled by
/// `jitter` in [0, 1) into the upper half ("equal jitter"), so many pods restarted at
/// once do not reconnect in lockstep.
pub fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let base = BACKOFF_MIN.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Keeps the endpoint connected: connect with backoff while down, health-check while up.
async fn connector(weak: Weak<Endpoint>) {
    let mut attempt: u32 = 0;
    loop {
        let Some(ep) = weak.upgrade() else { return };
        let current = ep.lease();
        match current {
            None => match ep.connect().await {
                Ok(conn) => {
                    if attempt > 0 || ep.node == "primary" {
                        tracing::info!(node = ep.node, after_attempts = attempt, "redis connected");
                    }
                    attempt = 0;
                    ep.reconnecting.store(false, Ordering::Relaxed);
                    ep.slot.send_modify(|s| {
                        s.generation += 1;
                        s.conn = Some(conn);
                    });
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    ep.reconnecting.store(false, Ordering::Relaxed);
                    let delay = backoff_delay(attempt, rand::random::<f64>());
                    tracing::warn!(node = ep.node, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "redis connect failed");
                    ep.metrics.redis_error(ep.node, "connect");
                    drop(ep);
                    tokio::time::sleep(delay).await;
                }
            },
            Some(mut lease) => {
                let woke = tokio::select! {
                    _ = ep.wake.notified() => true,
                    _ = tokio::time::sleep(HEALTH_INTERVAL) => false,
                };
                if !woke && let Err(e) = ep.check(&mut lease.conn).await {
                    tracing::warn!(node = ep.node, error = %e, "redis health check failed");
                    ep.metrics.redis_error(ep.node, "health");
                    ep.invalidate(lease.generation);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        assert_eq!(backoff_delay(1, 1.0), Duration::from_millis(50));
        assert_eq!(backoff_delay(1, 0.0), Duration::from_millis(25));
        assert_eq!(backoff_delay(2, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(4, 1.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(5, 1.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(30, 1.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(u32::MAX, 0.0), Duration::from_millis(200));
        assert!(backoff_delay(3, 0.3) < backoff_delay(3, 0.9));
    }

    #[test]
    fn role_reply_parsing() {
        let master =
            Value::Array(vec![Value::BulkString(b"master".to_vec()), Value::Int(0), Value::Array(vec![])]);
        let slave = Value::Array(vec![Value::BulkString(b"slave".to_vec())]);
        assert!(is_master(&master));
        assert!(!is_master(&slave));
        assert!(!is_master(&Value::Nil));
    }
}
