//! `counterstack web` settings: flags with environment fallbacks, validated into a
//! [`Config`] by a pure function so every misconfiguration names the setting at fault.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::error::Error;

/// `counterstack web` arguments. Every flag also reads the environment variable shown.
/// The original Flask app's variables (`REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`, `PORT`)
/// are honoured when `REDIS_URL` / `LISTEN_ADDR` are absent.
#[derive(Args, Debug, Clone, Default)]
pub struct WebArgs {
    /// Address to listen on [default: 0.0.0.0:8080, or 0.0.0.0:$PORT].
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<String>,
    /// Port of the original app; used when LISTEN_ADDR is absent.
    #[arg(long, env = "PORT", hide = true)]
    pub port: Option<String>,
    /// Redis primary URL, e.g. redis://:password@host:6379/0.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis host of the original app; used when REDIS_URL is absent.
    #[arg(long, env = "REDIS_HOST", hide = true)]
    pub redis_host: Option<String>,
    /// Redis port of the original app; used when REDIS_URL is absent.
    #[arg(long, env = "REDIS_PORT", hide = true)]
    pub redis_port: Option<String>,
    /// Redis database of the original app; used when REDIS_URL is absent.
    #[arg(long, env = "REDIS_DB", hide = true)]
    pub redis_db: Option<String>,
    /// Redis password (used when the URL carries none). Prefer REDIS_PASSWORD_FILE.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Redis ACL user (used when the URL carries none).
    #[arg(long, env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// File holding the Redis password (a Secret volume), read at every new connection so
    /// a rotated password is used on the next reconnect; trailing newlines are ignored.
    /// Wins over REDIS_PASSWORD and a password in the URL.
    #[arg(long, env = "REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<String>,
    /// CA bundle (PEM) that Redis's certificate must chain to: turns TLS on (verifying the
    /// CA and the host name). Re-read at every new connection. Required by rediss:// URLs.
    #[arg(long, env = "REDIS_TLS_CA_FILE")]
    pub redis_tls_ca_file: Option<String>,
    /// Redis replica URL for reads (with READ_FROM=replicas).
    #[arg(long, env = "REDIS_REPLICA_URL", hide_env_values = true)]
    pub redis_replica_url: Option<String>,
    /// Where GET /api/counter reads: primary or replicas (falls back to the primary).
    #[arg(long, env = "READ_FROM", default_value = "primary")]
    pub read_from: String,
    /// Replicas that must confirm a write (WAIT) before it is acknowledged.
    #[arg(long, env = "SYNC_REPLICAS", default_value = "0")]
    pub sync_replicas: String,
    /// How long a write waits for SYNC_REPLICAS confirmations before answering 503.
    #[arg(long, env = "SYNC_TIMEOUT_MS", default_value = "250")]
    pub sync_timeout_ms: String,
    /// Coalesce concurrent writes: increments (and decrements) that arrive while a batch
    /// is in flight are applied as one INCRBY, each answered with its own value. `false`
    /// sends one command per write.
    #[arg(long, env = "COALESCE_WRITES", default_value = "true")]
    pub coalesce_writes: String,
    /// After SIGTERM, how long in-flight requests may take before the process exits.
    #[arg(long, env = "DRAIN_SECONDS", default_value = "5")]
    pub drain_seconds: String,
    /// After SIGTERM, how long the service keeps accepting (readyz 503, responses carry
    /// `Connection: close`) so load balancers move away before the listener closes.
    #[arg(long, env = "DRAIN_DELAY_MS", default_value = "1000")]
    pub drain_delay_ms: String,
    /// Allowed CORS origins: `*` (any, the default) or a comma-separated list.
    #[arg(long, env = "CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,
    /// Redis command timeout (milliseconds); raised to SYNC_TIMEOUT_MS + 1000 if lower.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value = "1000")]
    pub redis_timeout_ms: String,
    /// Tokio worker threads; 0 runs everything on one thread (current_thread runtime).
    #[arg(long, env = "WORKER_THREADS", default_value = "0")]
    pub worker_threads: String,
    /// Redis client implementation: multiplexed (default) or manager (benchmark knob).
    #[arg(long, env = "REDIS_CLIENT", default_value = "multiplexed", hide = true)]
    pub redis_client: String,
}

/// Parses `counterstack web` flags from an iterator (tests and tools; the CLI uses clap).
#[derive(Parser, Debug)]
struct WebCli {
    #[command(flatten)]
    args: WebArgs,
}

