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

use super::config::{RedisClientKind, RedisSecrets};
use super::metrics::Metrics;
use crate::backoff;
use crate::dial::{self, Credentials, TlsCa};
use crate::locked::lock;
use crate::replication::monitor::Seen;

/// How often a connected node is health-checked (ROLE for the primary, PING otherwise).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// A ROLE/PING check (on connect and every HEALTH_INTERVAL) that takes longer has failed:
/// a frozen primary must not hold the next connect attempt for a whole command timeout.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Reconnects keep trying at least every 200 ms: after a failover the Service points at
/// the new primary within a moment, and the service must follow within a second. (One
/// connect attempt per 100-200 ms per pod is no load for Redis or the network.)
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// A connect that reached a node answering `ROLE` as a replica.
const NOT_MASTER: &str = "node is not a master (ROLE says replica)";

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

pub struct Upstream {
    /// `primary` or `replica` (logs, metrics, error messages).
    pub node: &'static str,
    /// Address, database, user and inline password (URL or REDIS_PASSWORD).
    info: ConnectionInfo,
    /// Password and CA files, read at every connect.
    secrets: RedisSecrets,
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
    /// Connected (and checked) at least once since start.
    ever_connected: AtomicBool,
    wake: Notify,
    metrics: Arc<Metrics>,
    /// The connection just dropped for answering as a replica (READONLY, or ROLE on a
    /// health check): a demoted primary names its new primary, which the next connect
    /// tries first.
    stale: std::sync::Mutex<Option<RedisConn>>,
    /// `host:port` of the master a demoted node named (its announced stable name). The
    /// primary Service reaches the new primary only once the role label moved and the
    /// Service caught up; the node itself knows at once.
    hint: std::sync::Mutex<Option<(String, u16)>>,
    /// Where to ask whom the replicas follow when the primary cannot be reached (the
    /// replicas Service): after a failover they follow the new primary at once, while the
    /// primary Service reaches it only once the role labels moved and kube-proxy synced,
    /// and a connection to a partitioned primary's address just hangs until then.
    ask: std::sync::OnceLock<ConnectionInfo>,
    /// A primary a replica named that could not be reached: not tried again while the
    /// replicas keep naming it (they still follow a dead primary until the failover).
    unreachable_hint: std::sync::Mutex<Option<(String, u16)>>,
}

