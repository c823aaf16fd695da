//! What each of the operator's watch caches costs, per object and for N CounterApps
//! (default 1000), measured rather than guessed: the objects a cluster holds for N stacks
//! waiting for a node (what bench/scale.sh creates: 13 children, 2 Pending Redis pods and
//! 1 Pending web pod each), shaped as the API server sends them (uid, resourceVersion, managed fields,
//! status), go through the same stripping as in the operator into reflector stores, and a
//! counting allocator reports the heap bytes each store holds afterwards. Allocator
//! overhead (about 16 bytes per allocation with glibc) is shown apart.
//!
//!   cargo run --release --example cache_cost          # N=1000
//!   N=300 cargo run --release --example cache_cost
//!
//! docs/operator.md ("What the caches cost") quotes its output.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use counterstack::acl::random_password;
use counterstack::api::CounterApp;
use counterstack::children::{self, Inputs, Passwords, UserPassword};
use counterstack::operator::cache::{
    self, ChildMeta, Slim, SlimDeployment, SlimNamespace, SlimPod, SlimSecret, SlimStatefulSet,
};

/// Counts the bytes and allocations live on the heap.
struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NS: &str = "scale-bench";
const MALLOC_OVERHEAD: isize = 16;

/// A managed-fields entry about as large as the API server's for `obj` (a `f:` key per
/// field the manager set).
fn managed_fields(obj: &Value, manager: &str) -> Value {
    fn fields(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (format!("f:{k}"), fields(v))).collect()),
            Value::Array(items) => {
                Value::Object(items.iter().enumerate().map(|(i, v)| (format!("i:{i}"), fields(v))).collect())
            }
            _ => json!({}),
        }
    }
    json!([{
        "manager": manager, "operation": "Apply", "apiVersion": obj["apiVersion"],
        "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": fields(&json!({ "metadata": obj["metadata"], "spec": obj["spec"], "data": obj["data"] })),
    }])
}

/// `obj` as the API server returns it: system metadata and managed fields added.
fn served(mut obj: Value, i: usize, status: Option<Value>) -> Value {
    let rv = 100_000 + i;
    obj["metadata"]["uid"] = json!(format!("{:08x}-1111-2222-3333-444455556666", i));
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    if matches!(
        obj["kind"].as_str(),
        Some("Deployment" | "StatefulSet" | "PodDisruptionBudget" | "CounterApp")
    ) {
        obj["metadata"]["generation"] = json!(1);
    }
    obj["metadata"]["managedFields"] = managed_fields(&obj, "counterstack-operator");
    if let Some(s) = status {
        obj["status"] = s;
    }
    obj
}

/// The cluster's objects for stack `i`, by kind.
struct Stack {
    app: Value,
    children: Vec<Value>,
    pods: Vec<Value>,
}

/// A Pending pod of `template` (labels `labels`), controlled by `owner` (kind, name), as
/// the API server sends it.
fn pending_pod(name: String, template: &Value, labels: Value, owner: (&str, String), i: usize) -> Value {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NS, "labels": labels,
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                "uid": "99999999-1111-2222-3333-444455556666", "controller": true, "blockOwnerDeletion": true }],
        },
        "spec": template["spec"],
    });
    served(pod, i, Some(json!({ "phase": "Pending", "qosClass": "Burstable" })))
}

