//! What one Redis node reported: a pure parser of `INFO` text into [`NodeInfo`], and
//! [`NodeObservation`], the per-pod input of [`super::decide`].

use super::node::NodeAddr;

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
    /// The history this node continued from (`master_replid2`) after a promotion or a
    /// partial resync to a new primary; empty when none (Redis prints zeros).
    pub replid2: String,
    /// Up to which offset `replid2`'s history was taken over (`second_repl_offset`; -1
    /// when none).
    pub second_offset: i64,
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
    /// For a primary: every replica it lists (`slaveN:ip=...,port=...`), by the address
    /// the primary knows it by — the one `FAILOVER TO` must name.
    pub replicas: Vec<ListedReplica>,
    /// `master_failover_state` (`no-failover` unless a FAILOVER is running).
    pub failover_state: String,
    /// `CONFIG GET min-replicas-to-write`, when it was read.
    pub min_replicas_to_write: Option<i64>,
    /// Whether the node can write to its volume (`INFO persistence`, and its answer to PING).
    pub persistence: Persistence,
}

/// Whether a node can persist: what `INFO persistence` says about its last RDB save and
/// AOF write, and the `-MISCONF` error a master answers PING (and every write) with while
/// it refuses writes because of them. A full or failing disk shows here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persistence {
    /// `rdb_last_bgsave_status:err`: the last RDB snapshot failed. Redis retries every
    /// 5 s while a save point is due; with `stop-writes-on-bgsave-error yes` (the
    /// default) a master refuses writes meanwhile.
    pub rdb_save_failed: bool,
    /// `aof_last_write_status:err`: appending to the AOF failed; a master refuses writes
    /// until Redis's own retry (every second) succeeds.
    pub aof_write_failed: bool,
    /// The error this node answers PING with while it refuses writes (`MISCONF Errors
    /// writing to the AOF file: No space left on device`); `None` while it accepts them.
    pub write_refusal: Option<String>,
}

impl Persistence {
    /// The node cannot persist (a save or write failed, or it refuses writes for that).
    pub fn failing(&self) -> bool {
        self.rdb_save_failed || self.aof_write_failed || self.write_refusal.is_some()
    }

    /// It refuses writes (`-MISCONF`), though it is alive: reads and replication go on.
    pub fn refuses_writes(&self) -> bool {
        self.write_refusal.is_some()
    }

    /// Redis said why and it is a full volume (ENOSPC, or EDQUOT for a quota).
    pub fn volume_full(&self) -> bool {
        self.write_refusal
            .as_deref()
            .is_some_and(|e| e.contains("No space left on device") || e.contains("Disk quota exceeded"))
    }
}

impl NodeInfo {
    /// Holds no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// This replica follows `ep` (REPLICAOF host may be the short stable name or a
    /// longer form of it such as `NAME-redis-0.NAME-redis-headless.ns.svc.cluster.local`).
    pub fn follows(&self, ep: &NodeAddr) -> bool {
        self.role == Role::Replica
            && self.master_port == Some(ep.port)
            && self.master_host.as_deref().is_some_and(|h| {
                h == ep.host || h.strip_prefix(ep.host.as_str()).is_some_and(|rest| rest.starts_with('.'))
            })
    }
}

/// One `slaveN:` line of a primary's `INFO replication`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedReplica {
    /// The announced address (`replica-announce-ip`), else the IP it connected from.
    pub addr: NodeAddr,
    /// `state=online`: past its initial sync, streaming.
    pub online: bool,
    pub offset: i64,
    /// Seconds since its last acknowledgement.
    pub lag_secs: u64,
}

impl ListedReplica {
    /// Online and acknowledged within the last second: counts for `WAIT` now.
    pub fn in_sync(&self) -> bool {
        self.online && self.lag_secs <= 1
    }

    fn parse(line: &str) -> Option<Self> {
        let (key, rest) = line.trim_end_matches('\r').split_once(':')?;
        key.strip_prefix("slave")?.parse::<u32>().ok()?;
        let get = |name: &str| rest.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
        Some(Self {
            addr: NodeAddr::new(get("ip")?, get("port")?.parse().ok()?),
            online: get("state") == Some("online"),
            offset: get("offset").and_then(|v| v.parse().ok()).unwrap_or(0),
            lag_secs: get("lag").and_then(|v| v.parse().ok()).unwrap_or(u64::MAX),
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
    let replid2 = field(text, "master_replid2")
        .filter(|id| id.bytes().any(|b| b != b'0'))
        .unwrap_or_default()
        .to_string();
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
    let replicas: Vec<ListedReplica> = text.lines().filter_map(ListedReplica::parse).collect();
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
        replid2,
        second_offset: num::<i64>(text, "second_repl_offset")?.unwrap_or(-1),
        offset,
        loading: num::<u8>(text, "loading")?.unwrap_or(0) == 1
            || num::<u8>(text, "async_loading")?.unwrap_or(0) == 1,
        persisting: num::<u8>(text, "aof_rewrite_in_progress")?.unwrap_or(0) == 1
            || num::<u8>(text, "rdb_bgsave_in_progress")?.unwrap_or(0) == 1,
        keys,
        run_id: field(text, "run_id").unwrap_or_default().to_string(),
        uptime_secs: num(text, "uptime_in_seconds")?.unwrap_or(0),
        connected_replicas: num(text, "connected_slaves")?.unwrap_or(0),
        online_replicas: u32::try_from(replicas.iter().filter(|r| r.in_sync()).count()).unwrap_or(u32::MAX),
        replicas,
        failover_state: field(text, "master_failover_state").unwrap_or("no-failover").to_string(),
        min_replicas_to_write: None,
        persistence: Persistence {
            rdb_save_failed: field(text, "rdb_last_bgsave_status") == Some("err"),
            aof_write_failed: field(text, "aof_last_write_status") == Some("err"),
            write_refusal: None,
        },
    })
}

/// Everything known about one Redis pod in this pass: what the API said about the pod
/// and, when it answered, what Redis said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeObservation {
    pub pod: String,
    pub ordinal: u32,
    /// Where the other nodes reach this pod with REPLICAOF (and what it announces).
    pub endpoint: NodeAddr,
    /// The pod IP, when it has one: a primary that knows this replica by the address it
    /// connects from lists it under this IP.
    pub ip: Option<String>,
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

