//! Redis I/O behind a small trait, and where each pod is reached.
//!
//! [`RedisNodes`] is implemented once, over redis-rs ([`RedisClient`]); tests run the very
//! same implementation against real `redis-server` processes on loopback ports. Which
//! address to dial and which host name the other nodes use in REPLICAOF is injected
//! through [`Addressing`]: pod IP + stable DNS name in a cluster ([`ClusterAddressing`]),
//! `127.0.0.1:PORT` for both in tests ([`LoopbackAddressing`]).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;

use super::PodView;
use super::acl_sync::{NodeAcl, NodePlan};
use crate::api::REDIS_PORT;
use crate::dial::{self, Credentials, TlsCa};
use crate::names;

/// A host and port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), port }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How pods are reached. Implementations must derive everything from the `PodView`
/// they are given (read fresh from the API each pass), never from a cache.
pub trait Addressing: Send + Sync {
    /// Where the operator connects to talk to this pod; `None` while it has no address.
    fn dial(&self, pod: &PodView) -> Option<NodeAddr>;
    /// What other Redis nodes put in `REPLICAOF` to follow this pod. Stable across pod
    /// restarts (an IP is not).
    fn replication_endpoint(&self, pod: &PodView) -> NodeAddr;
}

/// In a cluster: dial the pod IP on 6379; replicas follow `NAME-redis-K.NAME-redis-headless`.
#[derive(Clone, Debug)]
pub struct ClusterAddressing {
    pub app: String,
}

fn redis_port() -> u16 {
    // REDIS_PORT is the constant 6379, which fits a u16.
    u16::try_from(REDIS_PORT).unwrap_or(6379)
}

impl Addressing for ClusterAddressing {
    fn dial(&self, pod: &PodView) -> Option<NodeAddr> {
        pod.ip.as_ref().filter(|ip| !ip.is_empty()).map(|ip| NodeAddr::new(ip.clone(), redis_port()))
    }
    fn replication_endpoint(&self, pod: &PodView) -> NodeAddr {
        NodeAddr::new(names::redis_pod_host(&self.app, pod.ordinal), redis_port())
    }
}

/// Every pod on the pod's IP (127.0.0.1 in tests) at its own port, keyed by ordinal.
/// Used by the integration tests and the failover bench, where "pods" are local
/// `redis-server` processes.
#[derive(Clone, Debug, Default)]
pub struct LoopbackAddressing {
    pub ports: BTreeMap<u32, u16>,
    /// The host other nodes follow every pod by (`localhost`, say, as a stand-in for the
    /// stable DNS name); the pod IP when `None`. With a name here, what the operator dials
    /// differs from what a primary lists its replicas by, as in a cluster.
    pub host: Option<String>,
}

impl Addressing for LoopbackAddressing {
    fn dial(&self, pod: &PodView) -> Option<NodeAddr> {
        let ip = pod.ip.as_ref()?;
        Some(NodeAddr::new(ip.clone(), *self.ports.get(&pod.ordinal)?))
    }
    fn replication_endpoint(&self, pod: &PodView) -> NodeAddr {
        let host = self.host.clone().or_else(|| pod.ip.clone()).unwrap_or_else(|| "127.0.0.1".to_string());
        NodeAddr::new(host, self.ports.get(&pod.ordinal).copied().unwrap_or(0))
    }
}

/// Raw state of one node: `INFO` text and the config values the manager keeps in line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub info: String,
    pub min_replicas_to_write: Option<i64>,
    /// The `-MISCONF` error PING got: the node refuses writes because it cannot persist.
    pub write_refusal: Option<String>,
}

