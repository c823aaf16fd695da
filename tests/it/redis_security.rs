//! Redis' security (issue 11) against real `redis-server` processes started through the
//! rendered start script, redis.conf and ACL rules (`common::redis_server::scripted`):
//!
//! - each ACL user can run what its client sends and nothing else; `default` is off;
//! - replicas link up as the `replication` user (masteruser/masterauth), also over TLS;
//! - the replication manager's live password rotation (`redis::acl_sync`) keeps every
//!   client in, on running nodes and on a node restarted mid-rotation;
//! - TLS-only Redis: the probe, replication and the operator's verifying client work,
//!   plain TCP and a foreign CA do not;
//! - credentials stay in 0600 files, never in arguments or the environment.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::redis_server::scripted::{
    Rendered, ScriptedRedis, TlsFiles, generate_ca, generate_tls, passwords, pods, render, write_secrets,
};
use counterstack::acl::password_hash;
use counterstack::children::{Passwords, UserPassword, certificate};
use counterstack::dial::TlsCa;
use counterstack::names;
use counterstack::replication::PodView;
use counterstack::replication::acl_sync::{self, Desired, SyncReport};
use counterstack::replication::node::{
    self, ClusterAddressing, NodeAddr, NodeAuth, RedisClient, RedisNodes, is_auth_error,
};

