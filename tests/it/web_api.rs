//! The web service's HTTP API against a real redis-server: the original app's semantics
//! and JSON shapes, error bodies, CORS, overflow, idempotency and concurrency.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;

use common::redis_server::RedisServer;
use common::web::{RawClient, WebServer, call, client, value_of};
use serde_json::json;

async fn setup(extra: &[&str]) -> (RedisServer, WebServer) {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut flags = vec!["--redis-url", url.as_str()];
    flags.extend_from_slice(extra);
    let web = WebServer::start(&flags).await;
    web.wait_ready(200, std::time::Duration::from_secs(10)).await;
    (redis, web)
}

#[tokio::test]
async fn counter_semantics_match_the_original() {
    let (redis, web) = setup(&[]).await;
    let c = client();

    // A missing key reads as 0.
    assert_eq!(call(&c, "GET", &web.url("/api/counter")).await, (200, json!({"value": 0})));
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 1})));
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await, (200, json!({"value": 2})));
    assert_eq!(call(&c, "GET", &web.url("/api/counter")).await, (200, json!({"value": 2})));
    assert_eq!(redis.cmd::<String>(&["GET", "counter:value"]).unwrap(), "2");
    assert_eq!(call(&c, "POST", &web.url("/api/counter/reset")).await, (200, json!({"value": 0})));
    // Decrement may go below zero.
    assert_eq!(call(&c, "POST", &web.url("/api/counter/decrement")).await, (200, json!({"value": -1})));
    assert_eq!(call(&c, "POST", &web.url("/api/counter/decrement")).await, (200, json!({"value": -2})));
    assert_eq!(redis.cmd::<String>(&["GET", "counter:value"]).unwrap(), "-2");

    // Exact bytes and headers of a success.
    let r = c.post(web.url("/api/counter/increment")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(r.text().await.unwrap(), "{\"value\":-1}\n");

    // HEAD on the GET route works and has no body.
    let r = c.head(web.url("/api/counter")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let (_redis, web) = setup(&[]).await;
    let c = client();

    for path in ["/", "/api", "/api/counter/", "/api/counter/multiply", "/favicon.ico"] {
        let r = c.get(web.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"error": "not found"}));
    }
    for (method, path, allow) in [
        ("GET", "/api/counter/increment", "POST"),
        ("PUT", "/api/counter/decrement", "POST"),
        ("DELETE", "/api/counter/reset", "POST"),
        ("POST", "/api/counter", "GET, HEAD"),
        ("PATCH", "/api/counter", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
    ] {
        let r = c.request(method.parse().unwrap(), web.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"error": "method not allowed"}));
    }
}

