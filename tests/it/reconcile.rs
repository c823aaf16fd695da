//! Reconcile sequences against a fake API server (kube `Client` over a `tower_test`
//! mock): the exact requests the operator sends per scenario.

use crate::common;
mod at_rest;
mod fake_api;
mod rollouts;
mod services;
mod storage;
mod terminating;

use std::sync::Arc;
use std::time::Duration;

use fake_api::{FakeApi, Recorded};
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use common::redis_server::RedisServer;
use counterstack::api::CounterApp;
use counterstack::labels::{self, Component};
use counterstack::operator::context::RedisAddressing;
use counterstack::operator::{Context, Error, controller, error_policy, reconcile};
use counterstack::replication::node::LoopbackAddressing;

const NS: &str = "ns";
const CR: &str = "/apis/counterstack.io/v1alpha1/namespaces/ns/counterapps/demo";
/// The web user's Secret (the operator's and the replication user's are its twins).
const SECRET: &str = "/api/v1/namespaces/ns/secrets/demo-redis-auth-web";
const SECRET_REPLICATION: &str = "/api/v1/namespaces/ns/secrets/demo-redis-auth-replication";
const SECRET_OPERATOR: &str = "/api/v1/namespaces/ns/secrets/demo-redis-auth-operator";
const SECRETS: [&str; 3] = [SECRET, SECRET_REPLICATION, SECRET_OPERATOR];
const CONFIGMAP: &str = "/api/v1/namespaces/ns/configmaps/demo-redis";
const SVC_HEADLESS: &str = "/api/v1/namespaces/ns/services/demo-redis-headless";
const SVC_PRIMARY: &str = "/api/v1/namespaces/ns/services/demo-redis-primary";
const SVC_REPLICAS: &str = "/api/v1/namespaces/ns/services/demo-redis-replicas";
const STS: &str = "/apis/apps/v1/namespaces/ns/statefulsets/demo-redis";
const PDB_REDIS: &str = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo-redis";
const SVC_WEB: &str = "/api/v1/namespaces/ns/services/demo-web";
const DEPLOY: &str = "/apis/apps/v1/namespaces/ns/deployments/demo-web";
const PDB_WEB: &str = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo-web";
const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/demo-redis";
const PODS: &str = "/api/v1/namespaces/ns/pods";

/// Children in the order the operator applies them (Redis first, then web, then the
/// optional ones: the NetworkPolicy is on by default).
const CHILDREN: [&str; 13] = [
    SECRET,
    SECRET_REPLICATION,
    SECRET_OPERATOR,
    CONFIGMAP,
    SVC_HEADLESS,
    SVC_PRIMARY,
    SVC_REPLICAS,
    STS,
    PDB_REDIS,
    SVC_WEB,
    DEPLOY,
    PDB_WEB,
    NETPOL,
];

fn cr_json(spec: Value) -> Value {
    json!({
        "apiVersion": "counterstack.io/v1alpha1",
        "kind": "CounterApp",
        "metadata": { "name": "demo", "namespace": NS, "uid": "uid-demo", "generation": 1 },
        "spec": spec,
    })
}

fn setup(spec: Value) -> (Arc<Context>, FakeApi) {
    let (client, fake) = FakeApi::start();
    fake.insert(CR, cr_json(spec));
    (Arc::new(Context::new(client, "registry.example/counterstack:test")), fake)
}

/// Password of the auth Secret and of the real Redis servers behind the pods.
const PASSWORD: &str = "s3cret-for-tests";

/// Like [`setup`], with three real `redis-server` processes standing in for the Redis
/// pods (the replication manager dials them on loopback) and the auth Secret holding
/// their password.
fn setup_redis(spec: Value) -> (Arc<Context>, FakeApi, Vec<RedisServer>) {
    // The operator logs in as its ACL user `operator`; `web` and `replication` exist as
    // the start script's ACL file makes them (same password: every Secret holds it).
    let pw = format!(">{PASSWORD}");
    let mut args: Vec<&str> = vec![];
    for user in ["operator", "web", "replication"] {
        args.extend(["--user", user, "on", &pw, "~*", "&*", "+@all"]);
    }
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_with(Some(PASSWORD), &args)).collect();
    let (client, fake) = FakeApi::start();
    fake.insert(CR, cr_json(spec));
    for path in SECRETS {
        fake.insert(path, user_secret(path, PASSWORD));
    }
    let mut ctx = Context::new(client, "registry.example/counterstack:test");
    let ports = servers.iter().enumerate().map(|(i, s)| (i as u32, s.port)).collect();
    ctx.redis_addressing = RedisAddressing::Loopback(LoopbackAddressing { ports, host: None });
    (Arc::new(ctx), fake, servers)
}

