//! The real `counterstack operator` process against a minimal HTTP stand-in for the
//! API server on 127.0.0.1: the wait for the CRD, the health server, and graceful
//! shutdown on SIGTERM.

use crate::common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::redis_server::free_port;

/// Answers LISTs with an empty list and keeps WATCHes open without events; while `crd`
/// is false every request gets the API server's plain-text 404 (no such resource).
async fn start_api(crd: Arc<AtomicBool>) -> SocketAddr {
    serve_api(crd, false).await
}

/// [`start_api`], and with `hang`: the CounterApp list holds one CounterApp and every
/// write (its reconcile's first apply) never gets an answer.
async fn serve_api(crd: Arc<AtomicBool>, hang: bool) -> SocketAddr {
    let app = Router::new().fallback(move |req: Request| {
        let crd = crd.clone();
        async move {
            if !crd.load(Ordering::SeqCst) {
                return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
            }
            if hang && req.method() != axum::http::Method::GET {
                futures::future::pending::<()>().await;
            }
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            if hang && path.ends_with("/counterapps") && !query.contains("watch=true") {
                let list = r#"{"apiVersion":"counterstack.io/v1alpha1","kind":"CounterAppList","metadata":{"resourceVersion":"1"},"items":[{"apiVersion":"counterstack.io/v1alpha1","kind":"CounterApp","metadata":{"name":"demo","namespace":"default","uid":"5c0ffee0-0000-4000-8000-000000000002","generation":1,"resourceVersion":"1"},"spec":{}}]}"#;
                return ([("content-type", "application/json")], list).into_response();
            }
            if req.uri().query().unwrap_or("").contains("watch=true") {
                let body = Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
                return Response::builder().header("content-type", "application/json").body(body).unwrap();
            }
            let list = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#;
            ([("content-type", "application/json")], list).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn kubeconfig(dir: &tempfile::TempDir, api: SocketAddr) -> std::path::PathBuf {
    let path = dir.path().join("kubeconfig");
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{api}\n\
         users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\n"
    );
    std::fs::write(&path, cfg).unwrap();
    path
}

fn operator(kubeconfig: &std::path::Path, metrics_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_counterstack"))
        // The stub API server here answers every read with an empty list: no Lease API to
        // elect a leader with (tests/e2e covers leader election on a real API server).
        .args([
            "operator",
            "--leader-election",
            "false",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < timeout, "operator did not exit within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then the exit (within `timeout`), the output and how long the stop took.
async fn sigterm(mut child: Child, timeout: Duration) -> (std::process::ExitStatus, String, Duration) {
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let stopping = Instant::now();
    let status = wait_exit(&mut child, timeout).await;
    let took = stopping.elapsed();
    (status, output(child), took)
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `/readyz`: (status, body), None while nothing answers.
async fn readyz(http: &reqwest::Client, port: u16) -> Option<(u16, String)> {
    let res = http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.ok()?;
    let code = res.status().as_u16();
    Some((code, res.text().await.unwrap_or_default()))
}

#[tokio::test]
async fn waits_for_a_missing_crd_not_ready_then_starts_by_itself() {
    let crd = Arc::new(AtomicBool::new(false));
    let api = start_api(crd.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = operator(&kubeconfig(&dir, api), port);
    let http = reqwest::Client::new();

    // Not ready, and still running (no crash loop), while the CRD is missing.
    let start = Instant::now();
    loop {
        assert!(child.try_wait().unwrap().is_none(), "operator exited: {}", output(child));
        if let Some((503, body)) = readyz(&http, port).await {
            assert_eq!(body, "waiting for the CounterApp CRD");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never said it waits for the CRD");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(child.try_wait().unwrap().is_none(), "operator exited: {}", output(child));
    assert_eq!(readyz(&http, port).await.map(|r| r.0), Some(503));

    // The CRD arrives: it starts by itself.
    crd.store(true, Ordering::SeqCst);
    let start = Instant::now();
    while readyz(&http, port).await.map(|r| r.0) != Some(200) {
        assert!(child.try_wait().unwrap().is_none(), "operator exited: {}", output(child));
        assert!(start.elapsed() < Duration::from_secs(30), "never ready after the CRD came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, text, _) = sigterm(child, Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status:?}: {text}");
    assert!(text.contains("the CounterApp CRD is not installed (yet); waiting for it"), "{text}");
    assert!(text.contains("the CounterApp CRD is installed; starting"), "{text}");
}

#[tokio::test]
async fn serves_health_and_metrics_then_stops_gracefully_on_sigterm() {
    let api = start_api(Arc::new(AtomicBool::new(true))).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = operator(&kubeconfig(&dir, api), port);

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await.map(|r| r.status().is_success());
        if ready.unwrap_or(false) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "operator exited early: {}", output(child));
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(http.get(format!("{base}/livez")).send().await.unwrap().status().is_success());
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("counterstack_reconciles_total"), "{metrics}");

    let (status, text, _) = sigterm(child, Duration::from_secs(30)).await;
    assert!(status.success(), "exit {status:?}: {text}");
    assert!(text.contains("shutdown requested"), "{text}");
    assert!(text.contains("controller stopped"), "{text}");
}

#[tokio::test]
async fn a_reconcile_that_never_ends_delays_a_stop_by_the_grace_period_only() {
    let api = serve_api(Arc::new(AtomicBool::new(true)), true).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = operator(&kubeconfig(&dir, api), port);
    let http = reqwest::Client::new();
    let start = Instant::now();
    // Ready, and the CounterApp's reconcile under way (its first write hangs).
    loop {
        let metrics = match http.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if metrics.lines().any(|l| l.starts_with("counterstack_reconciles_in_flight") && !l.ends_with(" 0")) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "operator exited early: {}", output(child));
        assert!(start.elapsed() < Duration::from_secs(30), "no reconcile in flight: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, text, took) = sigterm(child, Duration::from_secs(28)).await;
    assert!(status.success(), "exit {status:?}: {text}");
    assert!(text.contains("did not finish within the shutdown grace period"), "{text}");
    assert!(took >= Duration::from_secs(19), "it waited for the reconcile first: {took:?}");
}
