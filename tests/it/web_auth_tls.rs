//! Redis with ACL users and TLS (issue 11), against real redis-server processes: how
//! every component dials (`counterstack::dial`: CA and host-name verification, dialling an
//! IP while verifying a DNS name, ACL users), and the web service with the `web` ACL
//! user, a password file that rotates without a restart, and TLS.
//!
//! Certificates are made by the `openssl` CLI in a temp dir for each test.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::free_port;
use common::web::{
    READY, RawClient, WebServer, call, client, metric, until_status, value_of, wait_in_flight,
};
use counterstack::acl::WEB_RULES;
use counterstack::dial::{self, Credentials, TlsCa};
use redis::aio::MultiplexedConnection;
use serde_json::json;

const ADMIN_PW: &str = "admin-pw";
const REPL_PW: &str = "repl-pw";
const SHORT: Duration = Duration::from_secs(2);
/// Names on the test server certificate, plus `localhost` so a replica can name its
/// primary by a name that resolves here. rustls (webpki, like NSS) accepts a wildcard
/// only with at least two labels after it: `*.demo-redis-headless` never matches
/// `demo-redis-0.demo-redis-headless`, so pods' short names must be listed one by one
/// (or dialled by a longer name such as `...demo-redis-headless.demo.svc`).
const SANS: &str = "DNS:*.demo-redis-headless,DNS:demo-redis-0.demo-redis-headless,\
                    DNS:demo-redis-1.demo-redis-headless,DNS:*.demo-redis-headless.demo.svc,\
                    DNS:demo-redis-primary,DNS:localhost";

/// A CA and a server certificate signed by it, made with the openssl CLI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("pki dir");
        let pki = Self { dir };
        pki.make_ca("ca");
        pki.make_server("server", "ca", SANS);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn make_ca(&self, name: &str) {
        crate::common::pki::make_ca(self.dir.path(), name);
    }

    fn make_server(&self, name: &str, ca: &str, sans: &str) {
        crate::common::pki::make_server(self.dir.path(), name, ca, sans);
    }

    fn ca(&self, name: &str) -> TlsCa {
        TlsCa::read(&self.path(&format!("{name}.crt"))).expect("read CA")
    }
}

/// A redis-server with ACL users (`default` off; `admin`, `replication`, `web`), plain TCP
/// or TLS only (`port 0`, `tls-auth-clients no`). SIGKILLed on drop.
struct AclRedis {
    port: u16,
    tls: Option<TlsCa>,
    _dir: tempfile::TempDir,
    child: Child,
}

impl AclRedis {
    /// `tls`: (pki, certificate name, its CA's name) to serve TLS with that certificate.
    /// The `web` user has the operator's rules.
    async fn start(web_password: &str, tls: Option<(&Pki, &str, &str)>) -> Self {
        Self::start_with_rules(web_password, tls, WEB_RULES).await
    }

