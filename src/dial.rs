//! How every component dials Redis: ACL credentials, optional TLS that verifies the
//! server's chain against our CA **and** its host name, and dialling one address while
//! verifying another name (the operator reads pod IPs from the API, but certificates
//! name pods by DNS: `NAME-redis-K.NAME-redis-headless`).
//!
//! Secrets (the password, the CA) are passed in already read: callers re-read their
//! files at every new connection ([`read_secret`], [`TlsCa::read`]), so a rotated
//! Kubernetes Secret is used on the next reconnect without a restart.
//!
//! Certificates: rustls (webpki, like NSS) honours a wildcard SAN only when at least two
//! labels follow the `*`, so `*.demo-redis-headless` does NOT cover
//! `demo-redis-0.demo-redis-headless`. List each pod's short name (`DNS:NAME-redis-K.
//! NAME-redis-headless` for every K) plus `DNS:NAME-redis-primary`, or verify longer names
//! (`*.NAME-redis-headless.NAMESPACE.svc`).
//!
//! Connections never send `CLIENT SETINFO` (redis-rs's library name): an ACL user limited
//! to the commands it needs would be refused it, filling `ACL LOG` on every connect.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::io::AsyncDNSResolver;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    RedisFuture, RedisResult, TlsCertificates,
};

/// ACL user and password (`None`/`None`: no AUTH, the `default` user of an open server).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credentials {
    /// `username` (if any) with `password` (if any).
    pub fn new(username: Option<&str>, password: Option<&str>) -> Self {
        Self { username: username.map(str::to_string), password: password.map(str::to_string) }
    }

    /// Apply to redis-rs connection settings (db and other settings are kept; a `None`
    /// field leaves the existing value).
    pub fn apply(&self, mut settings: RedisConnectionInfo) -> RedisConnectionInfo {
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(pw) = &self.password {
            settings = settings.set_password(pw);
        }
        settings.set_skip_set_lib_name()
    }
}

/// TLS to Redis: the server's chain must lead to this CA (PEM, one or more
/// certificates) and its certificate must name the host we verify.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCa {
    pem: Vec<u8>,
}

impl std::fmt::Debug for TlsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsCa({} bytes of PEM)", self.pem.len())
    }
}

impl TlsCa {
    pub fn from_pem(pem: impl Into<Vec<u8>>) -> Self {
        Self { pem: pem.into() }
    }

    /// Read a CA bundle file (PEM).
    pub fn read(path: &Path) -> std::io::Result<Self> {
        std::fs::read(path).map(Self::from_pem)
    }

    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

/// Read a secret file (a password from a Kubernetes Secret volume). Trailing `\r` and
/// `\n` are stripped, as the shell's `$(cat file)` does, so a file written by `echo`
/// or an editor holds the same password as one written with `printf`.
pub fn read_secret(path: &Path) -> std::io::Result<String> {
    let raw = std::fs::read_to_string(path)?;
    Ok(raw.trim_end_matches(['\r', '\n']).to_string())
}

/// The address redis-rs dials for `host:port`: `TcpTls` (verifying, never `insecure`)
/// with `tls`, plain `Tcp` without.
pub fn addr(host: &str, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls { host: host.to_string(), port, insecure: false, tls_params: None }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    }
}

/// A redis-rs [`Client`] for `host:port`, database `db`. With `tls`, the server's
/// certificate must chain to the CA and name `host` (connect by the name the certificate
/// carries; see [`connection_config`] to reach it at another address).
pub fn client(
    host: &str,
    port: u16,
    db: i64,
    creds: &Credentials,
    tls: Option<&TlsCa>,
) -> RedisResult<Client> {
    let base = addr(host, port, tls.is_some()).into_connection_info()?;
    let info = settings(base, db, creds);
    build(info, tls)
}

/// A redis-rs [`Client`] for an existing [`ConnectionInfo`] (a parsed URL): its address
/// is switched to TLS when `tls` is given, `creds` override its user and password.
pub fn client_for(info: ConnectionInfo, creds: &Credentials, tls: Option<&TlsCa>) -> RedisResult<Client> {
    let info = match (info.addr().clone(), tls) {
        (ConnectionAddr::Tcp(host, port), Some(_)) | (ConnectionAddr::TcpTls { host, port, .. }, Some(_)) => {
            info.set_addr(addr(&host, port, true))
        }
        _ => info,
    };
    let db = info.redis_settings().db();
    let info = settings(info, db, creds);
    build(info, tls)
}

fn settings(info: ConnectionInfo, db: i64, creds: &Credentials) -> ConnectionInfo {
    let s = creds.apply(info.redis_settings().clone().set_db(db));
    info.set_redis_settings(s)
}

fn build(info: ConnectionInfo, tls: Option<&TlsCa>) -> RedisResult<Client> {
    match tls {
        Some(ca) => Client::build_with_tls(
            info,
            TlsCertificates { client_tls: None, root_cert: Some(ca.pem.clone()) },
        ),
        None => Client::open(info),
    }
}

