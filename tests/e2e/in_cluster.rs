//! The operator as users run it (E2E_OPERATOR=helm, the default): installed once per run
//! from `charts/counterstack` with Helm into its own namespace (Pod Security `restricted`
//! enforced), two replicas with leader election by pod name, only the chart's RBAC,
//! watching every namespace. The image is E2E_OPERATOR_IMAGE, else the web image
//! (`ghcr.io/counterstack/counterstack:<version>`, which `../shared/k8s/local-k8s node up
//! --counterstack BIN` builds from the binary under test); the pods are rolled whenever the
//! test binary's `counterstack` changes (its checksum is a pod annotation).
//!
//! Tests that must run their own operator processes (`leader.rs`: kill -9 of a process,
//! two operators in one namespace) pause the in-cluster one meanwhile ([`paused`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use sha2::Digest;

use crate::harness::{self, eventually, timeout};

/// Namespace of the release (E2E_OPERATOR_NAMESPACE, default `counterstack-e2e`).
pub fn namespace() -> String {
    std::env::var("E2E_OPERATOR_NAMESPACE").unwrap_or_else(|_| "counterstack-e2e".to_string())
}

/// Helm release name; it contains the chart name, so objects are named after it alone.
pub const RELEASE: &str = "counterstack";
/// The chart's operator Deployment for [`RELEASE`] (`<fullname>-operator`).
pub const DEPLOYMENT: &str = "counterstack-operator";
/// The Lease the replicas compete for (the operator's `--lease-name` default).
pub const LEASE: &str = "counterstack-operator";
/// Replicas the chart runs by default.
pub const REPLICAS: i32 = 2;

fn helm() -> PathBuf {
    if let Some(h) = std::env::var_os("HELM") {
        return h.into();
    }
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/helm");
    if tools.exists() { tools } else { "helm".into() }
}

/// Checksum of the binary under test: a new one rolls the operator pods.
fn binary_checksum() -> String {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_counterstack")).expect("read the counterstack binary");
    hex::encode(&sha2::Sha256::digest(&bin)[..8])
}

/// `helm upgrade --install` the chart once per run and wait for both replicas.
pub async fn ensure_installed(client: &Client) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED.get_or_init(|| install(client)).await;
}

/// The release's values as the suite installs it, with `overrides` merged into
/// `operator` (e.g. another `defaultWebImage`).
fn values(overrides: &serde_json::Value) -> serde_json::Value {
    let image = operator_image();
    let (repository, tag) =
        image.rsplit_once(':').unwrap_or_else(|| panic!("E2E_OPERATOR_IMAGE {image}: no tag"));
    let mut operator = serde_json::json!({
        "replicas": REPLICAS,
        "defaultWebImage": harness::web_image(),
        "logFormat": "json",
        "logLevel": "info",
        "extraArgs": harness::extra_operator_args(),
        "podAnnotations": {"counterstack.io/e2e-binary": binary_checksum()},
    });
    for (k, v) in overrides.as_object().into_iter().flatten() {
        operator[k] = v.clone();
    }
    serde_json::json!({
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "operator": operator,
    })
}

fn operator_image() -> String {
    std::env::var("E2E_OPERATOR_IMAGE").unwrap_or_else(|_| harness::web_image())
}

async fn install(client: &Client) {
    let ns = namespace();
    harness::create_restricted_namespace(client, &ns).await;
    let leader = helm_upgrade(client, &values(&serde_json::json!({}))).await;
    eprintln!(
        "e2e: operator in-cluster: helm release {RELEASE} in {ns} (Pod Security restricted), image {}, \
         {REPLICAS} replicas, leader {leader}",
        operator_image()
    );
}

/// `helm upgrade --install` with `values`, wait for the rollout and a leader; the leader.
async fn helm_upgrade(client: &Client, values: &serde_json::Value) -> String {
    let ns = namespace();
    // JSON is YAML: a values file avoids --set's escaping of dots and commas.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(values).unwrap()).unwrap();
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/counterstack");
    let wait = format!("{}s", timeout().as_secs());
    let out = Command::new(helm())
        .args(["upgrade", "--install", RELEASE])
        .arg(&chart)
        .args(["--namespace", &ns, "--values"])
        .arg(file.path())
        .args(["--wait", "--timeout", &wait])
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm ({}): {e}; run scripts/setup.sh", helm().display()));
    if !out.status.success() {
        let pods = operator_pods(client).await;
        panic!(
            "helm upgrade --install {RELEASE} failed: {}\n{}\noperator pods: {:?}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            pods.iter().map(|p| (p.name_any(), p.status.clone())).collect::<Vec<_>>()
        );
    }
    // `--wait` returns once the new pods are ready; old ones may still be terminating.
    settled(client, REPLICAS, true).await;
    eventually("one of the operator pods to hold the lease", timeout(), || leader_pod(client)).await
}

