//! The guard of issue 18: a stack at rest sends the API server nothing, however often it
//! is reconciled. A thousand stacks are reconciled by their safety-net requeues, watch
//! re-lists and Redis health checks; one request per pass each is an API-server load
//! generator. Every state a stack rests in is here: waiting for a node (every pod
//! Pending), Ready, degraded after a failover (a new epoch, a `lastFailoverTime`), and
//! each of them again after an operator restart (no memory, caches listed afresh). The
//! CounterApp is read back from the fake API server before every pass, its status as
//! the API server stores it (pruned and defaulted by the CRD's structural schema,
//! conditions in the server's order, times at second precision): a status that does not
//! survive that round trip compares unequal to itself and is written again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::fake_api::{FakeApi, Recorded};
use super::*;

/// Reconcile passes per state: the first pass after settling could be quiet by luck of
/// timing (a requeue not yet due); later ones must be too.
const PASSES: usize = 5;

/// `PASSES` reconciles of the CounterApp as the API server returns it now: none may send
/// any request (no write, no Event, not even a read), and no object may change.
async fn assert_silent(ctx: &Arc<Context>, fake: &FakeApi, state: &str) {
    let before = fake.resource_versions();
    for pass in 1..=PASSES {
        fake.clear_requests();
        reconcile(load_cr(fake), synced(ctx, fake)).await.unwrap_or_else(|e| panic!("{state}: {e}"));
        let sent: Vec<String> = fake.requests().iter().map(Recorded::line).collect();
        assert!(sent.is_empty(), "{state}, pass {pass}: a stack at rest sent {sent:#?}");
    }
    assert_eq!(fake.resource_versions(), before, "{state}: an object changed");
}

/// A new operator process over the same API server: empty apply memory, status cache
/// and replication memory; its caches are listed afresh by [`synced`].
fn restarted(ctx: &Arc<Context>) -> Arc<Context> {
    let mut fresh = Context::new(ctx.client.clone(), "registry.example/counterstack:test");
    fresh.redis_addressing = ctx.redis_addressing.clone();
    Arc::new(fresh)
}

/// What a cluster without a free node shows after the first apply: the workload
/// controllers created every pod, none is scheduled (Pending, no IP, no conditions).
fn cluster_without_a_node(fake: &FakeApi) {
    fake.mutate(DEPLOY, |d| {
        let g = d["metadata"]["generation"].clone();
        d["status"] = json!({
            "observedGeneration": g, "replicas": 4, "updatedReplicas": 4, "unavailableReplicas": 4,
            "conditions": [
                { "type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable" },
                { "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated" },
            ],
        });
    });
    fake.mutate(STS, |s| {
        let g = s["metadata"]["generation"].clone();
        s["status"] = json!({
            "observedGeneration": g, "replicas": 3, "currentReplicas": 3, "updatedReplicas": 3,
            "availableReplicas": 0, "currentRevision": "demo-redis-1", "updateRevision": "demo-redis-1",
            "collisionCount": 0,
        });
    });
    for i in 0..3 {
        let mut l = labels::selector("demo", Component::Redis);
        l.insert("controller-revision-hash".into(), "demo-redis-1".into());
        fake.insert(
            &format!("{PODS}/demo-redis-{i}"),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": format!("demo-redis-{i}"), "namespace": NS, "labels": l },
                "status": { "phase": "Pending", "qosClass": "Burstable" },
            }),
        );
    }
}

#[tokio::test]
async fn a_stack_waiting_for_a_node_sends_nothing_at_rest() {
    let (ctx, fake) = setup(json!({}));
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("first reconcile");
    cluster_without_a_node(&fake);
    settle(&ctx, &fake).await;
    let cr = load_cr(&fake);
    assert_eq!(condition(&cr, "Reconciling").map(|c| c.0), Some("True".into()), "{:#?}", cr.status);
    assert_eq!(condition(&cr, "Ready").map(|c| c.0), Some("False".into()));
    assert_silent(&ctx, &fake, "waiting").await;
    assert_silent(&restarted(&ctx), &fake, "waiting, after an operator restart").await;
}

#[tokio::test]
async fn a_ready_stack_sends_nothing_at_rest() {
    let (ctx, fake, redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    for r in &redis[1..] {
        r.wait_link_up(Duration::from_secs(5));
    }
    settle(&ctx, &fake).await;
    assert_eq!(condition(&load_cr(&fake), "Ready"), Some(("True".into(), "Ready".into())));
    assert_silent(&ctx, &fake, "Ready").await;
    assert_silent(&restarted(&ctx), &fake, "Ready, after an operator restart").await;
}

#[tokio::test]
async fn a_stack_degraded_after_a_failover_sends_nothing_at_rest() {
    let (ctx, fake, mut redis) = setup_redis(json!({ "redis": { "failover": { "afterSeconds": 1 } } }));
    ready_stack(&ctx, &fake).await;
    for r in &redis[1..] {
        r.wait_link_up(Duration::from_secs(5));
    }
    settle(&ctx, &fake).await;
    // The primary dies and stays down: a new primary, a new epoch, a lastFailoverTime,
    // and a stack that rests degraded (one replica short) until the pod comes back.
    redis[0].kill9();
    fake.mutate(&format!("{PODS}/demo-redis-0"), |p| {
        p["status"]["conditions"] = json!([{ "type": "Ready", "status": "False" }]);
    });
    let mut epoch = 1;
    for _ in 0..100 {
        reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
        epoch = load_cr(&fake).status.as_ref().and_then(|s| s.redis.as_ref()).map_or(0, |r| r.epoch);
        if epoch > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(epoch > 1, "no failover: {:#?}", load_cr(&fake).status);
    settle(&ctx, &fake).await;
    let cr = load_cr(&fake);
    let redis_status = cr.status.as_ref().and_then(|s| s.redis.clone()).expect("status.redis");
    assert!(redis_status.last_failover_time.is_some(), "{redis_status:#?}");
    assert_eq!(condition(&cr, "Degraded").map(|c| c.0), Some("True".into()), "{:#?}", cr.status);
    assert_silent(&ctx, &fake, "degraded after a failover").await;
    assert_silent(&restarted(&ctx), &fake, "degraded after a failover, after an operator restart").await;
}