/// A Redis user's Secret at `path` holding `password` (no rotation running).
fn user_secret(path: &str, password: &str) -> Value {
    let secret = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(path.rsplit('/').next().unwrap().into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            [
                ("password".to_string(), ByteString(password.as_bytes().to_vec())),
                ("previous".to_string(), ByteString(password.as_bytes().to_vec())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    serde_json::to_value(&secret).unwrap()
}

/// Fill the operator's watch caches with what the fake API server holds now, as the
/// controller's watches would (a fresh list per cache), and return the context.
fn synced(ctx: &Arc<Context>, fake: &FakeApi) -> Arc<Context> {
    use counterstack::operator::cache::{Slim, Writer};
    use kube::core::PartialObjectMetaExt;
    use kube::runtime::watcher::Event;
    fn relist<K: kube::Resource, S: Slim<K>>(w: &mut Writer<K, S>, objs: Vec<K>) {
        w.apply_watcher_event(&Event::Init);
        for o in objs {
            w.apply_watcher_event(&Event::InitApply(o));
        }
        w.apply_watcher_event(&Event::InitDone);
    }
    fn full<K: serde::de::DeserializeOwned>(fake: &FakeApi, prefix: &str) -> Vec<K> {
        fake.collection(prefix).into_iter().map(|v| serde_json::from_value(v).expect("object")).collect()
    }
    fn meta<K: kube::Resource<DynamicType = ()>>(
        fake: &FakeApi,
        prefix: &str,
    ) -> Vec<kube::core::PartialObjectMeta<K>> {
        fake.collection(prefix)
            .into_iter()
            .map(|v| {
                serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
                    v["metadata"].clone(),
                )
                .unwrap()
                .into_response_partial::<K>()
            })
            .collect()
    }
    ctx.cache_writers
        .with(|w| {
            relist(&mut w.deployments, full(fake, "/apis/apps/v1/namespaces/ns/deployments/"));
            relist(&mut w.statefulsets, full(fake, "/apis/apps/v1/namespaces/ns/statefulsets/"));
            relist(&mut w.secrets, full(fake, "/api/v1/namespaces/ns/secrets/"));
            relist(&mut w.pods, full(fake, "/api/v1/namespaces/ns/pods/"));
            relist(&mut w.services, meta(fake, "/api/v1/namespaces/ns/services/"));
            relist(&mut w.configmaps, meta(fake, "/api/v1/namespaces/ns/configmaps/"));
            relist(&mut w.pdbs, meta(fake, "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/"));
            relist(&mut w.hpas, meta(fake, "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/"));
            relist(
                &mut w.network_policies,
                meta(fake, "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/"),
            );
            relist(&mut w.namespaces, meta(fake, "/api/v1/namespaces/"));
        })
        .expect("the caches are filled by the test");
    ctx.clone()
}

/// The CounterApp as the API server has it now (with the status the operator wrote).
fn load_cr(fake: &FakeApi) -> Arc<CounterApp> {
    Arc::new(serde_json::from_value(fake.get(CR).expect("CR stored")).expect("CounterApp"))
}

fn writes(reqs: &[Recorded]) -> Vec<Recorded> {
    reqs.iter().filter(|r| r.is_write() && !r.is_event()).cloned().collect()
}

fn events(reqs: &[Recorded]) -> Vec<Value> {
    reqs.iter().filter(|r| r.is_event() && r.method == Method::POST).filter_map(|r| r.body.clone()).collect()
}

fn assert_ssa(r: &Recorded) {
    assert_eq!(r.method, Method::PATCH, "{}", r.line());
    assert_eq!(r.content_type.as_deref(), Some("application/apply-patch+yaml"), "{}", r.line());
    assert_eq!(
        r.query.get("fieldManager").map(String::as_str),
        Some("counterstack-operator"),
        "{}",
        r.line()
    );
    assert_eq!(r.query.get("force").map(String::as_str), Some("true"), "{}", r.line());
}

fn condition(cr: &CounterApp, type_: &str) -> Option<(String, String)> {
    let s = cr.status.as_ref()?;
    s.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// What the cluster's controllers would do after the first apply: the Deployment and
/// StatefulSet roll out and become ready, the three Redis pods run with `roles`.
fn cluster_catches_up(fake: &FakeApi, roles: [Option<&str>; 3]) {
    fake.mutate(DEPLOY, |d| {
        let g = d["metadata"]["generation"].clone();
        d["status"] = json!({
            "observedGeneration": g, "replicas": 4, "readyReplicas": 4,
            "availableReplicas": 4, "updatedReplicas": 4,
        });
    });
    fake.mutate(STS, |s| {
        let g = s["metadata"]["generation"].clone();
        s["status"] = json!({
            "observedGeneration": g, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
            "updatedReplicas": 3, "currentRevision": "demo-redis-1", "updateRevision": "demo-redis-1",
        });
    });
    for (i, role) in roles.iter().enumerate() {
        let mut l = labels::selector("demo", Component::Redis);
        if let Some(r) = role {
            l.insert(labels::ROLE.to_string(), r.to_string());
        }
        fake.insert(
            &format!("{PODS}/demo-redis-{i}"),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": format!("demo-redis-{i}"), "namespace": NS, "labels": l },
                "status": {
                    "podIP": "127.0.0.1",
                    "conditions": [{ "type": "Ready", "status": "True" }],
                },
            }),
        );
    }
}

/// First reconcile, then the cluster becomes ready and the operator reconciles until
/// replication is up and the status says Ready.
async fn ready_stack(ctx: &Arc<Context>, fake: &FakeApi) {
    reconcile(load_cr(fake), synced(ctx, fake)).await.expect("first reconcile");
    cluster_catches_up(fake, [Some("primary"), Some("replica"), Some("replica")]);
    settle(ctx, fake).await;
    assert_eq!(
        condition(&load_cr(fake), "Ready").map(|c| c.0),
        Some("True".into()),
        "{:#?}",
        load_cr(fake).status
    );
}

/// Reconcile until a pass writes nothing (replication links come up within moments).
async fn settle(ctx: &Arc<Context>, fake: &FakeApi) {
    for _ in 0..50 {
        fake.clear_requests();
        reconcile(load_cr(fake), synced(ctx, fake)).await.expect("reconcile");
        if writes(&fake.requests()).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stack never settled: {:#?}", writes(&fake.requests()));
}

#[tokio::test]
async fn first_reconcile_applies_every_child_with_ssa_then_patches_status() {
    let (ctx, fake) = setup(json!({}));
    let action = reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert_ne!(action, Action::await_change());

    let reqs = fake.requests();
    let writes = writes(&reqs);
    let targets: Vec<String> = writes.iter().map(Recorded::target).collect();
    let paths: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    let status = format!("{CR}/status");
    let mut expected: Vec<&str> = CHILDREN.iter().copied().chain([status.as_str()]).collect();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "every child once, and the status");
    // Independent children go out concurrently; what refers to another comes after it:
    // the Secrets, then the ConfigMap the pods mount, then the workloads; the status last.
    let at = |p: &str| paths.iter().position(|x| *x == p).expect("written");
    for secret in [SECRET, SECRET_REPLICATION, SECRET_OPERATOR] {
        assert!(at(secret) < at(CONFIGMAP), "{paths:#?}");
    }
    assert!(at(CONFIGMAP) < at(STS) && at(CONFIGMAP) < at(DEPLOY), "{paths:#?}");
    assert_eq!(paths.last(), Some(&status.as_str()), "the status last");
    // The auth Secrets the cache does not hold are created by POST, which the API server
    // refuses when one exists (a missing Secret means a new password, which a lagging
    // cache must never cause); everything else is applied.
    for w in &writes {
        if SECRETS.contains(&w.target().as_str()) {
            assert_eq!(w.method, Method::POST, "{}", w.line());
            assert_eq!(w.query.get("fieldManager").map(String::as_str), Some("counterstack-operator"));
        } else {
            assert_ssa(w);
        }
    }
    // Children come from the watch caches: no read at all. No pod list: pods come from
    // their cache too.
    let reads: Vec<String> = reqs.iter().filter(|r| r.method == Method::GET).map(Recorded::line).collect();
    assert!(reads.is_empty(), "{reads:?}");
    assert!(!reqs.iter().any(|r| r.path == PODS), "pods are read from the cache");

    // Every child is controlled by the CR and carries the applied hash.
    for w in &writes[..CHILDREN.len()] {
        let body = w.body.as_ref().unwrap();
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-demo", "{}", w.line());
        assert_eq!(body["metadata"]["ownerReferences"][0]["controller"], true, "{}", w.line());
        let hash = body["metadata"]["annotations"]["counterstack.io/applied-hash"].as_str();
        assert!(hash.is_some_and(|h| h.len() == 32), "{}", w.line());
    }

    // The generated passwords: 32 alphanumerics, one per user, in `data` (never
    // stringData), no rotation running (previous = password).
    let mut seen = std::collections::BTreeSet::new();
    for w in writes.iter().filter(|w| SECRETS.contains(&w.path.as_str())) {
        let secret: Secret = serde_json::from_value(w.body.clone().unwrap()).unwrap();
        assert!(secret.string_data.is_none());
        let data = secret.data.unwrap();
        let pw = String::from_utf8(data["password"].0.clone()).unwrap();
        assert_eq!(pw.len(), 32);
        assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()), "{pw}");
        assert_eq!(data["previous"].0, data["password"].0);
        assert!(seen.insert(pw), "every user gets its own password");
    }

    // One Created Event naming every child (one request, not ten).
    let evs = events(&reqs);
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0]["reason"], "Created");
    assert_eq!(evs[0]["regarding"]["name"], "demo");
    let note = evs[0]["note"].as_str().unwrap();
    for child in [
        "Secret demo-redis-auth-web",
        "Secret demo-redis-auth-operator",
        "StatefulSet demo-redis",
        "Deployment demo-web",
        "PodDisruptionBudget demo-web",
    ] {
        assert!(note.contains(child), "{note}");
    }

    // Status: observed, not ready yet, converging.
    let cr = load_cr(&fake);
    let status = cr.status.as_ref().expect("status written");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(condition(&cr, "Ready"), Some(("False".into(), "Progressing".into())));
    assert_eq!(condition(&cr, "Reconciling").map(|c| c.0), Some("True".into()));
    assert_eq!(condition(&cr, "Stalled"), None);
    assert_eq!(status.web.as_ref().unwrap().ready, "0/4");
}