/// Run `body`, which may [`upgrade`] the release, then install the release with the
/// suite's values again, also when `body` panics. Helm mode only (the caller checks).
pub async fn restoring_release<Fut: Future<Output = ()>>(client: &Client, body: Fut) {
    ensure_installed(client).await;
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    let leader = helm_upgrade(client, &values(&serde_json::json!({}))).await;
    eprintln!("e2e: helm release {RELEASE} back to the suite's values (leader {leader})");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Upgrade the release with `overrides` merged into the suite's `operator` values;
/// returns the new leader. For use inside [`restoring_release`].
pub async fn upgrade(client: &Client, overrides: &serde_json::Value) -> String {
    helm_upgrade(client, &values(overrides)).await
}

/// The operator's pods (any phase), by the chart's selector labels.
pub async fn operator_pods(client: &Client) -> Vec<Pod> {
    let sel = format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace());
    pods.list(&ListParams::default().labels(&sel)).await.map(|l| l.items).unwrap_or_default()
}

/// Holder of the lease, when it names a running operator pod (identity = pod name).
pub async fn leader_pod(client: &Client) -> Result<String, String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace());
    let lease = leases.get_opt(LEASE).await.map_err(|e| e.to_string())?.ok_or("no Lease yet")?;
    let holder = lease.spec.and_then(|s| s.holder_identity).ok_or("the Lease has no holder")?;
    let pods = operator_pods(client).await;
    let running = pods.iter().any(|p| {
        p.name_any() == holder
            && p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    });
    if running { Ok(holder) } else { Err(format!("the Lease names {holder}, no running operator pod")) }
}

/// Whether the pod's every container is ready.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Restarts of the operator container of `p`.
pub fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

/// The operator container's log of pod `pod`.
pub async fn log(client: &Client, pod: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace());
    pods.logs(pod, &LogParams { container: Some("operator".into()), ..Default::default() })
        .await
        .unwrap_or_else(|e| format!("<no log: {e}>"))
}

/// Scale the operator Deployment to `n` and wait until exactly `n` pods run and are
/// ready (`ready`), or merely run (not `ready`: for an operator that cannot be ready).
pub async fn scale(client: &Client, n: i32, ready: bool) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace());
    let patch = serde_json::json!({"spec": {"replicas": n}});
    deployments
        .patch_scale(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("scale {DEPLOYMENT} to {n}: {e}"));
    settled(client, n, ready).await;
}

/// Wait until exactly `n` operator pods exist, all running (and `ready`), none terminating.
async fn settled(client: &Client, n: i32, ready: bool) {
    let what = format!("{n} operator pods{}", if ready { ", ready" } else { " running" });
    eventually(&what, timeout(), || async {
        let pods = operator_pods(client).await;
        let live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let running = live
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| !ready || pod_ready(p))
            .count();
        // Terminating pods still act until they exit: wait for them to be gone.
        if pods.len() == n as usize && running == n as usize {
            Ok(())
        } else {
            Err(format!(
                "{} pods ({} live), {running} {}",
                pods.len(),
                live.len(),
                if ready { "ready" } else { "running" }
            ))
        }
    })
    .await;
}

