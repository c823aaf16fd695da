//! Day-two knobs on a real API server: the web autoscaler and who writes `replicas`, and
//! a restart on request under load.

use std::collections::BTreeMap;
use std::time::Duration;

use counterstack::api::CounterApp;
use counterstack::labels;
use counterstack::names;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::harness::{Ctx, eventually, timeout};
use crate::scenario::{self, Scenario};
use crate::stack::Stack;

async fn deployment_replicas(ctx: &Ctx, app: &str) -> Result<Option<i32>, String> {
    let d = ctx.api::<Deployment>().get(&names::web(app)).await.map_err(|e| e.to_string())?;
    Ok(d.spec.and_then(|s| s.replicas))
}

async fn wait_replicas(ctx: &Ctx, app: &str, want: i32, why: &str) {
    eventually(&format!("the web Deployment at {want} replicas ({why})"), timeout(), || async {
        let r = deployment_replicas(ctx, app).await?;
        if r == Some(want) { Ok(()) } else { Err(format!("replicas {r:?}")) }
    })
    .await;
}

/// Autoscaling on: an owned HPA appears and the count the autoscaler sets survives the
/// operator's next apply of the Deployment (the hand-off manager keeps `replicas`, which
/// the operator's own apply no longer carries). Autoscaling off: the HPA goes and
/// `spec.web.replicas` rules again.
pub async fn autoscaling_takes_over_replicas(ctx: &Ctx, app: &str) {
    let api = ctx.api::<CounterApp>();
    let on = json!({"spec": {"web": {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}}});
    api.patch(app, &PatchParams::default(), &Patch::Merge(&on)).await.unwrap();
    let hpa = eventually("the HorizontalPodAutoscaler", timeout(), || async {
        ctx.api::<HorizontalPodAutoscaler>().get(&names::web(app)).await.map_err(|e| e.to_string())
    })
    .await;
    let cr = api.get(app).await.unwrap();
    let owner = hpa.owner_references().first().cloned().expect("owner reference");
    assert_eq!(Some(owner.uid), cr.metadata.uid, "the HPA is controlled by the CounterApp");
    let spec = hpa.spec.unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 5));
    assert_eq!(spec.scale_target_ref.name, names::web(app));
    wait_replicas(ctx, app, 2, "kept through the hand-off").await;

    // What the autoscaler does: scale the Deployment.
    ctx.api::<Deployment>()
        .patch_scale(
            &names::web(app),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    // A change that re-applies the Deployment (a new pod annotation).
    let touch = json!({"spec": {"web": {"podAnnotations": {"e2e/touched": "yes"}}}});
    api.patch(app, &PatchParams::default(), &Patch::Merge(&touch)).await.unwrap();
    eventually("the Deployment re-applied with the new pod annotation", timeout(), || async {
        let d = ctx.api::<Deployment>().get(&names::web(app)).await.map_err(|e| e.to_string())?;
        let a = d.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).unwrap_or_default();
        if a.get("e2e/touched").map(String::as_str) == Some("yes") { Ok(()) } else { Err(format!("{a:?}")) }
    })
    .await;
    // Settled: the operator never put its own count back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(deployment_replicas(ctx, app).await.unwrap(), Some(4), "the autoscaler's count stays");

    let off = json!({"spec": {"web": {"autoscaling": null}}});
    api.patch(app, &PatchParams::default(), &Patch::Merge(&off)).await.unwrap();
    eventually("the HorizontalPodAutoscaler deleted", timeout(), || async {
        match ctx.api::<HorizontalPodAutoscaler>().get_opt(&names::web(app)).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let want = api.get(app).await.unwrap().spec.web.replicas;
    wait_replicas(ctx, app, want, "spec.web.replicas again").await;
}

/// uid of every pod of the stack (web and Redis), by name.
async fn pod_uids(ctx: &Ctx, app: &str) -> BTreeMap<String, String> {
    let sel = format!("{}={},{}={}", labels::NAME, labels::APP_NAME, labels::INSTANCE, app);
    let pods = ctx.api::<Pod>().list(&ListParams::default().labels(&sel)).await.unwrap();
    pods.items.iter().map(|p| (p.name_any(), p.uid().unwrap_or_default())).collect()
}

/// `counterstack.io/restartedAt` under load: every web and Redis pod is replaced, no
/// acknowledged write is lost and writes pause less than a second.
pub async fn restart_on_request_under_load(stack: &Stack) {
    let before = pod_uids(&stack.ctx, &stack.app).await;
    assert!(before.len() >= 5, "web and Redis pods: {before:?}");
    let f = scenario::run(stack, Scenario::Restart).await;
    assert_eq!(f.lost, 0, "{f}");
    assert!(f.backwards.is_empty(), "{f}");
    assert!(f.gap < Duration::from_secs(1), "{f}");
    let old: Vec<String> = before.values().cloned().collect();
    eventually("every pod of the stack replaced", timeout(), || async {
        let now = pod_uids(&stack.ctx, &stack.app).await;
        let d =
            stack.ctx.api::<Deployment>().get(&names::web(&stack.app)).await.map_err(|e| e.to_string())?;
        let st = d.status.unwrap_or_default();
        let want = d.spec.and_then(|s| s.replicas).unwrap_or(0);
        let web_done = st.updated_replicas == Some(want) && st.replicas == Some(want);
        let stale: Vec<&String> = now.iter().filter(|(_, uid)| old.contains(uid)).map(|(n, _)| n).collect();
        if stale.is_empty() && web_done && now.len() == before.len() {
            Ok(())
        } else {
            Err(format!("not replaced yet: {stale:?}; web updated {:?} of {want}", st.updated_replicas))
        }
    })
    .await;
}