#[tokio::test]
async fn second_reconcile_of_unchanged_ready_stack_sends_no_patch() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    let cr = load_cr(&fake);
    assert_eq!(condition(&cr, "Ready"), Some(("True".into(), "Ready".into())), "{:#?}", cr.status);
    assert_eq!(condition(&cr, "Reconciling"), None);

    let before = fake.resource_versions();
    let action = reconcile(cr, synced(&ctx, &fake)).await.expect("steady-state reconcile");
    // The manager may ask to look again soon (replicas settling); never await_change.
    assert_ne!(action, Action::await_change());
    let reqs = fake.requests();
    let sent: Vec<String> = reqs.iter().filter(|r| r.is_write()).map(Recorded::line).collect();
    assert!(sent.is_empty(), "steady state must be silent, sent: {sent:#?}");
    // Not even a read: every child and every Redis pod comes from the watch caches.
    let read: Vec<String> = reqs.iter().map(Recorded::line).collect();
    assert!(read.is_empty(), "a steady reconcile reads from its caches, sent: {read:#?}");
    // Nothing changed: the StatefulSet (whose SSA always bumps) was not re-applied.
    assert_eq!(fake.resource_versions(), before);
}

#[tokio::test]
async fn deleted_counterapp_is_not_reconciled() {
    let (ctx, fake) = setup(json!({}));
    fake.mutate(CR, |cr| cr["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z"));
    let action = reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
}

