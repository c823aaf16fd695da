//! One reconcile of a CounterApp, a straight line: read -> build -> apply -> redis ->
//! status. Steady state is silent: an unchanged, ready stack is only read.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::apply::{self, Decision};
use super::context::AppAddressing;
use super::events::reason;
use super::status::{self, Observation, Workload};
use super::{Context, Error, pods};
use crate::api::{CounterApp, CounterAppStatus, FIELD_MANAGER, RedisStatus};
use crate::build::{self, Children, Inputs, names};
use crate::redis::node::RedisClient;
use crate::redis::{Outcome, PodView};

/// Requeue an idle, healthy stack this often (a safety net; watches do the real work).
pub const RESYNC: Duration = Duration::from_secs(300);

/// Controller entry point: one reconcile, with its span, metrics and failure Event.
pub async fn reconcile(app: Arc<CounterApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        name = %app.name_any(),
        namespace = %app.namespace().unwrap_or_default(),
        generation = app.metadata.generation.unwrap_or_default(),
    );
    async move {
        let _timer = ctx.metrics.reconcile_started();
        let result = run(&app, &ctx).await;
        match &result {
            Ok(_) => ctx.backoff.reset(&ObjectRef::from_obj(&*app)),
            Err(e) => {
                ctx.metrics.reconcile_failed(e);
                ctx.events.warning(&app, reason::RECONCILE_FAILED, "Reconcile", e.to_string()).await;
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Controller error policy: log, and retry with per-object exponential backoff.
pub fn error_policy(app: Arc<CounterApp>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&ObjectRef::from_obj(&*app));
    tracing::warn!(
        name = %app.name_any(),
        namespace = %app.namespace().unwrap_or_default(),
        error = %error,
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

async fn run(app: &CounterApp, ctx: &Context) -> Result<Action, Error> {
    let name = app.metadata.name.clone().ok_or_else(|| Error::InvalidObject("no metadata.name".into()))?;
    let ns = app.namespace().ok_or_else(|| Error::InvalidObject(format!("{name} has no namespace")))?;
    if app.metadata.deletion_timestamp.is_some() {
        // Children go away through their owner references; PVCs stay (Retain).
        ctx.forget(&ObjectRef::from_obj(app));
        tracing::debug!("being deleted; nothing to do");
        return Ok(Action::await_change());
    }
    let app = &ctx.statuses.freshest(app);
    if app.spec.paused {
        return observe_paused(app, ctx, &ns, &name).await;
    }

    // 1. read: the password (created once, then read back) and the current primary
    let secret: Option<Secret> = apply::get(&ctx.client, &ns, &names::redis_auth(&name)).await?;
    let inputs = Inputs {
        default_web_image: ctx.default_web_image.clone(),
        redis_password: match &secret {
            Some(s) => read_password(s)?,
            // Only when the auth Secret does not exist yet; read back ever after.
            None => build::render::random_password(),
        },
        primary: current_primary(app),
    };

    // 2. build (pure)
    let children = match build::all(app, &inputs) {
        Ok(c) => c,
        Err(e) => return stall_on_invalid_spec(app, ctx, &ns, &name, e).await,
    };

    // 3. apply what differs
    let (web, sts, applied) = apply_children(app, ctx, &name, children, secret).await?;

    // 4. redis: pods read fresh, roles decided by the replication manager
    let pod_views = pods::list(&ctx.client, &ns, &name, update_revision(Some(&sts))).await?;
    let outcome = replication(app, ctx, &ns, &name, &pod_views, &inputs).await?;

    // 5. status
    let obs = Observation {
        app: name.clone(),
        generation: app.metadata.generation,
        paused: false,
        applied,
        web: Workload::from_deployment(Some(&web), app.spec.web.replicas),
        redis: Workload::from_statefulset(Some(&sts), app.spec.redis_pods()),
        primary_ready: primary_ready(&pod_views, outcome.status.primary.as_deref()),
        redis_health: Some(outcome.health),
        redis_status: Some(outcome.status),
        invalid_spec: None,
    };
    write_status(app, ctx, &ns, &name, &obs).await?;

    Ok(Action::requeue(outcome.requeue_after.map_or(RESYNC, |d| d.min(RESYNC))))
}

/// `spec.paused`: apply nothing, run no replication pass; only report what is observed.
async fn observe_paused(app: &CounterApp, ctx: &Context, ns: &str, name: &str) -> Result<Action, Error> {
    report_without_applying(app, ctx, ns, name, true, None, None).await?;
    Ok(Action::requeue(RESYNC))
}

/// Status from what the cluster has, for the paths that apply nothing (paused, or a spec
/// the builders reject).
async fn report_without_applying(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    paused: bool,
    redis_status: Option<RedisStatus>,
    invalid_spec: Option<String>,
) -> Result<(), Error> {
    let (web, sts) = read_workloads(ctx, ns, name).await?;
    let pod_views = pods::list(&ctx.client, ns, name, update_revision(sts.as_ref())).await?;
    let obs = Observation {
        app: name.to_string(),
        generation: app.metadata.generation,
        paused,
        redis_health: None,
        applied: false,
        web: Workload::from_deployment(web.as_ref(), app.spec.web.replicas),
        redis: Workload::from_statefulset(sts.as_ref(), app.spec.redis_pods()),
        primary_ready: primary_ready(&pod_views, current_primary(app).as_deref()),
        redis_status,
        invalid_spec,
    };
    write_status(app, ctx, ns, name, &obs).await
}

/// The StatefulSet's `status.updateRevision`: pods at another revision are outdated.
fn update_revision(sts: Option<&StatefulSet>) -> Option<&str> {
    sts?.status.as_ref()?.update_revision.as_deref()
}

/// `status.redis.primary`: the primary last decided.
fn current_primary(app: &CounterApp) -> Option<String> {
    app.status.as_ref()?.redis.as_ref()?.primary.clone()
}

/// Apply every child (only those that need it), Redis first. Returns the web Deployment
/// and Redis StatefulSet as the API has them now, and whether anything was applied.
async fn apply_children(
    app: &CounterApp,
    ctx: &Context,
    name: &str,
    c: Children,
    secret: Option<Secret>,
) -> Result<(Deployment, StatefulSet, bool), Error> {
    let mut applied = false;
    applied |= ensure(app, ctx, name, c.redis_auth, Some(secret)).await?.1;
    applied |= ensure(app, ctx, name, c.redis_config, None).await?.1;
    applied |= ensure(app, ctx, name, c.redis_headless_service, None).await?.1;
    applied |= ensure(app, ctx, name, c.redis_primary_service, None).await?.1;
    applied |= ensure(app, ctx, name, c.redis_replicas_service, None).await?.1;
    let (sts, a) = ensure(app, ctx, name, c.redis_statefulset, None).await?;
    applied |= a;
    applied |= ensure(app, ctx, name, c.redis_pdb, None).await?.1;
    applied |= ensure(app, ctx, name, c.web_service, None).await?.1;
    let (web, a) = ensure(app, ctx, name, c.web_deployment, None).await?;
    applied |= a;
    applied |= ensure(app, ctx, name, c.web_pdb, None).await?.1;
    Ok((web, sts, applied))
}

/// Ensure one child; `live` is `Some(state)` when the caller already read it. Emits a
/// Created/Updated Event when it was applied.
async fn ensure<K>(
    app: &CounterApp,
    ctx: &Context,
    name: &str,
    desired: K,
    live: Option<Option<K>>,
) -> Result<(K, bool), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let live = match live {
        Some(l) => l,
        None => {
            let ns = desired.namespace().unwrap_or_default();
            apply::get::<K>(&ctx.client, &ns, &desired.name_any()).await?
        }
    };
    let done = apply::ensure(&ctx.client, &ctx.applied, name, desired, live).await?;
    if done.decision.applies() {
        let kind = K::kind(&());
        ctx.metrics.applied(&kind);
        let (r, verb) = match done.decision {
            Decision::Create => (reason::CREATED, "created"),
            Decision::Revert => (reason::UPDATED, "reverted out-of-band changes to"),
            _ => (reason::UPDATED, "updated"),
        };
        let note = format!("{verb} {kind} {}", done.object.name_any());
        ctx.events.about_child(app, r, "Apply", note, done.object.object_ref(&())).await;
    }
    let applied = done.decision.applies();
    Ok((done.object, applied))
}

/// Read the two workloads without applying anything (paused, or an invalid spec).
async fn read_workloads(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<(Option<Deployment>, Option<StatefulSet>), Error> {
    let web = apply::get::<Deployment>(&ctx.client, ns, &names::web(name)).await?;
    let sts = apply::get::<StatefulSet>(&ctx.client, ns, &names::redis(name)).await?;
    Ok((web, sts))
}

/// The builders rejected the spec: report Stalled and fail (retried with backoff, and
/// re-triggered at once when the user edits the CounterApp).
async fn stall_on_invalid_spec(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    e: build::Error,
) -> Result<Action, Error> {
    let redis_status = app.status.as_ref().and_then(|st| st.redis.clone());
    report_without_applying(app, ctx, ns, name, false, redis_status, Some(e.to_string())).await?;
    Err(e.into())
}

/// Run the replication manager, then move role labels and publish its Events. Nothing
/// built depends on the primary (a restarting Redis pod asks its peers who the primary
/// is), so a failover changes no child object.
async fn replication(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    pod_views: &[PodView],
    inputs: &Inputs,
) -> Result<Outcome, Error> {
    let addressing = AppAddressing { app: name, mode: &ctx.redis_addressing };
    let client = RedisClient::new(&inputs.redis_password);
    let outcome = ctx.redis.reconcile_with(app, pod_views, &client, &addressing).await?;
    // From now on the health checker watches these pods (fresh addresses, new primary).
    let primary = outcome.status.primary.as_deref();
    ctx.redis.watch(app, pod_views, &addressing, &inputs.redis_password, primary);
    for (pod, role) in pods::label_changes(pod_views, &outcome.role_labels) {
        let previous = pod_views.iter().find(|p| p.name == pod).and_then(|p| p.role_label.clone());
        pods::set_role(&ctx.client, ns, &pod, &role).await?;
        ctx.metrics.role_label_patches.inc();
        tracing::info!(%pod, %role, ?previous, "role label set");
        if previous.is_some() {
            let note = format!("pod {pod} is now {role}");
            let related = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.clone()),
                namespace: Some(ns.to_string()),
                ..Default::default()
            };
            ctx.events.about_child(app, reason::ROLE_CHANGED, "Relabel", note, related).await;
        }
    }
    // Planned restarts (StatefulSet OnDelete), only when the manager says it is safe.
    for pod in &outcome.pods_to_delete {
        tracing::info!(%pod, "deleting pod for a planned restart");
        pods::delete(&ctx.client, ns, pod).await?;
    }
    for ev in &outcome.events {
        if ev.warning {
            ctx.events.warning(app, &ev.reason, "Replication", ev.note.clone()).await;
        } else {
            ctx.events.normal(app, &ev.reason, "Replication", ev.note.clone()).await;
        }
    }
    Ok(outcome)
}

/// Compute the status and write it (server-side apply on the status subresource) only
/// when it differs from the current one.
async fn write_status(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    obs: &Observation,
) -> Result<(), Error> {
    let desired = status::compute(app.status.as_ref(), obs, &status::now());
    if !status::needs_patch(app.status.as_ref(), &desired) {
        return Ok(());
    }
    patch_status(ctx, ns, name, &desired).await?;
    ctx.statuses.record(app, &desired);
    ctx.metrics.status_patches.inc();
    Ok(())
}

async fn patch_status(ctx: &Context, ns: &str, name: &str, status: &CounterAppStatus) -> Result<(), Error> {
    let api: Api<CounterApp> = Api::namespaced(ctx.client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": CounterApp::api_version(&()),
        "kind": CounterApp::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|e| Error::kube(format!("patch status of CounterApp {ns}/{name}"), e))?;
    Ok(())
}

/// The password in an existing auth Secret. Never replaced: Redis already uses it.
fn read_password(secret: &Secret) -> Result<String, Error> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(names::PASSWORD_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::BadSecret { name: secret.name_any() })
}

/// The pod named `primary` exists, is ready and is not terminating.
fn primary_ready(pods: &[PodView], primary: Option<&str>) -> bool {
    primary.is_some_and(|p| pods.iter().any(|v| v.name == p && v.ready && !v.terminating))
}