fn stack(i: usize) -> Stack {
    let name = format!("s{i:05}");
    let app: CounterApp = serde_json::from_value(json!({
        "apiVersion": "counterstack.io/v1alpha1", "kind": "CounterApp",
        "metadata": { "name": name, "namespace": NS, "uid": format!("{i:08x}-aaaa-bbbb-cccc-ddddeeeeffff") },
        "spec": { "web": { "replicas": 1 }, "redis": { "replicas": 1, "storage": { "size": "64Mi" } } },
    }))
    .expect("CounterApp");
    let inputs = Inputs {
        default_web_image: "ghcr.io/counterstack/counterstack:0.1.0".into(),
        passwords: Passwords::from_fn(|_| UserPassword::settled(random_password())),
        tls: None,
        operator_namespace: Some("counterstack-system".into()),
    };
    let c = children::all(&app, &inputs).expect("children");
    let hash = |mut v: Value| {
        v["metadata"]["annotations"]["counterstack.io/applied-hash"] =
            json!("0123456789abcdef0123456789abcdef");
        v
    };
    let to = |v: &dyn erased::Ser| hash(v.value());
    let deploy_status = json!({
        "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1,
        "conditions": [
            { "type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
              "message": "Deployment does not have minimum availability.",
              "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z" },
            { "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
              "message": format!("ReplicaSet \"{name}-web-5cccfcf68c\" is progressing."),
              "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z" },
        ],
    });
    let sts_status = json!({
        "observedGeneration": 1, "replicas": 2, "currentReplicas": 2, "updatedReplicas": 2,
        "availableReplicas": 0, "currentRevision": format!("{name}-redis-7d9f8b6c5d"),
        "updateRevision": format!("{name}-redis-7d9f8b6c5d"), "collisionCount": 0,
    });
    let sts = to(&c.redis_statefulset);
    let mut pods: Vec<Value> = (0..2)
        .map(|k| {
            let template = &sts["spec"]["template"];
            let mut labels = template["metadata"]["labels"].clone();
            labels["controller-revision-hash"] = json!(format!("{name}-redis-7d9f8b6c5d"));
            labels["statefulset.kubernetes.io/pod-name"] = json!(format!("{name}-redis-{k}"));
            labels["apps.kubernetes.io/pod-index"] = json!(k.to_string());
            let owner = ("StatefulSet", format!("{name}-redis"));
            pending_pod(format!("{name}-redis-{k}"), template, labels, owner, i * 3 + k)
        })
        .collect();
    // The web pod (one, as bench/scale.sh asks): watched for image pull errors only.
    let web_template = &to(&c.web_deployment)["spec"]["template"];
    let mut web_labels = web_template["metadata"]["labels"].clone();
    web_labels["pod-template-hash"] = json!("5cccfcf68c");
    let owner = ("ReplicaSet", format!("{name}-web-5cccfcf68c"));
    pods.push(pending_pod(
        format!("{name}-web-5cccfcf68c-x7k2p"),
        web_template,
        web_labels,
        owner,
        i * 3 + 2,
    ));
    let mut children: Vec<Value> = c.redis_user_secrets.iter().map(|s| served(to(s), i, None)).collect();
    children.push(served(to(&c.redis_config), i, None));
    for s in [&c.redis_headless_service, &c.redis_primary_service, &c.redis_replicas_service, &c.web_service]
    {
        let mut v = served(to(s), i, None);
        v["spec"]["clusterIP"] = json!("10.96.12.34");
        children.push(v);
    }
    children.push(served(sts, i, Some(sts_status)));
    children.push(served(to(&c.web_deployment), i, Some(deploy_status)));
    for p in [&c.redis_pdb, &c.web_pdb] {
        children.push(served(to(p), i, Some(json!({ "observedGeneration": 1, "expectedPods": 1 }))));
    }
    if let Some(np) = &c.redis_network_policy {
        children.push(served(to(np), i, None));
    }
    let app_status = json!({
        "observedGeneration": 1,
        "conditions": [
            { "type": "Available", "status": "False", "reason": "WebUnavailable", "message": "no web pod is available",
              "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z" },
            { "type": "Degraded", "status": "True", "reason": "WebReplicasNotReady", "message": "0/1 web pods are ready",
              "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z" },
            { "type": "Ready", "status": "False", "reason": "Progressing", "message": "waiting for Redis pods (0/2 ready)",
              "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z" },
            { "type": "Reconciling", "status": "True", "reason": "Progressing", "message": "waiting for Redis pods (0/2 ready)",
              "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z" },
        ],
        "web": { "replicas": 1, "readyReplicas": 0, "ready": "0/1",
                 "selector": format!("app.kubernetes.io/component=web,app.kubernetes.io/instance={name},app.kubernetes.io/name=counterstack") },
        "redis": { "epoch": 0, "readyReplicas": 0, "holdsData": false, "nodes": [
            { "pod": format!("{name}-redis-0"), "role": "unknown", "offset": 0, "lagBytes": 0, "linkUp": false },
            { "pod": format!("{name}-redis-1"), "role": "unknown", "offset": 0, "lagBytes": 0, "linkUp": false },
        ] },
    });
    let app = served(serde_json::to_value(&app).expect("json"), i, Some(app_status));
    Stack { app, children, pods }
}

/// Serialization of any child type, without naming it.
mod erased {
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("json")
        }
    }
}

/// A metadata-only object, as a metadata watch delivers it.
fn meta_only<K: Resource<DynamicType = ()>>(v: &Value) -> PartialObjectMeta<K> {
    use kube::core::PartialObjectMetaExt;
    serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
        v["metadata"].clone(),
    )
    .expect("metadata")
    .into_response_partial::<K>()
}

/// Heap bytes and allocations live now.
fn live() -> (isize, isize) {
    (BYTES.load(Ordering::Relaxed), ALLOCS.load(Ordering::Relaxed))
}

/// Fill one of the operator's caches with the objects `make` returns, as its watch does;
/// returns the cache (to keep it alive) with the count and the heap bytes and
/// allocations it holds once everything else is dropped.
fn fill<K, S>(make: impl FnOnce() -> Vec<K>) -> (Box<dyn std::any::Any>, usize, isize, isize)
where
    K: Resource + 'static,
    S: Slim<K>,
{
    let (bytes0, allocs0) = live();
    let objects = make();
    let count = objects.len();
    let (cache, mut writer) = cache::store::new::<K, S>();
    writer.apply_watcher_event(&Event::Init);
    for o in objects {
        writer.apply_watcher_event(&Event::InitApply(o));
    }
    writer.apply_watcher_event(&Event::InitDone);
    drop(writer);
    let (bytes, allocs) = live();
    (Box::new(cache), count, bytes - bytes0, allocs - allocs0)
}

