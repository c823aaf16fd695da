//! Cluster plumbing of the e2e suite: one runtime and one in-process operator for the
//! whole test binary, a namespace per test (deleted afterwards, also on failure),
//! polling with deadlines, and the checks that decide whether pods can run at all.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use counterstack::api::{CounterApp, CounterAppSpec};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;

/// Field manager of everything the suite itself writes.
pub const MANAGER: &str = "counterstack-e2e";

/// Seconds a single wait may take (E2E_TIMEOUT_SECS, default 300).
pub fn timeout() -> Duration {
    let secs = std::env::var("E2E_TIMEOUT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    Duration::from_secs(secs)
}

/// The one runtime: the in-process operator must outlive each test's future.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap())
}

/// Why the current test's in-process operator stopped, if it did. Tests run one at a
/// time (`--test-threads 1`), so one slot is enough.
static OPERATOR_EXIT: Mutex<Option<String>> = Mutex::new(None);

#[derive(Parser)]
struct OperatorCli {
    #[command(flatten)]
    args: counterstack::operator::OperatorArgs,
}

/// Image CounterApps run when the suite does not set one (E2E_WEB_IMAGE).
pub fn web_image() -> String {
    std::env::var("E2E_WEB_IMAGE").unwrap_or_else(|_| counterstack::api::DEFAULT_WEB_IMAGE.to_string())
}

/// Where the operator under test runs (E2E_OPERATOR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorMode {
    /// `helm`, the default: installed once from charts/counterstack, as users run it (two
    /// replicas, the chart's RBAC only, leader election by pod name), watching every
    /// namespace; see `in_cluster.rs`.
    Helm,
    /// `in-process`: an operator in this test process per test, watching only the test's
    /// namespace, with the kubeconfig's rights (for fault injection inside the operator).
    InProcess,
    /// `deployed`: whatever operator the cluster already runs.
    Deployed,
}

pub fn operator_mode() -> OperatorMode {
    match std::env::var("E2E_OPERATOR").as_deref() {
        Ok("in-process") => OperatorMode::InProcess,
        Ok("deployed") => OperatorMode::Deployed,
        Ok("helm") | Ok("") | Err(_) => OperatorMode::Helm,
        Ok(other) => panic!("E2E_OPERATOR={other}: expected helm (default), in-process or deployed"),
    }
}