#[tokio::test]
async fn api_error_leads_to_growing_backoff_then_reset() {
    let (ctx, fake) = setup(json!({}));
    fake.fail(Method::PATCH, STS, 500, 3);
    let obj = ObjectRef::<CounterApp>::new("demo").within(NS);

    let mut delays = vec![];
    for _ in 0..3 {
        let cr = load_cr(&fake);
        let err =
            reconcile(cr.clone(), synced(&ctx, &fake)).await.expect_err("apply of the StatefulSet fails");
        assert!(matches!(err, Error::Kube { .. }), "{err}");
        assert!(err.to_string().contains("apply StatefulSet ns/demo-redis"), "{err}");
        assert_eq!(err.metric_label(), "kube_api");
        delays.push(error_policy(cr, &err, ctx.clone()));
    }
    assert_eq!(
        delays,
        [5, 10, 20].map(|s| Action::requeue(Duration::from_secs(s))),
        "per-object exponential backoff"
    );
    // No status was written (the web Deployment goes out alongside the StatefulSet, not
    // after it: it does not depend on it).
    let reqs = fake.requests();
    assert!(!reqs.iter().any(|r| r.path.ends_with("/status")));
    // The failure is visible as a Warning Event on the CounterApp.
    let failed: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.is_event() && r.body.as_ref().is_some_and(|b| b["reason"] == "ReconcileFailed"))
        .collect();
    assert!(!failed.is_empty());
    let ev = failed[0].body.as_ref().unwrap();
    assert_eq!(ev["type"], "Warning");
    assert!(ev["note"].as_str().unwrap().contains("apply StatefulSet ns/demo-redis"), "{ev}");
    let text = ctx.metrics.encode().unwrap();
    assert!(text.contains("counterstack_reconcile_errors_total{error=\"kube_api\"} 3"), "{text}");

    // The API recovers: success resets the backoff.
    assert_eq!(ctx.backoff.failures(&obj), 3);
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("recovered");
    assert_eq!(ctx.backoff.failures(&obj), 0);
}

#[tokio::test]
async fn redis_pods_get_role_labels_and_status_records_the_primary() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("first reconcile");
    // Wrong labels: pod 1 claims primary, pod 0 replica, pod 2 unlabelled.
    cluster_catches_up(&fake, [Some("replica"), Some("primary"), None]);
    fake.clear_requests();

    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    let reqs = fake.requests();
    let w = writes(&reqs);
    let lines: Vec<String> = w.iter().map(Recorded::line).collect();
    assert_eq!(
        lines,
        [
            format!("PATCH {PODS}/demo-redis-1"),
            format!("PATCH {PODS}/demo-redis-2"),
            format!("PATCH {PODS}/demo-redis-0"),
            format!("PATCH {CR}/status"),
        ],
        "demote before promote, then the status"
    );
    for (r, role) in w[..3].iter().zip(["replica", "replica", "primary"]) {
        assert_eq!(r.content_type.as_deref(), Some("application/merge-patch+json"));
        assert_eq!(r.body.as_ref().unwrap(), &json!({ "metadata": { "labels": { labels::ROLE: role } } }));
    }
    for (i, role) in ["primary", "replica", "replica"].iter().enumerate() {
        let pod = fake.get(&format!("{PODS}/demo-redis-{i}")).unwrap();
        assert_eq!(pod["metadata"]["labels"][labels::ROLE], *role, "pod {i}");
        assert_eq!(pod["metadata"]["labels"][labels::INSTANCE], "demo", "other labels kept");
    }
    // Moves of an existing label are Events; first labels are not.
    let moved: Vec<String> = events(&reqs)
        .iter()
        .filter(|e| e["reason"] == "RoleChanged")
        .map(|e| e["note"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(moved, ["pod demo-redis-1 is now replica", "pod demo-redis-0 is now primary"]);

    let status = w[3].body.as_ref().unwrap();
    assert_eq!(status["status"]["redis"]["primary"], "demo-redis-0");
    assert_eq!(status["status"]["redis"]["readyReplicas"], 3);
    let cr = load_cr(&fake);
    assert_eq!(cr.status.as_ref().unwrap().redis.as_ref().unwrap().primary.as_deref(), Some("demo-redis-0"));

    // Replication comes up; labels stay where they are.
    settle(&ctx, &fake).await;
    let cr = load_cr(&fake);
    assert_eq!(condition(&cr, "Available"), Some(("True".into(), "WebAndPrimaryAvailable".into())));
    assert_eq!(condition(&cr, "Ready").map(|c| c.0), Some("True".into()));
    assert_eq!(
        fake.get(&format!("{PODS}/demo-redis-0")).unwrap()["metadata"]["labels"][labels::ROLE],
        "primary"
    );
}

#[tokio::test]
async fn existing_password_is_read_back_never_regenerated() {
    let (ctx, fake) = setup(json!({}));
    fake.insert(SECRET, user_secret(SECRET, "kept-password-0123456789"));
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    let reqs = fake.requests();
    let apply = reqs.iter().find(|r| r.method == Method::PATCH && r.path == SECRET).expect("secret adopted");
    let applied: Secret = serde_json::from_value(apply.body.clone().unwrap()).unwrap();
    assert_eq!(applied.data.unwrap()["password"].0, b"kept-password-0123456789");
    // The web Deployment and the StatefulSet reference the Secret, never the value.
    let deploy = reqs.iter().find(|r| r.method == Method::PATCH && r.path == DEPLOY).unwrap();
    assert!(!deploy.body.as_ref().unwrap().to_string().contains("kept-password"));
    let sts = reqs.iter().find(|r| r.method == Method::PATCH && r.path == STS).unwrap();
    assert!(!sts.body.as_ref().unwrap().to_string().contains("kept-password"));
}

#[tokio::test]
async fn a_secret_the_cache_lags_behind_is_read_back_never_replaced() {
    let (ctx, fake) = setup(json!({}));
    // The caches are filled before the Secret exists: they lag behind it.
    let ctx = synced(&ctx, &fake);
    fake.insert(SECRET, user_secret(SECRET, "kept-password-0123456789"));
    reconcile(load_cr(&fake), ctx).await.expect("reconcile");
    let reqs = fake.requests();
    let about_web: Vec<String> = reqs
        .iter()
        .filter(|r| r.target() == SECRET || (r.method == Method::POST && r.target().ends_with("-web")))
        .map(Recorded::line)
        .collect();
    // The create is refused (409 AlreadyExists), the Secret read, and then adopted with
    // the password it holds.
    assert_eq!(
        about_web,
        [
            "POST /api/v1/namespaces/ns/secrets".to_string(),
            format!("GET {SECRET}"),
            format!("PATCH {SECRET}")
        ],
        "{reqs:#?}"
    );
    let stored: Secret = serde_json::from_value(fake.get(SECRET).unwrap()).unwrap();
    assert_eq!(stored.data.unwrap()["password"].0, b"kept-password-0123456789");
    // The two Secrets that did not exist were created with new passwords.
    for s in [SECRET_REPLICATION, SECRET_OPERATOR] {
        let created: Secret = serde_json::from_value(fake.get(s).expect("created")).unwrap();
        assert!(created.data.unwrap()["password"].0.len() >= 16, "{s}");
    }
}

#[tokio::test]
async fn secret_without_password_is_an_error_not_a_new_password() {
    let (ctx, fake) = setup(json!({}));
    fake.insert(
        SECRET,
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "demo-redis-auth-web", "namespace": NS } }),
    );
    let err = reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect_err("bad secret");
    assert!(matches!(err, Error::BadSecret { .. }), "{err}");
    assert!(writes(&fake.requests()).is_empty());
}