    /// [`AclRedis::start`] with other rules for the `web` user.
    async fn start_with_rules(web_password: &str, tls: Option<(&Pki, &str, &str)>, web_rules: &str) -> Self {
        let dir = tempfile::tempdir().expect("redis dir");
        let port = free_port();
        let mut conf = format!(
            "bind 127.0.0.1 -::1\nprotected-mode no\nsave \"\"\nappendonly no\ndir {}\nlogfile {}\n\
             repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n\
             user default off\n\
             user admin on >{ADMIN_PW} ~* &* +@all\n\
             user replication on >{REPL_PW} -@all +psync +replconf +ping\n\
             user web on {web_rules} >{web_password}\n\
             masteruser replication\nmasterauth {REPL_PW}\n",
            dir.path().display(),
            dir.path().join("redis.log").display(),
        );
        match tls {
            None => conf.push_str(&format!("port {port}\n")),
            Some((pki, cert, _)) => conf.push_str(&format!(
                "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\ntls-replication yes\n",
                pki.path(&format!("{cert}.crt")).display(),
                pki.path(&format!("{cert}.key")).display(),
                pki.path("ca.crt").display(),
            )),
        }
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf).expect("write redis.conf");
        let child = Command::new("redis-server")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let s = Self { port, tls: tls.map(|(pki, _, ca)| pki.ca(ca)), _dir: dir, child };
        let deadline = Instant::now() + READY;
        while s.admin().await.is_err() {
            assert!(Instant::now() < deadline, "redis-server on {port} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s
    }

    async fn conn(&self, user: &str, pw: &str) -> redis::RedisResult<MultiplexedConnection> {
        // Verified as `localhost`, dialled at 127.0.0.1 (as the operator dials pod IPs).
        dial::connect(
            "127.0.0.1",
            self.port,
            Some("localhost"),
            &creds(user, pw),
            self.tls.as_ref(),
            SHORT,
            SHORT,
        )
        .await
    }

    async fn admin(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.conn("admin", ADMIN_PW).await
    }

    async fn admin_cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = self.admin().await.expect("admin connection");
        redis::cmd(args[0])
            .arg(&args[1..])
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Commands the ACL refused since the server started (`ACL LOG`).
    async fn acl_denials(&self) -> Vec<String> {
        let log: Vec<redis::Value> = self.admin_cmd(&["ACL", "LOG"]).await;
        log.iter().map(|entry| format!("{entry:?}")).collect()
    }

    /// `redis://` (or `rediss://`) `localhost:PORT`, the web's URL.
    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://localhost:{}", self.port)
    }
}

impl Drop for AclRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn creds(user: &str, pw: &str) -> Credentials {
    Credentials::new(Some(user), Some(pw))
}

fn write_secret(path: &Path, value: &str) {
    // As a Secret volume shows a key written by `echo`: with a trailing newline.
    std::fs::write(path, format!("{value}\n")).expect("write secret");
}

async fn ping(conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(conn).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_verifies_the_ca_and_the_host_name() {
    let pki = Pki::new();
    pki.make_ca("other-ca");
    pki.make_server("impostor", "other-ca", SANS);
    let redis = AclRedis::start("web-pw", Some((&pki, "server", "ca"))).await;
    let impostor = AclRedis::start("web-pw", Some((&pki, "impostor", "other-ca"))).await;
    let ca = pki.ca("ca");
    let web = creds("web", "web-pw");
    let connect = |port: u16, name: Option<&'static str>, ca: TlsCa| {
        let web = web.clone();
        async move { dial::connect("127.0.0.1", port, name, &web, Some(&ca), SHORT, SHORT).await }
    };

    // A pod IP dialled, its stable names verified (exact and wildcard SANs).
    for name in [
        "demo-redis-0.demo-redis-headless",
        "demo-redis-1.demo-redis-headless",
        "demo-redis-2.demo-redis-headless.demo.svc",
        "demo-redis-primary",
    ] {
        let mut c =
            connect(redis.port, Some(name), ca.clone()).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ping(&mut c).await.unwrap(), "PONG");
    }
    // A name the certificate does not carry, or the bare IP: refused. So is a name only
    // the short wildcard `*.demo-redis-headless` would cover (see SANS).
    for name in [
        Some("demo-redis-2.demo-redis-headless"),
        Some("demo-redis-0.other-headless"),
        Some("evil.example"),
        None,
    ] {
        let e = connect(redis.port, name, ca.clone()).await.expect_err("a name the certificate lacks");
        assert!(e.to_string().contains("not valid for"), "{name:?}: {e}");
    }
    // A certificate from another CA with all the right names: refused.
    let e = connect(impostor.port, Some("demo-redis-primary"), ca.clone()).await.expect_err("another CA");
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    // ... and trusting only that other CA refuses the real server.
    assert!(connect(redis.port, Some("demo-redis-primary"), pki.ca("other-ca")).await.is_err());
    // Plain TCP to the TLS-only port gets no answer the client accepts.
    let plain = dial::connect("127.0.0.1", redis.port, None, &web, None, SHORT, SHORT).await;
    assert!(plain.is_err(), "plain TCP to a TLS port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_acl_user_over_plain_tcp_wrong_password_and_noperm() {
    let redis = AclRedis::start("web-pw", None).await;
    let mut web = redis.conn("web", "web-pw").await.expect("web user connects");
    assert_eq!(ping(&mut web).await.unwrap(), "PONG");
    let n: i64 = redis::cmd("INCR").arg("counter:value").query_async(&mut web).await.unwrap();
    assert_eq!(n, 1);

    let e = redis.conn("web", "wrong").await.expect_err("wrong password");
    assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e:?}");
    // The default user is off: no password, no entry.
    let anon =
        dial::connect("127.0.0.1", redis.port, None, &Credentials::default(), None, SHORT, SHORT).await;
    match anon {
        Err(e) => panic!("connecting without AUTH is allowed, commands are not: {e}"),
        Ok(mut c) => {
            let e = ping(&mut c).await.expect_err("default user is off");
            assert_eq!(e.code(), Some("NOAUTH"), "{e:?}");
        }
    }

    // The web user may do nothing beyond its commands and keys.
    for args in [
        &["FLUSHALL"][..],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["KEYS", "*"],
        &["DEL", "counter:value"],
        &["SET", "other-key", "1"],
    ] {
        let r: redis::RedisResult<redis::Value> =
            redis::cmd(args[0]).arg(&args[1..]).query_async(&mut web).await;
        let e = r.expect_err("refused");
        assert_eq!(e.code(), Some("NOPERM"), "{args:?}: {e:?}");
    }
    let v: Option<String> = redis::cmd("GET").arg("counter:value").query_async(&mut web).await.unwrap();
    assert_eq!(v.as_deref(), Some("1"), "FLUSHALL and DEL were refused");
}

