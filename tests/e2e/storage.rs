//! Growing `spec.redis.storage.size` on a real API server (issue 21). Before, the operator
//! re-applied the StatefulSet with a larger claim template, was refused on every retry
//! (the templates are immutable), and every later spec change waited behind it.
//!
//! The node's only provisioner (local-path) cannot expand, which is the second test. For
//! the first, the test makes a StorageClass that allows expansion, binds the claims to
//! PersistentVolumes it makes itself (hostPath), and — the node has no CSI resizer, a gap
//! of ../shared/k8s — does the resizer's part once the operator has raised the requests:
//! it sets the volumes' capacity. Everything the operator does is real.

use std::collections::BTreeMap;

use counterstack::api::CounterApp;
use counterstack::labels::{self, Component};
use counterstack::names;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::harness::{
    Ctx, create_bound_hostpath_pv, eventually, timeout, wait_ready_or_skip, with_redis_image,
};

const CLASS: &str = "counterstack-e2e-expandable";

fn claim_name(app: &str, i: usize) -> String {
    format!("{}-{}-{i}", counterstack::children::statefulset::DATA_VOLUME, names::redis(app))
}

fn spec(class: Option<&str>) -> serde_json::Value {
    let mut storage = json!({"size": "64Mi"});
    if let Some(c) = class {
        storage["storageClassName"] = json!(c);
    }
    with_redis_image(json!({"web": {"replicas": 1}, "redis": {"replicas": 1, "storage": storage}}))
}

async fn claims(ctx: &Ctx, app: &str) -> Vec<PersistentVolumeClaim> {
    let sel = labels::selector_string(&labels::selector(app, Component::Redis));
    ctx.api::<PersistentVolumeClaim>().list(&ListParams::default().labels(&sel)).await.unwrap().items
}

fn request(p: &PersistentVolumeClaim) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage").map(|q| q.0.clone()))
        .unwrap_or_default()
}

async fn redis_pods(ctx: &Ctx, app: &str) -> BTreeMap<String, Pod> {
    let sel = labels::selector_string(&labels::selector(app, Component::Redis));
    let pods = ctx.api::<Pod>().list(&ListParams::default().labels(&sel)).await.unwrap();
    pods.items.into_iter().map(|p| (p.name_any(), p)).collect()
}

async fn event_reasons(ctx: &Ctx, app: &str) -> Vec<String> {
    let events = ctx.api::<Event>().list(&ListParams::default()).await.unwrap();
    events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(app))
        .filter_map(|e| e.reason.clone())
        .collect()
}

fn condition(cr: &CounterApp, type_: &str) -> Option<(String, String, String)> {
    let c = cr.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The class and, per claim, a hostPath volume pre-bound to it (`claimRef`).
async fn expandable_volumes(ctx: &Ctx, app: &str, n: usize) -> Vec<String> {
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let class: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": CLASS},
        // Nothing provisions for it: the test makes the volumes.
        "provisioner": "counterstack.io/e2e-none",
        "allowVolumeExpansion": true,
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate",
    }))
    .unwrap();
    classes.patch(CLASS, &PatchParams::apply("e2e").force(), &Patch::Apply(&class)).await.unwrap();
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{}-{i}", ctx.ns);
        let dir = std::env::temp_dir().join("counterstack-e2e-pv").join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        // Redis runs as a non-root user in the pod (Pod Security restricted).
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        create_bound_hostpath_pv(ctx, &name, CLASS, &dir, &claim_name(app, i)).await;
        names.push(name);
    }
    names
}

/// What an external resizer does once a claim asks for more: grow the volume, then
/// record the capacity on the claim (the node has no CSI resizer).
async fn resize_as_the_driver(ctx: &Ctx, app: &str, volumes: &[String], size: &str) {
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    for (i, pv) in volumes.iter().enumerate() {
        pvs.patch(
            pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"capacity": {"storage": size}}})),
        )
        .await
        .unwrap();
        ctx.api::<PersistentVolumeClaim>()
            .patch_status(
                &claim_name(app, i),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"capacity": {"storage": size}, "conditions": null}})),
            )
            .await
            .unwrap();
    }
}