impl WebArgs {
    /// Parse flags as `counterstack web FLAGS...` would (environment fallbacks included).
    pub fn try_parse_from<I, T>(iter: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        WebCli::try_parse_from(iter).map(|c| c.args)
    }
}

/// Where reads go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadFrom {
    Primary,
    Replicas,
}

/// Which redis-rs connection type carries the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RedisClientKind {
    Multiplexed,
    Manager,
}

/// Allowed CORS origins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

/// Secrets read at every new Redis connection (never once at start), so rotated
/// Kubernetes Secrets apply on the next reconnect without a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisSecrets {
    /// REDIS_PASSWORD_FILE: the password (over any other source).
    pub password_file: Option<PathBuf>,
    /// REDIS_TLS_CA_FILE: TLS on, verified against this CA and the host name.
    pub tls_ca_file: Option<PathBuf>,
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// The primary's address (`TcpTls` when TLS is on), database, user and the password
    /// given inline (REDIS_PASSWORD or the URL), which `secrets.password_file` overrides.
    pub primary: ConnectionInfo,
    pub replica: Option<ConnectionInfo>,
    pub secrets: RedisSecrets,
    pub read_from: ReadFrom,
    pub sync_replicas: u32,
    pub sync_timeout: Duration,
    pub coalesce_writes: bool,
    pub drain: Duration,
    pub drain_delay: Duration,
    pub cors: CorsOrigins,
    pub redis_timeout: Duration,
    pub worker_threads: usize,
    pub redis_client: RedisClientKind,
}

fn config_err(setting: &'static str, reason: impl Into<String>) -> Error {
    Error::Config { setting, reason: reason.into() }
}

fn number<T: std::str::FromStr>(setting: &'static str, raw: &str) -> Result<T, Error>
where
    T::Err: std::fmt::Display,
{
    raw.trim().parse::<T>().map_err(|e| config_err(setting, format!("{raw:?} is not a valid number ({e})")))
}

/// User and password given inline (the password file is read per connection).
#[derive(Clone, Copy)]
struct Inline<'a> {
    username: Option<&'a str>,
    password: Option<&'a str>,
}

fn redis_url(setting: &'static str, raw: &str, auth: Inline<'_>, tls: bool) -> Result<ConnectionInfo, Error> {
    let info = raw.trim().into_connection_info().map_err(|e| config_err(setting, format!("{raw:?}: {e}")))?;
    let info = match info.addr().clone() {
        ConnectionAddr::TcpTls { insecure: true, .. } => {
            return Err(config_err(setting, "#insecure skips certificate verification; not supported"));
        }
        ConnectionAddr::TcpTls { .. } if !tls => {
            return Err(config_err(
                "REDIS_TLS_CA_FILE",
                format!("{setting} is rediss://, which needs a CA file"),
            ));
        }
        ConnectionAddr::Tcp(host, port) if tls => info.set_addr(crate::dial::addr(&host, port, true)),
        _ => info,
    };
    Ok(with_auth(info, auth))
}

/// The URL's own user and password win; REDIS_USERNAME and REDIS_PASSWORD fill in when
/// the URL has none.
fn with_auth(info: ConnectionInfo, auth: Inline<'_>) -> ConnectionInfo {
    let mut settings = info.redis_settings().clone();
    match auth.password {
        Some(pw) if !pw.is_empty() && settings.password().is_none() => settings = settings.set_password(pw),
        _ => {}
    }
    match auth.username {
        Some(user) if !user.is_empty() && settings.username().is_none() => {
            settings = settings.set_username(user)
        }
        _ => {}
    }
    info.set_redis_settings(settings)
}

fn path(setting: &'static str, raw: Option<&str>) -> Result<Option<PathBuf>, Error> {
    match raw.map(str::trim) {
        None => Ok(None),
        Some("") => Err(config_err(setting, "must not be empty (unset it instead)")),
        Some(p) => Ok(Some(PathBuf::from(p))),
    }
}