/// The web service logged in to `url` as `web`, its password in `pw_file`, with `extra`
/// flags (the client kind, a CA file).
async fn web_as_web_user(url: &str, pw_file: &Path, extra: &[&str]) -> WebServer {
    let mut flags = vec!["--redis-url", url, "--redis-username", "web", "--redis-password-file"];
    flags.push(pw_file.to_str().unwrap());
    flags.extend(extra);
    WebServer::start(&flags).await
}

/// [`web_as_web_user`] with client `kind` and a fresh password file holding `password`
/// (returned, to rotate it; the directory lives as long as the guard), ready, after one
/// increment.
async fn web_on_password_file(
    redis: &AclRedis,
    kind: &str,
    password: &str,
) -> (WebServer, tempfile::TempDir, PathBuf) {
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = secrets.path().join("web");
    write_secret(&pw_file, password);
    let web = web_as_web_user(&redis.url(), &pw_file, &["--redis-client", kind]).await;
    web.wait_ready(200, READY).await;
    assert_eq!(
        call(&client(), "POST", &web.url("/api/counter/increment")).await,
        (200, json!({"value": 1})),
        "{kind}"
    );
    (web, secrets, pw_file)
}

/// `n` increments sent together while Redis holds writes (`CLIENT PAUSE WRITE`), so all
/// but the first queue behind the batch in flight and go out as one batch; their values.
async fn paused_burst(redis: &AclRedis, web: &WebServer, n: usize) -> Vec<i64> {
    let _: () = redis.admin_cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]).await;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut c = RawClient::connect(web.addr).await.unwrap();
        tasks.push(tokio::spawn(async move { c.request("POST", "/api/counter/increment").await.unwrap() }));
    }
    wait_in_flight(web, n).await;
    let _: () = redis.admin_cmd(&["CLIENT", "UNPAUSE"]).await;
    let mut values = Vec::new();
    for t in tasks {
        let (status, body, _) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        values.push(value_of(&body));
    }
    values.sort_unstable();
    values
}

