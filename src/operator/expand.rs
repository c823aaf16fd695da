//! The requests of a volume expansion (decisions in [`super::storage`]): read the stack's
//! PVCs, patch their size, replace the StatefulSet without touching its pods.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::Error;
use super::events::reason;
use super::storage::{self, Plan};
use crate::api::{CounterApp, StorageStatus, condition::STALLED};
use crate::labels::{self, Component};

/// How often a stack whose volumes are being expanded looks at its PVCs again (they are
/// not watched: an expansion is rare, a PVC cache would cost every stack memory).
pub const RECHECK: Duration = Duration::from_secs(10);

/// What the Redis StatefulSet step does this pass, and what the status says of storage.
#[derive(Debug, Default)]
pub struct Step {
    /// The StatefulSet to apply; `None`: none this pass (it is being replaced). Boxed: a
    /// StatefulSet is kilobytes, and debug builds keep every move of it on the stack.
    pub apply: Option<Box<StatefulSet>>,
    /// `status.redis.storage`.
    pub storage: Option<StorageStatus>,
    /// Stalled message (reason [`storage::NOT_EXPANDABLE`]).
    pub stalled: Option<String>,
    /// Look again after this long (an expansion in progress).
    pub requeue: Option<Duration>,
}

/// Decide and do the storage part of the Redis StatefulSet's apply.
pub async fn step(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    desired: StatefulSet,
    live: Option<&StatefulSet>,
) -> Result<Step, Error> {
    let previous = app.status.as_ref().and_then(|s| s.redis.as_ref()).and_then(|r| r.storage.clone());
    match storage::plan(live, &desired) {
        Plan::WaitForDeletion => {
            Ok(Step { apply: None, storage: previous, stalled: None, requeue: Some(RECHECK) })
        }
        Plan::Shrink { from, to } => {
            // The CRD refuses a smaller size; this is a StatefulSet someone else changed.
            let message = format!(
                "spec.redis.storage.size asks for {to} but the volumes have {from}, and volumes cannot shrink: \
                 keeping {from}"
            );
            Ok(Step {
                apply: Some(Box::new(storage::with_claim_size(desired, &from))),
                stalled: Some(message),
                ..Step::default()
            })
        }
        Plan::Apply => {
            // An expansion started earlier: follow its progress until every volume has it.
            let Some(previous) = previous else {
                return Ok(Step { apply: Some(Box::new(desired)), ..Step::default() });
            };
            let size = storage::claim_size(&desired).unwrap_or(&previous.size).to_string();
            let pvcs = list(ctx, ns, name).await?;
            let progress = storage::progress(&pvcs, &size);
            if progress.resized >= progress.volumes {
                let note = format!("every Redis volume ({}) has {size}", progress.volumes);
                ctx.events.normal(app, reason::VOLUMES_EXPANDED, "ExpandVolumes", note).await;
                return Ok(Step { apply: Some(Box::new(desired)), ..Step::default() });
            }
            Ok(Step {
                apply: Some(Box::new(desired)),
                storage: Some(progress),
                stalled: None,
                requeue: Some(RECHECK),
            })
        }
        Plan::Grow { from, to } => grow(app, ctx, ns, name, desired, live, &from, &to).await,
    }
}

/// Patch every claim below `to`, then delete the StatefulSet orphaning its pods (applied
/// again with the new template once it is gone). A refusal keeps the StatefulSet as is.
#[allow(clippy::too_many_arguments)]
async fn grow(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    desired: StatefulSet,
    live: Option<&StatefulSet>,
    from: &str,
    to: &str,
) -> Result<Step, Error> {
    let mut pvcs = list(ctx, ns, name).await?;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({ "spec": { "resources": { "requests": { "storage": to } } } });
    let pending: Vec<String> = storage::to_expand(&pvcs, to).into_iter().map(str::to_string).collect();
    for claim in &pending {
        match api.patch(claim, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(updated) => {
                if let Some(p) = pvcs.iter_mut().find(|p| p.name_any() == *claim) {
                    *p = updated;
                }
            }
            Err(kube::Error::Api(s)) if storage::is_expansion_refused(s.code, &s.message) => {
                let message = format!(
                    "spec.redis.storage.size asks for {to} but the volumes cannot grow from {from}: {}. \
                     The volumes stay at {from}; everything else in the spec is applied. Volume expansion \
                     needs a StorageClass with allowVolumeExpansion: true and a driver that resizes.",
                    s.message
                );
                let already = app.status.as_ref().is_some_and(|st| {
                    st.conditions.iter().any(|c| c.type_ == STALLED && c.reason == storage::NOT_EXPANDABLE)
                });
                if !already {
                    ctx.events.warning(app, storage::NOT_EXPANDABLE, "ExpandVolumes", message.clone()).await;
                }
                let mut progress = storage::progress(&pvcs, to);
                progress.message = format!("the StorageClass refuses to expand the volumes: {}", s.message);
                return Ok(Step {
                    apply: Some(Box::new(storage::with_claim_size(desired, from))),
                    storage: Some(progress),
                    stalled: Some(message),
                    requeue: None,
                });
            }
            // Gone since the list (scaled down and deleted by hand): nothing to grow.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::kube(format!("expand PersistentVolumeClaim {ns}/{claim} to {to}"), e));
            }
        }
    }
    let sts_name = crate::names::redis(name);
    if let Some(live) = live {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            // Only the very object we looked at: never a newer one created meanwhile.
            preconditions: Some(Preconditions { uid: live.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
        match sts_api.delete(&sts_name, &params).await {
            Ok(_) => {}
            // Gone or changed since the cache saw it: decide again on the next pass.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("replace StatefulSet {ns}/{sts_name}"), e)),
        }
        ctx.applied.forget_object(ns, "StatefulSet", &sts_name);
    }
    let note = format!(
        "expanding the Redis volumes from {from} to {to}: resized the request of {} claim(s); replacing \
         StatefulSet {sts_name} (its pods keep running) to give it the new volume claim template",
        pending.len()
    );
    tracing::info!(%from, %to, claims = pending.len(), "expanding the Redis volumes");
    ctx.events.normal(app, reason::EXPANDING_VOLUMES, "ExpandVolumes", note).await;
    Ok(Step {
        apply: None,
        storage: Some(storage::progress(&pvcs, to)),
        stalled: None,
        requeue: Some(RECHECK),
    })
}

/// The stack's Redis PVCs (the claim template's labels).
async fn list(ctx: &Context, ns: &str, name: &str) -> Result<Vec<PersistentVolumeClaim>, Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let selector = labels::selector_string(&labels::selector(name, Component::Redis));
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube(format!("list PersistentVolumeClaims {ns} {selector}"), e))?;
    Ok(list.items)
}