    /// How `primary` lists this node among its replicas, if it does: by the announced
    /// stable name, or by the pod IP it connected from (a node started without
    /// `replica-announce-ip`, e.g. by an older start script).
    pub fn listed_by<'a>(&self, primary: &'a NodeInfo) -> Option<&'a ListedReplica> {
        primary.replicas.iter().find(|r| {
            (r.addr.host == self.endpoint.host || Some(&r.addr.host) == self.ip.as_ref())
                && r.addr.port == self.endpoint.port
        })
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
        assert_eq!(
            i.replicas,
            vec![ListedReplica {
                addr: NodeAddr::new("127.0.0.1", 7001),
                online: true,
                offset: 1234,
                lag_secs: 0
            }]
        );
        assert_eq!((i.run_id.as_str(), i.uptime_secs), ("aaaa", 42));
        assert_eq!(i.replid2, "", "all zeros: no earlier history");
        assert!(!i.link_up && !i.loading && !i.is_empty());
    }

    #[test]
    fn a_primary_lists_replicas_by_their_announced_name_or_ip() {
        let text = MASTER.replace(
            "slave0:ip=127.0.0.1,port=7001,state=online,offset=1234,lag=0\r\n",
            "slave0:ip=demo-redis-1.demo-redis-headless,port=6379,state=online,offset=1200,lag=0\r\n\
             slave1:ip=10.244.0.7,port=6379,state=wait_bgsave,offset=0,lag=3\r\n",
        );
        let p = parse_info(&text).unwrap();
        assert_eq!(p.replicas.len(), 2);
        assert_eq!(p.online_replicas, 1);
        let node = |k: u32, ip: &str| NodeObservation {
            pod: format!("demo-redis-{k}"),
            ordinal: k,
            endpoint: NodeAddr::new(format!("demo-redis-{k}.demo-redis-headless"), 6379),
            ip: Some(ip.to_string()),
            pod_ready: true,
            terminating: false,
            outdated: false,
            info: None,
        };
        let by_name = node(1, "10.244.0.6").listed_by(&p).unwrap();
        assert_eq!(by_name.addr, NodeAddr::new("demo-redis-1.demo-redis-headless", 6379));
        assert!(by_name.in_sync());
        let by_ip = node(2, "10.244.0.7").listed_by(&p).unwrap();
        assert_eq!(by_ip.addr, NodeAddr::new("10.244.0.7", 6379));
        assert!(!by_ip.in_sync(), "not online yet");
        assert_eq!(node(3, "10.244.0.8").listed_by(&p), None);
    }

    #[test]
    fn parses_a_replica_with_a_down_link() {
        let i = parse_info(REPLICA_DOWN).unwrap();
        assert_eq!(i.role, Role::Replica);
        assert_eq!(i.offset, 900);
        assert!(!i.link_up);
        assert_eq!(i.link_down_since_secs, Some(3));
        assert!(i.is_empty());
        assert!(i.follows(&NodeAddr::new("demo-redis-0.demo-redis-headless", 6379)));
        assert!(!i.follows(&NodeAddr::new("demo-redis-1.demo-redis-headless", 6379)));
        assert!(!i.follows(&NodeAddr::new("demo-redis-0.demo-redis-headless", 6380)));
        assert!(!i.follows(&NodeAddr::new("demo-redis-0.demo-redis-head", 6379)), "prefix must end at a dot");
    }

    #[test]
    fn a_longer_dns_form_of_the_host_still_matches() {
        let text =
            REPLICA_DOWN.replace("demo-redis-headless\n", "demo-redis-headless.ns.svc.cluster.local\n");
        let i = parse_info(&text).unwrap();
        assert!(i.follows(&NodeAddr::new("demo-redis-0.demo-redis-headless", 6379)));
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
    fn failed_saves_and_aof_writes_are_seen() {
        let ok = parse_info(MASTER).unwrap();
        assert!(!ok.persistence.failing(), "no persistence fields: nothing failed");
        let text = MASTER.replace(
            "loading:0\r\n",
            "loading:0\r\nrdb_last_bgsave_status:ok\r\naof_last_bgrewrite_status:err\r\naof_last_write_status:err\r\n",
        );
        let p = parse_info(&text).unwrap().persistence;
        assert!(p.aof_write_failed && !p.rdb_save_failed && p.failing());
        assert!(!p.refuses_writes() && !p.volume_full(), "only PING says whether writes are refused");
        let text = MASTER.replace("loading:0\r\n", "loading:0\r\nrdb_last_bgsave_status:err\r\n");
        let p = parse_info(&text).unwrap().persistence;
        assert!(p.rdb_save_failed && !p.aof_write_failed);
        let full = Persistence {
            write_refusal: Some("MISCONF Errors writing to the AOF file: No space left on device".into()),
            ..Persistence::default()
        };
        assert!(full.refuses_writes() && full.volume_full() && full.failing());
        let rdb = Persistence {
            rdb_save_failed: true,
            write_refusal: Some("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.".into()),
            ..Persistence::default()
        };
        assert!(rdb.refuses_writes() && !rdb.volume_full(), "the RDB refusal does not say why");
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