/// The Redis commands the manager needs. Every call connects afresh (short timeouts), so
/// a dead or frozen node costs at most the timeout and no stale connection survives a
/// pod restart.
pub trait RedisNodes: Send + Sync {
    /// `INFO server replication persistence keyspace`, `CONFIG GET min-replicas-to-write`
    /// and `PING` (a master that cannot persist refuses it with `-MISCONF`).
    fn snapshot(&self, at: &NodeAddr) -> impl Future<Output = RedisResult<Snapshot>> + Send;
    /// `REPLICAOF host port`, or `REPLICAOF NO ONE` when `primary` is `None`.
    fn replicaof(
        &self,
        at: &NodeAddr,
        primary: Option<&NodeAddr>,
    ) -> impl Future<Output = RedisResult<()>> + Send;
    /// `CONFIG SET key value`.
    fn config_set(
        &self,
        at: &NodeAddr,
        key: &str,
        value: &str,
    ) -> impl Future<Output = RedisResult<()>> + Send;
    /// `CONFIG GET key`: the running value, None when the server does not know the key.
    fn config_get(
        &self,
        at: &NodeAddr,
        key: &str,
    ) -> impl Future<Output = RedisResult<Option<String>>> + Send;
    /// `FAILOVER TO host port TIMEOUT ms` on the primary at `at` (returns once started).
    fn failover_to(
        &self,
        at: &NodeAddr,
        target: &NodeAddr,
        timeout: Duration,
    ) -> impl Future<Output = RedisResult<()>> + Send;
    /// `REPLCONF GETACK *` on a replica: it acknowledges its offset to its primary now
    /// instead of at its next once-a-second ACK. A FAILOVER waits for that ACK (and a
    /// paused primary does not ask for it), so this shortens the planned write pause.
    fn request_ack(&self, at: &NodeAddr) -> impl Future<Output = RedisResult<()>> + Send;
}

/// How the operator authenticates to Redis and verifies it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeAuth {
    /// ACL user (`operator`); `None`: the `default` user (tests of an open server).
    pub username: Option<String>,
    /// Passwords to try in order: the current one, then the one a rotation moves away
    /// from (until every node accepts the new one). Empty: no AUTH.
    pub passwords: Vec<String>,
    /// With `spec.redis.tls`: the CA the servers' certificates must chain to.
    pub tls: Option<TlsCa>,
    /// The name each pod's certificate carries, by the address the operator dials
    /// (pod IP -> `NAME-redis-K.NAME-redis-headless`): TLS verifies the name while the
    /// socket goes to the fresh IP.
    pub names: BTreeMap<String, String>,
}

impl fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a password.
        f.debug_struct("NodeAuth")
            .field("username", &self.username)
            .field("passwords", &self.passwords.len())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl NodeAuth {
    /// The `default` user with `password` (empty: no AUTH), no TLS.
    pub fn password(password: &str) -> Self {
        Self {
            passwords: if password.is_empty() { vec![] } else { vec![password.to_string()] },
            ..Self::default()
        }
    }

    /// Verify each pod by the name other nodes follow it by.
    pub fn with_names<A: Addressing + ?Sized>(mut self, pods: &[PodView], addressing: &A) -> Self {
        self.names = pods
            .iter()
            .filter_map(|p| Some((addressing.dial(p)?.host, addressing.replication_endpoint(p).host)))
            .collect();
        self
    }
}

/// Connect to `at` as `auth` says: over TLS verifying the pod's name when it has a CA,
/// trying each password until one is accepted (a wrong one costs one round trip).
pub async fn connect(
    at: &NodeAddr,
    auth: &NodeAuth,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> RedisResult<redis::aio::MultiplexedConnection> {
    let verify = auth.names.get(&at.host).map(String::as_str);
    let mut passwords: Vec<Option<&str>> = auth.passwords.iter().map(|p| Some(p.as_str())).collect();
    if passwords.is_empty() {
        passwords.push(None);
    }
    let mut last = None;
    for pw in passwords {
        let creds = Credentials::new(auth.username.as_deref(), pw);
        match dial::connect(
            &at.host,
            at.port,
            verify,
            &creds,
            auth.tls.as_ref(),
            connect_timeout,
            response_timeout,
        )
        .await
        {
            Err(e) if is_auth_error(&e) => last = Some(e),
            other => return other,
        }
    }
    Err(last
        .unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::AuthenticationFailed, "no password"))))
}

/// WRONGPASS or any other refusal of AUTH.
pub fn is_auth_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed || e.to_string().contains("WRONGPASS")
}

