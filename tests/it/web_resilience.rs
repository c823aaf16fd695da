//! The web service when Redis misbehaves: starts without Redis, synchronous replication
//! refuses unconfirmed writes, failover (READONLY, a promoted replica behind the same
//! URL), replica reads with fallback. Real redis-server processes throughout.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::redis_server::{RedisServer, cluster, free_port};
use common::tcp_proxy::TcpProxy;
use common::web::{READY, RawClient, WebServer, call, client, until_status, value_of};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_redis_then_becomes_ready_and_survives_a_restart() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let web = WebServer::start(&["--redis-url", &url]).await;
    let c = client();

    // Alive but not ready; the API answers 503 with Retry-After, in JSON.
    assert_eq!(call(&c, "GET", &web.url("/livez")).await, (200, json!({"status": "ok"})));
    assert_eq!(
        call(&c, "GET", &web.url("/readyz")).await,
        (503, json!({"error": "redis primary is unavailable"}))
    );
    for (method, path) in [("GET", "/api/counter"), ("POST", "/api/counter/increment")] {
        let r = c.request(method.parse().unwrap(), web.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            json!({"error": "redis primary is unavailable"})
        );
    }

    // Redis appears: the service connects on its own (backoff), no restart.
    let mut redis = RedisServer::start_on(port);
    web.wait_ready(200, READY).await;
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 1})));

    // Redis dies: requests get 503 (not 500, not a hang); the pod stays ready (a shared
    // outage must not take every web pod out of the Service).
    redis.kill9();
    until_status(&c, "POST", &web.url("/api/counter/increment"), 503).await;
    web.wait_ready(200, READY).await;
    // ... and comes back with its data (append-only file).
    redis.restart();
    let body = until_status(&c, "POST", &web.url("/api/counter/increment"), 200).await;
    assert_eq!(body, json!({"value": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_replicas_refuses_unconfirmed_writes_while_replicas_are_frozen() {
    let (primary, replicas) = cluster(2, None);
    primary.wait_online_replicas(2, READY);
    let url = primary.url();
    let web =
        WebServer::start(&["--redis-url", &url, "--sync-replicas", "1", "--sync-timeout-ms", "200"]).await;
    web.wait_ready(200, READY).await;
    let c = client();
    // Replicas confirm writes: the first one may need more than the 200 ms WAIT on a
    // loaded machine (the replicas' first ack after their sync), so retry until acked.
    until_status(&c, "POST", &web.url("/api/counter/increment"), 200).await;

    // SIGSTOP both replicas: nobody can acknowledge, so no write may be answered 200.
    for r in &replicas {
        r.pause();
    }
    let start = Instant::now();
    let r = c.post(web.url("/api/counter/increment")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, json!({"error": "write not confirmed by 1 replica(s) within 200 ms (0 confirmed)"}));
    assert!(start.elapsed() >= Duration::from_millis(190), "WAIT honoured its timeout");
    // Concurrent writes share one WAIT (group commit) and all get 503.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, u) = (c.clone(), web.url("/api/counter/decrement"));
            tokio::spawn(async move { c.post(u).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    // Reads do not queue behind a write stuck in WAIT (separate connection).
    let u = web.url("/api/counter/increment");
    let stuck = tokio::spawn(async move { client().post(u).send().await.unwrap().status().as_u16() });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let start = Instant::now();
    assert_eq!(call(&c, "GET", &web.url("/api/counter")).await.0, 200);
    assert!(start.elapsed() < Duration::from_millis(120), "read waited {:?}", start.elapsed());
    assert_eq!(stuck.await.unwrap(), 503);

    for r in &replicas {
        r.resume();
    }
    let (status, body) = call(&c, "POST", &web.url("/api/counter/reset")).await;
    assert_eq!((status, body), (200, json!({"value": 0})));
    // Once acknowledged, the write is on at least SYNC_REPLICAS (1) replica.
    let holders = replicas
        .iter()
        .filter(|r| r.cmd::<Option<String>>(&["GET", "counter:value"]).unwrap().as_deref() == Some("0"))
        .count();
    assert!(holders >= 1, "acknowledged write on {holders} replicas");
    // With a healthy replica, concurrent synchronous writes all succeed and stay exact.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let addr = web.addr;
            tokio::spawn(async move {
                let mut rc = RawClient::connect(addr).await.unwrap();
                for _ in 0..50 {
                    let (status, body, _) = rc.request("POST", "/api/counter/increment").await.unwrap();
                    assert_eq!(status, 200, "{body}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(call(&c, "GET", &web.url("/api/counter")).await, (200, json!({"value": 400})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_names_the_new_one_and_without_a_primary_writes_get_503() {
    let (a, replicas) = cluster(1, None);
    let b = &replicas[0];
    let url = a.url();
    let web = WebServer::start(&["--redis-url", &url]).await;
    web.wait_ready(200, READY).await;
    let c = client();
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 1})));
    // The replica has the write before roles change (as the operator ensures).
    let deadline = Instant::now() + READY;
    while b.cmd::<Option<String>>(&["GET", "counter:value"]).unwrap().as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "replica never got the write");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Swap roles: the node behind the URL answers READONLY, but names its new primary
    // (as a demoted primary names the one it follows): the write goes there, at once.
    let _: () = b.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap();
    let _: () = a.cmd(&["REPLICAOF", "127.0.0.1", &b.port.to_string()]).unwrap();
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 2})));
    // Reads leave the demoted node too (it would serve stale data): they check ROLE.
    assert_eq!(call(&c, "GET", &web.url("/api/counter")).await, (200, json!({"value": 2})));

    // No primary at all (both wait as replicas, as a restarted pod waits for the
    // operator): 503 with the node named; the pod stays ready and answers it itself.
    let _: () = b.cmd(&["REPLICAOF", "127.0.0.1", "1"]).unwrap();
    let (status, body) = call(&c, "POST", &web.url("/api/counter/increment")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("redis primary"), "{body}");
    // No read from a node that is no longer the primary, however stale-free it looks.
    let (status, body) = call(&c, "GET", &web.url("/api/counter")).await;
    assert_eq!(status, 503, "{body}");
    web.wait_ready(200, READY).await;

    // Promote the node behind the URL: the service notices by itself and writes work again.
    let _: () = a.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap();
    let body = until_status(&c, "POST", &web.url("/api/counter/increment"), 200).await;
    assert_eq!(body, json!({"value": 3}));
    let metrics = c.get(web.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"redis_errors_total{node="primary",kind="readonly"}"#), "{metrics}");
}

/// A failover as the operator does it, behind a URL that keeps its name (a Service):
/// pause writes on the primary, let the replica catch up, promote it, point the URL at
/// it, demote the old primary. Under load, every increment is answered 200 and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_promoted_replica_behind_the_same_url_under_load() {
    let (a, replicas) = cluster(1, None);
    let b = &replicas[0];
    let proxy = TcpProxy::start(a.addr().parse().unwrap()).await;
    let url = proxy.url();
    let web = WebServer::start(&["--redis-url", &url]).await;
    web.wait_ready(200, READY).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, addr) = (stop.clone(), ok.clone(), web.addr);
            tokio::spawn(async move {
                let mut rc = RawClient::connect(addr).await.unwrap();
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body, _) = rc.request("POST", "/api/counter/increment").await.unwrap();
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                        value_of(&body);
                    }
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Planned failover, as the replication manager does it.
    let _: () = a.cmd(&["CLIENT", "PAUSE", "5000", "WRITE"]).unwrap();
    let deadline = Instant::now() + READY;
    while a.info_field("master_repl_offset") != b.info_field("slave_repl_offset") {
        assert!(Instant::now() < deadline, "replica never caught up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _: () = b.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap();
    proxy.switch(b.addr().parse().unwrap());
    let _: () = a.cmd(&["REPLICAOF", "127.0.0.1", &b.port.to_string()]).unwrap();
    let _: () = a.cmd(&["CLIENT", "UNPAUSE"]).unwrap();
    let switched_at = ok.load(Ordering::Relaxed);

    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    // READONLY answers are retried once on a fresh connection (which reaches the new
    // primary), and requests arriving mid-reconnect wait for it: no client sees an error.
    assert!(statuses.iter().all(|s| *s == 200), "statuses: {statuses:?}");
    let ok = ok.load(Ordering::Relaxed);
    assert!(ok > switched_at, "writes succeed after the failover ({switched_at} -> {ok})");
    let on_b: u64 = b.cmd::<String>(&["GET", "counter:value"]).unwrap().parse().unwrap();
    assert_eq!(on_b, ok, "every acknowledged increment is on the new primary, and only those");
    let c = client();
    assert_eq!(call(&c, "GET", &web.url("/readyz")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_fall_back_to_the_primary() {
    let (primary, mut replicas) = cluster(1, None);
    let (purl, rurl) = (primary.url(), replicas[0].url());
    let web =
        WebServer::start(&["--redis-url", &purl, "--redis-replica-url", &rurl, "--read-from", "replicas"])
            .await;
    web.wait_ready(200, READY).await;
    let c = client();
    for _ in 0..5 {
        call(&c, "POST", &web.url("/api/counter/increment")).await;
    }
    // Reads come from the replica URL: give it a value the primary does not have.
    let _: () = replicas[0].cmd(&["REPLICAOF", "NO", "ONE"]).unwrap();
    let _: () = replicas[0].cmd(&["SET", "counter:value", "777"]).unwrap();
    assert_eq!(call(&c, "GET", &web.url("/api/counter")).await, (200, json!({"value": 777})));
    // The replica dies: reads fall back to the primary, still 200.
    replicas[0].kill9();
    for _ in 0..3 {
        assert_eq!(call(&c, "GET", &web.url("/api/counter")).await, (200, json!({"value": 5})));
    }
}

/// Shutdown never waits longer than DRAIN_SECONDS, even for a write stuck in WAIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_gives_up_after_drain_seconds() {
    let (primary, replicas) = cluster(1, None);
    primary.wait_online_replicas(1, READY);
    let url = primary.url();
    let web = WebServer::start(&[
        "--redis-url",
        &url,
        "--sync-replicas",
        "1",
        "--sync-timeout-ms",
        "5000",
        "--drain-seconds",
        "1",
    ])
    .await;
    web.wait_ready(200, READY).await;
    replicas[0].pause();
    let u = web.url("/api/counter/increment");
    let stuck = tokio::spawn(async move { client().post(u).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    web.stop().await.unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "drain took {took:?}");
    // In a process, exiting ends the stuck request; here the test just drops it.
    assert!(!stuck.is_finished(), "the write was still waiting for its replica");
    stuck.abort();
    replicas[0].resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_redis() {
    let redis = RedisServer::start_with(Some("s3cret"), &[]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let good = WebServer::start(&["--redis-url", &url, "--redis-password", "s3cret"]).await;
    good.wait_ready(200, READY).await;
    let c = client();
    assert_eq!(call(&c, "POST", &good.url("/api/counter/increment")).await, (200, json!({"value": 1})));
    // A wrong password never becomes ready and answers 503, not 500.
    let bad = WebServer::start(&["--redis-url", &url, "--redis-password", "wrong"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&c, "GET", &bad.url("/readyz")).await.0, 503);
    assert_eq!(call(&c, "GET", &bad.url("/api/counter")).await.0, 503);
}

/// With SYNC_REPLICAS=k, a primary with fewer than k replicas connected is not read
/// from: it could not acknowledge a write, and it is what a former primary looks like
/// when it resumes after a freeze (its replicas follow the new primary; its data is stale).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_the_primary_to_have_its_sync_replicas() {
    let (primary, mut replicas) = cluster(1, None);
    primary.wait_online_replicas(1, READY);
    let url = primary.url();
    let web = WebServer::start(&["--redis-url", &url, "--sync-replicas", "1"]).await;
    web.wait_ready(200, READY).await;
    let c = client();
    // The first WAIT may find the fresh replica not yet acknowledging: retry until it does.
    until_status(&c, "POST", &web.url("/api/counter/increment"), 200).await;
    let (status, body) = call(&c, "GET", &web.url("/api/counter")).await;
    assert_eq!(status, 200, "{body}");
    let value = body["value"].as_i64().unwrap();
    assert!(value >= 1, "{body}");

    // A primary without its replica stops answering reads...
    replicas[0].kill9();
    until_status(&c, "GET", &web.url("/api/counter"), 503).await;
    // ... until it has one again.
    replicas[0].restart();
    replicas[0].replicate(&primary);
    let body = until_status(&c, "GET", &web.url("/api/counter"), 200).await;
    assert_eq!(body, json!({"value": value}));
}
