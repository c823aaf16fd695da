//! What one Redis node reported: a pure parser of `INFO` text into [`NodeInfo`], and
//! [`NodeObservation`], the per-pod input of [`super::decide`].

use super::node::Endpoint;

/// Replication role a node reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

/// The fields of `INFO server replication persistence keyspace` the manager decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub role: Role,
    /// For replicas: the host and port it follows (as configured with REPLICAOF).
    pub master_host: Option<String>,
    pub master_port: Option<u16>,
    /// For replicas: `master_link_status:up`.
    pub link_up: bool,
    /// For replicas whose link is down: seconds since it went down; `None` when the link
    /// is up or the replica never had a link (Redis prints -1).
    pub link_down_since_secs: Option<u64>,
    /// For replicas: a full sync is running (its dataset is being replaced).
    pub sync_in_progress: bool,
    /// Replication history id (`master_replid`); offsets compare only within one id.
    pub replid: String,
    /// Replication offset: `master_repl_offset` of a primary, the applied
    /// `slave_repl_offset` of a replica.
    pub offset: i64,
    /// The node is loading its dataset from disk (or from a full sync).
    pub loading: bool,
    /// A background AOF rewrite or RDB save is running.
    pub persisting: bool,
    /// Keys in all databases.
    pub keys: u64,
    /// Changes on every process restart.
    pub run_id: String,
    pub uptime_secs: u64,
    pub connected_replicas: u32,
    /// For a primary: replicas it sees `state=online` that acknowledged within the last
    /// second (`lag<=1`) — its own view of who is in sync.
    pub online_replicas: u32,
    /// `master_failover_state` (`no-failover` unless a FAILOVER is running).
    pub failover_state: String,
    /// `CONFIG GET min-replicas-to-write`, when it was read.
    pub min_replicas_to_write: Option<i64>,
}

impl NodeInfo {
    /// Holds no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// This replica follows `ep` (REPLICAOF host may be the short stable name or a
    /// longer form of it such as `NAME-redis-0.NAME-redis-headless.ns.svc.cluster.local`).
    pub fn follows(&self, ep: &Endpoint) -> bool {
        self.role == Role::Replica
            && self.master_port == Some(ep.port)
            && self.master_host.as_deref().is_some_and(|h| {
                h == ep.host || h.strip_prefix(ep.host.as_str()).is_some_and(|rest| rest.starts_with('.'))
            })
    }
}

/// Why an `INFO` reply could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("INFO reply has no `{0}` field")]
    Missing(&'static str),
    #[error("INFO field `{field}` has an invalid value `{value}`")]
    Invalid { field: &'static str, value: String },
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim_end_matches('\r').split_once(':')?;
        (k == name).then_some(v.trim())
    })
}

fn num<T: std::str::FromStr>(text: &str, name: &'static str) -> Result<Option<T>, ParseError> {
    match field(text, name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ParseError::Invalid { field: name, value: v.to_string() }),
    }
}

/// Parse the text of `INFO server replication persistence keyspace`.
pub fn parse_info(text: &str) -> Result<NodeInfo, ParseError> {
    let role = match field(text, "role") {
        Some("master") => Role::Master,
        Some("slave") => Role::Replica,
        Some(other) => return Err(ParseError::Invalid { field: "role", value: other.to_string() }),
        None => return Err(ParseError::Missing("role")),
    };
    let replid = field(text, "master_replid").ok_or(ParseError::Missing("master_replid"))?.to_string();
    let offset = match role {
        Role::Master => {
            num::<i64>(text, "master_repl_offset")?.ok_or(ParseError::Missing("master_repl_offset"))?
        }
        Role::Replica => {
            num::<i64>(text, "slave_repl_offset")?.ok_or(ParseError::Missing("slave_repl_offset"))?
        }
    };
    let link_up = role == Role::Replica && field(text, "master_link_status") == Some("up");
    // -1 means "never linked since start": no evidence that this replica was in sync.
    let link_down_since_secs =
        num::<i64>(text, "master_link_down_since_seconds")?.and_then(|s| u64::try_from(s).ok());
    let keys = text
        .lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            l.split_once(':')?.1.split(',').find_map(|kv| kv.strip_prefix("keys=")?.parse::<u64>().ok())
        })
        .sum();
    Ok(NodeInfo {
        role,
        master_host: field(text, "master_host").map(str::to_string),
        master_port: num(text, "master_port")?,
        link_up,
        link_down_since_secs,
        sync_in_progress: num::<u8>(text, "master_sync_in_progress")?.unwrap_or(0) == 1,
        replid,
        offset,
        loading: num::<u8>(text, "loading")?.unwrap_or(0) == 1
            || num::<u8>(text, "async_loading")?.unwrap_or(0) == 1,
        persisting: num::<u8>(text, "aof_rewrite_in_progress")?.unwrap_or(0) == 1
            || num::<u8>(text, "rdb_bgsave_in_progress")?.unwrap_or(0) == 1,
        keys,
        run_id: field(text, "run_id").unwrap_or_default().to_string(),
        uptime_secs: num(text, "uptime_in_seconds")?.unwrap_or(0),
        connected_replicas: num(text, "connected_slaves")?.unwrap_or(0),
        online_replicas: u32::try_from(
            text.lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .filter(|l| {
                    l.split(',')
                        .find_map(|kv| kv.trim_end_matches('\r').strip_prefix("lag=")?.parse::<u64>().ok())
                        .is_some_and(|lag| lag <= 1)
                })
                .count(),
        )
        .unwrap_or(u32::MAX),
        failover_state: field(text, "master_failover_state").unwrap_or("no-failover").to_string(),
        min_replicas_to_write: None,
    })
}