#[tokio::test]
async fn paused_counterapp_applies_nothing_and_says_so() {
    let (ctx, fake) = setup(json!({ "paused": true }));
    let action = reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert_eq!(action, Action::await_change(), "a paused stack waits for a change, it does not poll");
    let lines: Vec<String> = writes(&fake.requests()).iter().map(Recorded::line).collect();
    assert_eq!(lines, [format!("PATCH {CR}/status")]);
    let cr = load_cr(&fake);
    assert_eq!(condition(&cr, "Ready"), Some(("False".into(), "Paused".into())));
    assert_eq!(condition(&cr, "Reconciling"), None);

    fake.clear_requests();
    reconcile(cr, synced(&ctx, &fake)).await.expect("reconcile");
    assert!(fake.requests().iter().all(|r| !r.is_write()), "{:#?}", fake.requests());
}

#[tokio::test]
async fn spec_the_builders_reject_is_stalled_and_applies_nothing() {
    // The CRD schema would refuse this; the operator must still not act on it.
    let (ctx, fake) = setup(json!({ "web": { "replicas": 0 } }));
    let action = reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("invalid spec is not an error");
    // It waits for the CounterApp to change instead of retrying with backoff.
    assert_eq!(action, Action::await_change());
    let lines: Vec<String> = writes(&fake.requests()).iter().map(Recorded::line).collect();
    assert_eq!(lines, [format!("PATCH {CR}/status")]);
    let cr = load_cr(&fake);
    assert_eq!(condition(&cr, "Stalled"), Some(("True".into(), "InvalidSpec".into())));
    assert_eq!(condition(&cr, "Ready"), Some(("False".into(), "InvalidSpec".into())));
    assert_eq!(condition(&cr, "Reconciling"), None);
    let stalled = cr.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert!(stalled.message.contains("spec.web.replicas"), "{}", stalled.message);
    // One Event says why, not one per attempt.
    let evs = events(&fake.requests());
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0]["reason"], "InvalidSpec");
    assert_eq!(evs[0]["type"], "Warning");
    fake.clear_requests();
    reconcile(cr, synced(&ctx, &fake)).await.expect("again");
    assert!(fake.requests().is_empty(), "nothing new to say: {:#?}", fake.requests());
}

#[tokio::test]
async fn out_of_band_edit_of_a_child_is_reverted_alone() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    // Someone scales the Deployment directly (its generation moves).
    fake.mutate(DEPLOY, |d| d["spec"]["replicas"] = json!(9));
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    let reqs = fake.requests();
    let children: Vec<String> =
        writes(&reqs).iter().filter(|r| !r.path.ends_with("/status")).map(Recorded::line).collect();
    assert_eq!(children, [format!("PATCH {DEPLOY}")]);
    assert_eq!(fake.get(DEPLOY).unwrap()["spec"]["replicas"], 4);
    let evs = events(&reqs);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["reason"], "Updated");
}

#[tokio::test]
async fn spec_change_reapplies_only_what_it_changes() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    fake.mutate(CR, |cr| cr["spec"]["web"] = json!({ "replicas": 6 }));
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    let children: Vec<String> = writes(&fake.requests())
        .iter()
        .filter(|r| !r.path.ends_with("/status"))
        .map(Recorded::line)
        .collect();
    assert_eq!(children, [format!("PATCH {DEPLOY}")]);
    assert_eq!(fake.get(DEPLOY).unwrap()["spec"]["replicas"], 6);
    let cr = load_cr(&fake);
    assert_eq!(cr.status.as_ref().unwrap().observed_generation, Some(2));
    assert_eq!(condition(&cr, "Reconciling").map(|c| c.0), Some("True".into()));
}