/// Run `body` with the in-cluster operator scaled to zero (it watches every namespace and
/// would fight the test's own operators), then bring it back, also when `body` panics.
/// Nothing to pause in the other modes.
pub async fn paused<Fut: Future<Output = ()>>(client: &Client, body: Fut) {
    if harness::operator_mode() != harness::OperatorMode::Helm {
        return body.await;
    }
    ensure_installed(client).await;
    scale(client, 0, false).await;
    eprintln!("e2e: in-cluster operator paused (0 replicas) for this test");
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    scale(client, REPLICAS, true).await;
    eprintln!("e2e: in-cluster operator back ({REPLICAS} replicas)");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The leader pod dies: deleted with grace period 0 and, where the node is this machine,
/// its process killed with SIGKILL at once (a force delete alone still gives the process
/// a SIGTERM and time to finish its work, which is no death). The standby pod takes the
/// lease within its duration and applies a spec change made right after. The lease names
/// pods: identity is the pod name.
pub async fn the_standby_pod_takes_over_when_the_leader_pod_is_killed(ctx: crate::harness::Ctx) {
    let client = &ctx.client;
    let leader = eventually("a leader pod", timeout(), || leader_pod(client)).await;
    let names: Vec<String> = operator_pods(client).await.iter().map(|p| p.name_any()).collect();
    assert!(names.contains(&leader), "the lease holder {leader} is not one of the pods {names:?}");
    let standby = names.iter().find(|n| **n != leader).cloned().expect("a standby pod");

    ctx.apply_app("demo", harness::small_spec()).await;
    let web = counterstack::names::web("demo");
    let replicas = |want: i32| {
        let (ctx, web) = (ctx.clone(), web.clone());
        move || {
            let (ctx, web) = (ctx.clone(), web.clone());
            async move {
                let d = ctx.api::<Deployment>().get_opt(&web).await.map_err(|e| e.to_string())?;
                let r = d.and_then(|d| d.spec?.replicas);
                if r == Some(want) { Ok(()) } else { Err(format!("web replicas {r:?}")) }
            }
        }
    };
    eventually("the in-cluster leader to create the web Deployment", timeout(), replicas(2)).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace());
    let leader_obj = pods.get(&leader).await.unwrap_or_else(|e| panic!("pod {leader}: {e}"));
    let local = crate::faults::Faults::detect(client).await == crate::faults::Faults::Local;
    let pid = local.then(|| crate::faults::pod_process(&leader_obj, "counterstack"));
    // A crash first (SIGKILL: no lease release), then the pod goes so the container does
    // not come back in place. The other order raced in CI: the kubelet's own kill of a
    // pod deleted with grace 0 could land first (and send SIGTERM, a graceful exit).
    if let Some(pid) = pid {
        crate::faults::kill9(pid).unwrap_or_else(|e| panic!("kill -9 {leader} (pid {pid}): {e}"));
    }
    pods.delete(&leader, &kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("delete the leader pod {leader}: {e}"));
    if pid.is_none() {
        // Elsewhere the process runs until it has finished its SIGTERM: wait for it.
        eprintln!("e2e: the node is out of reach: waiting for {leader} to exit after its SIGTERM");
        eventually("the leader pod's process to exit", timeout(), || async {
            let gone = operator_pods(client).await.iter().all(|p| p.name_any() != leader);
            if gone { Ok(()) } else { Err(format!("{leader} still terminating")) }
        })
        .await;
    }
    let killed = std::time::Instant::now();
    let mut spec = harness::small_spec();
    spec["web"]["replicas"] = serde_json::json!(3);
    ctx.apply_app("demo", spec).await;
    let lease_seconds = 15;
    let limit = Duration::from_secs(lease_seconds + 10);
    eventually("the standby pod to apply the change", limit, replicas(3)).await;
    eprintln!(
        "e2e: {standby} applied the change {:?} after the leader pod {leader} was killed (lease {lease_seconds} s)",
        killed.elapsed()
    );
    let now = eventually("a new leader pod", timeout(), || leader_pod(client)).await;
    assert_ne!(now, leader, "the killed pod still holds the lease");
    // The ReplicaSet replaces the killed pod: two replicas again, one leading.
    scale(client, REPLICAS, true).await;
}

/// What `helm install` or a GitOps sync of CRD and Deployment together can do: the
/// operator starts before its CRD exists. It must wait (not ready, one clear log line, no
/// restart), then start by itself once the CRD is established.
pub async fn the_operator_waits_for_its_crd(ctx: crate::harness::Ctx) {
    let client = &ctx.client;
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    let crd = "counterapps.counterstack.io";
    let outcome = AssertUnwindSafe(async {
        scale(client, 0, false).await;
        // Every CounterApp goes with the CRD; this test's namespace has none yet.
        crds.delete(crd, &Default::default()).await.unwrap_or_else(|e| panic!("delete CRD {crd}: {e}"));
        eventually("the CRD to be gone", timeout(), || async {
            match crds.get_opt(crd).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        })
        .await;
        scale(client, REPLICAS, false).await;
        // Long enough for a crash loop to show (an exit restarts the container at once)
        // and for several readiness probes (every 10 s).
        tokio::time::sleep(Duration::from_secs(25)).await;
        for p in operator_pods(client).await {
            let name = p.name_any();
            let log = log(client, &name).await;
            assert_eq!(restarts(&p), 0, "{name} restarted while its CRD was missing; log:\n{log}");
            assert!(!pod_ready(&p), "{name} is ready although its CRD is missing");
            assert!(
                log.contains("the CounterApp CRD is not installed (yet); waiting for it"),
                "{name} does not say it waits for the CRD; log:\n{log}"
            );
        }
        harness::apply_crd(client).await;
        scale(client, REPLICAS, true).await;
        for p in operator_pods(client).await {
            let name = p.name_any();
            let log = log(client, &name).await;
            assert_eq!(restarts(&p), 0, "{name} restarted; log:\n{log}");
            assert!(log.contains("the CounterApp CRD is installed; starting"), "{name}; log:\n{log}");
        }
        // And it works: a CounterApp gets its children.
        ctx.apply_app("demo", harness::small_spec()).await;
        let web = counterstack::names::web("demo");
        eventually("the web Deployment", timeout(), || async {
            ctx.api::<Deployment>()
                .get_opt(&web)
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or("missing".into())
        })
        .await;
    })
    .catch_unwind()
    .await;
    // Whatever happened: the CRD and both replicas back for the tests that follow.
    harness::apply_crd(client).await;
    scale(client, REPLICAS, true).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