/// On a class that expands: the claims are asked for the new size, the StatefulSet is
/// replaced with the larger template while its pods keep running (same uids, adopted by
/// the new StatefulSet), the status counts the volumes until every one has grown, and
/// the stack is Ready again with the counter it had.
pub async fn growing_the_volumes_resizes_every_claim_and_keeps_the_pods(ctx: &Ctx, app: &str) {
    let volumes = expandable_volumes(ctx, app, 2).await;
    ctx.apply_app(app, spec(Some(CLASS))).await;
    if wait_ready_or_skip(ctx, app, "volume expansion").await {
        let sts_before = ctx.api::<StatefulSet>().get(&names::redis(app)).await.unwrap();
        let pods_before: BTreeMap<String, String> = redis_pods(ctx, app)
            .await
            .iter()
            .map(|(n, p)| (n.clone(), p.uid().unwrap_or_default()))
            .collect();
        assert_eq!(pods_before.len(), 2);
        let grow = json!({"spec": {"redis": {"storage": {"size": "128Mi"}}}});
        ctx.api::<CounterApp>().patch(app, &PatchParams::default(), &Patch::Merge(&grow)).await.unwrap();

        eventually("every claim asks for 128Mi", timeout(), || async {
            let asked: Vec<String> = claims(ctx, app).await.iter().map(request).collect();
            if asked.len() == 2 && asked.iter().all(|r| r == "128Mi") {
                Ok(())
            } else {
                Err(format!("{asked:?}"))
            }
        })
        .await;
        let sts = eventually("a new StatefulSet with the 128Mi template", timeout(), || async {
            let s = ctx.api::<StatefulSet>().get(&names::redis(app)).await.map_err(|e| e.to_string())?;
            let size = counterstack_claim_size(&s);
            if s.uid() != sts_before.uid() && size.as_deref() == Some("128Mi") {
                Ok(s)
            } else {
                Err(format!("{size:?}"))
            }
        })
        .await;
        let cr = eventually("status.redis.storage counting the volumes", timeout(), || async {
            let cr = ctx.api::<CounterApp>().get(app).await.unwrap();
            let s = cr.status.as_ref().and_then(|s| s.redis.as_ref()).and_then(|r| r.storage.clone());
            match s {
                Some(s) if s.size == "128Mi" && s.volumes == 2 && s.resized == 0 => Ok(cr),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let (_, reason, message) = condition(&cr, "Reconciling").expect("Reconciling while the volumes grow");
        assert_eq!(reason, "ExpandingVolumes", "{message}");

        resize_as_the_driver(ctx, app, &volumes, "128Mi").await;
        eventually("Ready again with every volume at 128Mi", timeout(), || async {
            let cr = ctx.api::<CounterApp>().get(app).await.unwrap();
            let storage = cr.status.as_ref().and_then(|s| s.redis.as_ref()).and_then(|r| r.storage.clone());
            match (condition(&cr, "Ready"), storage) {
                (Some((s, ..)), None) if s == "True" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let pods_after = redis_pods(ctx, app).await;
        for (name, uid) in &pods_before {
            let pod = pods_after.get(name).unwrap_or_else(|| panic!("{name} is gone"));
            assert_eq!(pod.uid().as_deref(), Some(uid.as_str()), "{name} was restarted");
            let owner = pod.owner_references().iter().find(|o| o.controller == Some(true)).cloned();
            assert_eq!(owner.map(|o| o.uid), sts.uid(), "{name} is adopted by the new StatefulSet");
        }
        let reasons = event_reasons(ctx, app).await;
        for want in ["ExpandingVolumes", "VolumesExpanded"] {
            assert!(reasons.iter().any(|r| r == want), "no {want} Event: {reasons:?}");
        }
    }
    let _ = ctx.api::<CounterApp>().delete(app, &DeleteParams::default()).await;
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    for v in &volumes {
        let _ = pvs.delete(v, &DeleteParams::default()).await;
    }
}

fn counterstack_claim_size(s: &StatefulSet) -> Option<String> {
    let c = s.spec.as_ref()?.volume_claim_templates.as_ref()?.first()?;
    Some(request(c)).filter(|r| !r.is_empty())
}

/// On local-path (no expansion): Stalled with the API server's reason and a Warning
/// Event, the claims and the template unchanged, and the rest of the spec still applied
/// (observedGeneration follows).
pub async fn volumes_that_cannot_grow_stall_and_the_rest_still_applies(ctx: &Ctx, app: &str) {
    ctx.apply_app(app, spec(None)).await;
    eventually("the Redis claims", timeout(), || async {
        let n = claims(ctx, app).await.len();
        if n == 2 { Ok(()) } else { Err(format!("{n} claims")) }
    })
    .await;
    let change = json!({"spec": {"redis": {"storage": {"size": "128Mi"}}, "web": {"replicas": 2}}});
    let cr =
        ctx.api::<CounterApp>().patch(app, &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    let generation = cr.metadata.generation;
    let cr = eventually("Stalled/VolumeExpansionRefused", timeout(), || async {
        let cr = ctx.api::<CounterApp>().get(app).await.unwrap();
        match condition(&cr, "Stalled") {
            Some((s, r, _)) if s == "True" && r == "VolumeExpansionRefused" => Ok(cr),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (_, _, message) = condition(&cr, "Stalled").unwrap();
    assert!(message.contains("must support resize"), "{message}");
    assert!(message.contains("The volumes stay at 64Mi"), "{message}");
    assert_eq!(cr.status.as_ref().unwrap().observed_generation, generation);
    eventually("the web Deployment at 2 replicas (the rest of the spec)", timeout(), || async {
        let d = ctx.api::<Deployment>().get(&names::web(app)).await.map_err(|e| e.to_string())?;
        let r = d.spec.and_then(|s| s.replicas);
        if r == Some(2) { Ok(()) } else { Err(format!("{r:?}")) }
    })
    .await;
    let asked: Vec<String> = claims(ctx, app).await.iter().map(request).collect();
    assert_eq!(asked, ["64Mi", "64Mi"]);
    let sts = ctx.api::<StatefulSet>().get(&names::redis(app)).await.unwrap();
    assert_eq!(counterstack_claim_size(&sts).as_deref(), Some("64Mi"));
    assert!(sts.metadata.deletion_timestamp.is_none());
    let reasons = event_reasons(ctx, app).await;
    assert!(reasons.iter().any(|r| r == "VolumeExpansionRefused"), "{reasons:?}");
}
