//! A full volume, for real: Redis's `dir` on a small tmpfs that the test fills with a file
//! of its own, then frees. Redis then refuses writes with `-MISCONF` (its AOF write
//! failed) and takes them again by itself once there is room.
//!
//! - the web service answers 503 JSON naming the cause, reads go on, and writes resume
//!   with nothing lost or applied twice;
//! - the operator's health check sees such a primary as up (no failover clock), and its
//!   pass reads why it refuses writes;
//! - the replication manager under `INCR` + `WAIT 1` load keeps the primary (no failover,
//!   however long it lasts), reports `Degraded` reason `StorageFull` with one Event, and
//!   `StorageRecovered` once writes resume; no acknowledged write is lost.

use crate::common;

use std::time::{Duration, Instant};

use common::failover_driver::{self, KEY, Load, Stack};
use common::redis_server::RedisServer;
use common::small_disk::SmallDisk;
use common::web::{READY, WebServer, call, client, until_status};
use counterstack::replication::monitor::{AppKey, Monitor, Target, TargetPod};
use counterstack::replication::node::{NodeAddr, NodeAuth, RedisClient, RedisNodes};
use counterstack::replication::observe::parse_info;
use counterstack::replication::persistence::{STORAGE_FULL, STORAGE_RECOVERED};

const ENOSPC: &str = "No space left on device";

