//! Issue 11 on a cluster: every Redis password rotated under load with the replicas
//! linked throughout, and a TLS-only stack that reaches Ready and counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use counterstack::api::{CounterApp, ROTATE_ANNOTATION};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};

use crate::faults::{connect_local, user_passwords};
use crate::harness::{Ctx, eventually, timeout};
use crate::scenario::{self, Scenario};
use crate::stack::Stack;

const USERS: [&str; 3] = ["web", "replication", "operator"];

/// Every user's (password, previous).
async fn passwords(stack: &Stack) -> BTreeMap<&'static str, (String, String)> {
    let mut out = BTreeMap::new();
    for u in USERS {
        out.insert(u, user_passwords(&stack.ctx, &stack.app, u).await.expect("user Secret"));
    }
    out
}

/// `INFO replication` and `INFO stats` fields of one Redis pod, as the operator user.
async fn info(ctx: &Ctx, pod: &str) -> Result<BTreeMap<String, String>, String> {
    let mut c = connect_local(ctx, pod).await?;
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .arg("stats")
        .query_async(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Names of the stack's Redis pods.
async fn redis_pods(stack: &Stack) -> Vec<String> {
    let sel = format!("app.kubernetes.io/instance={},app.kubernetes.io/component=redis", stack.app);
    let pods = stack.ctx.api::<Pod>().list(&ListParams::default().labels(&sel)).await.unwrap();
    pods.items.iter().map(|p| p.name_any()).collect()
}

/// Ask for a rotation of every user and wait until each one is settled on a new
/// password, sampling the replication links every 200 ms meanwhile: a replica whose
/// link is down in any sample, or a primary that served a (partial or full) resync,
/// fails the test.
pub async fn rotate_all(stack: &Stack) {
    let before = passwords(stack).await;
    let primary = stack.primary().await.expect("primary").pod;
    let syncs = |i: &BTreeMap<String, String>| {
        ["sync_full", "sync_partial_ok"]
            .iter()
            .map(|k| i.get(*k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
            .sum::<u64>()
    };
    let syncs_before = syncs(&info(&stack.ctx, &primary).await.expect("INFO of the primary"));
    let replicas: Vec<String> = redis_pods(stack).await.into_iter().filter(|p| *p != primary).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, ctx, replicas) = (stop.clone(), stack.ctx.clone(), replicas.clone());
        tokio::spawn(async move {
            let (mut samples, mut down) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                for r in &replicas {
                    match info(&ctx, r).await {
                        Ok(i) if i.get("master_link_status").map(String::as_str) == Some("up") => {
                            samples += 1
                        }
                        Ok(i) => down.push(format!("{r}: link {:?}", i.get("master_link_status"))),
                        // The sampler's own login may race a step; not a link failure.
                        Err(e) => eprintln!("e2e: link sample of {r} skipped: {e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (samples, down)
        })
    };

    let patch = serde_json::json!({"metadata": {"annotations": {ROTATE_ANNOTATION: "redis-all"}}});
    stack
        .ctx
        .api::<CounterApp>()
        .patch(&stack.app, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eprintln!("e2e: {ROTATE_ANNOTATION}=redis-all");
    let asked = std::time::Instant::now();
    eventually("every Redis user on a new, settled password", timeout(), || async {
        let cr = stack.cr().await?;
        let rotating = cr
            .status
            .as_ref()
            .and_then(|s| s.redis.as_ref())
            .map(|r| r.rotating_passwords.clone())
            .unwrap_or_default();
        let now = passwords(stack).await;
        let pending: Vec<&str> =
            USERS.into_iter().filter(|u| now[u].0 == before[u].0 || now[u].0 != now[u].1).collect();
        if pending.is_empty() && rotating.is_empty() && !cr.annotations().contains_key(ROTATE_ANNOTATION) {
            Ok(())
        } else {
            Err(format!("still rotating: {pending:?} (status {rotating:?})"))
        }
    })
    .await;
    // Most of it is the web Deployment's rollout: its new pods mount the Secret fresh
    // and log in with the new password before they are ready.
    eprintln!(
        "e2e: every password rotated and settled {:.1} s after the annotation",
        asked.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::SeqCst);
    let (samples, down) = sampler.await.unwrap();
    eprintln!("e2e: {samples} link samples of {} replicas during the rotation", replicas.len());
    assert!(samples > 0, "no replication link was sampled");
    assert!(down.is_empty(), "a replica lost its link during the rotation: {down:?}");
    let after = info(&stack.ctx, &primary).await.expect("INFO of the primary");
    assert_eq!(syncs(&after), syncs_before, "the primary served a resync during the rotation: {after:?}");
}

/// Rotation of every user under load: nothing acknowledged lost, no read below an
/// acknowledged value, no write refused for a password, writes paused less than a second.
pub async fn rotate_every_password_under_load(stack: &Stack) {
    let f = scenario::run(stack, Scenario::Rotate).await;
    assert_eq!(f.lost, 0, "{f}");
    assert!(f.backwards.is_empty(), "{f}");
    assert!(f.gap < Duration::from_secs(1), "{f}");
    let auth = ["WRONGPASS", "NOAUTH", "NOPERM", "AUTH"];
    assert!(
        !f.error_samples.iter().any(|e| auth.iter().any(|a| e.contains(a))),
        "auth errors under rotation: {f}"
    );
    // The old passwords are gone from every node, the new ones work.
    for pod in redis_pods(stack).await {
        info(&stack.ctx, &pod).await.unwrap_or_else(|e| panic!("{pod} with the new operator password: {e}"));
    }
}

/// A CA and a server certificate for CounterApp `app` in namespace `ns` (the names
/// cert-manager's Certificate would carry), as a `kubernetes.io/tls` Secret's data.
pub fn make_tls_secret_data(app: &str, ns: &str) -> BTreeMap<String, k8s_openapi::ByteString> {
    let dir = tempfile::tempdir().expect("temp dir");
    let sans = counterstack::children::certificate::dns_names(app, Some(ns))
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    crate::pki::make_ca(dir.path(), "ca");
    crate::pki::make_server(dir.path(), "tls", "ca", &sans);
    ["tls.crt", "tls.key", "ca.crt"]
        .iter()
        .map(|f| (f.to_string(), k8s_openapi::ByteString(std::fs::read(dir.path().join(f)).unwrap())))
        .collect()
}

/// A TLS-only stack with a certificate from an existing Secret reaches Ready, counts,
/// refuses plain-text connections and replicates over TLS.
pub async fn tls_stack_reaches_ready_and_counts(ctx: &Ctx, app: &str) {
    use k8s_openapi::api::core::v1::Secret;
    let secret_name = format!("{app}-own-tls");
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(secret_name.clone()), ..Default::default() },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(make_tls_secret_data(app, &ctx.ns)),
        ..Default::default()
    };
    ctx.api::<Secret>().create(&Default::default(), &secret).await.expect("TLS Secret");
    let mut spec = crate::harness::small_spec();
    spec["redis"]["tls"] = serde_json::json!({ "secretName": secret_name });
    // The exporter sidecar too: every container of the pod must pass `restricted`.
    spec["redis"]["metrics"] = serde_json::json!({ "enabled": true });
    ctx.apply_app(app, spec).await;
    if !crate::harness::wait_ready_or_skip(ctx, app, "a TLS stack with the exporter sidecar").await {
        return;
    }
    // Counts through the web pods, which reach Redis over TLS with the CA.
    let svc = counterstack::names::web(app);
    let mut last = 0;
    for _ in 0..5 {
        let body =
            crate::harness::proxy(ctx, "POST", &svc, 80, "/api/counter/increment").await.expect("increment");
        last = crate::harness::counter_value(&body).unwrap();
    }
    assert!(last >= 5, "{last}");
    // Every Redis pod: TLS with the CA works, plain text does not; replicas linked.
    for pod in {
        let sel = format!("app.kubernetes.io/instance={app},app.kubernetes.io/component=redis");
        ctx.api::<Pod>().list(&ListParams::default().labels(&sel)).await.unwrap().items
    } {
        let name = pod.name_any();
        let i = info(ctx, &name).await.unwrap_or_else(|e| panic!("{name} over TLS: {e}"));
        if i.get("role").map(String::as_str) == Some("slave") {
            assert_eq!(
                i.get("master_link_status").map(String::as_str),
                Some("up"),
                "{name} replicates over TLS"
            );
        }
        let ip = pod.status.and_then(|s| s.pod_ip).unwrap();
        let plain = redis::Client::open(format!("redis://{ip}:6379")).unwrap();
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        let r: redis::RedisResult<String> = async {
            let mut c = plain.get_multiplexed_async_connection_with_config(&cfg).await?;
            redis::cmd("PING").query_async(&mut c).await
        }
        .await;
        assert!(r.is_err(), "{name} answered plain text: {r:?}");
        // The exporter sidecar reaches its Redis over TLS (redis_up 1), through the
        // API server's pod proxy.
        let uri = format!("/api/v1/namespaces/{}/pods/{name}:9121/proxy/metrics", ctx.ns);
        let req = http::Request::get(&uri).body(Vec::new()).unwrap();
        let metrics = ctx.client.request_text(req).await.unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert!(
            metrics.lines().any(|l| l.trim() == "redis_up 1"),
            "{name}: the exporter does not see its Redis: {}",
            metrics.lines().filter(|l| l.starts_with("redis_up")).collect::<Vec<_>>().join("; ")
        );
    }
}