/// Extra operator flags (E2E_OPERATOR_ARGS, whitespace-separated).
pub fn extra_operator_args() -> Vec<String> {
    std::env::var("E2E_OPERATOR_ARGS")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Make sure the operator of this test runs: with E2E_OPERATOR=in-process start one in
/// this process that watches only namespace `ns` (so it cannot fight an operator deployed
/// in the cluster); with `helm` install the chart once for the whole run.
async fn start_operator(client: &Client, ns: &str) -> Option<tokio::task::JoinHandle<()>> {
    match operator_mode() {
        OperatorMode::Deployed => {
            eprintln!("e2e: using the operator deployed in the cluster (E2E_OPERATOR=deployed)");
            return None;
        }
        OperatorMode::Helm => {
            crate::in_cluster::ensure_installed(client).await;
            return None;
        }
        OperatorMode::InProcess => {}
    }
    let mut argv: Vec<String> = ["operator", "--default-web-image", &web_image(), "--namespace", ns]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // An ephemeral port: the default 0.0.0.0:8081 may be taken on the test machine.
    argv.extend(["--metrics-addr".to_string(), "127.0.0.1:0".to_string()]);
    argv.extend(extra_operator_args());
    let cli =
        OperatorCli::try_parse_from(&argv).unwrap_or_else(|e| panic!("bad operator arguments {argv:?}: {e}"));
    counterstack::telemetry::init(counterstack::telemetry::LogFormat::Text);
    eprintln!("e2e: running the operator in-process: {argv:?}");
    *OPERATOR_EXIT.lock().unwrap() = None;
    Some(runtime().spawn(async move {
        let outcome = match counterstack::operator::run(cli.args).await {
            Ok(()) => "returned".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        *OPERATOR_EXIT.lock().unwrap() = Some(outcome);
    }))
}

/// Panic when the in-process operator is gone: every wait would only time out.
pub fn assert_operator_alive() {
    if let Some(why) = OPERATOR_EXIT.lock().unwrap().as_ref() {
        panic!("the in-process operator stopped ({why}); see its log above");
    }
}

/// One test's context: a client and a fresh namespace.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub ns: String,
}

impl Ctx {
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Server-side apply a CounterApp with this spec (JSON; CRD defaults fill the rest).
    pub async fn apply_app(&self, name: &str, spec: serde_json::Value) -> CounterApp {
        let spec: CounterAppSpec = serde_json::from_value(spec).unwrap();
        let mut app = CounterApp::new(name, spec);
        app.metadata.namespace = Some(self.ns.clone());
        let pp = PatchParams::apply(MANAGER).force().validation_strict();
        self.api::<CounterApp>().patch(name, &pp, &Patch::Apply(&app)).await.unwrap()
    }
}

/// A client that never retries by itself. kube's default client retries 429, 503 and 504
/// (honouring Retry-After), which replays non-idempotent POSTs and hides the errors a
/// load test must count: the web service answers 503 with Retry-After while Redis is
/// unavailable.
pub async fn client_without_retries() -> Client {
    let mut config =
        kube::Config::infer().await.expect("no Kubernetes config: point KUBECONFIG at a cluster");
    config.default_retry = false;
    Client::try_from(config).expect("a Kubernetes client")
}

/// Run `body` in a fresh namespace named `e2e-<prefix>-<random>`; the namespace is
/// deleted afterwards even when `body` panics (E2E_KEEP_NAMESPACES=1 keeps it).
pub fn with_namespace<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    in_namespace(prefix, true, body)
}

/// [`with_namespace`] without the in-process operator: the test runs its own.
pub fn with_namespace_no_operator<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    in_namespace(prefix, false, body)
}

fn in_namespace<F, Fut>(prefix: &str, operator: bool, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    runtime().block_on(async {
        let client = Client::try_default()
            .await
            .expect("no Kubernetes client: point KUBECONFIG at a cluster (see docs/install.md, e2e)");
        install_crd(&client).await;
        let ns = format!("e2e-{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let nss: Api<Namespace> = Api::all(client.clone());
        create_restricted_namespace(&client, &ns).await;
        eprintln!("e2e: namespace {ns} (Pod Security: restricted)");
        let operator = if operator { start_operator(&client, &ns).await } else { None };

        let outcome =
            AssertUnwindSafe(body(Ctx { client: client.clone(), ns: ns.clone() })).catch_unwind().await;

        // Stop this test's operator before its namespace goes (it would only log errors).
        if let Some(op) = operator {
            op.abort();
            let _ = op.await;
        }
        if std::env::var_os("E2E_KEEP_NAMESPACES").is_some() {
            eprintln!("e2e: keeping namespace {ns} (E2E_KEEP_NAMESPACES)");
        } else if let Err(e) = nss.delete(&ns, &DeleteParams::default()).await {
            eprintln!("e2e: could not delete namespace {ns}: {e}");
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
}

/// Pod Security admission labels of every namespace the suite creates: `restricted`
/// enforced (pods that break it are refused), warned and audited, at the server's version.
pub const RESTRICTED: [(&str, &str); 4] = [
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
    ("pod-security.kubernetes.io/warn", "restricted"),
    ("pod-security.kubernetes.io/audit", "restricted"),
];

/// Create (or label) namespace `ns` with the restricted Pod Security Standard enforced.
pub async fn create_restricted_namespace(client: &Client, ns: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let mut labels: std::collections::BTreeMap<String, String> =
        RESTRICTED.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    labels.insert("app.kubernetes.io/part-of".to_string(), MANAGER.to_string());
    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}});
    nss.patch(ns, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&obj))
        .await
        .unwrap_or_else(|e| panic!("cannot create namespace {ns}: {e}"));
}

/// Apply the generated CRD (server-side) and wait until it is established; once per run.
async fn install_crd(client: &Client) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED.get_or_init(|| apply_crd(client)).await;
}