impl Config {
    /// Validate raw settings. Pure: no I/O, so every rule is unit-tested.
    pub fn from_args(a: &WebArgs) -> Result<Self, Error> {
        let listen = match (&a.listen_addr, &a.port) {
            (Some(addr), _) => addr
                .trim()
                .parse::<SocketAddr>()
                .map_err(|e| config_err("LISTEN_ADDR", format!("{addr:?} is not HOST:PORT ({e})")))?,
            (None, Some(port)) => SocketAddr::from(([0, 0, 0, 0], number::<u16>("PORT", port)?)),
            (None, None) => SocketAddr::from(([0, 0, 0, 0], 8080)),
        };
        let secrets = RedisSecrets {
            password_file: path("REDIS_PASSWORD_FILE", a.redis_password_file.as_deref())?,
            tls_ca_file: path("REDIS_TLS_CA_FILE", a.redis_tls_ca_file.as_deref())?,
        };
        let tls = secrets.tls_ca_file.is_some();
        let auth = Inline { username: a.redis_username.as_deref(), password: a.redis_password.as_deref() };
        let primary = match &a.redis_url {
            Some(url) => redis_url("REDIS_URL", url, auth, tls)?,
            None => {
                let host = a.redis_host.as_deref().map(str::trim).unwrap_or("localhost");
                if host.is_empty() {
                    return Err(config_err("REDIS_HOST", "must not be empty"));
                }
                let port = match &a.redis_port {
                    Some(p) => number::<u16>("REDIS_PORT", p)?,
                    None => 6379,
                };
                let db = match &a.redis_db {
                    Some(d) => number::<i64>("REDIS_DB", d)?,
                    None => 0,
                };
                if db < 0 {
                    return Err(config_err("REDIS_DB", format!("{db} is negative")));
                }
                let info = crate::dial::addr(host, port, tls)
                    .into_connection_info()
                    .map_err(|e| config_err("REDIS_HOST", e.to_string()))?;
                let settings = info.redis_settings().clone().set_db(db);
                with_auth(info.set_redis_settings(settings), auth)
            }
        };
        let replica = match &a.redis_replica_url {
            Some(url) if !url.trim().is_empty() => Some(redis_url("REDIS_REPLICA_URL", url, auth, tls)?),
            _ => None,
        };
        let read_from = ReadFrom::from_str(a.read_from.trim(), true)
            .map_err(|_| config_err("READ_FROM", format!("{:?} is not primary or replicas", a.read_from)))?;
        if read_from == ReadFrom::Replicas && replica.is_none() {
            return Err(config_err("READ_FROM", "replicas needs REDIS_REPLICA_URL"));
        }
        let sync_replicas = number::<u32>("SYNC_REPLICAS", &a.sync_replicas)?;
        let sync_timeout_ms = number::<u64>("SYNC_TIMEOUT_MS", &a.sync_timeout_ms)?;
        // WAIT with timeout 0 blocks forever: refuse it rather than hang every write.
        if sync_replicas > 0 && sync_timeout_ms == 0 {
            return Err(config_err("SYNC_TIMEOUT_MS", "must be > 0 when SYNC_REPLICAS > 0"));
        }
        let coalesce_writes = match a.coalesce_writes.trim() {
            "true" => true,
            "false" => false,
            other => return Err(config_err("COALESCE_WRITES", format!("{other:?} is not true or false"))),
        };
        let drain = Duration::from_secs(number::<u64>("DRAIN_SECONDS", &a.drain_seconds)?);
        let drain_delay = Duration::from_millis(number::<u64>("DRAIN_DELAY_MS", &a.drain_delay_ms)?);
        let cors = parse_cors(&a.cors_origins)?;
        let timeout_ms = number::<u64>("REDIS_TIMEOUT_MS", &a.redis_timeout_ms)?;
        if timeout_ms == 0 {
            return Err(config_err("REDIS_TIMEOUT_MS", "must be > 0"));
        }
        // A WAIT legitimately takes up to SYNC_TIMEOUT_MS: the command timeout must outlast it.
        let redis_timeout = Duration::from_millis(timeout_ms.max(sync_timeout_ms.saturating_add(1000)));
        let worker_threads = number::<usize>("WORKER_THREADS", &a.worker_threads)?;
        if worker_threads > 64 {
            return Err(config_err("WORKER_THREADS", format!("{worker_threads} is more than 64")));
        }
        let redis_client = RedisClientKind::from_str(a.redis_client.trim(), true).map_err(|_| {
            config_err("REDIS_CLIENT", format!("{:?} is not multiplexed or manager", a.redis_client))
        })?;
        Ok(Self {
            listen,
            primary,
            replica,
            secrets,
            read_from,
            sync_replicas,
            sync_timeout: Duration::from_millis(sync_timeout_ms),
            coalesce_writes,
            drain,
            drain_delay,
            cors,
            redis_timeout,
            worker_threads,
            redis_client,
        })
    }
}