/// The same for the CounterApps, in kube's store as the Controller keeps them.
fn fill_apps(make: impl FnOnce() -> Vec<CounterApp>) -> (Box<dyn std::any::Any>, usize, isize, isize) {
    let (bytes0, allocs0) = live();
    let objects = make();
    let count = objects.len();
    let (store, mut writer) = reflector::store::<CounterApp>();
    writer.apply_watcher_event(&Event::Init);
    for mut o in objects {
        cache::strip_meta(&mut o);
        writer.apply_watcher_event(&Event::InitApply(o));
    }
    writer.apply_watcher_event(&Event::InitDone);
    drop(writer);
    let (bytes, allocs) = live();
    (Box::new(store), count, bytes - bytes0, allocs - allocs0)
}

fn of_kind(stacks: &[Stack], kind: &str) -> Vec<Value> {
    stacks.iter().flat_map(|s| s.children.iter()).filter(|c| c["kind"] == kind).cloned().collect()
}

fn full<K: DeserializeOwned>(values: Vec<Value>) -> Vec<K> {
    values.into_iter().map(|v| serde_json::from_value(v).expect("object")).collect()
}

fn metas<K: Resource<DynamicType = ()>>(values: Vec<Value>) -> Vec<PartialObjectMeta<K>> {
    values.iter().map(meta_only::<K>).collect()
}

fn main() {
    let n: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let stacks: Vec<Stack> = (1..=n).map(stack).collect();
    let mut rows: Vec<(&str, usize, isize, isize)> = vec![];
    let mut keep: Vec<Box<dyn std::any::Any>> = vec![];
    let mut measure = |label, (cache, count, bytes, allocs)| {
        rows.push((label, count, bytes, allocs));
        keep.push(cache);
    };
    measure(
        "CounterApp (kube store, status kept)",
        fill_apps(|| full::<CounterApp>(stacks.iter().map(|s| s.app.clone()).collect())),
    );
    measure(
        "Deployment (replicas, status)",
        fill::<_, SlimDeployment>(|| full::<Deployment>(of_kind(&stacks, "Deployment"))),
    );
    measure(
        "StatefulSet (replicas, status)",
        fill::<_, SlimStatefulSet>(|| full::<StatefulSet>(of_kind(&stacks, "StatefulSet"))),
    );
    measure("Secret (passwords)", fill::<_, SlimSecret>(|| full::<Secret>(of_kind(&stacks, "Secret"))));
    measure(
        "Service (metadata only)",
        fill::<_, ChildMeta>(|| metas::<Service>(of_kind(&stacks, "Service"))),
    );
    measure(
        "ConfigMap (metadata only)",
        fill::<_, ChildMeta>(|| metas::<ConfigMap>(of_kind(&stacks, "ConfigMap"))),
    );
    measure(
        "PodDisruptionBudget (metadata only)",
        fill::<_, ChildMeta>(|| metas::<PodDisruptionBudget>(of_kind(&stacks, "PodDisruptionBudget"))),
    );
    measure(
        "NetworkPolicy (metadata only)",
        fill::<_, ChildMeta>(|| metas::<NetworkPolicy>(of_kind(&stacks, "NetworkPolicy"))),
    );
    measure(
        "Pod (Redis: labels, IP, Ready; web: labels)",
        fill::<_, SlimPod>(|| full::<Pod>(stacks.iter().flat_map(|s| s.pods.clone()).collect())),
    );
    measure(
        "Namespace (metadata only)",
        fill::<_, SlimNamespace>(|| {
            metas::<Namespace>(vec![json!({ "metadata": { "name": NS, "uid": "n", "resourceVersion": "1",
                "labels": { "kubernetes.io/metadata.name": NS } } })])
        }),
    );
    println!(
        "cache_cost: {n} CounterApps waiting for a node (13 children, 2 Pending Redis pods and 1 web pod each)"
    );
    println!("{:<46} {:>7} {:>10} {:>12} {:>14}", "cache", "objects", "B/object", "heap KiB", "+malloc KiB");
    let (mut total, mut total_allocs) = (0, 0);
    for (label, count, bytes, allocs) in &rows {
        total += bytes;
        total_allocs += allocs;
        let per = if *count > 0 { *bytes / *count as isize } else { 0 };
        println!(
            "{label:<46} {count:>7} {per:>10} {:>12} {:>14}",
            bytes / 1024,
            (bytes + allocs * MALLOC_OVERHEAD) / 1024
        );
    }
    println!(
        "{:<46} {:>7} {:>10} {:>12} {:>14}",
        "total",
        "",
        "",
        total / 1024,
        (total + total_allocs * MALLOC_OVERHEAD) / 1024
    );
    drop(keep);
}