/// Asked right before each command that changes a node is sent; a `false` refuses it.
/// The operator's leadership fence: a process that stopped leading (its lease passed
/// while it was frozen, say) sends Redis nothing that changes it.
pub trait WriteGate: Send + Sync + fmt::Debug {
    /// `command` (`REPLICAOF`, `CONFIG SET`...) is about to be sent to `at`.
    fn allows(&self, command: &str, at: &NodeAddr) -> bool;
}

/// What a command the [`WriteGate`] refused fails with.
pub const FENCED: &str = "refused: this operator instance is not the leader (any more)";

/// Whether `e` is a [`WriteGate`] refusal (nothing was sent).
pub fn is_fenced(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Client && e.to_string().starts_with(FENCED)
}

/// The `-MISCONF` error of a reply, as Redis words it (`MISCONF Errors writing to the AOF
/// file: No space left on device`): the node refuses writes because it cannot persist.
/// Any other reply (PONG, `-LOADING`) is `None`.
pub fn write_refusal(reply: redis::Value) -> Option<String> {
    write_refusal_of(&reply.extract_error().err()?)
}

/// [`write_refusal`] of an error, also when a script's error carries it.
pub fn write_refusal_of(e: &redis::RedisError) -> Option<String> {
    if e.code() == Some("MISCONF") {
        return Some(format!("MISCONF {}", e.detail().unwrap_or_default()).trim_end().to_string());
    }
    let text = e.to_string();
    text.find("MISCONF").map(|at| text[at..].to_string())
}

/// [`RedisNodes`] over redis-rs.
#[derive(Clone, Debug)]
pub struct RedisClient {
    auth: NodeAuth,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// Asked before every command that changes a node; none: every command goes out.
    gate: Option<Arc<dyn WriteGate>>,
}

impl RedisClient {
    /// The `default` user with `password` (empty: no AUTH). Timeouts are short: a frozen
    /// node must not stall the whole pass.
    pub fn new(password: &str) -> Self {
        Self::with_auth(NodeAuth::password(password))
    }

    pub fn with_auth(auth: NodeAuth) -> Self {
        Self {
            auth,
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            gate: None,
        }
    }

    /// Send commands that change a node only when `gate` allows them.
    pub fn gated(mut self, gate: Arc<dyn WriteGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Right before a write: whether `gate` lets `command` go to `at`.
    fn may_write(&self, command: &str, at: &NodeAddr) -> RedisResult<()> {
        match &self.gate {
            Some(gate) if !gate.allows(command, at) => {
                Err(redis::RedisError::from((redis::ErrorKind::Client, FENCED, format!("{command} on {at}"))))
            }
            _ => Ok(()),
        }
    }

    pub fn with_timeouts(mut self, connect: Duration, response: Duration) -> Self {
        self.connect_timeout = connect;
        self.response_timeout = response;
        self
    }

    async fn connect(&self, at: &NodeAddr) -> RedisResult<redis::aio::MultiplexedConnection> {
        connect(at, &self.auth, self.connect_timeout, self.response_timeout).await
    }

    /// `ACL GETUSER` of each user (the password hashes) and `CONFIG GET masterauth`,
    /// in one round trip.
    pub async fn acl_state(&self, at: &NodeAddr, users: &[&str]) -> RedisResult<NodeAcl> {
        let mut c = self.connect(at).await?;
        let mut pipe = redis::pipe();
        for u in users {
            pipe.cmd("ACL").arg("GETUSER").arg(*u);
        }
        pipe.cmd("CONFIG").arg("GET").arg("masterauth");
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut c).await?;
        let config = replies.pop().unwrap_or(redis::Value::Nil);
        let config: BTreeMap<String, String> = redis::from_redis_value(config).unwrap_or_default();
        let hashes = users.iter().zip(replies).map(|(u, v)| (u.to_string(), acl_passwords(&v))).collect();
        Ok(NodeAcl { hashes, masterauth: config.get("masterauth").cloned() })
    }