#[tokio::test]
async fn missing_crd_is_a_clear_startup_error() {
    let (client, fake) = FakeApi::start();
    fake.fail(Method::GET, "/apis/counterstack.io/v1alpha1/counterapps", 404, 1);
    let err = controller::check_crd(&client, None).await.expect_err("no CRD");
    assert!(matches!(err, Error::CrdNotInstalled));
    assert_eq!(err.to_string(), "the CounterApp CRD is not installed; run `kubectl apply -f crds/`");
    // Installed: the same check passes (a list with limit=1).
    controller::check_crd(&client, None).await.expect("CRD present");
    let last = fake.requests().pop().unwrap();
    assert_eq!(last.query.get("limit").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn failover_moves_labels_then_writes_status_without_touching_children() {
    let (ctx, fake, mut redis) = setup_redis(json!({ "redis": { "failover": { "afterSeconds": 1 } } }));
    ready_stack(&ctx, &fake).await;
    for r in &redis[1..] {
        r.wait_link_up(Duration::from_secs(5));
    }
    // An acknowledged write: both replicas confirmed it (what `WAIT` gives the web service).
    let _: i64 = redis[0].cmd(&["INCR", "counter"]).unwrap();
    let acked: i64 = redis[0].cmd(&["WAIT", "2", "5000"]).unwrap();
    assert_eq!(acked, 2);
    settle(&ctx, &fake).await;

    // The primary's process dies and its pod turns unready.
    redis[0].kill9();
    fake.mutate(&format!("{PODS}/demo-redis-0"), |p| {
        p["status"]["conditions"] = json!([{ "type": "Ready", "status": "False" }]);
    });
    let start = std::time::Instant::now();
    let mut last = vec![];
    loop {
        fake.clear_requests();
        reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
        last = fake.requests();
        let primary = load_cr(&fake).status.clone().and_then(|s| s.redis).and_then(|r| r.primary);
        if primary.as_deref() != Some("demo-redis-0") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "no failover within afterSeconds + 3 s: {:#?} {:#?}",
            load_cr(&fake).status,
            events(&last)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cr = load_cr(&fake);
    let redis_status = cr.status.as_ref().unwrap().redis.clone().unwrap();
    let new_primary = redis_status.primary.clone().unwrap();
    assert!(["demo-redis-1", "demo-redis-2"].contains(&new_primary.as_str()), "{new_primary}");
    assert!(redis_status.epoch >= 2, "epoch bumped: {redis_status:?}");
    assert!(redis_status.last_failover_time.is_some());

    // In that pass: no child object changes (nothing built names the primary), the old
    // primary loses its label before the new one gets it, the status comes last.
    let w = writes(&last);
    let lines: Vec<String> = w.iter().map(Recorded::line).collect();
    assert!(!w.iter().any(|r| r.path == CONFIGMAP), "a failover must not rewrite the ConfigMap: {lines:#?}");
    let demote = lines
        .iter()
        .position(|l| *l == format!("PATCH {PODS}/demo-redis-0"))
        .expect("old primary relabelled");
    let promote =
        lines.iter().position(|l| *l == format!("PATCH {PODS}/{new_primary}")).expect("new primary labelled");
    assert!(demote < promote, "{lines:#?}");
    assert_eq!(lines.last().unwrap(), &format!("PATCH {CR}/status"));
    let labels_now =
        |pod: &str| fake.get(&format!("{PODS}/{pod}")).unwrap()["metadata"]["labels"][labels::ROLE].clone();
    assert_eq!(labels_now("demo-redis-0"), "replica");
    assert_eq!(labels_now(&new_primary), "primary");
    let failed_over =
        events(&last).into_iter().find(|e| e["reason"] == "FailedOver").expect("FailedOver Event");
    assert_eq!(failed_over["type"], "Warning");
    // The acknowledged write survived on the new primary.
    let idx: usize = new_primary.trim_start_matches("demo-redis-").parse().unwrap();
    let value: i64 = redis[idx].cmd(&["GET", "counter"]).unwrap();
    assert_eq!(value, 1);
}

#[tokio::test]
async fn a_stale_watch_cache_does_not_undo_our_own_status() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    // The controller's cache keeps handing over the CounterApp as it was before any of
    // our status writes: the stack still settles, and then nothing is written again.
    let stale = load_cr(&fake);
    cluster_catches_up_after_first_reconcile(&ctx, &fake, &stale).await;
    let mut quiet = false;
    for _ in 0..50 {
        fake.clear_requests();
        reconcile(stale.clone(), synced(&ctx, &fake)).await.expect("reconcile");
        if writes(&fake.requests()).is_empty() {
            quiet = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(quiet, "never settled on a stale CounterApp: {:#?}", writes(&fake.requests()));
    assert_eq!(condition(&load_cr(&fake), "Ready").map(|c| c.0), Some("True".into()));
    assert_eq!(condition(&stale, "Ready"), None, "the cache's copy never saw a status");
}

/// The first reconcile, then the cluster's controllers catch up.
async fn cluster_catches_up_after_first_reconcile(ctx: &Arc<Context>, fake: &FakeApi, cr: &Arc<CounterApp>) {
    reconcile(cr.clone(), synced(ctx, fake)).await.expect("first reconcile");
    cluster_catches_up(fake, [Some("primary"), Some("replica"), Some("replica")]);
}

/// Poll `f` until it holds (the controller runs concurrently).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn controller_reconciles_on_child_and_pod_changes_and_then_stays_quiet() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(ctx.clone(), Some(NS.to_string()), async {
        let _ = stopped.await;
    }));

    // The CounterApp is reconciled as soon as the controller lists it.
    eventually("first status", || fake.get(CR).is_some_and(|cr| !cr["status"].is_null())).await;
    assert!(fake.get(STS).is_some() && fake.get(DEPLOY).is_some());

    // Owned objects and Redis pods changing trigger reconciles without any resync.
    cluster_catches_up(&fake, [Some("primary"), Some("replica"), Some("replica")]);
    eventually("Ready=True", || condition(&load_cr(&fake), "Ready").is_some_and(|c| c.0 == "True")).await;

    // Steady state: no reconcile re-triggers itself (the StatefulSet is not re-applied,
    // the status is not rewritten).
    let settle = |fake: &FakeApi| fake.resource_versions();
    let mut before = settle(&fake);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = settle(&fake);
        if now == before {
            break;
        }
        before = now;
    }
    // The Redis health checks may wake it once more as they first see the pods answer;
    // after that (longer than a check round) a quiet stack is not reconciled again.
    let mut reconciles = ctx.metrics.reconciles.get();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let now = ctx.metrics.reconciles.get();
        if now == reconciles {
            break;
        }
        reconciles = now;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ctx.metrics.reconciles.get(), reconciles, "a quiet stack is not reconciled again");
    assert_eq!(settle(&fake), before);

    // The primary pod stops being ready: the pod watch triggers a reconcile at once.
    fake.mutate(&format!("{PODS}/demo-redis-0"), |p| {
        p["status"]["conditions"] = json!([{ "type": "Ready", "status": "False" }]);
    });
    eventually("Available=False", || {
        condition(&load_cr(&fake), "Available") == Some(("False".into(), "RedisPrimaryNotReady".into()))
    })
    .await;

    // Graceful shutdown ends the controller.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), controller).await.expect("controller stops").unwrap();
}

