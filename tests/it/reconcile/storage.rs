//! Growing `spec.redis.storage.size` (issue 21). The fake API server refuses a changed
//! StatefulSet `volumeClaimTemplates` (422, immutable) and, unless expansion is allowed,
//! a larger PVC request (403), as the real one does: before, the operator re-applied the
//! StatefulSet and was refused forever, with every later spec change stuck behind it.

use serde_json::json;

use super::fake_api::{FakeApi, Recorded};
use super::*;

const PVCS: &str = "/api/v1/namespaces/ns/persistentvolumeclaims";

/// The three claims the StatefulSet controller made from the template, bound at `size`.
fn claims(fake: &FakeApi, size: &str) {
    for i in 0..3 {
        fake.insert(
            &format!("{PVCS}/data-demo-redis-{i}"),
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": format!("data-demo-redis-{i}"), "namespace": NS,
                    "labels": labels::labels("demo", Component::Redis),
                },
                "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": size } } },
                "status": { "phase": "Bound", "capacity": { "storage": size } },
            }),
        );
    }
}

fn claim_template_size(fake: &FakeApi) -> Value {
    fake.get(STS).expect("StatefulSet")["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
        ["storage"]
        .clone()
}

fn storage_status(fake: &FakeApi) -> Option<counterstack::api::StorageStatus> {
    load_cr(fake).status.clone()?.redis?.storage
}

fn event_reasons(fake: &FakeApi) -> Vec<String> {
    events(&fake.requests()).iter().map(|e| e["reason"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn a_larger_size_resizes_the_claims_and_replaces_the_statefulset_without_its_pods() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    claims(&fake, "1Gi");
    fake.allow_volume_expansion();
    let sts_uid = fake.get(STS).unwrap()["metadata"]["uid"].clone();
    fake.mutate(CR, |cr| cr["spec"]["redis"] = json!({ "storage": { "size": "2Gi" } }));

    // 1. every claim patched, the StatefulSet deleted orphaning its pods, not applied.
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    let reqs = fake.requests();
    let sent: Vec<String> = writes(&reqs).iter().filter(|r| !r.is_event()).map(Recorded::line).collect();
    for i in 0..3 {
        assert!(sent.contains(&format!("PATCH {PVCS}/data-demo-redis-{i}")), "{sent:#?}");
        assert_eq!(
            fake.get(&format!("{PVCS}/data-demo-redis-{i}")).unwrap()["spec"]["resources"]["requests"]["storage"],
            "2Gi"
        );
    }
    let delete = reqs.iter().find(|r| r.method == http::Method::DELETE).expect("a DELETE");
    assert_eq!(delete.path, STS);
    assert_eq!(delete.body.as_ref().unwrap()["propagationPolicy"], "Orphan", "{delete:?}");
    assert_eq!(delete.body.as_ref().unwrap()["preconditions"]["uid"], sts_uid);
    assert!(!sent.contains(&format!("PATCH {STS}")), "applied to a StatefulSet being replaced: {sent:#?}");
    assert!(fake.get(&format!("{PODS}/demo-redis-0")).is_some(), "pods stay");
    assert!(event_reasons(&fake).contains(&"ExpandingVolumes".to_string()));
    let cr = load_cr(&fake);
    assert_eq!(condition(&cr, "Reconciling").map(|c| c.1), Some("ExpandingVolumes".into()));
    let progress = storage_status(&fake).expect("status.redis.storage");
    assert_eq!((progress.size.as_str(), progress.volumes, progress.resized), ("2Gi", 3, 0));

    // 2. once it is gone, the StatefulSet is created again with the larger template.
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert_eq!(claim_template_size(&fake), "2Gi");
    assert_ne!(fake.get(STS).unwrap()["metadata"]["uid"], sts_uid);

    // 3. the driver resizes; the status follows until every volume has grown.
    for i in 0..2 {
        fake.mutate(&format!("{PVCS}/data-demo-redis-{i}"), |p| {
            p["status"]["capacity"]["storage"] = json!("2Gi")
        });
    }
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert_eq!(storage_status(&fake).map(|s| s.resized), Some(2));
    fake.mutate(&format!("{PVCS}/data-demo-redis-2"), |p| {
        p["status"]["capacity"]["storage"] = json!("2048Mi")
    });
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert!(event_reasons(&fake).contains(&"VolumesExpanded".to_string()), "{:?}", event_reasons(&fake));
    assert_eq!(storage_status(&fake), None);
    cluster_catches_up(&fake, [Some("primary"), Some("replica"), Some("replica")]);
    settle(&ctx, &fake).await;
    assert_eq!(condition(&load_cr(&fake), "Ready").map(|c| c.0), Some("True".into()));
}

#[tokio::test]
async fn volumes_that_cannot_grow_stall_with_the_reason_and_the_rest_of_the_spec_still_applies() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    claims(&fake, "1Gi");
    fake.mutate(CR, |cr| {
        cr["spec"]["redis"] = json!({ "storage": { "size": "2Gi" } });
        cr["spec"]["web"] = json!({ "replicas": 6 });
    });
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    let reqs = fake.requests();
    assert!(reqs.iter().all(|r| r.method != http::Method::DELETE), "nothing may be deleted: {reqs:#?}");
    assert_eq!(claim_template_size(&fake), "1Gi");
    assert_eq!(fake.get(DEPLOY).unwrap()["spec"]["replicas"], 6, "the rest of the spec is applied");
    for i in 0..3 {
        assert_eq!(
            fake.get(&format!("{PVCS}/data-demo-redis-{i}")).unwrap()["spec"]["resources"]["requests"]["storage"],
            "1Gi"
        );
    }
    let cr = load_cr(&fake);
    assert_eq!(cr.status.as_ref().unwrap().observed_generation, Some(2));
    let stalled = cr.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Stalled").cloned();
    let stalled = stalled.expect("Stalled");
    assert_eq!(stalled.reason, "VolumeExpansionRefused");
    assert!(
        stalled.message.contains("storageclass that provisions the pvc must support resize"),
        "{}",
        stalled.message
    );
    assert!(stalled.message.contains("The volumes stay at 1Gi"), "{}", stalled.message);
    assert_eq!(event_reasons(&fake).iter().filter(|r| *r == "VolumeExpansionRefused").count(), 1);

    // Again: still stalled, no second Event, no write but the one refused attempt.
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert!(event_reasons(&fake).is_empty(), "{:?}", event_reasons(&fake));
    let sent: Vec<String> = writes(&fake.requests()).iter().map(Recorded::line).collect();
    assert_eq!(sent, [format!("PATCH {PVCS}/data-demo-redis-0")]);
}