    /// Apply a [`NodePlan`] (ACL SETUSER per user, then `masterauth`), in one round trip.
    pub async fn acl_apply(&self, at: &NodeAddr, plan: &NodePlan, masterauth: &str) -> RedisResult<()> {
        let mut c = self.connect(at).await?;
        let mut pipe = redis::pipe();
        for (user, rules) in &plan.rules {
            pipe.cmd("ACL").arg("SETUSER").arg(*user).arg(rules).ignore();
        }
        if plan.set_masterauth {
            pipe.cmd("CONFIG").arg("SET").arg("masterauth").arg(masterauth).ignore();
        }
        self.may_write("ACL SETUSER", at)?;
        pipe.query_async::<()>(&mut c).await
    }
}

/// The `passwords` field of an `ACL GETUSER` reply (a flat field/value array in RESP2,
/// a map in RESP3); empty for an unknown user (nil).
fn acl_passwords(v: &redis::Value) -> std::collections::BTreeSet<String> {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let pairs: Vec<(&Value, &Value)> = match v {
        Value::Array(items) => items.chunks(2).filter_map(|c| Some((c.first()?, c.get(1)?))).collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => vec![],
    };
    pairs
        .into_iter()
        .find(|(k, _)| text(k).as_deref() == Some("passwords"))
        .map(|(_, v)| match v {
            Value::Array(hs) | Value::Set(hs) => hs.iter().filter_map(text).collect(),
            _ => Default::default(),
        })
        .unwrap_or_default()
}

impl RedisNodes for RedisClient {
    async fn snapshot(&self, at: &NodeAddr) -> RedisResult<Snapshot> {
        use redis::aio::ConnectionLike;
        let mut c = self.connect(at).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("INFO").arg("server").arg("replication").arg("persistence").arg("keyspace");
        pipe.cmd("CONFIG").arg("GET").arg("min-replicas-to-write");
        pipe.cmd("PING");
        // Raw replies: PING may be refused (MISCONF, or LOADING) while INFO still answers.
        let mut replies = c.req_packed_commands(&pipe, 0, 3).await?.into_iter();
        let mut next = || replies.next().unwrap_or(redis::Value::Nil);
        let info: String = redis::from_redis_value(next().extract_error()?)?;
        let config: BTreeMap<String, String> = redis::from_redis_value(next().extract_error()?)?;
        let min_replicas_to_write = config.get("min-replicas-to-write").and_then(|v| v.parse().ok());
        Ok(Snapshot { info, min_replicas_to_write, write_refusal: write_refusal(next()) })
    }

    async fn replicaof(&self, at: &NodeAddr, primary: Option<&NodeAddr>) -> RedisResult<()> {
        let mut c = self.connect(at).await?;
        let mut cmd = redis::cmd("REPLICAOF");
        match primary {
            Some(p) => cmd.arg(&p.host).arg(p.port),
            None => cmd.arg("NO").arg("ONE"),
        };
        self.may_write("REPLICAOF", at)?;
        cmd.query_async(&mut c).await
    }

    async fn config_set(&self, at: &NodeAddr, key: &str, value: &str) -> RedisResult<()> {
        let mut c = self.connect(at).await?;
        self.may_write("CONFIG SET", at)?;
        redis::cmd("CONFIG").arg("SET").arg(key).arg(value).query_async(&mut c).await
    }

    async fn config_get(&self, at: &NodeAddr, key: &str) -> RedisResult<Option<String>> {
        let mut c = self.connect(at).await?;
        let reply: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(key).query_async(&mut c).await?;
        Ok(reply.into_iter().nth(1))
    }

    async fn failover_to(&self, at: &NodeAddr, target: &NodeAddr, timeout: Duration) -> RedisResult<()> {
        let mut c = self.connect(at).await?;
        self.may_write("FAILOVER", at)?;
        redis::cmd("FAILOVER")
            .arg("TO")
            .arg(&target.host)
            .arg(target.port)
            .arg("TIMEOUT")
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut c)
            .await
    }

    async fn request_ack(&self, at: &NodeAddr) -> RedisResult<()> {
        use redis::aio::ConnectionLike;
        let mut c = self.connect(at).await?;
        // REPLCONF GETACK sends no reply; the PING after it gives one to wait for.
        let mut pipe = redis::pipe();
        pipe.cmd("REPLCONF").arg("GETACK").arg("*").cmd("PING");
        c.req_packed_commands(&pipe, 0, 1).await.map(|_| ())
    }
}
