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
use std::time::Duration;

use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisResult};

use super::PodView;
use crate::api::REDIS_PORT;
use crate::build::names;

/// A host and port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), port }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How pods are reached. Implementations must derive everything from the `PodView`
/// they are given (read fresh from the API each pass), never from a cache.
pub trait Addressing: Send + Sync {
    /// Where the operator connects to talk to this pod; `None` while it has no address.
    fn dial(&self, pod: &PodView) -> Option<Endpoint>;
    /// What other Redis nodes put in `REPLICAOF` to follow this pod. Stable across pod
    /// restarts (an IP is not).
    fn replication_endpoint(&self, pod: &PodView) -> Endpoint;
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
    fn dial(&self, pod: &PodView) -> Option<Endpoint> {
        pod.ip.as_ref().filter(|ip| !ip.is_empty()).map(|ip| Endpoint::new(ip.clone(), redis_port()))
    }
    fn replication_endpoint(&self, pod: &PodView) -> Endpoint {
        Endpoint::new(names::redis_pod_host(&self.app, pod.ordinal), redis_port())
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
    fn dial(&self, pod: &PodView) -> Option<Endpoint> {
        let ip = pod.ip.as_ref()?;
        Some(Endpoint::new(ip.clone(), *self.ports.get(&pod.ordinal)?))
    }
    fn replication_endpoint(&self, pod: &PodView) -> Endpoint {
        let host = self.host.clone().or_else(|| pod.ip.clone()).unwrap_or_else(|| "127.0.0.1".to_string());
        Endpoint::new(host, self.ports.get(&pod.ordinal).copied().unwrap_or(0))
    }
}

/// Raw state of one node: `INFO` text and the config values the manager keeps in line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub info: String,
    pub min_replicas_to_write: Option<i64>,
}

/// The Redis commands the manager needs. Every call connects afresh (short timeouts), so
/// a dead or frozen node costs at most the timeout and no stale connection survives a
/// pod restart.
pub trait RedisNodes: Send + Sync {
    /// `INFO server replication persistence keyspace` and `CONFIG GET min-replicas-to-write`.
    fn snapshot(&self, at: &Endpoint) -> impl Future<Output = RedisResult<Snapshot>> + Send;
    /// `REPLICAOF host port`, or `REPLICAOF NO ONE` when `primary` is `None`.
    fn replicaof(
        &self,
        at: &Endpoint,
        primary: Option<&Endpoint>,
    ) -> impl Future<Output = RedisResult<()>> + Send;
    /// `CONFIG SET key value`.
    fn config_set(
        &self,
        at: &Endpoint,
        key: &str,
        value: &str,
    ) -> impl Future<Output = RedisResult<()>> + Send;
    /// `FAILOVER TO host port TIMEOUT ms` on the primary at `at` (returns once started).
    fn failover_to(
        &self,
        at: &Endpoint,
        target: &Endpoint,
        timeout: Duration,
    ) -> impl Future<Output = RedisResult<()>> + Send;
    /// `REPLCONF GETACK *` on a replica: it acknowledges its offset to its primary now
    /// instead of at its next once-a-second ACK. A FAILOVER waits for that ACK (and a
    /// paused primary does not ask for it), so this shortens the planned write pause.
    fn request_ack(&self, at: &Endpoint) -> impl Future<Output = RedisResult<()>> + Send;
}

/// [`RedisNodes`] over redis-rs.
#[derive(Clone)]
pub struct RedisClient {
    password: Option<String>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("RedisClient")
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// `password` empty means no AUTH. Timeouts are short: a frozen node must not stall
    /// the whole pass.
    pub fn new(password: &str) -> Self {
        Self {
            password: (!password.is_empty()).then(|| password.to_string()),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
        }
    }

    pub fn with_timeouts(mut self, connect: Duration, response: Duration) -> Self {
        self.connect_timeout = connect;
        self.response_timeout = response;
        self
    }

    async fn connect(&self, at: &Endpoint) -> RedisResult<redis::aio::MultiplexedConnection> {
        let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(pw) = &self.password {
            settings = settings.set_password(pw);
        }
        let info = ConnectionAddr::Tcp(at.host.clone(), at.port)
            .into_connection_info()?
            .set_redis_settings(settings);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        redis::Client::open(info)?.get_multiplexed_async_connection_with_config(&config).await
    }
}

impl RedisNodes for RedisClient {
    async fn snapshot(&self, at: &Endpoint) -> RedisResult<Snapshot> {
        let mut c = self.connect(at).await?;
        let (info, config): (String, BTreeMap<String, String>) = redis::pipe()
            .cmd("INFO")
            .arg("server")
            .arg("replication")
            .arg("persistence")
            .arg("keyspace")
            .cmd("CONFIG")
            .arg("GET")
            .arg("min-replicas-to-write")
            .query_async(&mut c)
            .await?;
        let min_replicas_to_write = config.get("min-replicas-to-write").and_then(|v| v.parse().ok());
        Ok(Snapshot { info, min_replicas_to_write })
    }

    async fn replicaof(&self, at: &Endpoint, primary: Option<&Endpoint>) -> RedisResult<()> {
        let mut c = self.connect(at).await?;
        let mut cmd = redis::cmd("REPLICAOF");
        match primary {
            Some(p) => cmd.arg(&p.host).arg(p.port),
            None => cmd.arg("NO").arg("ONE"),
        };
        cmd.query_async(&mut c).await
    }

    async fn config_set(&self, at: &Endpoint, key: &str, value: &str) -> RedisResult<()> {
        let mut c = self.connect(at).await?;
        redis::cmd("CONFIG").arg("SET").arg(key).arg(value).query_async(&mut c).await
    }

    async fn failover_to(&self, at: &Endpoint, target: &Endpoint, timeout: Duration) -> RedisResult<()> {
        let mut c = self.connect(at).await?;
        redis::cmd("FAILOVER")
            .arg("TO")
            .arg(&target.host)
            .arg(target.port)
            .arg("TIMEOUT")
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut c)
            .await
    }

    async fn request_ack(&self, at: &Endpoint) -> RedisResult<()> {
        use redis::aio::ConnectionLike;
        let mut c = self.connect(at).await?;
        // REPLCONF GETACK sends no reply; the PING after it gives one to wait for.
        let mut pipe = redis::pipe();
        pipe.cmd("REPLCONF").arg("GETACK").arg("*").cmd("PING");
        c.req_packed_commands(&pipe, 0, 1).await.map(|_| ())
    }
}