/// The names the cert-manager Certificate of CounterApp `demo` in namespace `demo` carries
/// (`children::certificate::dns_names`), as openssl SANs.
fn cluster_sans() -> String {
    certificate::dns_names("demo", Some("demo"))
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// [`cluster_sans`] plus the loopback names the test's own clients verify (rustls checks
/// an IP against IP SANs).
fn loopback_sans() -> String {
    format!("{},DNS:localhost,IP:127.0.0.1", cluster_sans())
}

/// A pod's name that `*.demo-redis-headless.demo.svc` matches. rustls (webpki, like NSS)
/// requires two labels after a wildcard, so `*.demo-redis-headless` matches nothing.
fn verifiable_pod_name(ordinal: u32) -> String {
    format!("{}.demo.svc", names::redis_pod_host("demo", ordinal))
}

/// The web service's idempotency script, as `counterstack web` sends it. The module is
/// private to the web service, so the script is read from its source.
fn idempotency_script() -> &'static str {
    let src = include_str!("../../src/web/idempotency.rs");
    let start = src.find("r#\"#!lua").expect("the idempotency script in src/web/idempotency.rs") + 3;
    let len = src[start..].find("\"#;").expect("end of the idempotency script");
    &src[start..start + len]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// `r` failed with Redis' NOPERM.
#[track_caller]
fn assert_noperm<T: std::fmt::Debug>(r: redis::RedisResult<T>, what: &str) {
    match r {
        Err(e) => assert!(e.code() == Some("NOPERM") || e.to_string().contains("NOPERM"), "{what}: {e}"),
        Ok(v) => panic!("{what} was allowed: {v:?}"),
    }
}

/// DEBUG was refused: Redis 7 refuses it (`enable-debug-command no`, the default) before
/// the ACL is consulted; where it is enabled, the ACL answers NOPERM.
#[track_caller]
fn assert_debug_refused(r: redis::RedisResult<redis::Value>) {
    match r {
        Err(e) => assert!(
            e.to_string().contains("NOPERM") || e.to_string().contains("DEBUG command not allowed"),
            "{e}"
        ),
        Ok(v) => panic!("DEBUG was allowed: {v:?}"),
    }
}

/// `r` failed with Redis' WRONGPASS (redis-rs reports AUTH's as AuthenticationFailed).
#[track_caller]
fn assert_wrongpass<T: std::fmt::Debug>(r: redis::RedisResult<T>, what: &str) {
    match r {
        Err(e) => assert!(is_auth_error(&e), "{what}: {e}"),
        Ok(v) => panic!("{what} was accepted: {v:?}"),
    }
}

/// Pod 0 promoted, pod 1 its linked replica, both started by the rendered script.
struct Stack {
    pod0: ScriptedRedis,
    pod1: ScriptedRedis,
    roots: Vec<std::path::PathBuf>,
    ports: Vec<u16>,
    r: Rendered,
    _tmp: tempfile::TempDir,
}

fn stack(tls_sans: Option<String>) -> (Stack, Option<TlsFiles>) {
    let tmp = tempfile::tempdir().unwrap();
    let tls = tls_sans.map(|sans| generate_tls(&tmp.path().join("tls"), &sans));
    let r = render(1, tls.is_some());
    let (roots, ports) = pods(&r, tmp.path(), 2, tls.as_ref());
    let pod0 = ScriptedRedis::start(&roots[0], "demo-redis-0", ports[0], Some(&[ports[1]]));
    pod0.promote();
    let pod1 = ScriptedRedis::start(&roots[1], "demo-redis-1", ports[1], Some(&[ports[0]]));
    pod1.assert_replica_of(ports[0]);
    pod1.wait_linked();
    pod0.wait_until("the replica online", |p| p.info("slave0").is_some_and(|l| l.contains("state=online")));
    (Stack { pod0, pod1, roots, ports, r, _tmp: tmp }, tls)
}

#[test]
fn the_web_user_runs_the_web_services_commands_on_its_keys_only() {
    let (s, _) = stack(None);
    let pod0 = &s.pod0;

    // What the web service sends.
    assert_eq!(pod0.web::<String>(&["PING"]).unwrap(), "PONG");
    assert_eq!(pod0.web::<Option<i64>>(&["GET", "counter:value"]).unwrap(), None);
    assert_eq!(pod0.web::<i64>(&["INCR", "counter:value"]).unwrap(), 1);
    assert_eq!(pod0.web::<i64>(&["DECR", "counter:value"]).unwrap(), 0);
    // Coalesced runs of increments and decrements.
    assert_eq!(pod0.web::<i64>(&["INCRBY", "counter:value", "5"]).unwrap(), 5);
    assert_eq!(pod0.web::<i64>(&["INCRBY", "counter:value", "-5"]).unwrap(), 0);
    let _: () = pod0.web(&["SET", "counter:value", "41"]).unwrap();
    assert_eq!(pod0.web::<i64>(&["WAIT", "1", "2000"]).unwrap(), 1);
    let role: redis::Value = pod0.web(&["ROLE"]).unwrap();
    assert!(format!("{role:?}").contains("master"), "{role:?}");
    let role: redis::Value = s.pod1.web(&["ROLE"]).unwrap();
    assert!(format!("{role:?}").contains("slave"), "{role:?}");
    let script = idempotency_script();
    let eval = |key: &str, counter: &str| -> redis::RedisResult<(String, String, i64)> {
        pod0.web(&["EVAL", script, "2", counter, &format!("counter:idempotency:{key}"), "increment", "86400"])
    };
    assert_eq!(eval("k1", "counter:value").unwrap(), ("increment".into(), "42".into(), 0));
    assert_eq!(eval("k1", "counter:value").unwrap(), ("increment".into(), "42".into(), 1), "replayed");
    assert_eq!(s.pod0.counter(), Some(42));

    // Nothing else.
    for (what, args) in [
        ("FLUSHALL", &["FLUSHALL"][..]),
        ("CONFIG SET", &["CONFIG", "SET", "min-replicas-to-write", "0"]),
        ("CONFIG GET", &["CONFIG", "GET", "masterauth"]),
        ("KEYS", &["KEYS", "*"]),
        ("INFO", &["INFO"]),
        ("REPLICAOF", &["REPLICAOF", "NO", "ONE"]),
        ("ACL GETUSER", &["ACL", "GETUSER", "web"]),
        ("DEL of its own key", &["DEL", "counter:value"]),
        ("GET of another key", &["GET", "other"]),
        ("SET of another key", &["SET", "session:1", "x"]),
        ("INCR of a key outside its patterns", &["INCR", "counter"]),
        ("INCRBY of a key outside its patterns", &["INCRBY", "counter", "2"]),
        ("DECRBY (never sent)", &["DECRBY", "counter:value", "2"]),
        ("GET of a prefix-alike", &["GET", "counter:values"]),
    ] {
        assert_noperm(pod0.web::<redis::Value>(args), what);
    }
    assert_debug_refused(pod0.web::<redis::Value>(&["DEBUG", "SLEEP", "0"]));
    assert_noperm(eval("k2", "other"), "EVAL with a key outside its patterns");
    // Lua runs under the same ACL: a script is no way around it.
    for (what, script) in [
        ("FLUSHALL inside EVAL", "return redis.call('FLUSHALL')"),
        ("DEL of its own key inside EVAL", "return redis.call('DEL', 'counter:value')"),
        ("GET of another key inside EVAL", "return redis.call('GET', 'other')"),
    ] {
        let err = pod0.web::<redis::Value>(&["EVAL", script, "0"]).unwrap_err().to_string();
        assert!(err.contains("The user executing the script can't"), "{what}: {err}");
    }
    assert_eq!(s.pod0.counter(), Some(42));
}

#[test]
fn default_is_off_and_every_user_has_its_own_password() {
    let (s, _) = stack(None);
    let pod0 = &s.pod0;
    let p = passwords();

    // No AUTH: nothing runs, not even PING.
    let mut anon = pod0.conn(None, None).unwrap();
    for args in [&["PING"][..], &["GET", "counter:value"], &["INFO"]] {
        let r: redis::RedisResult<redis::Value> = redis::cmd(args[0]).arg(&args[1..]).query(&mut anon);
        assert!(r.as_ref().is_err_and(|e| e.to_string().contains("NOAUTH")), "{args:?}: {r:?}");
    }
    // `default` cannot log in, with any user's password or none.
    for pw in [&p.web.password, &p.operator.password, &p.replication.password, &"x".repeat(20)] {
        assert_wrongpass(pod0.cmd_as::<String>("default", pw, &["PING"]), "AUTH default");
    }
    // Passwords are per user.
    assert_wrongpass(pod0.cmd_as::<String>("operator", &p.web.password, &["PING"]), "operator with web's");
    assert_wrongpass(pod0.cmd_as::<String>("web", &p.operator.password, &["PING"]), "web with operator's");
    assert_wrongpass(pod0.cmd_as::<String>("monitor", &p.operator.password, &["PING"]), "monitor");
    assert_wrongpass(pod0.cmd_as::<String>("nobody", &p.web.password, &["PING"]), "an unknown user");
}

#[test]
fn the_replication_user_replicates_and_reads_no_keys() {
    let (mut s, _) = stack(None);
    let _: i64 = s.pod0.web(&["INCR", "counter:value"]).unwrap();
    assert_eq!(s.pod0.web::<i64>(&["WAIT", "1", "2000"]).unwrap(), 1);
    // Linked with masteruser/masterauth from the script's auth.conf.
    assert_eq!(s.pod1.config("masteruser").as_deref(), Some("replication"));
    assert_eq!(s.pod1.config("masterauth"), Some(passwords().replication.password));
    assert_eq!(s.pod1.counter(), Some(1));

    for pod in [&s.pod0, &s.pod1] {
        assert_eq!(pod.as_user::<String>("replication", &["PING"]).unwrap(), "PONG");
        let _: redis::Value = pod.as_user("replication", &["ROLE"]).unwrap();
        assert_noperm(pod.as_user::<redis::Value>("replication", &["GET", "counter:value"]), "GET");
        assert_noperm(pod.as_user::<redis::Value>("replication", &["SET", "counter:value", "0"]), "SET");
        assert_noperm(pod.as_user::<redis::Value>("replication", &["INFO"]), "INFO");
        assert_noperm(pod.as_user::<redis::Value>("replication", &["CONFIG", "GET", "*"]), "CONFIG GET");
        assert_noperm(pod.as_user::<redis::Value>("replication", &["REPLICAOF", "NO", "ONE"]), "REPLICAOF");
    }

    // A replica whose replication password the primary does not accept finds no master
    // (its ROLE question is refused) and, pointed at the primary, cannot link.
    let mut wrong = passwords();
    wrong.replication = UserPassword::settled("repl-wrong-0000000000000000000");
    write_secrets(&s.roots[1], &wrong);
    s.pod1.restart(&[s.ports[0]], false);
    s.pod1.assert_replica_of(1);
    assert!(s.pod1.log().contains("0 peers answer as master"), "{}", s.pod1.log());
    let _: () = s.pod1.op(&["REPLICAOF", "127.0.0.1", &s.ports[0].to_string()]).unwrap();
    s.pod1.wait_until("AUTH refused by the primary", |p| p.log().contains("WRONGPASS"));
    assert_eq!(s.pod1.info("master_link_status").as_deref(), Some("down"));
}

#[test]
fn the_operator_user_manages_nodes_and_reads_no_keys() {
    let (s, _) = stack(None);
    let (pod0, pod1) = (&s.pod0, &s.pod1);
    assert_eq!(pod0.op::<String>(&["PING"]).unwrap(), "PONG");
    assert!(pod0.op::<String>(&["INFO", "replication"]).unwrap().contains("role:master"));
    let _: redis::Value = pod0.op(&["ROLE"]).unwrap();
    assert_eq!(pod0.config("min-replicas-to-write").as_deref(), Some("1"));
    let _: () = pod0.op(&["CONFIG", "SET", "min-replicas-to-write", "1"]).unwrap();
    let user: redis::Value = pod0.op(&["ACL", "GETUSER", "web"]).unwrap();
    assert!(format!("{user:?}").contains(&password_hash(&passwords().web.password)), "{user:?}");
    // Repoint the replica (what the replication manager does).
    let _: () = pod1.op(&["REPLICAOF", "NO", "ONE"]).unwrap();
    pod1.follow(s.ports[0]);

    for (what, args) in [
        ("GET", &["GET", "counter:value"][..]),
        ("SET", &["SET", "counter:value", "7"]),
        ("KEYS", &["KEYS", "*"]),
        ("FLUSHALL", &["FLUSHALL"]),
        ("EVAL", &["EVAL", "return 1", "0"]),
        ("ACL LIST", &["ACL", "LIST"]),
        ("CLIENT LIST", &["CLIENT", "LIST"]),
    ] {
        assert_noperm(pod0.op::<redis::Value>(args), what);
    }
    assert_debug_refused(pod0.op::<redis::Value>(&["DEBUG", "SLEEP", "0"]));
}

#[test]
fn the_monitor_user_of_monitor_env_pings_and_reads_info_only() {
    let (s, _) = stack(None);
    let (pod0, pod1) = (&s.pod0, &s.pod1);
    assert!(pod0.probe(&s.r.probe, None));
    assert_eq!(pod0.monitor::<String>(&["PING"]).unwrap(), "PONG");
    assert!(pod0.monitor::<String>(&["INFO", "replication"]).unwrap().contains("connected_slaves:1"));
    let _: redis::Value = pod0.monitor(&["ROLE"]).unwrap();
    for (what, args) in [
        ("GET", &["GET", "counter:value"][..]),
        ("CONFIG GET", &["CONFIG", "GET", "masterauth"]),
        ("REPLICAOF", &["REPLICAOF", "NO", "ONE"]),
        ("ACL GETUSER", &["ACL", "GETUSER", "web"]),
    ] {
        assert_noperm(pod0.monitor::<redis::Value>(args), what);
    }
    // Random per start and per pod.
    assert_ne!(pod0.monitor_password(), pod1.monitor_password());
    assert_wrongpass(
        pod1.cmd_as::<String>("monitor", &pod0.monitor_password(), &["PING"]),
        "pod 0's on pod 1",
    );
}

#[test]
fn credentials_stay_in_private_files_never_in_arguments_or_the_environment() {
    let (s, _) = stack(None);
    let p = passwords();
    let secrets = [&p.web.password, &p.replication.password, &p.operator.password];
    for pod in [&s.pod0, &s.pod1] {
        for (file, mode) in
            [("users.acl", 0o600), ("auth.conf", 0o600), ("monitor.env", 0o600), ("exporter.json", 0o640)]
        {
            let meta = std::fs::metadata(pod.run_file(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        // The ACL file holds hashes only.
        let acl = std::fs::read_to_string(pod.run_file("users.acl")).unwrap();
        for pw in secrets {
            assert!(!acl.contains(pw.as_str()), "a password in users.acl");
            assert!(acl.contains(&format!("#{}", password_hash(pw))), "{acl}");
        }
        assert!(!acl.contains(&pod.monitor_password()), "monitor's password in users.acl");
        assert!(acl.lines().any(|l| l.starts_with("user default off ")), "{acl}");
        // redis-server's command line and environment name no password.
        let pid = pod.pid().unwrap();
        for what in ["cmdline", "environ"] {
            let raw = std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
            let text = String::from_utf8_lossy(&raw);
            assert!(text.contains("redis") || what == "environ", "{text}");
            for pw in secrets.iter().map(|s| s.as_str()).chain([pod.monitor_password().as_str()]) {
                assert!(!text.contains(pw), "a password in /proc/PID/{what}");
            }
        }
    }
}

/// The operator's user with `passwords` tried in order (plain TCP).
fn operator(passwords: &[&str]) -> NodeAuth {
    NodeAuth {
        username: Some("operator".into()),
        passwords: passwords.iter().map(|p| p.to_string()).collect(),
        ..NodeAuth::default()
    }
}

fn connects(rt: &tokio::runtime::Runtime, at: &NodeAddr, auth: &NodeAuth) -> redis::RedisResult<String> {
    rt.block_on(async {
        let mut c = node::connect(at, auth, Duration::from_secs(2), Duration::from_secs(2)).await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
}

#[test]
fn passwords_rotate_live_without_locking_any_client_out() {
    let (mut s, _) = stack(None);
    let rt = rt();
    let nodes = vec![NodeAddr::new("127.0.0.1", s.ports[0]), NodeAddr::new("127.0.0.1", s.ports[1])];
    let all = || nodes.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    let mut p: Passwords = passwords();
    // The Secrets change (on every pod's volume), then the operator syncs.
    let sync = |s: &Stack, p: &Passwords, auth: NodeAuth| -> SyncReport {
        for root in &s.roots {
            write_secrets(root, p);
        }
        let report =
            rt.block_on(acl_sync::sync(&RedisClient::with_auth(auth), &nodes, &Desired::from_passwords(p)));
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.in_line, all());
        report
    };
    let op_auth = |p: &Passwords| operator(&[&p.operator.password]);

    // What the start script set up is what the operator wants: nothing to change.
    assert!(sync(&s, &p, op_auth(&p)).changed.is_empty());

    // --- web: add the new password, keep the old.
    let (old, new) = (p.web.password.clone(), "web-NEW-aB3dE5gH7jK9mN1pQ3sT5".to_string());
    p.web = UserPassword { password: new.clone(), previous: old.clone() };
    assert_eq!(sync(&s, &p, op_auth(&p)).changed, all());
    for pod in [&s.pod0, &s.pod1] {
        assert_eq!(pod.cmd_as::<Option<i64>>("web", &old, &["GET", "counter:value"]).unwrap(), None);
        assert_eq!(pod.cmd_as::<Option<i64>>("web", &new, &["GET", "counter:value"]).unwrap(), None);
    }
    assert!(sync(&s, &p, op_auth(&p)).changed.is_empty(), "a second sync changes nothing");

    // A node restarted mid-rotation reads both from its Secret files.
    s.pod1.restart(&[s.ports[0]], false);
    s.pod1.assert_replica_of(s.ports[0]);
    s.pod1.wait_linked();
    for pw in [&old, &new] {
        assert_eq!(s.pod1.cmd_as::<String>("web", pw, &["PING"]).unwrap(), "PONG");
    }
    assert!(sync(&s, &p, op_auth(&p)).changed.is_empty(), "the restarted node is in line");

    // Settled: the old one stops working.
    p.web = UserPassword::settled(new.clone());
    assert_eq!(sync(&s, &p, op_auth(&p)).changed, all());
    for pod in [&s.pod0, &s.pod1] {
        assert_wrongpass(pod.cmd_as::<String>("web", &old, &["PING"]), "web's old password");
        assert_eq!(pod.cmd_as::<String>("web", &new, &["PING"]).unwrap(), "PONG");
    }

    // --- replication: masterauth moves to the new password; the link stays up.
    let (old, new) = (p.replication.password.clone(), "repl-NEW-zY8xW6vU4tS2rQ0pO9n".to_string());
    p.replication = UserPassword { password: new.clone(), previous: old.clone() };
    assert_eq!(sync(&s, &p, op_auth(&p)).changed, all());
    for pod in [&s.pod0, &s.pod1] {
        assert_eq!(pod.config("masterauth"), Some(new.clone()), "{}", pod.pod);
    }
    assert_eq!(s.pod1.info("master_link_status").as_deref(), Some("up"));
    // A relink (the operator repoints the replica) authenticates with the new one.
    let relink = |pod: &ScriptedRedis, port: u16| {
        let _: () = pod.op(&["REPLICAOF", "NO", "ONE"]).unwrap();
        pod.follow(port);
    };
    relink(&s.pod1, s.ports[0]);
    // And a restart mid-rotation (masterauth from the Secret file).
    s.pod1.restart(&[s.ports[0]], false);
    s.pod1.assert_replica_of(s.ports[0]);
    s.pod1.wait_linked();
    assert!(sync(&s, &p, op_auth(&p)).changed.is_empty(), "the restarted node is in line");

    p.replication = UserPassword::settled(new.clone());
    assert_eq!(sync(&s, &p, op_auth(&p)).changed, all());
    assert_eq!(s.pod1.info("master_link_status").as_deref(), Some("up"), "the link survives the removal");
    assert_wrongpass(s.pod0.cmd_as::<String>("replication", &old, &["PING"]), "replication's old password");
    relink(&s.pod1, s.ports[0]);
    s.pod0.wait_until("write accepted", |p| p.web::<i64>(&["INCR", "counter:value"]).is_ok());
    assert_eq!(s.pod0.web::<i64>(&["WAIT", "1", "2000"]).unwrap(), 1);

    // --- operator: it connects with [new, old] before, during and after.
    let (old, new) = (p.operator.password.clone(), "oper-NEW-qW2eR4tY6uI8oP0aS2d".to_string());
    let both = operator(&[&new, &old]);
    for at in &nodes {
        assert_eq!(connects(&rt, at, &both).unwrap(), "PONG", "before: falls back to the old one");
    }
    p.operator = UserPassword { password: new.clone(), previous: old.clone() };
    assert_eq!(sync(&s, &p, both.clone()).changed, all());
    for at in &nodes {
        assert_eq!(connects(&rt, at, &operator(&[&new])).unwrap(), "PONG");
        assert_eq!(connects(&rt, at, &operator(&[&old])).unwrap(), "PONG");
    }
    p.operator = UserPassword::settled(new.clone());
    assert_eq!(sync(&s, &p, both.clone()).changed, all());
    for at in &nodes {
        assert_eq!(connects(&rt, at, &both).unwrap(), "PONG", "after");
        let refused = connects(&rt, at, &operator(&[&old])).unwrap_err();
        assert!(is_auth_error(&refused), "{refused}");
    }
    assert!(sync(&s, &p, both).changed.is_empty());
    assert_eq!(s.pod0.counter(), Some(1));
}

/// The operator's TLS client: the operator user, `ca`, and `127.0.0.1` verified as `name`.
fn operator_tls(ca: &[u8], name: Option<&str>) -> NodeAuth {
    NodeAuth {
        tls: Some(TlsCa::from_pem(ca.to_vec())),
        names: name.map(|n| BTreeMap::from([("127.0.0.1".to_string(), n.to_string())])).unwrap_or_default(),
        ..operator(&[&passwords().operator.password])
    }
}

/// What a plain-text client gets from `port`: the first bytes of the answer to PING.
fn plain_text_ping(port: u16) -> Vec<u8> {
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = sock.write_all(b"*1\r\n$4\r\nPING\r\n");
    let mut buf = vec![0; 64];
    let n = sock.read(&mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

#[test]
fn tls_only_redis_serves_the_probe_replication_and_the_verifying_operator() {
    let (s, tls) = stack(Some(loopback_sans()));
    let tls = tls.unwrap();
    let conf = &s.r.data["redis.conf"];
    for line in ["port 0\n", "tls-port 6379\n", "tls-replication yes\n", "tls-auth-clients no\n"] {
        assert!(conf.contains(line), "{line}: {conf}");
    }
    // Started by the script, TLS only: no plain-text answer (not even NOAUTH).
    for port in &s.ports {
        let got = plain_text_ping(*port);
        assert!(!got.starts_with(b"+") && !got.starts_with(b"-"), "plain text answered: {got:?}");
    }
    // The probe's redis-cli uses the TLS flags of monitor.env.
    let env = std::fs::read_to_string(s.pod0.run_file("monitor.env")).unwrap();
    assert!(env.contains("CLI_TLS='--tls --cacert "), "{env}");
    for pod in [&s.pod0, &s.pod1] {
        assert!(pod.probe(&s.r.probe, None), "the readiness probe fails over TLS");
    }
    // The replica linked over TLS (stack() waited for it) and replicates writes.
    assert_eq!(s.pod0.web::<i64>(&["INCR", "counter:value"]).unwrap(), 1);
    assert_eq!(s.pod0.web::<i64>(&["WAIT", "1", "2000"]).unwrap(), 1);
    assert_eq!(s.pod1.counter(), Some(1));

    // The operator dials the IP and verifies the pod's name.
    let rt = rt();
    let ca = tls.ca_pem();
    let at0 = NodeAddr::new("127.0.0.1", s.ports[0]);
    let auth = operator_tls(&ca, Some(&verifiable_pod_name(0)));
    let snap = rt.block_on(RedisClient::with_auth(auth.clone()).snapshot(&at0)).unwrap();
    assert!(snap.info.contains("role:master"), "{}", snap.info);
    let nodes = [at0.clone(), NodeAddr::new("127.0.0.1", s.ports[1])];
    let report = rt.block_on(acl_sync::sync(
        &RedisClient::with_auth(auth),
        &nodes,
        &Desired::from_passwords(&passwords()),
    ));
    assert!(report.failed.is_empty() && report.changed.is_empty(), "{report:?}");

    // A name the certificate does not carry is refused, and so is a CA that did not sign it.
    // The web service's name for the primary verifies too.
    assert_eq!(connects(&rt, &at0, &operator_tls(&ca, Some("demo-redis-primary"))).unwrap(), "PONG");
    let wrong_name = operator_tls(&ca, Some("demo-redis-0.other-headless.demo.svc"));
    assert!(connects(&rt, &at0, &wrong_name).is_err(), "a certificate for another name was accepted");
    let other = s._tmp.path().join("other-ca");
    generate_ca(&other);
    let foreign =
        operator_tls(&std::fs::read(other.join("ca.crt")).unwrap(), Some("demo-redis-0.demo-redis-headless"));
    let err = connects(&rt, &at0, &foreign).unwrap_err();
    assert!(!is_auth_error(&err), "refused by TLS, before AUTH: {err}");
}

#[test]
fn a_certificate_with_only_the_cluster_names_serves_the_probe_and_replication() {
    // As in a cluster: the certificate names no 127.0.0.1, yet the probe and the preStop
    // hook dial 127.0.0.1 (and replicas here dial their primary by IP). redis-cli
    // (hiredis) and Redis' replication verify the chain, not the host name.
    let tmp = tempfile::tempdir().unwrap();
    let tls = generate_tls(&tmp.path().join("tls"), &cluster_sans());
    let r = render(1, true);
    let (roots, ports) = pods(&r, tmp.path(), 2, Some(&tls));
    let op = passwords().operator.password;
    // start() waits for PONG through redis-cli as monitor: TLS up and the probe's way in.
    let pod0 = ScriptedRedis::start(&roots[0], "demo-redis-0", ports[0], Some(&[ports[1]]));
    assert!(pod0.probe(&r.probe, None), "the readiness probe needs 127.0.0.1 in the certificate");
    assert_eq!(pod0.cli_as("operator", &op, &["REPLICAOF", "NO", "ONE"]).as_deref(), Some("OK\n"));
    let pod1 = ScriptedRedis::start(&roots[1], "demo-redis-1", ports[1], Some(&[ports[0]]));
    pod1.wait_until("linked over TLS", |p| {
        p.cli_as("operator", &op, &["INFO", "replication"])
            .is_some_and(|i| i.contains("master_link_status:up"))
    });
    assert!(pod1.probe(&r.probe, None));

    // The operator must verify the pod's name: dialling the IP without it fails.
    let rt = rt();
    let at1 = NodeAddr::new("127.0.0.1", ports[1]);
    assert!(connects(&rt, &at1, &operator_tls(&tls.ca_pem(), None)).is_err(), "verified 127.0.0.1");
    assert_eq!(
        connects(&rt, &at1, &operator_tls(&tls.ca_pem(), Some(&verifiable_pod_name(1)))).unwrap(),
        "PONG"
    );
}

/// The operator verifies `NAME-redis-K.NAME-redis-headless`: the certificate names each
/// pod (a `*.NAME-redis-headless` wildcard would match nothing in rustls).
#[test]
fn the_operator_verifies_a_name_the_certificate_carries() {
    let tmp = tempfile::tempdir().unwrap();
    let tls = generate_tls(&tmp.path().join("tls"), &cluster_sans());
    let r = render(1, true);
    let (roots, ports) = pods(&r, tmp.path(), 1, Some(&tls));
    let _pod0 = ScriptedRedis::start(&roots[0], "demo-redis-0", ports[0], Some(&[]));
    // The names map as the replication manager builds it for a pod at 127.0.0.1.
    let pod = PodView {
        name: names::redis_pod("demo", 0),
        uid: None,
        ordinal: 0,
        ip: Some("127.0.0.1".into()),
        ready: true,
        role_label: None,
        terminating: false,
        outdated: false,
    };
    let auth =
        operator_tls(&tls.ca_pem(), None).with_names(&[pod], &ClusterAddressing { app: "demo".into() });
    let rt = rt();
    let got = connects(&rt, &NodeAddr::new("127.0.0.1", ports[0]), &auth);
    assert_eq!(got.as_ref().ok().map(String::as_str), Some("PONG"), "{:?} verifying {:?}", got, auth.names);
}