/// Turning autoscaling on: the replica count is first handed to a second field manager
/// (else dropping `replicas` from our apply would reset the Deployment to 1 pod), then
/// the Deployment is applied without `replicas` and the HPA created. Turning it off
/// deletes the HPA and the operator writes `replicas` again.
#[tokio::test]
async fn autoscaling_takes_replicas_over_and_turning_it_off_deletes_the_hpa() {
    const HPA: &str = "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/demo-web";
    let (ctx, fake) = setup(json!({}));
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("first reconcile");
    assert_eq!(fake.get(DEPLOY).unwrap()["spec"]["replicas"], 4);

    fake.mutate(CR, |cr| cr["spec"]["web"]["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 6}));
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("autoscaling on");
    let reqs = fake.requests();
    let w: Vec<Recorded> = writes(&reqs).into_iter().filter(|r| r.path != format!("{CR}/status")).collect();
    let lines: Vec<String> = w.iter().map(|r| r.line()).collect();
    assert_eq!(lines, [format!("PATCH {DEPLOY}"), format!("PATCH {DEPLOY}"), format!("PATCH {HPA}")]);
    assert_eq!(w[0].query.get("fieldManager").map(String::as_str), Some("counterstack-replicas-handoff"));
    assert_eq!(w[0].body.as_ref().unwrap()["spec"], json!({"replicas": 4}), "the current count, kept");
    assert_ssa(&w[1]);
    assert!(
        w[1].body.as_ref().unwrap()["spec"].get("replicas").is_none(),
        "the operator stops writing replicas"
    );
    assert_ssa(&w[2]);
    assert_eq!(w[2].body.as_ref().unwrap()["spec"]["maxReplicas"], 6);

    // The HPA changes the count (a new generation, like any edit): whatever the operator
    // re-applies keeps the HPA's count.
    fake.mutate(DEPLOY, |d| d["spec"]["replicas"] = json!(5));
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("after the HPA scaled");
    for r in writes(&fake.requests()).iter().filter(|r| r.path == DEPLOY) {
        let replicas = &r.body.as_ref().unwrap()["spec"]["replicas"];
        assert!(replicas.is_null() || *replicas == json!(5), "{}: {replicas}", r.line());
    }
    // (The fake API server replaces objects on apply; field ownership — the hand-off
    // manager keeping `replicas` — is checked on a real API server by the e2e suite.)

    fake.mutate(CR, |cr| {
        cr["spec"]["web"].as_object_mut().unwrap().remove("autoscaling");
    });
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("autoscaling off");
    let reqs = fake.requests();
    let lines: Vec<String> =
        writes(&reqs).iter().filter(|r| !r.path.ends_with("/status")).map(|r| r.line()).collect();
    assert_eq!(lines, [format!("PATCH {DEPLOY}"), format!("DELETE {HPA}")]);
    assert!(fake.get(HPA).is_none());
    assert_eq!(fake.get(DEPLOY).unwrap()["spec"]["replicas"], 4, "spec.web.replicas again");
}

/// `AUTH user password` against a real server: Ok(()) or the server's refusal.
fn auth(port: u16, user: &str, password: &str) -> redis::RedisResult<()> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
    redis::cmd("AUTH").arg(user).arg(password).query(&mut c)
}

fn secret_password(fake: &FakeApi, path: &str, key: &str) -> String {
    let s: Secret = serde_json::from_value(fake.get(path).unwrap()).unwrap();
    String::from_utf8(s.data.unwrap()[key].0.clone()).unwrap()
}

#[tokio::test]
async fn rotate_annotation_adds_the_new_password_rolls_the_web_then_forgets_the_old() {
    let (ctx, fake, redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    for s in &redis {
        auth(s.port, "web", PASSWORD).expect("the web user knows the Secret's password");
    }
    fake.mutate(CR, |cr| cr["metadata"]["annotations"] = json!({ "counterstack.io/rotate": "redis-web" }));
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");

    // The new password is stored first, next to the old one.
    let reqs = fake.requests();
    let new = secret_password(&fake, SECRET, "password");
    assert_ne!(new, PASSWORD);
    assert_eq!(secret_password(&fake, SECRET, "previous"), PASSWORD);
    let lines: Vec<String> = writes(&reqs).iter().map(Recorded::line).collect();
    assert_eq!(lines.first(), Some(&format!("PATCH {SECRET}")), "{lines:#?}");
    // The web pods roll onto it; the Redis pods do not restart (the change is live).
    assert!(lines.contains(&format!("PATCH {DEPLOY}")), "{lines:#?}");
    assert!(!lines.contains(&format!("PATCH {STS}")), "{lines:#?}");
    assert!(!lines.contains(&format!("PATCH {SECRET_OPERATOR}")), "only the user named is rotated");
    // The request is answered and removed, so it can be made again.
    let patch = reqs.iter().find(|r| r.path == CR && r.method == Method::PATCH).expect("annotation removed");
    assert_eq!(patch.content_type.as_deref(), Some("application/merge-patch+json"));
    assert!(fake.get(CR).unwrap()["metadata"]["annotations"].get("counterstack.io/rotate").is_none());
    let reasons: Vec<String> =
        events(&reqs).iter().map(|e| e["reason"].as_str().unwrap().to_string()).collect();
    assert!(reasons.contains(&"PasswordRotationStarted".to_string()), "{reasons:?}");
    // Every node accepts both passwords while the web pods roll.
    for s in &redis {
        auth(s.port, "web", PASSWORD).expect("old password still accepted during the roll");
        auth(s.port, "web", &new).expect("new password accepted before any web pod uses it");
    }
    let cr = load_cr(&fake);
    let st = cr.status.as_ref().unwrap();
    assert_eq!(st.redis.as_ref().unwrap().rotating_passwords, ["web"]);
    let reconciling = st.conditions.iter().find(|c| c.type_ == "Reconciling").expect("Reconciling");
    assert!(reconciling.message.contains("rotating the Redis password of web"), "{}", reconciling.message);

    // Another pass before the web pods rolled changes nothing on Redis.
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert_eq!(secret_password(&fake, SECRET, "previous"), PASSWORD, "not settled before the roll");

    // The web Deployment rolls out; the rotation settles and Redis forgets the old one.
    fake.mutate(DEPLOY, |d| {
        let g = d["metadata"]["generation"].clone();
        d["status"] = json!({
            "observedGeneration": g, "replicas": 4, "readyReplicas": 4,
            "availableReplicas": 4, "updatedReplicas": 4,
        });
    });
    settle(&ctx, &fake).await;
    assert_eq!(secret_password(&fake, SECRET, "previous"), new);
    for s in &redis {
        let err = auth(s.port, "web", PASSWORD).expect_err("the old password is gone");
        assert!(err.to_string().contains("WRONGPASS"), "{err}");
        auth(s.port, "web", &new).expect("the new password works");
    }
    let cr = load_cr(&fake);
    assert!(cr.status.as_ref().unwrap().redis.as_ref().unwrap().rotating_passwords.is_empty());
    assert_eq!(condition(&cr, "Ready").map(|c| c.0), Some("True".into()));
}

#[tokio::test]
async fn the_operator_rotates_its_own_password_without_losing_redis() {
    let (ctx, fake, redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    // A new value written by a user (GitOps, a secrets manager): `password` changes,
    // `previous` still holds the one Redis knows.
    let new = "operator-new-password-0123456789";
    fake.mutate(SECRET_OPERATOR, |s| s["data"]["password"] = base64(new));
    settle(&ctx, &fake).await;
    assert_eq!(secret_password(&fake, SECRET_OPERATOR, "previous"), new, "settled");
    for s in &redis {
        auth(s.port, "operator", new).expect("new operator password");
        assert!(auth(s.port, "operator", PASSWORD).is_err(), "old operator password removed");
    }
    // The operator still reaches every node: the stack stays Ready with its primary.
    let cr = load_cr(&fake);
    assert_eq!(condition(&cr, "Ready").map(|c| c.0), Some("True".into()));
    assert_eq!(
        cr.status.as_ref().and_then(|s| s.redis.as_ref()).and_then(|r| r.primary.as_deref()),
        Some("demo-redis-0")
    );
}

/// `s` as a Secret's `data` value (base64).
fn base64(s: &str) -> Value {
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap()
}

#[tokio::test]
async fn tls_from_cert_manager_creates_the_certificate_and_waits_for_its_secret() {
    let (ctx, fake) =
        setup(json!({ "redis": { "tls": { "issuerRef": { "name": "ca", "kind": "ClusterIssuer" } } } }));
    let action = reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)), "looks again shortly");
    let reqs = fake.requests();
    let cert_path = "/apis/cert-manager.io/v1/namespaces/ns/certificates/demo-redis-tls";
    let lines: Vec<String> = writes(&reqs).iter().map(Recorded::line).collect();
    let secrets = std::iter::repeat_n("POST /api/v1/namespaces/ns/secrets".to_string(), 3);
    let expected: Vec<String> =
        secrets.chain([format!("PATCH {cert_path}"), format!("PATCH {CR}/status")]).collect();
    assert_eq!(
        lines, expected,
        "the user Secrets, the Certificate, the status: no pod before the certificate"
    );
    let cert = fake.get(cert_path).expect("Certificate applied");
    assert_eq!(cert["spec"]["secretName"], "demo-redis-tls");
    assert_eq!(cert["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    let cr = load_cr(&fake);
    let rec = cr.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Reconciling").cloned();
    assert!(
        rec.is_some_and(|c| c.message.contains("waiting for the TLS Secret demo-redis-tls")),
        "{:#?}",
        cr.status
    );

    // cert-manager issues it: the stack is built, TLS-only.
    fake.insert(
        "/api/v1/namespaces/ns/secrets/demo-redis-tls",
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "demo-redis-tls", "namespace": NS },
                "data": { "tls.crt": base64("CRT"), "tls.key": base64("KEY"), "ca.crt": base64("CA") } }),
    );
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    let reqs = fake.requests();
    let cm =
        reqs.iter().find(|r| r.method == Method::PATCH && r.path == CONFIGMAP).expect("ConfigMap applied");
    assert!(cm.body.as_ref().unwrap()["data"]["redis.conf"].as_str().unwrap().contains("tls-port 6379"));
    assert!(reqs.iter().any(|r| r.method == Method::PATCH && r.path == STS), "StatefulSet applied");
    // Steady state: the Certificate is read, not re-applied.
    assert!(!writes(&reqs).iter().any(|r| r.path == cert_path), "{:#?}", writes(&reqs));
}
