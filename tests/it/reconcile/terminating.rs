//! A CounterApp whose namespace is being deleted: the namespace controller removes the
//! children (often before the CounterApp), and the operator must not create them again,
//! publish Events or write a status there. Known from the Namespace cache when the
//! operator watches every namespace, else from the API server's refusal (once).

use kube::runtime::controller::Action;
use serde_json::json;

use super::fake_api::{FakeApi, Recorded};
use super::*;

const NAMESPACE: &str = "/api/v1/namespaces/ns";

/// The namespace controller at work: every child of the stack is gone.
fn children_deleted(fake: &FakeApi) {
    for path in CHILDREN {
        fake.delete(path);
    }
}

#[tokio::test]
async fn a_counterapp_in_a_terminating_namespace_gets_no_children_and_no_events() {
    let (ctx, fake) = setup(json!({}));
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("first reconcile");
    // The namespace is deleted (the Namespace cache sees its deletionTimestamp), then
    // its children go.
    fake.insert(
        NAMESPACE,
        json!({ "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": NS, "deletionTimestamp": "2026-01-01T00:00:00Z" },
                "status": { "phase": "Terminating" } }),
    );
    fake.terminate_namespace(NS);
    children_deleted(&fake);
    for pass in 1..=3 {
        fake.clear_requests();
        let action = reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
        assert_eq!(action, Action::await_change(), "pass {pass}: no requeue");
        let sent: Vec<String> = fake.requests().iter().map(Recorded::line).collect();
        assert!(sent.is_empty(), "pass {pass}: sent {sent:#?}");
    }
    assert!(CHILDREN.iter().all(|c| fake.get(c).is_none()), "nothing created again");
}

#[tokio::test]
async fn without_a_namespace_cache_one_refused_write_stops_it() {
    // A namespace-scoped operator cannot watch Namespaces: the API server's refusal
    // tells it, once; no Event, no retry, and nothing more on later wake-ups.
    let (ctx, fake) = setup(json!({}));
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("first reconcile");
    fake.terminate_namespace(NS);
    children_deleted(&fake);
    fake.clear_requests();
    let action = reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("a refusal is no failure");
    assert_eq!(action, Action::await_change());
    let reqs = fake.requests();
    let writes: Vec<String> = reqs.iter().filter(|r| r.is_write()).map(Recorded::line).collect();
    // The three Secrets go out together, first of the ordered chain; their refusal ends
    // the pass: nothing after them.
    let secrets = SECRETS.map(|_| "POST /api/v1/namespaces/ns/secrets".to_string());
    assert_eq!(writes, secrets, "the first refused writes end the pass");
    assert!(!reqs.iter().any(Recorded::is_event), "no Event: {reqs:#?}");
    let metrics = ctx.metrics.encode().expect("metrics");
    assert!(!metrics.contains("counterstack_reconcile_errors_total{"), "not a failure: {metrics}");
    for pass in 1..=3 {
        fake.clear_requests();
        let action = reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
        assert_eq!(action, Action::await_change());
        let sent: Vec<String> = fake.requests().iter().map(Recorded::line).collect();
        assert!(sent.is_empty(), "pass {pass}: sent {sent:#?}");
    }
    assert!(CHILDREN.iter().all(|c| fake.get(c).is_none()), "nothing created again");
}

#[tokio::test]
async fn a_namespace_that_is_not_terminating_changes_nothing() {
    let (ctx, fake) = setup(json!({}));
    fake.insert(NAMESPACE, json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NS } }));
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("first reconcile");
    let applied = writes(&fake.requests()).iter().filter(|r| !r.path.ends_with("/status")).count();
    assert_eq!(applied, CHILDREN.len());
}
