//! The replicas Service is headless (no ClusterIP to allocate: issue 18). A stack made
//! by an earlier build has one with a ClusterIP, which the API server refuses to remove
//! in place: the operator replaces that Service, and only that one.

use serde_json::json;

use super::fake_api::Recorded;
use super::*;

#[tokio::test]
async fn a_replicas_service_with_a_cluster_ip_is_replaced_by_a_headless_one() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    assert_eq!(fake.get(SVC_REPLICAS).unwrap()["spec"]["clusterIP"], "None");
    assert!(fake.get(SVC_PRIMARY).unwrap()["spec"]["clusterIP"].is_null(), "the primary keeps a ClusterIP");
    // What an earlier build applied: a ClusterIP Service (the API server allocated one),
    // with that build's hash.
    fake.mutate(SVC_REPLICAS, |s| {
        s["spec"]["clusterIP"] = json!("10.96.0.7");
        s["metadata"]["annotations"]["counterstack.io/applied-hash"] = json!("from-an-earlier-build");
    });
    let old_uid = fake.get(SVC_REPLICAS).unwrap()["metadata"]["uid"].clone();
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    let reqs = fake.requests();
    let children: Vec<String> =
        writes(&reqs).iter().filter(|r| !r.path.ends_with("/status")).map(Recorded::line).collect();
    assert_eq!(
        children,
        [format!("PATCH {SVC_REPLICAS}"), format!("DELETE {SVC_REPLICAS}"), format!("PATCH {SVC_REPLICAS}")],
        "the refused apply, the delete, the new Service; nothing else"
    );
    let svc = fake.get(SVC_REPLICAS).expect("the Service exists again");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_ne!(svc["metadata"]["uid"], old_uid, "a new object");
    let notes: Vec<String> =
        events(&reqs).iter().map(|e| e["note"].as_str().unwrap_or_default().to_string()).collect();
    assert!(
        notes.iter().any(|n| n.starts_with("replaced Service demo-redis-replicas: it becomes headless")),
        "{notes:#?}"
    );
    // Then the stack settles (its status says Ready again) and is at rest.
    settle(&ctx, &fake).await;
    for pass in 1..=3 {
        fake.clear_requests();
        reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
        let sent: Vec<String> = writes(&fake.requests()).iter().map(Recorded::line).collect();
        assert!(sent.is_empty(), "pass {pass}: {sent:#?}");
    }
}

#[tokio::test]
async fn another_refused_service_apply_is_an_error_not_a_replacement() {
    // Only the headless replacement is handled: a 422 for the primary Service (which
    // keeps its ClusterIP) is reported, and nothing is deleted.
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    fake.mutate(SVC_PRIMARY, |s| {
        s["metadata"]["annotations"]["counterstack.io/applied-hash"] = json!("from-an-earlier-build");
    });
    fake.fail(Method::PATCH, SVC_PRIMARY, 422, 1);
    fake.clear_requests();
    let err =
        reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect_err("a refused apply fails the pass");
    assert!(err.to_string().contains("demo-redis-primary"), "{err}");
    assert!(!fake.requests().iter().any(|r| r.method == Method::DELETE), "nothing deleted");
    assert!(fake.get(SVC_PRIMARY).is_some());
}