/// Apply the generated CRD (server-side) and wait until it is established.
pub async fn apply_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = CounterApp::crd();
    let name = crd.name_any();
    crds.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd))
        .await
        .unwrap_or_else(|e| panic!("cannot install the CRD {name}: {e}"));
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("the CRD was not established within 60s")
    .unwrap();
}

/// Poll `check` every second until it returns Ok, for at most `limit`. Panics with
/// `what` and the last reason on timeout, or when the in-process operator died.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_every(what, limit, Duration::from_secs(1), check).await
}

/// [`eventually`], polling every `interval` (for waits whose end is measured).
pub async fn eventually_every<T, F, Fut>(what: &str, limit: Duration, interval: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        assert_operator_alive();
        match check().await {
            Ok(v) => return v,
            Err(why) if start.elapsed() >= limit => {
                panic!("timed out after {limit:?} waiting for {what}: {why}")
            }
            Err(_) => tokio::time::sleep(interval).await,
        }
    }
}

/// Whether pods of a CounterApp can run on this cluster; Err is the reason they cannot.
pub async fn pods_can_run(client: &Client) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes.list(&ListParams::default()).await.map_err(|e| format!("cannot list nodes: {e}"))?;
    let usable = nodes.items.iter().any(|n| {
        let spec = n.spec.as_ref();
        let schedulable = !spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        schedulable && ready
    });
    if !usable {
        return Err(format!("none of the {} nodes is Ready and schedulable", nodes.items.len()));
    }
    let classes: Api<StorageClass> = Api::all(client.clone());
    let classes =
        classes.list(&ListParams::default()).await.map_err(|e| format!("cannot list StorageClasses: {e}"))?;
    let default = classes.items.iter().any(|c| {
        c.annotations().get("storageclass.kubernetes.io/is-default-class").map(String::as_str) == Some("true")
    });
    if !default {
        return Err("the cluster has no default StorageClass for the Redis volumes".to_string());
    }
    Ok(())
}

/// Reason the app's pods cannot start (image pull failures), if any: a setup problem
/// of the cluster, reported as a skip with instructions rather than a product failure.
pub async fn pod_setup_problem(ctx: &Ctx, app: &str) -> Option<String> {
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={app}"));
    let pods = ctx.api::<Pod>().list(&lp).await.ok()?;
    for p in pods.items {
        let statuses = p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        for cs in statuses {
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(reason) = waiting.and_then(|w| w.reason.as_deref())
                && matches!(reason, "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName")
            {
                return Some(format!(
                    "pod {} cannot pull image {} ({reason}): build and load the counterstack image \
                     into the cluster and set E2E_WEB_IMAGE (docs/install.md)",
                    p.name_any(),
                    cs.image
                ));
            }
        }
    }
    None
}