/// Everything known about one Redis pod in this pass: what the API said about the pod
/// and, when it answered, what Redis said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeObservation {
    pub pod: String,
    pub ordinal: u32,
    /// Where the other nodes reach this pod with REPLICAOF.
    pub endpoint: Endpoint,
    pub pod_ready: bool,
    pub terminating: bool,
    /// Runs an old StatefulSet revision and must be restarted (planned change).
    pub outdated: bool,
    /// `None`: the node did not answer (down, frozen, no IP yet).
    pub info: Option<NodeInfo>,
}

impl NodeObservation {
    pub fn reachable(&self) -> bool {
        self.info.is_some()
    }
    pub fn is_master(&self) -> bool {
        self.info.as_ref().is_some_and(|i| i.role == Role::Master)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:aaaa\r\nuptime_in_seconds:42\r\n\
        # Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=127.0.0.1,port=7001,state=online,offset=1234,lag=0\r\n\
        master_failover_state:no-failover\r\nmaster_replid:r1\r\nmaster_replid2:0000\r\n\
        master_repl_offset:1234\r\nsecond_repl_offset:-1\r\n\
        # Persistence\r\nloading:0\r\nasync_loading:0\r\n\
        # Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb2:keys=4,expires=0,avg_ttl=0\r\n";

    const REPLICA_DOWN: &str = "# Replication\nrole:slave\nmaster_host:demo-redis-0.demo-redis-headless\n\
        master_port:6379\nmaster_link_status:down\nmaster_last_io_seconds_ago:-1\n\
        master_sync_in_progress:0\nslave_read_repl_offset:900\nslave_repl_offset:900\n\
        master_link_down_since_seconds:3\nconnected_slaves:0\nmaster_replid:r1\n\
        master_repl_offset:900\n# Persistence\nloading:0\n# Keyspace\n";

    #[test]
    fn parses_a_primary() {
        let i = parse_info(MASTER).unwrap();
        assert_eq!(i.role, Role::Master);
        assert_eq!(i.offset, 1234);
        assert_eq!(i.keys, 7, "keys of every db are summed");
        assert_eq!(i.connected_replicas, 2);
        assert_eq!(i.online_replicas, 1, "slave0 is online with lag 0");
        assert_eq!((i.run_id.as_str(), i.uptime_secs), ("aaaa", 42));
        assert!(!i.link_up && !i.loading && !i.is_empty());
    }

    #[test]
    fn parses_a_replica_with_a_down_link() {
        let i = parse_info(REPLICA_DOWN).unwrap();
        assert_eq!(i.role, Role::Replica);
        assert_eq!(i.offset, 900);
        assert!(!i.link_up);
        assert_eq!(i.link_down_since_secs, Some(3));
        assert!(i.is_empty());
        assert!(i.follows(&Endpoint::new("demo-redis-0.demo-redis-headless", 6379)));
        assert!(!i.follows(&Endpoint::new("demo-redis-1.demo-redis-headless", 6379)));
        assert!(!i.follows(&Endpoint::new("demo-redis-0.demo-redis-headless", 6380)));
        assert!(!i.follows(&Endpoint::new("demo-redis-0.demo-redis-head", 6379)), "prefix must end at a dot");
    }

    #[test]
    fn a_longer_dns_form_of_the_host_still_matches() {
        let text =
            REPLICA_DOWN.replace("demo-redis-headless\n", "demo-redis-headless.ns.svc.cluster.local\n");
        let i = parse_info(&text).unwrap();
        assert!(i.follows(&Endpoint::new("demo-redis-0.demo-redis-headless", 6379)));
    }

    #[test]
    fn never_linked_replica_has_no_down_since() {
        let text =
            REPLICA_DOWN.replace("master_link_down_since_seconds:3", "master_link_down_since_seconds:-1");
        assert_eq!(parse_info(&text).unwrap().link_down_since_secs, None);
    }

    #[test]
    fn loading_and_syncing_are_seen() {
        let text = REPLICA_DOWN
            .replace("loading:0", "loading:1")
            .replace("master_sync_in_progress:0", "master_sync_in_progress:1");
        let i = parse_info(&text).unwrap();
        assert!(i.loading && i.sync_in_progress);
    }

    #[test]
    fn bad_replies_are_errors() {
        assert_eq!(parse_info("# Server\nrun_id:x\n"), Err(ParseError::Missing("role")));
        assert!(matches!(parse_info("role:sentinel\n"), Err(ParseError::Invalid { field: "role", .. })));
        assert!(matches!(
            parse_info("role:master\nmaster_replid:x\nmaster_repl_offset:abc\n"),
            Err(ParseError::Invalid { field: "master_repl_offset", .. })
        ));
    }
}