/// Wait (at most 20 s) until `ok`.
async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `aof_last_write_status` of `INFO persistence`: `ok` or `err`.
fn aof_write_status(r: &RedisServer) -> String {
    let info: String = r.cmd(&["INFO", "persistence"]).unwrap_or_default();
    let value = info.lines().find_map(|l| l.strip_prefix("aof_last_write_status:"));
    value.unwrap_or_default().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_answers_503_naming_the_cause_and_writes_resume_when_space_returns() {
    let test = "failover_disk_full::a_full_volume_answers_503...";
    let Some(disk) = SmallDisk::mount("4m", test) else { return };
    let mut redis = RedisServer::start_with(None, &["--dir", &disk.path_str()]);
    let web = WebServer::start(&["--redis-url", &redis.url()]).await;
    web.wait_ready(200, READY).await;
    let c = client();
    let inc = web.url("/api/counter/increment");
    for want in 1..=3 {
        assert_eq!(call(&c, "POST", &inc).await, (200, serde_json::json!({"value": want})));
    }

    // Full: the AOF write after the next increments fails and Redis refuses writes. The
    // increments acknowledged until then stay (in memory and in the AOF buffer).
    disk.fill();
    let mut acked = 3;
    let refused = loop {
        let r = c.post(&inc).send().await.expect("request sent");
        let (status, retry_after) = (r.status().as_u16(), r.headers().get("retry-after").cloned());
        let body: serde_json::Value = r.json().await.expect("a JSON body");
        match status {
            200 => {
                acked += 1;
                assert_eq!(body["value"], acked, "{body}");
                assert!(acked < 10_000, "Redis never refused a write on a full volume");
            }
            503 => {
                assert_eq!(retry_after.as_ref().map(|v| v.to_str().unwrap()), Some("5"));
                break body;
            }
            other => panic!("unexpected {other} {body}"),
        }
    };
    let message = refused["error"].as_str().expect("{\"error\": ...}");
    assert!(message.contains("refuses writes") && message.contains(ENOSPC), "{message}");
    assert_eq!(aof_write_status(&redis), "err");
    // Every write is refused the same way, with an Idempotency-Key too (a script).
    let keyed = c.post(&inc).header("Idempotency-Key", "disk-full-1").send().await.unwrap();
    assert_eq!(keyed.status().as_u16(), 503);
    let keyed: serde_json::Value = keyed.json().await.unwrap();
    assert!(keyed["error"].as_str().unwrap().contains(ENOSPC), "{keyed}");
    // Reads go on, with every acknowledged increment.
    let read = call(&c, "GET", &web.url("/api/counter")).await;
    assert_eq!(read, (200, serde_json::json!({"value": acked})));

    // Room again: Redis retries its AOF write every second and takes writes by itself.
    disk.free();
    let body = until_status(&c, "POST", &inc, 200).await;
    assert_eq!(body["value"], acked + 1, "refused writes were not applied, acknowledged ones not lost");
    assert_eq!(aof_write_status(&redis), "ok");
    // ... and persisted: a restarted Redis (kill -9) reads it all back from its AOF.
    redis.kill9();
    redis.restart();
    let after: Option<i64> = redis.cmd(&["GET", KEY]).unwrap();
    assert_eq!(after, Some(acked + 1));
    drop(web);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_a_primary_that_refuses_writes_as_up_and_reads_why() {
    let test = "failover_disk_full::the_operator_sees_a_primary_that_refuses_writes_as_up...";
    let Some(disk) = SmallDisk::mount("4m", test) else { return };
    let primary = RedisServer::start_with(None, &["--dir", &disk.path_str()]);
    let monitor = std::sync::Arc::new(Monitor::default());
    let mut wakeups = monitor.take_wakeups().unwrap();
    let key = AppKey::new("ns", "demo");
    let pod = TargetPod {
        name: "demo-redis-0".into(),
        dial: NodeAddr::new("127.0.0.1", primary.port),
        ready: true,
        terminating: false,
    };
    let target = Target { pods: vec![pod], primary: Some("demo-redis-0".into()), auth: NodeAuth::default() };
    monitor.watch(&key, target);
    let task = tokio::spawn({
        let m = monitor.clone();
        async move { m.run().await }
    });
    let wake = tokio::time::timeout(Duration::from_secs(5), wakeups.recv());
    assert!(wake.await.is_ok(), "no first wake-up");

    disk.fill();
    let value = "v".repeat(4096);
    let deadline = Instant::now() + Duration::from_secs(20);
    while aof_write_status(&primary) != "err" {
        let _ = primary.cmd::<()>(&["SET", "filler", &value]);
        assert!(Instant::now() < deadline, "Redis never failed an AOF write on a full volume");
    }
    // The check answers differently (PING refused): the app is woken, and the primary
    // stays up for the failover clock.
    let woke = tokio::time::timeout(Duration::from_secs(5), wakeups.recv()).await;
    assert!(woke.is_ok(), "refusing writes did not wake the CounterApp");
    assert_eq!(monitor.down_since(&key), None, "a primary refusing writes started the failover clock");

    // The replication pass reads the cause from PING and the failed write from INFO.
    let addr = NodeAddr::new("127.0.0.1", primary.port);
    let snap = RedisClient::new("").snapshot(&addr).await.expect("INFO answers on a full volume");
    let refusal = snap.write_refusal.clone().expect("PING refused with MISCONF");
    assert!(refusal.starts_with("MISCONF") && refusal.contains(ENOSPC), "{refusal}");
    let persistence = parse_info(&snap.info).unwrap().persistence;
    assert!(persistence.aof_write_failed, "{persistence:?}");

    disk.free();
    until("Redis to write its AOF again", || aof_write_status(&primary) == "ok").await;
    let snap = RedisClient::new("").snapshot(&addr).await.unwrap();
    assert_eq!(snap.write_refusal, None);
    assert_eq!(monitor.down_since(&key), None);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_on_a_full_volume_is_never_failed_over_and_recovers_by_itself_under_load() {
    let test = "failover_disk_full::a_primary_on_a_full_volume_is_never_failed_over...";
    let Some(disk) = SmallDisk::mount("8m", test) else { return };
    let dir = disk.path_str();
    // Pod 0 (the first primary of a fresh stack) writes to the small disk; its replicas do not.
    let args = vec![vec!["--dir", dir.as_str()], vec![], vec![]];
    let stack = Stack::start_each(failover_driver::spec(2, 1, 1), &args, None);
    // Readiness as a probe that wants PONG sees it: the full primary's pod turns unready.
    stack.state.lock().unwrap().ready_needs_pong = true;
    let primary = stack.wait_healthy(2, Duration::from_secs(20)).await;
    assert_eq!(primary, failover_driver::pod(0));
    let port0 = stack.ports[0];
    let epoch = stack.status().epoch;
    let started = Instant::now();
    let load = Load::start(stack.primary_port.clone(), 4, 1);
    until("acknowledged writes", || load.acks_after(started, 0) > 50).await;

    disk.fill();
    let events = || stack.events().into_iter().map(|e| e.reason).collect::<Vec<_>>();
    until("a StorageFull Event", || events().iter().any(|r| r == STORAGE_FULL)).await;
    let full_at = Instant::now();
    let passes = stack.state.lock().unwrap().passes;
    // afterSeconds is 1: give a failover many chances (20 passes, 4 s) to happen.
    until("20 passes on a full volume", || stack.state.lock().unwrap().passes >= passes + 20).await;
    let health = stack.state.lock().unwrap().health.clone().unwrap();
    assert_eq!(health.reason, STORAGE_FULL, "{health:?}");
    assert!(health.available && health.degraded, "{health:?}");
    assert!(
        health.message.contains("demo-redis-0 (the primary) refuses writes")
            && health.message.contains(ENOSPC)
    );
    assert_eq!((stack.primary(), stack.status().epoch), (Some(primary.clone()), epoch), "failed over");
    // Refused writes are not acknowledged (a reply in flight at the fill may be).
    assert_eq!(load.acks_after(full_at + Duration::from_secs(1), 0), 0, "writes acknowledged while full");

    disk.free();
    let freed = Instant::now();
    until("writes to resume", || load.acks_after(freed, 0) > 50).await;
    until("a StorageRecovered Event", || events().iter().any(|r| r == STORAGE_RECOVERED)).await;
    until("the Degraded reason to clear", || {
        stack.state.lock().unwrap().health.as_ref().is_some_and(|h| h.reason == "ReplicationHealthy")
    })
    .await;
    let report = load.stop().await;
    let url = format!("redis://:{}@127.0.0.1:{port0}", failover_driver::PASSWORD);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let final_value: i64 = redis::cmd("GET").arg(KEY).query(&mut c).unwrap();
    let state = stack.stop().await;
    let last = state.app.as_ref().and_then(|a| a.status.as_ref()?.redis.clone()).unwrap();
    let primary_server = failover_driver::pod(0);
    assert_eq!((last.primary, last.epoch), (Some(primary_server), epoch), "the primary changed");
    let reasons: Vec<&str> = state.events.iter().map(|e| e.reason.as_str()).collect();
    let count = |r: &str| reasons.iter().filter(|x| **x == r).count();
    assert_eq!((count(STORAGE_FULL), count(STORAGE_RECOVERED)), (1, 1), "one episode: {reasons:?}");
    assert!(!reasons.iter().any(|r| ["FailedOver", "PrimaryUnavailable"].contains(r)), "{reasons:?}");
    assert_eq!(report.lost(final_value), 0, "acknowledged writes lost");
    assert!(report.backwards.is_empty(), "{:?}", report.backwards);
    println!("full volume: {} writes acknowledged, final value {final_value}", report.acks.len());
}