#[tokio::test]
async fn overflow_is_a_clear_conflict_not_a_500() {
    let (redis, web) = setup(&[]).await;
    let c = client();
    let _: () = redis.cmd(&["SET", "counter:value", &i64::MAX.to_string()]).unwrap();
    let (status, body) = call(&c, "POST", &web.url("/api/counter/increment")).await;
    assert_eq!(status, 409);
    assert_eq!(body, json!({"error": "counter would overflow the 64-bit range"}));
    assert_eq!(redis.cmd::<String>(&["GET", "counter:value"]).unwrap(), i64::MAX.to_string());
    // The same through the idempotency script.
    let r = c.post(web.url("/api/counter/increment")).header("Idempotency-Key", "ovf").send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        call(&c, "POST", &web.url("/api/counter/decrement")).await,
        (200, json!({"value": i64::MAX - 1}))
    );

    let _: () = redis.cmd(&["SET", "counter:value", &i64::MIN.to_string()]).unwrap();
    assert_eq!(call(&c, "POST", &web.url("/api/counter/decrement")).await.0, 409);
    // Garbage in the key: a 409 naming the problem, never a panic or 500.
    let _: () = redis.cmd(&["SET", "counter:value", "banana"]).unwrap();
    let (status, body) = call(&c, "GET", &web.url("/api/counter")).await;
    assert_eq!((status, body), (409, json!({"error": "counter value in redis is not an integer"})));
    assert_eq!(call(&c, "POST", &web.url("/api/counter/increment")).await.0, 409);
    assert_eq!(call(&c, "POST", &web.url("/api/counter/reset")).await, (200, json!({"value": 0})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_applies_once_under_50_concurrent_retries() {
    let (redis, web) = setup(&[]).await;
    let c = client();
    let _: () = redis.cmd(&["SET", "counter:value", "100"]).unwrap();
    let url = Arc::new(web.url("/api/counter/increment"));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let r = c.post(url.as_str()).header("Idempotency-Key", "retry-me-7").send().await.unwrap();
                let status = r.status().as_u16();
                let replayed = r.headers()["idempotent-replayed"].to_str().unwrap().to_string();
                (status, r.json::<serde_json::Value>().await.unwrap(), replayed)
            })
        })
        .collect();
    let mut replays = 0;
    for t in tasks {
        let (status, body, replayed) = t.await.unwrap();
        assert_eq!((status, body), (200, json!({"value": 101})));
        replays += usize::from(replayed == "true");
    }
    assert_eq!(replays, 49, "exactly one request applied the write");
    assert_eq!(redis.cmd::<String>(&["GET", "counter:value"]).unwrap(), "101");

    // The record expires after 24 h.
    let ttl: i64 = redis.cmd(&["TTL", "counter:idempotency:retry-me-7"]).unwrap();
    assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}");
    // Another key applies again; reusing a key for another operation is refused.
    let r =
        c.post(web.url("/api/counter/increment")).header("Idempotency-Key", "other").send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"value": 102}));
    let r = c.post(web.url("/api/counter/reset")).header("Idempotency-Key", "other").send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"error": "Idempotency-Key was already used for increment"})
    );
    let r =
        c.post(web.url("/api/counter/reset")).header("Idempotency-Key", "has space").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(redis.cmd::<String>(&["GET", "counter:value"]).unwrap(), "102");
    // Reset and decrement through keys too.
    let r = c.post(web.url("/api/counter/reset")).header("Idempotency-Key", "r1").send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"value": 0}));
    let r = c.post(web.url("/api/counter/decrement")).header("Idempotency-Key", "d1").send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"value": -1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_times_500_increments_are_exact_and_unique() {
    let (redis, web) = setup(&[]).await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let addr = web.addr;
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await.unwrap();
                let mut seen = Vec::with_capacity(500);
                for _ in 0..500 {
                    let (status, body, _) = c.request("POST", "/api/counter/increment").await.unwrap();
                    assert_eq!(status, 200, "{body}");
                    seen.push(value_of(&body));
                }
                seen
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in tasks {
        for v in t.await.unwrap() {
            assert!(all.insert(v), "value {v} was returned twice");
        }
    }
    assert_eq!(all.len(), 16_000);
    assert_eq!(all.iter().min(), Some(&1));
    assert_eq!(all.iter().max(), Some(&16_000));
    assert_eq!(redis.cmd::<String>(&["GET", "counter:value"]).unwrap(), "16000");
}

#[tokio::test]
async fn cors_is_open_by_default_and_configurable() {
    let (_redis, open) = setup(&[]).await;
    let c = client();
    let r = c
        .request(reqwest::Method::OPTIONS, open.url("/api/counter/increment"))
        .header("Origin", "https://anywhere.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    let (_redis2, strict) = setup(&["--cors-origins", "https://app.example"]).await;
    let r = c.get(strict.url("/api/counter")).header("Origin", "https://app.example").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    let r = c.get(strict.url("/api/counter")).header("Origin", "https://evil.example").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Preflights against the list: the allowed origin is echoed, another gets no grant.
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, strict.url("/api/counter/increment"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
    };
    let r = preflight("https://app.example").await.unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(r.headers()["access-control-allow-methods"], "GET,POST");
    assert!(r.headers()["vary"].to_str().unwrap().contains("origin"));
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Answers expose the replay header to the allowed origin's scripts.
    let r = c
        .post(strict.url("/api/counter/increment"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-expose-headers"], "idempotent-replayed");
}

#[tokio::test]
async fn metrics_and_health_endpoints() {
    let (_redis, web) = setup(&[]).await;
    let c = client();
    assert_eq!(call(&c, "GET", &web.url("/livez")).await, (200, json!({"status": "ok"})));
    assert_eq!(call(&c, "GET", &web.url("/readyz")).await, (200, json!({"status": "ready"})));
    call(&c, "POST", &web.url("/api/counter/increment")).await;
    call(&c, "GET", &web.url("/nope")).await;
    let r = c.get(web.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for needle in [
        r#"counterstack_web_http_requests_total{route="/api/counter/increment",method="POST",status="200"} 1"#,
        r#"counterstack_web_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"counterstack_web_http_request_duration_seconds_count{route="/api/counter/increment",method="POST",status="200"} 1"#,
        "counterstack_web_http_requests_in_flight 1",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // Drained shutdown returns Ok.
    web.stop().await.unwrap();
}