/// Both client kinds, each with the ACL user: every endpoint works and the ACL log
/// stays empty (the service sends no command beyond the `web` rules: no CLIENT SETINFO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_counts_with_only_the_web_acl_commands() {
    for kind in ["multiplexed", "manager"] {
        let redis = AclRedis::start("web-pw", None).await;
        let (web, _secrets, _) = web_on_password_file(&redis, kind, "web-pw").await;
        let c = client();
        assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 2})));
        assert_eq!(call(&c, "POST", &web.url("/api/counter/decrement")).await, (200, json!({"value": 1})));
        assert_eq!(call(&c, "GET", &web.url("/api/counter")).await, (200, json!({"value": 1})));
        // The idempotency script (EVAL, its keys under counter:idempotency:).
        for _ in 0..2 {
            let r = c
                .post(web.url("/api/counter/increment"))
                .header("Idempotency-Key", "k1")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{kind}");
            assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"value": 2}));
        }
        assert_eq!(call(&c, "POST", &web.url("/api/counter/reset")).await, (200, json!({"value": 0})));
        // Coalesced increments (INCRBY).
        assert_eq!(paused_burst(&redis, &web, 20).await, (1..=20).collect::<Vec<i64>>(), "{kind}");
        // Health checks (ROLE every second) have run at least once.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(redis.acl_denials().await, Vec::<String>::new(), "{kind}: commands the web ACL refused");
        web.stop().await.unwrap();
    }
}

/// A `web` user whose ACL predates coalescing (no `INCRBY`): the refused run is retried
/// one command per write, and that connection keeps sending one command per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_without_incrby_in_its_acl_still_counts_exactly() {
    let rules = WEB_RULES.replace(" +incrby", "");
    assert_ne!(rules, WEB_RULES);
    let redis = AclRedis::start_with_rules("web-pw", None, &rules).await;
    let (web, _secrets, _) = web_on_password_file(&redis, "multiplexed", "web-pw").await;
    assert_eq!(paused_burst(&redis, &web, 20).await, (2..=21).collect::<Vec<i64>>());
    let refused = r#"counterstack_web_redis_errors_total{node="primary",kind="noperm_incrby"}"#;
    assert_eq!(metric(&web, refused).await, 1.0, "one INCRBY refused");
    assert_eq!(paused_burst(&redis, &web, 20).await, (22..=41).collect::<Vec<i64>>());
    // Not tried again on the same connection (a health check that lands in the pause
    // may have replaced it: a new connection tries INCRBY once more).
    let reconnects = metric(&web, "counterstack_web_redis_reconnects_total").await;
    assert!(metric(&web, refused).await <= 1.0 + reconnects, "INCRBY tried again on the same connection");
    assert_eq!(redis.admin_cmd::<String>(&["GET", "counter:value"]).await, "41");
    web.stop().await.unwrap();
}

/// The password rotates as the operator would do it: new password in the Secret (file),
/// added to the user, old one removed, the user's connections killed. The service
/// reconnects with the new password, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_picks_up_a_rotated_password_on_reconnect() {
    for kind in ["multiplexed", "manager"] {
        let redis = AclRedis::start("old-pw", None).await;
        let (web, _secrets, pw_file) = web_on_password_file(&redis, kind, "old-pw").await;
        let c = client();

        write_secret(&pw_file, "new-pw");
        let _: () = redis.admin_cmd(&["ACL", "SETUSER", "web", ">new-pw"]).await;
        let _: () = redis.admin_cmd(&["ACL", "SETUSER", "web", "<old-pw"]).await;
        let killed: i64 = redis.admin_cmd(&["CLIENT", "KILL", "USER", "web"]).await;
        assert!(killed >= 1, "{kind}: the web's connections were killed");

        let body = until_status(&c, "POST", &web.url("/api/counter/increment"), 200).await;
        assert_eq!(body, json!({"value": 2}), "{kind}");
        // The service holds connections again: authenticated with the new password, the
        // only one left.
        let clients: String = redis.admin_cmd(&["CLIENT", "LIST", "TYPE", "normal"]).await;
        assert!(clients.lines().any(|l| l.contains("user=web")), "{kind}: {clients}");
        let e = redis.conn("web", "old-pw").await.expect_err("the old password is gone");
        assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed);
        for _ in 0..20 {
            assert_eq!(call(&c, "GET", &web.url("/api/counter")).await, (200, json!({"value": 2})), "{kind}");
        }
        web.stop().await.unwrap();
    }
}

