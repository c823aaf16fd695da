//! The `counterstack web` binary as a process: SIGTERM under load loses no request and
//! exits 0; the original app's environment variables work; JSON logs; misconfiguration
//! exits non-zero naming the setting.

use crate::common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::redis_server::{RedisServer, free_port};
use common::web::{RawClient, value_of};

const BIN: &str = env!("CARGO_BIN_EXE_counterstack");

/// Variables of the web service that must not leak in from the test environment.
const VARS: &[&str] = &[
    "LISTEN_ADDR",
    "PORT",
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
    "REDIS_PASSWORD",
    "REDIS_REPLICA_URL",
    "READ_FROM",
    "SYNC_REPLICAS",
    "SYNC_TIMEOUT_MS",
    "DRAIN_SECONDS",
    "DRAIN_DELAY_MS",
    "CORS_ORIGINS",
    "REDIS_TIMEOUT_MS",
    "LOG_FORMAT",
];

fn web_command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("web");
    for v in VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    cmd
}

async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut c = RawClient::connect(addr).await.ok()?;
    c.request("GET", path).await.ok().map(|r| r.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_request_and_exits_zero() {
    let redis = RedisServer::start();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    // The original app's variables (REDIS_HOST/REDIS_PORT/PORT) and JSON logs.
    let redis_port = redis.port.to_string();
    let mut child = web_command(&[
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &redis_port),
        ("LISTEN_ADDR", &addr.to_string()),
        ("DRAIN_DELAY_MS", "400"),
        ("DRAIN_SECONDS", "3"),
        ("LOG_FORMAT", "json"),
    ])
    .stdout(Stdio::from(log.reopen().unwrap()))
    .stderr(Stdio::null())
    .spawn()
    .unwrap();

    let start = Instant::now();
    while get_status(addr, "/readyz").await != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(15), "service never became ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // 8 keep-alive clients hammer increments; a client stops once the service refuses
    // connections (the listener is closed: a real client would be on another pod).
    let ok = Arc::new(AtomicU64::new(0));
    let after_term = Arc::new(AtomicU64::new(0));
    let termed = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (ok, after_term, termed) = (ok.clone(), after_term.clone(), termed.clone());
            tokio::spawn(async move {
                let mut bad = Vec::new();
                let mut conn: Option<RawClient> = None;
                loop {
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match RawClient::connect(addr).await {
                            Ok(c) => conn.insert(c),
                            Err(_) => break, // refused: the listener is closed
                        },
                    };
                    match c.request("POST", "/api/counter/increment").await {
                        Ok((200, body, close)) => {
                            value_of(&body);
                            ok.fetch_add(1, Ordering::Relaxed);
                            if termed.load(Ordering::Relaxed) {
                                after_term.fetch_add(1, Ordering::Relaxed);
                            }
                            if close {
                                conn = None;
                            }
                        }
                        Ok((status, body, _)) => bad.push(format!("{status} {body}")),
                        // The connection ended before any response byte: the request was
                        // never read (it cannot have been applied, checked below).
                        Err(_) => conn = None,
                    }
                }
                bad
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    termed.store(true, Ordering::Relaxed);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // Draining: readiness is withdrawn while requests are still served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get_status(addr, "/readyz").await, Some(503));

    let term_at = Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(term_at.elapsed() < Duration::from_secs(4), "drained within DRAIN_DELAY_MS + DRAIN_SECONDS");
    for t in tasks {
        let bad = t.await.unwrap();
        assert!(bad.is_empty(), "non-200 answers: {bad:?}");
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(after_term.load(Ordering::Relaxed) > 0, "requests kept being served while draining");
    let stored: u64 = redis.cmd::<String>(&["GET", "counter:value"]).unwrap().parse().unwrap();
    assert_eq!(stored, ok, "every applied increment was answered 200");

    let logs = std::fs::read_to_string(log.path()).unwrap();
    assert!(logs.lines().count() >= 2, "{logs}");
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(logs.contains("draining"), "{logs}");
}

#[test]
fn misconfiguration_exits_non_zero_naming_the_setting() {
    for (env, setting) in [
        (vec![("SYNC_REPLICAS", "two")], "SYNC_REPLICAS"),
        (vec![("REDIS_URL", "http://example")], "REDIS_URL"),
        (vec![("REDIS_PORT", "99999")], "REDIS_PORT"),
        (vec![("REDIS_DB", "x")], "REDIS_DB"),
        (vec![("PORT", "http")], "PORT"),
        (vec![("LISTEN_ADDR", "everywhere")], "LISTEN_ADDR"),
        (vec![("SYNC_TIMEOUT_MS", "soon")], "SYNC_TIMEOUT_MS"),
        (vec![("DRAIN_SECONDS", "-1")], "DRAIN_SECONDS"),
        (vec![("READ_FROM", "replicas")], "READ_FROM"),
    ] {
        let out = web_command(&env).output().unwrap();
        assert!(!out.status.success(), "{setting}: exited 0");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("invalid setting {setting}")), "{setting}: {stderr}");
    }
}