fn parse_cors(raw: &str) -> Result<CorsOrigins, Error> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(CorsOrigins::Any);
    }
    let list: Vec<String> =
        raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    if list.is_empty() {
        return Err(config_err("CORS_ORIGINS", "empty; use * or a comma-separated list of origins"));
    }
    for o in &list {
        let ok = (o.starts_with("http://") || o.starts_with("https://"))
            && axum::http::HeaderValue::from_str(o).is_ok()
            && !o.ends_with('/');
        if !ok {
            return Err(config_err(
                "CORS_ORIGINS",
                format!("{o:?} is not an origin like https://example.com"),
            ));
        }
    }
    Ok(CorsOrigins::List(list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ConnectionAddr;

    fn parse(flags: &[&str]) -> Result<Config, Error> {
        let mut argv = vec!["web"];
        argv.extend_from_slice(flags);
        let args = WebArgs::try_parse_from(argv).expect("flags parse");
        Config::from_args(&args)
    }

    fn setting(r: Result<Config, Error>) -> &'static str {
        match r {
            Err(Error::Config { setting, .. }) => setting,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_original() {
        let c = Config::from_args(&WebArgs {
            read_from: "primary".into(),
            sync_replicas: "0".into(),
            sync_timeout_ms: "250".into(),
            drain_seconds: "5".into(),
            drain_delay_ms: "1000".into(),
            cors_origins: "*".into(),
            redis_timeout_ms: "1000".into(),
            worker_threads: "0".into(),
            redis_client: "multiplexed".into(),
            coalesce_writes: "true".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.primary.addr(), &ConnectionAddr::Tcp("localhost".into(), 6379));
        assert_eq!(c.read_from, ReadFrom::Primary);
        assert_eq!(c.sync_replicas, 0);
        assert_eq!(c.sync_timeout, Duration::from_millis(250));
        assert_eq!(c.drain, Duration::from_secs(5));
        assert_eq!(c.cors, CorsOrigins::Any);
        assert_eq!(c.redis_timeout, Duration::from_millis(1250));
        assert!(c.coalesce_writes);
        assert!(parse(&[]).unwrap().coalesce_writes, "coalescing is on by default");
        assert!(!parse(&["--coalesce-writes", "false"]).unwrap().coalesce_writes);
    }

    #[test]
    fn legacy_variables_build_the_address() {
        let c = parse(&[
            "--redis-host",
            "redis-master",
            "--redis-port",
            "6380",
            "--redis-db",
            "2",
            "--redis-password",
            "s3cret",
            "--port",
            "5000",
        ])
        .unwrap();
        assert_eq!(c.primary.addr(), &ConnectionAddr::Tcp("redis-master".into(), 6380));
        assert_eq!(c.primary.redis_settings().db(), 2);
        assert_eq!(c.primary.redis_settings().password(), Some("s3cret"));
        assert_eq!(c.listen, "0.0.0.0:5000".parse().unwrap());
    }

    #[test]
    fn url_wins_over_legacy_and_keeps_its_password() {
        let c = parse(&[
            "--redis-url",
            "redis://:own@10.0.0.1:7000/1",
            "--redis-host",
            "x",
            "--redis-password",
            "other",
        ])
        .unwrap();
        assert_eq!(c.primary.addr(), &ConnectionAddr::Tcp("10.0.0.1".into(), 7000));
        assert_eq!(c.primary.redis_settings().password(), Some("own"));
        let c = parse(&["--redis-url", "redis://10.0.0.1:7000", "--redis-password", "pw"]).unwrap();
        assert_eq!(c.primary.redis_settings().password(), Some("pw"));
    }

    #[test]
    fn each_bad_setting_is_named() {
        assert_eq!(setting(parse(&["--redis-url", "http://nope"])), "REDIS_URL");
        assert_eq!(setting(parse(&["--redis-port", "70000"])), "REDIS_PORT");
        assert_eq!(setting(parse(&["--redis-db", "x"])), "REDIS_DB");
        assert_eq!(setting(parse(&["--port=-1"])), "PORT");
        assert_eq!(setting(parse(&["--listen-addr", "nowhere"])), "LISTEN_ADDR");
        assert_eq!(setting(parse(&["--sync-replicas", "two"])), "SYNC_REPLICAS");
        assert_eq!(setting(parse(&["--sync-timeout-ms=-5"])), "SYNC_TIMEOUT_MS");
        assert_eq!(setting(parse(&["--sync-replicas", "1", "--sync-timeout-ms", "0"])), "SYNC_TIMEOUT_MS");
        assert_eq!(setting(parse(&["--drain-seconds", "1.5"])), "DRAIN_SECONDS");
        assert_eq!(setting(parse(&["--read-from", "sideways"])), "READ_FROM");
        assert_eq!(setting(parse(&["--read-from", "replicas"])), "READ_FROM");
        assert_eq!(setting(parse(&["--redis-replica-url", "bogus://"])), "REDIS_REPLICA_URL");
        assert_eq!(setting(parse(&["--cors-origins", "example.com"])), "CORS_ORIGINS");
        assert_eq!(setting(parse(&["--redis-timeout-ms", "0"])), "REDIS_TIMEOUT_MS");
        assert_eq!(setting(parse(&["--worker-threads", "many"])), "WORKER_THREADS");
        assert_eq!(setting(parse(&["--redis-client", "pool"])), "REDIS_CLIENT");
        assert_eq!(setting(parse(&["--coalesce-writes", "yes"])), "COALESCE_WRITES");
        let msg = parse(&["--sync-replicas", "two"]).unwrap_err().to_string();
        assert!(msg.contains("SYNC_REPLICAS") && msg.contains("two"), "{msg}");
    }

    #[test]
    fn acl_user_and_password_file() {
        let c = parse(&[
            "--redis-url",
            "redis://10.0.0.1:7000",
            "--redis-username",
            "web",
            "--redis-password",
            "inline",
            "--redis-password-file",
            "/etc/redis-auth/web",
        ])
        .unwrap();
        let s = c.primary.redis_settings();
        assert_eq!((s.username(), s.password()), (Some("web"), Some("inline")));
        // The file is read at each connect (and then wins); parsing never touches it.
        assert_eq!(c.secrets.password_file.as_deref(), Some(std::path::Path::new("/etc/redis-auth/web")));
        assert_eq!(c.secrets.tls_ca_file, None);
        let c = parse(&["--redis-url", "redis://own:pw@10.0.0.1", "--redis-username", "web"]).unwrap();
        assert_eq!(c.primary.redis_settings().username(), Some("own"), "the URL's user wins");
        let c = parse(&["--redis-host", "r", "--redis-username", "web"]).unwrap();
        assert_eq!(c.primary.redis_settings().username(), Some("web"));
        assert_eq!(setting(parse(&["--redis-password-file", " "])), "REDIS_PASSWORD_FILE");
        assert_eq!(setting(parse(&["--redis-tls-ca-file", ""])), "REDIS_TLS_CA_FILE");
    }

    #[test]
    fn tls_needs_a_ca_and_covers_every_address() {
        let tls = |host: &str, port| ConnectionAddr::TcpTls {
            host: host.into(),
            port,
            insecure: false,
            tls_params: None,
        };
        let ca = ["--redis-tls-ca-file", "/etc/redis-tls/ca.crt"];
        let c = parse(&[&["--redis-url", "rediss://demo-redis-primary:6379"][..], &ca].concat()).unwrap();
        assert_eq!(c.primary.addr(), &tls("demo-redis-primary", 6379));
        let c = parse(
            &[
                &[
                    "--redis-url",
                    "redis://p:6379",
                    "--redis-replica-url",
                    "redis://r:6379",
                    "--read-from",
                    "replicas",
                ][..],
                &ca,
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(c.primary.addr(), &tls("p", 6379), "a CA file turns TLS on for redis:// too");
        assert_eq!(c.replica.as_ref().map(ConnectionInfo::addr), Some(&tls("r", 6379)));
        let c = parse(&[&["--redis-host", "legacy"][..], &ca].concat()).unwrap();
        assert_eq!(c.primary.addr(), &tls("legacy", 6379));
        assert_eq!(setting(parse(&["--redis-url", "rediss://p:6379"])), "REDIS_TLS_CA_FILE");
        let msg = parse(&["--redis-url", "rediss://p:6379"]).unwrap_err().to_string();
        assert!(msg.contains("needs a CA file"), "{msg}");
        assert_eq!(setting(parse(&["--redis-replica-url", "rediss://r:6379"])), "REDIS_TLS_CA_FILE");
        assert_eq!(
            setting(parse(&[&["--redis-url", "rediss://p:6379/#insecure"][..], &ca].concat())),
            "REDIS_URL"
        );
    }

    #[test]
    fn cors_list_and_replica_reads() {
        let c = parse(&[
            "--cors-origins",
            "https://a.example, http://b.example:8080",
            "--redis-replica-url",
            "redis://127.0.0.1:6380",
            "--read-from",
            "replicas",
        ])
        .unwrap();
        assert_eq!(
            c.cors,
            CorsOrigins::List(vec!["https://a.example".into(), "http://b.example:8080".into()])
        );
        assert_eq!(c.read_from, ReadFrom::Replicas);
        assert!(c.replica.is_some());
    }
}