/// A password file that cannot be read is a failed connect (logged, retried), never a
/// panic; once it is there, the service connects on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_waits_for_a_missing_password_file() {
    let redis = AclRedis::start("web-pw", None).await;
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = secrets.path().join("web");
    let url = redis.url();
    let flags =
        ["--redis-url", &url, "--redis-username", "web", "--redis-password-file", pw_file.to_str().unwrap()];
    let web = WebServer::start(&flags).await;
    let c = client();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = call(&c, "GET", &web.url("/readyz")).await;
    assert_eq!((status, body), (503, json!({"error": "redis primary is unavailable"})));
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await.0, 503);
    write_secret(&pw_file, "web-pw");
    web.wait_ready(200, READY).await;
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_serves_over_tls_and_follows_a_named_primary_by_its_host_name() {
    let pki = Pki::new();
    let a = AclRedis::start("web-pw", Some((&pki, "server", "ca"))).await;
    let b = AclRedis::start("web-pw", Some((&pki, "server", "ca"))).await;
    let b_port = b.port.to_string();
    // Replication over TLS with the replication user, by a name on the certificate.
    let _: () = b.admin_cmd(&["REPLICAOF", "localhost", &a.port.to_string()]).await;
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = secrets.path().join("web");
    write_secret(&pw_file, "web-pw");
    let ca_file = pki.path("ca.crt");
    let url = a.url();
    let web = web_as_web_user(&url, &pw_file, &["--redis-tls-ca-file", ca_file.to_str().unwrap()]).await;
    web.wait_ready(200, READY).await;
    let c = client();
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 1})));
    assert_eq!(call(&c, "GET", &web.url("/api/counter")).await, (200, json!({"value": 1})));
    let deadline = Instant::now() + READY;
    loop {
        let v: Option<String> = b.admin_cmd(&["GET", "counter:value"]).await;
        if v.as_deref() == Some("1") {
            break;
        }
        assert!(Instant::now() < deadline, "the TLS replica never got the write");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Swap roles. The URL still reaches A, now a replica naming `localhost:B`: the
    // service dials that name over TLS, verified against the certificate.
    let _: () = b.admin_cmd(&["REPLICAOF", "NO", "ONE"]).await;
    let _: () = a.admin_cmd(&["REPLICAOF", "localhost", &b_port]).await;
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 2})));
    let on_b: Option<String> = b.admin_cmd(&["GET", "counter:value"]).await;
    assert_eq!(on_b.as_deref(), Some("2"), "the write went to the named primary");
    assert_eq!(a.acl_denials().await, Vec::<String>::new());
    assert_eq!(b.acl_denials().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_with_a_wrong_ca_is_not_ready_and_answers_503() {
    let pki = Pki::new();
    pki.make_ca("other-ca");
    let redis = AclRedis::start("web-pw", Some((&pki, "server", "ca"))).await;
    let secrets = tempfile::tempdir().unwrap();
    let pw_file = secrets.path().join("web");
    write_secret(&pw_file, "web-pw");
    let wrong_ca = pki.path("other-ca.crt");
    let url = redis.url();
    let web = web_as_web_user(&url, &pw_file, &["--redis-tls-ca-file", wrong_ca.to_str().unwrap()]).await;
    let c = client();
    // Several connect attempts fail verification meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(call(&c, "GET", &web.url("/livez")).await, (200, json!({"status": "ok"})));
    assert_eq!(call(&c, "GET", &web.url("/readyz")).await.0, 503);
    let r = c.post(web.url("/api/counter/increment")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"error": "redis primary is unavailable"})
    );
    let metrics = c.get(web.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"redis_errors_total{node="primary",kind="connect"}"#), "{metrics}");
    // The CA file is re-read at every connect: fixing it needs no restart.
    std::fs::copy(pki.path("ca.crt"), &wrong_ca).unwrap();
    web.wait_ready(200, READY).await;
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 1})));
    web.stop().await.unwrap();
}