/// Connection settings: timeouts, and with `dial` a resolver that sends the client's
/// host name to that address instead (an IP, or another host name), so TLS verifies the
/// client's host name while the socket goes to `dial`.
pub fn connection_config(
    dial: Option<&str>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> AsyncConnectionConfig {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout));
    match dial {
        Some(d) => cfg.set_dns_resolver(DialInstead { dial: Arc::from(d) }),
        None => cfg,
    }
}

/// Connect to `dial:port` (a host name or an IP). With `tls`, the server's certificate
/// must chain to the CA and name `verify_name` (default: `dial` itself); without, the
/// name is unused. Authenticates with `creds` (database 0).
///
/// The operator dials a pod IP and verifies the pod's stable DNS name:
/// `connect("10.1.2.3", 6379, Some("demo-redis-0.demo-redis-headless"), ...)`.
pub async fn connect(
    dial: &str,
    port: u16,
    verify_name: Option<&str>,
    creds: &Credentials,
    tls: Option<&TlsCa>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> RedisResult<MultiplexedConnection> {
    let (host, resolve) = match verify_name {
        Some(name) if name != dial => (name, Some(dial)),
        _ => (dial, None),
    };
    let client = client(host, port, 0, creds, tls)?;
    let cfg = connection_config(resolve, connect_timeout, response_timeout);
    client.get_multiplexed_async_connection_with_config(&cfg).await
}

/// Resolves every name to `dial` (an IP as is, a host name through the system resolver).
struct DialInstead {
    dial: Arc<str>,
}

impl AsyncDNSResolver for DialInstead {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _host: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            if let Ok(ip) = self.dial.parse::<IpAddr>() {
                let one: Box<dyn Iterator<Item = SocketAddr> + Send> =
                    Box::new(std::iter::once(SocketAddr::new(ip, port)));
                return Ok(one);
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((&*self.dial, port)).await?.collect();
            let many: Box<dyn Iterator<Item = SocketAddr> + Send> = Box::new(addrs.into_iter());
            Ok(many)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let c = Credentials::new(Some("web"), Some("hunter2"));
        let shown = format!("{c:?}");
        assert!(shown.contains("web") && shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{:?}", TlsCa::from_pem("-----BEGIN")).contains("BEGIN"));
    }

    #[test]
    fn secrets_lose_trailing_newlines_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        for (raw, want) in
            [("s3cret\n", "s3cret"), ("s3cret\r\n\n", "s3cret"), (" a b \t", " a b \t"), ("", "")]
        {
            std::fs::write(&p, raw).unwrap();
            assert_eq!(read_secret(&p).unwrap(), want, "{raw:?}");
        }
        assert!(read_secret(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn clients_never_send_the_library_name_and_tls_verifies() {
        let creds = Credentials::new(Some("web"), Some("pw"));
        let c = client("demo-redis-primary", 6379, 2, &creds, None).unwrap();
        let info = c.get_connection_info();
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("demo-redis-primary".into(), 6379));
        let s = info.redis_settings();
        assert_eq!((s.username(), s.password(), s.db()), (Some("web"), Some("pw"), 2));
        assert!(s.skip_set_lib_name());
        let url = "redis://:old@10.0.0.1:7000/1".into_connection_info().unwrap();
        let c = client_for(url, &Credentials::new(None, Some("new")), None).unwrap();
        let s = c.get_connection_info().redis_settings();
        assert_eq!((s.password(), s.db()), (Some("new"), 1));
        let url = "redis://10.0.0.1:7000".into_connection_info().unwrap();
        let c = client_for(url, &Credentials::default(), Some(&TlsCa::from_pem(TEST_CA))).unwrap();
        assert!(matches!(
            c.get_connection_info().addr(),
            ConnectionAddr::TcpTls { host, port: 7000, insecure: false, tls_params: Some(_) } if host == "10.0.0.1"
        ));
    }

    /// A real self-signed CA (public certificate only; its key was thrown away). The
    /// integration tests verify chains against CAs they generate.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBoDCCAUWgAwIBAgIUId3/aSC5Ut1EnC3EFW9SVtZyzT4wCgYIKoZIzj0EAwIw
JDEiMCAGA1UEAwwZY291bnRlcnN0YWNrLXVuaXQtdGVzdC1jYTAgFw0yNjExMzAw
MDExMTBaGA8yMTI2MTEwNjAwMTExMFowJDEiMCAGA1UEAwwZY291bnRlcnN0YWNr
LXVuaXQtdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDfCA7qYV3/k
QBh9xYDcjsFM6ZYxAV/qnlKov4FYYluUPtXY0CxRFqrQAS1fc66Slfkk6twassHc
skY4PZKxzxejUzBRMB0GA1UdDgQWBBSCRoYm/j9z90tNKCweCAXoIhzzFjAfBgNV
HSMEGDAWgBSCRoYm/j9z90tNKCweCAXoIhzzFjAPBgNVHRMBAf8EBTADAQH/MAoG
CCqGSM49BAMCA0kAMEYCIQCiTQX+zL+6MUtOtN2jmP+2QX2YsNgxnRr6V+9I44IC
JQIhAPWK4HUyNjIRPDHLU95rd7PxLd6fgKWUZOaW2hbp94gw
-----END CERTIFICATE-----
";
}