impl Upstream {
    /// Create the endpoint and start its connector task (which ends when the endpoint is
    /// dropped). Never fails on an unreachable node: the service starts without Redis.
    pub fn start(
        node: &'static str,
        info: ConnectionInfo,
        secrets: RedisSecrets,
        require_master: bool,
        kind: RedisClientKind,
        command_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, redis::RedisError> {
        // Refuse an unusable address now; the real client is built per connect.
        Client::open(info.clone())?;
        // Connecting includes AUTH: a frozen node must cost an attempt no more than a check.
        let connect_timeout = CHECK_TIMEOUT;
        let conn_config = dial::connection_config(None, connect_timeout, command_timeout);
        let ep = Arc::new(Self {
            node,
            info,
            secrets,
            kind,
            conn_config,
            command_timeout,
            connect_timeout,
            require_master,
            slot: watch::Sender::new(Slot::default()),
            reconnecting: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            wake: Notify::new(),
            metrics,
            stale: std::sync::Mutex::new(None),
            hint: std::sync::Mutex::new(None),
            ask: std::sync::OnceLock::new(),
            unreachable_hint: std::sync::Mutex::new(None),
        });
        tokio::spawn(connector(Arc::downgrade(&ep)));
        Ok(ep)
    }

    /// The current connection, if any (cheap: an `Arc` clone under a read lock).
    pub fn lease(&self) -> Option<Lease> {
        let s = self.slot.borrow();
        s.conn.clone().map(|conn| Lease { generation: s.generation, conn })
    }

    /// Connected at least once since the service started.
    pub fn has_connected(&self) -> bool {
        self.ever_connected.load(Ordering::Relaxed)
    }

    /// Drop the connection of `generation` (if still current) and reconnect now.
    pub fn invalidate(&self, generation: u64) {
        let changed = self.slot.send_if_modified(|s| {
            if s.generation == generation && s.conn.is_some() {
                if self.require_master {
                    *lock(&self.stale) = s.conn.take();
                }
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

    /// Also ask the replicas at `info` (the replicas Service) whom they follow, when the
    /// primary cannot be reached. Set once, before the first failure matters.
    pub fn ask_replicas_at(&self, info: ConnectionInfo) {
        let _ = self.ask.set(info);
    }

    /// Connect to the primary: first to the master a demoted node named (if any), or
    /// after a failed attempt (`retry`) the one the replicas follow, else through the
    /// configured URL (the primary Service).
    async fn connect(&self, retry: bool) -> Result<RedisConn, String> {
        let stale = lock(&self.stale).take();
        if let Some(mut old) = stale {
            // The node we were connected to; if it is a replica now, it names the primary.
            if let Ok(Ok(role)) =
                tokio::time::timeout(CHECK_TIMEOUT, redis::cmd("ROLE").query_async::<Value>(&mut old)).await
            {
                self.learn_master(&role);
            }
        }
        if retry && !self.has_hint() {
            self.ask_replicas().await;
        }
        let hint = lock(&self.hint).take();
        if let Some((host, port)) = hint
            && lock(&self.unreachable_hint).as_ref() != Some(&(host.clone(), port))
        {
            // By the name the node announced: with TLS its certificate must carry it.
            let info = self.info.clone().set_addr(redis::ConnectionAddr::Tcp(host.clone(), port));
            match self.client(info) {
                Ok(client) => match self.connect_with(&client).await {
                    Ok(conn) => {
                        tracing::info!(node = self.node, %host, port, "connected to the primary a Redis node named");
                        *lock(&self.unreachable_hint) = None;
                        return Ok(conn);
                    }
                    Err(e) => {
                        tracing::debug!(node = self.node, %host, port, error = %e, "named primary not usable");
                        // Only a node that did not answer is skipped next time: one that
                        // answered as a replica may be a moment from its promotion.
                        if e != NOT_MASTER {
                            *lock(&self.unreachable_hint) = Some((host, port));
                        }
                    }
                },
                Err(e) => tracing::debug!(node = self.node, %host, error = %e, "bad primary address"),
            }
        }
        let client = self.client(self.info.clone())?;
        let conn = self.connect_with(&client).await?;
        *lock(&self.unreachable_hint) = None;
        Ok(conn)
    }

    /// One short-lived connection to a replica (through the replicas Service): remember
    /// the master its `ROLE` names. Failures only mean there is nothing to learn.
    async fn ask_replicas(&self) {
        let Some(info) = self.ask.get() else { return };
        let Ok(client) = self.client(info.clone()) else { return };
        let asked = tokio::time::timeout(CHECK_TIMEOUT, async {
            let mut conn = client.get_multiplexed_async_connection_with_config(&self.conn_config).await?;
            redis::cmd("ROLE").query_async::<Value>(&mut conn).await
        })
        .await;
        match asked {
            Ok(Ok(role)) => self.learn_master(&role),
            Ok(Err(e)) => {
                tracing::debug!(node = self.node, error = %e, "asking a replica for its primary failed")
            }
            Err(_) => tracing::debug!(node = self.node, "asking a replica for its primary timed out"),
        }
    }

    /// A client for `info` with the secrets as they are now: the password file and the CA
    /// are read here, at every connect, so a rotated Secret applies on the next one. An
    /// unreadable file fails this attempt (logged, retried with backoff).
    fn client(&self, info: ConnectionInfo) -> Result<Client, String> {
        let mut creds = Credentials::default();
        if let Some(path) = &self.secrets.password_file {
            let pw = dial::read_secret(path)
                .map_err(|e| format!("cannot read REDIS_PASSWORD_FILE {}: {e}", path.display()))?;
            creds.password = Some(pw);
        }
        let ca = match &self.secrets.tls_ca_file {
            Some(path) => Some(
                TlsCa::read(path)
                    .map_err(|e| format!("cannot read REDIS_TLS_CA_FILE {}: {e}", path.display()))?,
            ),
            None => None,
        };
        dial::client_for(info, &creds, ca.as_ref()).map_err(|e| e.to_string())
    }

    /// Remember the master a `ROLE` reply of a replica names.
    fn learn_master(&self, role: &Value) {
        if let Some(master) = role_master(role) {
            *lock(&self.hint) = Some(master);
        }
    }

    /// A primary named by a demoted node is waiting to be tried.
    fn has_hint(&self) -> bool {
        lock(&self.hint).is_some()
    }

    async fn connect_with(&self, client: &Client) -> Result<RedisConn, String> {
        let fut = async {
            match self.kind {
                RedisClientKind::Multiplexed => client
                    .get_multiplexed_async_connection_with_config(&self.conn_config)
                    .await
                    .map(RedisConn::Multiplexed),
                RedisClientKind::Manager => {
                    let cfg = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.connect_timeout))
                        .set_response_timeout(Some(self.command_timeout))
                        .set_number_of_retries(1);
                    client.get_connection_manager_with_config(cfg).await.map(RedisConn::Manager)
                }
            }
        };
        let mut conn = match tokio::time::timeout(self.connect_timeout, fut).await {
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
                self.learn_master(&role);
                return Err(NOT_MASTER.into());
            }
        } else {
            let _: String = redis::cmd("PING").query_async(conn).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The `host:port` a replica's `ROLE` reply names as its master (None for a master, or a
/// replica of nobody: Redis pods wait as replicas of `127.0.0.1:1`).
pub fn role_master(role: &Value) -> Option<(String, u16)> {
    // The operator's health checks read ROLE replies the same way.
    match crate::replication::monitor::parse_role(role)? {
        // Port 1 is the start script's "nobody" (127.0.0.1:1): no primary to name.
        Seen::Replica { master: Some(m), .. } if !m.host.is_empty() && m.port > 1 => Some((m.host, m.port)),
        _ => None,
    }
}

/// Whether a `ROLE` reply is that of a master.
pub fn is_master(role: &Value) -> bool {
    match role {
        Value::Array(items) => matches!(items.first(), Some(Value::BulkString(b)) if b == b"master"),
        _ => false,
    }
}

/// Replicas a master's `ROLE` reply lists (connected to it now); 0 for anything else.
pub fn listed_replicas(role: &Value) -> usize {
    match role {
        Value::Array(items) if is_master(role) => match items.get(2) {
            Some(Value::Array(replicas)) => replicas.len(),
            _ => 0,
        },
        _ => 0,
    }
}

/// Delay before reconnect attempt `attempt` (1-based): 50 ms doubling to 200 ms, scaled by
/// `jitter` in [0, 1) into the upper half ("equal jitter"), so many pods restarted at
/// once do not reconnect in lockstep.
pub fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    backoff::equal_jitter(backoff::exponential(attempt, BACKOFF_MIN, BACKOFF_MAX), jitter)
}

/// Keeps the endpoint connected: connect with backoff while down, health-check while up.
async fn connector(weak: Weak<Upstream>) {
    let mut attempt: u32 = 0;
    loop {
        let Some(ep) = weak.upgrade() else { return };
        let current = ep.lease();
        match current {
            None => match ep.connect(attempt > 0).await {
                Ok(conn) => {
                    if attempt > 0 || ep.node == "primary" {
                        tracing::info!(node = ep.node, after_attempts = attempt, "redis connected");
                    }
                    attempt = 0;
                    ep.reconnecting.store(false, Ordering::Relaxed);
                    ep.ever_connected.store(true, Ordering::Relaxed);
                    ep.slot.send_modify(|s| {
                        s.generation += 1;
                        s.conn = Some(conn);
                    });
                }
                Err(e) if ep.has_hint() && attempt == 0 => {
                    // The node behind the URL is a replica and named its primary: try that
                    // one now rather than after a backoff.
                    attempt = 1;
                    tracing::info!(node = ep.node, error = %e, "redis connect failed; trying the primary it named");
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
    fn reconnects_back_off_from_50_to_200_ms_with_equal_jitter() {
        assert_eq!(backoff_delay(1, 1.0), Duration::from_millis(50));
        assert_eq!(backoff_delay(1, 0.0), Duration::from_millis(25));
        assert_eq!(backoff_delay(3, 1.0), Duration::from_millis(200));
        assert_eq!(backoff_delay(u32::MAX, 0.0), Duration::from_millis(100));
    }

    #[test]
    fn a_replica_names_its_master_unless_it_follows_nobody() {
        let slave = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(b"slave".to_vec()),
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"connected".to_vec()),
                Value::Int(10),
            ])
        };
        assert_eq!(
            role_master(&slave("demo-redis-1.demo-redis-headless", 6379)),
            Some(("demo-redis-1.demo-redis-headless".to_string(), 6379))
        );
        assert_eq!(role_master(&slave("127.0.0.1", 1)), None, "the start script's nobody");
        assert_eq!(role_master(&slave("", 0)), None);
        let master =
            Value::Array(vec![Value::BulkString(b"master".to_vec()), Value::Int(0), Value::Array(vec![])]);
        assert_eq!(role_master(&master), None);
    }

    #[test]
    fn a_master_lists_its_connected_replicas() {
        let replica = Value::Array(vec![
            Value::BulkString(b"10.0.0.2".to_vec()),
            Value::BulkString(b"6379".to_vec()),
            Value::BulkString(b"10".to_vec()),
        ]);
        let master = |n: usize| {
            Value::Array(vec![
                Value::BulkString(b"master".to_vec()),
                Value::Int(10),
                Value::Array(vec![replica.clone(); n]),
            ])
        };
        assert_eq!(listed_replicas(&master(0)), 0);
        assert_eq!(listed_replicas(&master(2)), 2);
        assert_eq!(listed_replicas(&Value::Array(vec![Value::BulkString(b"slave".to_vec())])), 0);
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