/// Wait until the app is Ready=True. Ok(false) with a printed reason when its pods
/// cannot run here; a Ready that never comes otherwise fails the test.
pub async fn wait_ready_or_skip(ctx: &Ctx, app: &str, step: &str) -> bool {
    if let Err(why) = pods_can_run(&ctx.client).await {
        eprintln!("e2e: SKIP {step}: {why}");
        return false;
    }
    let api = ctx.api::<CounterApp>();
    let start = Instant::now();
    loop {
        assert_operator_alive();
        let cr = api.get(app).await.unwrap();
        if ready_status(&cr).as_deref() == Some("True") {
            return true;
        }
        if let Some(why) = pod_setup_problem(ctx, app).await {
            eprintln!("e2e: SKIP {step}: {why}");
            return false;
        }
        assert!(
            start.elapsed() < timeout(),
            "{app} not Ready after {:?}; status: {}",
            timeout(),
            serde_json::to_string(&cr.status).unwrap()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Status of the CR's Ready condition.
pub fn ready_status(cr: &CounterApp) -> Option<String> {
    cr.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

/// GET/POST through the API server's service proxy: no traffic to pod or Service IPs
/// from the test machine is assumed. Errors carry the HTTP status and the body (the web
/// service's `{"error": ...}` is no Kubernetes Status).
pub async fn proxy(ctx: &Ctx, method: &str, service: &str, port: i32, path: &str) -> Result<String, String> {
    let uri = format!("/api/v1/namespaces/{}/services/{service}:{port}/proxy{path}", ctx.ns);
    let req = http::Request::builder()
        .method(method)
        .uri(&uri)
        .body(kube::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let res = ctx.client.send(req).await.map_err(|e| format!("{method} {uri}: {e}"))?;
    let status = res.status();
    let body = res.into_body().collect_bytes().await.map_err(|e| format!("{method} {uri}: {e}"))?;
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if status.is_success() { Ok(text) } else { Err(format!("{method} {path}: HTTP {status}: {text}")) }
}

/// `{"value": N}` of the counter API.
pub fn counter_value(body: &str) -> Result<i64, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("{body}: {e}"))?;
    v["value"].as_i64().ok_or_else(|| format!("no integer value in {body}"))
}

/// Minimal spec for tests: small, fast, CRD defaults for everything else.
pub fn small_spec() -> serde_json::Value {
    with_redis_image(json!({
        "web": {"replicas": 2},
        "redis": {"replicas": 1, "storage": {"size": "64Mi"}}
    }))
}

/// The Redis image every CounterApp of the run uses (E2E_REDIS_IMAGE, e.g.
/// `valkey/valkey:8.1`); None: the CRD default.
pub fn redis_image() -> Option<String> {
    std::env::var("E2E_REDIS_IMAGE").ok().filter(|s| !s.is_empty())
}

/// `spec` with `spec.redis.image` set from E2E_REDIS_IMAGE, when set.
pub fn with_redis_image(mut spec: serde_json::Value) -> serde_json::Value {
    if let Some(image) = redis_image() {
        spec["redis"]["image"] = json!(image);
    }
    spec
}

/// Mount a world-writable tmpfs of `size` (`mount -o size=`, e.g. `8m`) on `dir` of this
/// machine, where the node runs its pods; the error is mount's own words (a missing
/// `mount` binary panics).
pub fn mount_tmpfs(dir: &std::path::Path, size: &str) -> Result<(), String> {
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0777"), "tmpfs"])
        .arg(dir)
        .output()
        .expect("run mount");
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).to_string()) }
}

/// Take every free byte of the filesystem of `dir` with a file `filler` of the test's own.
pub fn fill_dir(dir: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    for chunk in [1 << 16, 4096, 1] {
        let buf = vec![b'x'; chunk];
        while f.write_all(&buf).and_then(|_| f.flush()).is_ok() {}
    }
}

/// Create the StorageClass `name` of static volumes only (no provisioner, bound at once,
/// retained): the class of the PVs [`create_bound_hostpath_pv`] makes.
pub async fn create_static_class(ctx: &Ctx, name: &str) {
    let sc: k8s_openapi::api::storage::v1::StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "Immediate",
        "reclaimPolicy": "Retain",
    }))
    .unwrap();
    Api::<k8s_openapi::api::storage::v1::StorageClass>::all(ctx.client.clone())
        .create(&kube::api::PostParams::default(), &sc)
        .await
        .unwrap();
}

/// Create a 64Mi hostPath PersistentVolume `name` of StorageClass `class` on `dir`,
/// pre-bound (`claimRef`) to the claim `claim` of the test's namespace: for the tests that
/// need volumes the node's local-path provisioner cannot give (an expandable class, a
/// tmpfs that fills). Reclaim `Retain`: the test deletes it.
pub async fn create_bound_hostpath_pv(
    ctx: &Ctx,
    name: &str,
    class: &str,
    dir: &std::path::Path,
    claim: &str,
) {
    let pv: k8s_openapi::api::core::v1::PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "hostPath": {"path": dir.display().to_string(), "type": "Directory"},
            "claimRef": {"namespace": ctx.ns, "name": claim},
        },
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(ctx.client.clone())
        .create(&kube::api::PostParams::default(), &pv)
        .await
        .unwrap();
}
