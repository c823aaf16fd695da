//! One reconcile of a CounterApp, a straight line: read -> build -> apply -> redis ->
//! status. Steady state is silent: an unchanged, ready stack is only read.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::apply::{self, Decision};
use super::cache;
use super::context::AppAddressing;
use super::credentials::{self, StackSecrets, TlsMaterial};
use super::events::reason;
use super::expand;
use super::rollouts;
use super::status::{self, Observation, Workload};
use super::{Context, Error, pods};
use crate::acl::RedisUser;
use crate::api::{CounterApp, CounterAppStatus, FIELD_MANAGER, ROTATE_ANNOTATION, RedisStatus};
use crate::children::{self, Children, Inputs, Passwords, UserPassword, certificate};
use crate::names;
use crate::replication::acl_sync;
use crate::replication::node::{Addressing, NodeAuth};
use crate::replication::{Outcome, PodView};

/// Requeue an idle stack this often (a safety net: watches and the Redis health checks
/// wake a CounterApp whenever something it depends on changes).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often a stack waiting for (or holding) a rollout slot looks again: slots are
/// in memory, freed by other stacks' passes, which wake no one else.
const ROLLOUT_RECHECK: Duration = Duration::from_secs(5);
/// How long a reconcile waits for the caches' initial lists before trying again.
const CACHE_WAIT: Duration = Duration::from_secs(30);

/// Controller entry point: one reconcile, with its span, metrics and failure Event.
pub async fn reconcile(app: Arc<CounterApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        name = %app.name_any(),
        namespace = %app.namespace().unwrap_or_default(),
        generation = app.metadata.generation.unwrap_or_default(),
    );
    async move {
        let _timer = ctx.metrics.reconcile_started(&ObjectRef::from_obj(&*app));
        // Boxed: the whole pass is one large state machine, and a caller that awaits it
        // inline (a test, a debug build) would carry it on its stack.
        let result = match Box::pin(run(&app, &ctx)).await {
            // Not a failure to report: nothing may be created there any more, and the
            // CounterApp goes with its namespace. One refusal per CounterApp, then silence.
            Err(e) if e.namespace_terminating() => {
                tracing::info!(error = %e, "the namespace is terminating; leaving this CounterApp alone");
                ctx.stop_acting(&app, true);
                Ok(Action::await_change())
            }
            // The fence refused a write: this instance no longer leads. No Event, no
            // status, no retry: the new leader carries on, this process steps down.
            Err(e) if e.not_leader() => {
                tracing::warn!(error = %e, "not the leader (any more): this reconcile stops here");
                Ok(Action::await_change())
            }
            other => other,
        };
        ctx.metrics.reconcile_result(result.is_ok());
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
    if !ctx.leadership.is_leader() {
        tracing::info!("not the leader (any more): changing nothing");
        return Ok(Action::await_change());
    }
    if ctx.namespace_terminating(app) {
        // Its children are being deleted with the namespace: creating them again would be
        // refused (see operator::terminating). No apply, no status, no Event.
        ctx.stop_acting(app, false);
        tracing::debug!("the namespace is terminating; nothing to do");
        return Ok(Action::await_change());
    }
    if !ctx.caches.wait_ready(CACHE_WAIT).await {
        tracing::info!("watch caches not filled yet; trying again shortly");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let app = &ctx.statuses.freshest(app);
    if app.spec.paused {
        return observe_paused(app, ctx, &ns, &name).await;
    }

    // A spec the builders refuse waits for the next change (before any read).
    if let Err(e) = children::validate(app) {
        return stall_on_invalid_spec(app, ctx, &ns, &name, e).await;
    }

    // 1. read: every Redis user's passwords (created once, then read back, moved on by a
    //    rotation), the TLS Secret, the current primary
    let secrets = credentials::read(app, ctx, &ns, &name).await?;
    let tls = match credentials::read_tls(app, ctx, &ns).await? {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(waiting)) => return wait_for_tls(app, ctx, &ns, &name, waiting).await,
    };
    let inputs = Inputs {
        default_web_image: ctx.default_web_image.clone(),
        passwords: secrets.passwords.clone(),
        tls: tls.as_ref().map(|t| t.inputs.clone()),
        operator_namespace: ctx.operator_namespace.clone(),
    };

    // 2. build (pure)
    let children = match children::all(app, &inputs) {
        Ok(c) => c,
        Err(e) => return stall_on_invalid_spec(app, ctx, &ns, &name, e).await,
    };

    // 3. apply what differs (the Secrets first: a new password is stored before any
    //    node or client is asked to use it)
    let Applied { web, sts, any: applied, storage, slot_wait } =
        apply_children(app, ctx, &name, children, &secrets).await?;
    if !slot_wait {
        // Neither workload waits (any more): out of the line for a rollout slot.
        ctx.rollout_slots.not_waiting(&ns, &name);
    }
    if let Some(request) = &secrets.rotate_request {
        answer_rotate_request(app, ctx, &ns, &name, request, &secrets).await?;
    }

    // 4. redis: pods from the cache, roles decided by the replication manager. A leader
    //    that lost its lease meanwhile must not touch Redis.
    if !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    if app.spec.hibernate {
        return hibernated(app, ctx, &ns, &name, web.as_ref(), sts.as_ref(), applied).await;
    }
    if was_hibernated(app) && ready_reason(app).as_deref() == Some(status::reason::HIBERNATED) {
        let note =
            "spec.hibernate is false: starting the web and Redis pods from the kept volumes".to_string();
        ctx.events.normal(app, reason::WAKING, "Wake", note).await;
    }
    let stack_pods = pods::of_stack(&ctx.caches.pods, &ns, &name);
    let pod_views = pods::views(&name, &pods::redis(&stack_pods), update_revision(sts.as_ref()));
    let addressing = AppAddressing { app: &name, mode: &ctx.redis_addressing };
    let auth = operator_auth(&inputs.passwords, tls.as_ref()).with_names(&pod_views, &addressing);
    let mut outcome = replication(app, ctx, &ns, &name, &pod_views, &auth).await?;
    let rotating = sync_passwords(app, ctx, &name, &pod_views, &auth, &inputs, web.as_ref()).await?;
    outcome.status.rotating_passwords = rotating.iter().map(|u| u.name().to_string()).collect();
    outcome.status.storage = storage.status.clone();
    let backup = match &app.spec.backup {
        Some(spec) => {
            let stack = super::backup::Stack {
                redis: &outcome.status,
                pods: &pod_views,
                addressing: &addressing,
                passwords: &inputs.passwords,
                tls: tls.as_ref().map(|t| &t.ca),
            };
            super::backup::step(app, ctx, &ns, &name, spec, &stack).await
        }
        None => super::backup::Step::default(),
    };
    let bootstrap = super::restore::status(app, &stack_pods);
    announce_bootstrap(app, ctx, bootstrap.as_ref()).await;

    // 5. status
    let obs = Observation {
        app: name.clone(),
        generation: app.metadata.generation,
        paused: false,
        applied,
        web: Workload::from_deployment(web.as_ref(), desired_web_replicas(app, web.as_ref())),
        redis: Workload::from_statefulset(sts.as_ref(), app.spec.redis_pods()),
        primary_ready: primary_ready(&pod_views, outcome.status.primary.as_deref()),
        redis_health: Some(outcome.health),
        redis_status: Some(outcome.status),
        invalid_spec: None,
        image_pull: super::image_pull::failure(&stack_pods),
        storage_stalled: storage.stalled,
        hibernating: None,
        backup: backup.status,
        backup_configured: app.spec.backup.is_some(),
        restore_failed: super::restore::failure(app, bootstrap.as_ref()),
        bootstrap,
        expanding: storage.status.filter(|s| storage.requeue.is_some() && s.resized < s.volumes),
        waiting: if slot_wait {
            Some(format!(
                "an operator change to the pod templates waits for a rollout slot ({} of {} stacks are rolling; \
                 --max-concurrent-rollouts)",
                ctx.rollout_slots.len(),
                ctx.max_concurrent_rollouts
            ))
        } else {
            (!rotating.is_empty()).then(|| {
                let users: Vec<&str> = rotating.iter().map(|u| u.name()).collect();
                format!(
                    "rotating the Redis password of {}: waiting for every client to use the new one",
                    users.join(", ")
                )
            })
        },
    };
    let desired = status::compute(app.status.as_ref(), &obs, &status::now());
    write_computed_status(app, ctx, &ns, &name, &obs, &desired).await?;
    // A stack that rolled for an operator change gives its slot back once it is Ready
    // with both workloads rolled out (or when it cannot progress: Stalled).
    if !slot_wait && ctx.rollout_slots.holds(&ns, &name) {
        let done = obs.web.rolled_out()
            && obs.redis.rolled_out()
            && desired.conditions.iter().any(|c| {
                (c.type_ == crate::api::condition::READY && c.status == "True")
                    || c.type_ == crate::api::condition::STALLED
            });
        if done && ctx.release_rollout_slot(&ns, &name) {
            tracing::info!(
                rolling = ctx.rollout_slots.len(),
                "rolled out for an operator change; slot given back"
            );
        }
    }

    let slot_requeue = (slot_wait || ctx.rollout_slots.holds(&ns, &name)).then_some(ROLLOUT_RECHECK);
    let requeue =
        [outcome.requeue_after, storage.requeue, slot_requeue, backup.requeue].into_iter().flatten().min();
    Ok(Action::requeue(requeue.map_or(RESYNC, |d| d.min(RESYNC))))
}

/// `spec.hibernate`: the children were applied at zero pods. No replication pass and no
/// Redis checks (nothing answers, and a missing primary is no failover); the status keeps
/// the last primary (chosen again at wake-up) and says how far the stop is.
async fn hibernated(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    web: Option<&Deployment>,
    sts: Option<&StatefulSet>,
    applied: bool,
) -> Result<Action, Error> {
    ctx.replication.forget(&crate::replication::AppKey::new(ns, name));
    ctx.release_rollout_slot(ns, name);
    let running = i32::try_from(pods::of_stack(&ctx.caches.pods, ns, name).len()).unwrap_or(i32::MAX);
    let mut redis = app.status.as_ref().and_then(|s| s.redis.clone()).unwrap_or_default();
    redis.nodes.clear();
    redis.ready_replicas = 0;
    redis.primary_unavailable_since = None;
    redis.rotating_passwords.clear();
    redis.hibernated = true;
    let was = ready_reason(app);
    let obs = Observation {
        app: name.to_string(),
        generation: app.metadata.generation,
        applied,
        web: Workload::from_deployment(web, 0),
        redis: Workload::from_statefulset(sts, 0),
        redis_status: Some(redis),
        hibernating: Some(running),
        backup_configured: app.spec.backup.is_some(),
        ..Observation::default()
    };
    if write_status(app, ctx, ns, name, &obs).await?
        && running == 0
        && was.as_deref() != Some(status::reason::HIBERNATED)
    {
        let note = "every web and Redis pod stopped; the Redis volumes are kept".to_string();
        ctx.events.normal(app, reason::HIBERNATED, "Hibernate", note).await;
    }
    // Pods going away wake it through the pod watch.
    Ok(Action::requeue(RESYNC))
}

/// An Event when the restore of `spec.bootstrap` ends (or fails anew).
async fn announce_bootstrap(app: &CounterApp, ctx: &Context, new: Option<&crate::api::BootstrapStatus>) {
    let Some(b) = new else { return };
    match b.phase.as_str() {
        super::restore::RESTORED => {
            ctx.events.normal(app, reason::RESTORED, "Restore", b.message.clone()).await
        }
        super::restore::FAILED => {
            ctx.events.warning(app, reason::RESTORE_FAILED, "Restore", b.message.clone()).await
        }
        _ => {}
    }
}

/// `status.redis.hibernated`: hibernated, or woken and no primary chosen again yet.
fn was_hibernated(app: &CounterApp) -> bool {
    app.status.as_ref().and_then(|s| s.redis.as_ref()).is_some_and(|r| r.hibernated)
}

/// The reason of the Ready condition in the status.
fn ready_reason(app: &CounterApp) -> Option<String> {
    let ready = app.status.as_ref()?.conditions.iter().find(|c| c.type_ == crate::api::condition::READY)?;
    Some(ready.reason.clone())
}

/// `spec.paused`: apply nothing, run no replication pass; only report what is observed.
/// A switchover requested meanwhile is answered Failed (with a Warning Event), not kept
/// waiting until someone resumes.
async fn observe_paused(app: &CounterApp, ctx: &Context, ns: &str, name: &str) -> Result<Action, Error> {
    let (redis_status, refusal) = ctx.replication.refuse_switchover_while_paused(app).unzip();
    report_without_applying(app, ctx, ns, name, true, redis_status, Unapplied::Paused).await?;
    if let Some(ev) = refusal {
        ctx.events.warning(app, &ev.reason, "Switchover", ev.note).await;
    }
    Ok(Action::await_change())
}

/// Why a reconcile applies nothing.
enum Unapplied {
    Paused,
    /// The builders refuse the spec (Stalled).
    InvalidSpec(String),
    /// Something the stack needs is not there yet (Reconciling).
    Waiting(String),
}

/// Status from what the cluster has, for the paths that apply nothing (paused, or a spec
/// the builders reject). Returns whether the status changed.
async fn report_without_applying(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    paused: bool,
    redis_status: Option<RedisStatus>,
    why: Unapplied,
) -> Result<bool, Error> {
    let (invalid_spec, waiting) = match why {
        Unapplied::Paused => (None, None),
        Unapplied::InvalidSpec(m) => (Some(m), None),
        Unapplied::Waiting(m) => (None, Some(m)),
    };
    let web = cache::get(&ctx.caches.deployments, ns, &names::web(name));
    let sts = cache::get(&ctx.caches.statefulsets, ns, &names::redis(name));
    let stack_pods = pods::of_stack(&ctx.caches.pods, ns, name);
    let pod_views = pods::views(name, &pods::redis(&stack_pods), update_revision(sts.as_deref()));
    let obs = Observation {
        app: name.to_string(),
        generation: app.metadata.generation,
        paused,
        redis_health: None,
        applied: false,
        web: Workload::from_deployment(web.as_deref(), desired_web_replicas(app, web.as_deref())),
        redis: Workload::from_statefulset(sts.as_deref(), app.spec.redis_pods()),
        primary_ready: primary_ready(&pod_views, current_primary(app).as_deref()),
        redis_status,
        invalid_spec,
        image_pull: super::image_pull::failure(&stack_pods),
        storage_stalled: None,
        expanding: None,
        hibernating: None,
        waiting,
        backup: None,
        backup_configured: app.spec.backup.is_some(),
        bootstrap: None,
        restore_failed: None,
    };
    write_status(app, ctx, ns, name, &obs).await
}

/// Web pods wanted: the spec's count, or with autoscaling the autoscaler's choice (the
/// Deployment's `replicas`), at least `minReplicas`.
fn desired_web_replicas(app: &CounterApp, web: Option<&Deployment>) -> i32 {
    if app.spec.hibernate {
        return 0;
    }
    match &app.spec.web.autoscaling {
        None => app.spec.web.replicas,
        Some(a) => web
            .and_then(|d| d.spec.as_ref()?.replicas)
            .unwrap_or(a.min_replicas)
            .clamp(a.min_replicas, a.max_replicas),
    }
}

/// The StatefulSet's `status.updateRevision`: pods at another revision are outdated.
fn update_revision(sts: Option<&StatefulSet>) -> Option<&str> {
    sts?.status.as_ref()?.update_revision.as_deref()
}

/// `status.redis.primary`: the primary last decided.
fn current_primary(app: &CounterApp) -> Option<String> {
    app.status.as_ref()?.redis.as_ref()?.primary.clone()
}

/// Apply every child (only those that need it), Redis first, against the cached state.
/// Returns the web Deployment and Redis StatefulSet as last known, whether anything was
/// applied, and where a volume expansion stands.
async fn apply_children(
    app: &CounterApp,
    ctx: &Context,
    name: &str,
    c: Children,
    stack_secrets: &StackSecrets,
) -> Result<Applied, Error> {
    let ns = app.namespace().unwrap_or_default();
    let caches = &ctx.caches;
    let done = Done::default();
    // Secrets created while reading the passwords count as this pass's creations.
    for user in &stack_secrets.created {
        ctx.metrics.applied("Secret");
        done.created(format!("Secret {}", names::redis_user_secret(name, user.name())));
    }
    let secrets = &stack_secrets.live;
    let Children {
        web_deployment,
        web_service,
        web_pdb,
        redis_statefulset,
        redis_headless_service,
        redis_primary_service,
        redis_replicas_service,
        redis_config,
        redis_user_secrets,
        redis_pdb,
        web_hpa,
        redis_network_policy,
        redis_certificate,
    } = c;

    // Children nothing else refers to at creation go out at once, concurrently with the
    // ordered chain below: a new stack's Services wait longest on the API server (its
    // ClusterIP allocation is serialised), and a thousand new stacks queue behind them.
    let service = |svc: Service| {
        let live = cache::meta(&caches.services, &ns, &svc.name_any());
        ensure_service(app, ctx, name, svc, live, &done)
    };
    let redis_name = names::redis(name);
    // Each branch is boxed: joined inline, the futures of a dozen typed applies make one
    // future larger than a thread's stack in a debug build (the mock-API tests overflowed).
    let independent = Box::pin(async {
        futures::try_join!(
            service(redis_headless_service),
            service(redis_primary_service),
            service(redis_replicas_service),
            service(web_service),
            ensure(app, ctx, name, redis_pdb, cache::meta(&caches.pdbs, &ns, &names::redis(name)), &done),
            ensure(app, ctx, name, web_pdb, cache::meta(&caches.pdbs, &ns, &names::web(name)), &done),
            ensure_optional(
                app,
                ctx,
                name,
                redis_network_policy,
                &redis_name,
                cache::meta(&caches.network_policies, &ns, &redis_name),
                &done,
            ),
        )
    });

    // In order: the Secrets first (a new password is stored before any node or client is
    // asked to use it), then the configuration the pods mount, then the workloads.
    let ordered = Box::pin(async {
        let secrets = RedisUser::ALL.iter().zip(redis_user_secrets).map(|(user, secret)| {
            ensure(app, ctx, name, secret, secrets.get(user).cloned().flatten(), &done)
        });
        futures::future::try_join_all(secrets).await?;
        let certificate = async {
            if let Some(cert) = redis_certificate
                && apply::ensure_dynamic(&ctx.client, &ns, &cert, &certificate::api_resource()).await?
            {
                done.applied();
            }
            Ok::<_, Error>(())
        };
        let cm = cache::meta(&caches.configmaps, &ns, &names::redis(name));
        futures::try_join!(certificate, ensure(app, ctx, name, redis_config, cm, &done))?;

        let redis = Box::pin(apply_redis(app, ctx, name, redis_statefulset, &done));
        let web = Box::pin(async {
            let mut web_deployment = web_deployment;
            let cached = cache::get(&caches.deployments, &ns, &names::web(name));
            let live = cached.as_ref().map(|d| d.metadata.clone());
            let template = web_deployment.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
            if !may_roll(app, ctx, name, &mut web_deployment.metadata, &template, live.as_ref()) {
                done.wait_for_slot();
                return Ok::<_, Error>(cached.map(|d| (*d).clone()));
            }
            if let (Some(scaling), Some(cached)) = (&app.spec.web.autoscaling, &cached)
                && apply::pending(&ctx.applied, name, &web_deployment, live.as_ref())?.applies()
            {
                // The Deployment is about to be applied without `replicas`: keep its count.
                let current = cached.spec.as_ref().and_then(|s| s.replicas).unwrap_or(scaling.min_replicas);
                let replicas = current.clamp(scaling.min_replicas, scaling.max_replicas);
                apply::hand_off_replicas(&ctx.client, &ns, &names::web(name), replicas).await?;
            }
            let web = ensure(app, ctx, name, web_deployment, live, &done).await?;
            let live = cache::meta(&caches.hpas, &ns, &names::web(name));
            ensure_optional(app, ctx, name, web_hpa, &names::web(name), live, &done).await?;
            Ok::<_, Error>(web.or_else(|| cached.map(|d| (*d).clone())))
        });
        futures::try_join!(redis, web)
    });
    let (_, ((sts, storage), web)) = futures::try_join!(independent, ordered)?;

    // One Event for everything created in this pass (a new stack: ten children), not one
    // request per child.
    let slot_wait = done.slot_wait.load(std::sync::atomic::Ordering::Relaxed);
    let (any, mut created) = done.into_parts();
    if !created.is_empty() {
        // Concurrent applies finish in any order; the note lists them in a stable one.
        created.sort();
        let note = format!("created {}", created.join(", "));
        ctx.events.normal(app, reason::CREATED, "Apply", note).await;
    }
    Ok(Applied { web, sts, any, storage, slot_wait })
}

/// The Redis StatefulSet: applied when it differs, unless a larger
/// `spec.redis.storage.size` needs the claims resized and the StatefulSet replaced (its
/// claim templates are immutable: see operator::storage). Returns it as last known.
async fn apply_redis(
    app: &CounterApp,
    ctx: &Context,
    name: &str,
    desired: StatefulSet,
    done: &Done,
) -> Result<(Option<StatefulSet>, Storage), Error> {
    let ns = app.namespace().unwrap_or_default();
    let cached = cache::get(&ctx.caches.statefulsets, &ns, &names::redis(name));
    // Boxed, as the applies: debug builds keep every temporary of a poll in its frame.
    let step = Box::pin(expand::step(app, ctx, &ns, name, desired, cached.as_deref())).await?;
    let storage = Storage { status: step.storage, stalled: step.stalled, requeue: step.requeue };
    let sts = match step.apply {
        Some(mut desired) => {
            let live = cached.as_ref().map(|s| s.metadata.clone());
            let template = desired.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
            if may_roll(app, ctx, name, &mut desired.metadata, &template, live.as_ref()) {
                Box::pin(ensure(app, ctx, name, *desired, live, done)).await?
            } else {
                done.wait_for_slot();
                None
            }
        }
        None => None,
    };
    Ok((sts.or_else(|| cached.map(|s| (*s).clone())), storage))
}

/// What [`apply_children`] leaves for the status.
struct Applied {
    /// The web Deployment and Redis StatefulSet as last known (apply response, else cache).
    web: Option<Deployment>,
    sts: Option<StatefulSet>,
    /// Anything was applied.
    any: bool,
    storage: Storage,
    /// A workload's operator-caused change waits for a rollout slot.
    slot_wait: bool,
}

/// The storage part of the Redis step (operator::expand).
#[derive(Default)]
struct Storage {
    status: Option<crate::api::StorageStatus>,
    stalled: Option<String>,
    requeue: Option<Duration>,
}

/// Stamp a workload for operator::rollouts and say whether it may be applied now: yes,
/// unless it changes the pod template for the operator's reasons and every rollout slot
/// is held by other stacks.
fn may_roll(
    app: &CounterApp,
    ctx: &Context,
    name: &str,
    meta: &mut ObjectMeta,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    live: Option<&ObjectMeta>,
) -> bool {
    let stamps = rollouts::stamps(app, template);
    rollouts::stamp(meta, &stamps, live);
    let spec_observed = app.status.as_ref().and_then(|s| s.observed_generation) == app.metadata.generation;
    if !rollouts::operator_caused(&stamps, live, spec_observed) {
        return true;
    }
    let ns = app.namespace().unwrap_or_default();
    let granted = ctx.rollout_slots.acquire(&ns, name, ctx.max_concurrent_rollouts);
    if granted {
        tracing::info!(rolling = ctx.rollout_slots.len(), "rolling the pods for an operator change");
    }
    granted
}

/// What [`apply_children`] applied, shared by its concurrent applies.
#[derive(Default)]
struct Done {
    /// A workload waits for a rollout slot (operator::rollouts).
    slot_wait: std::sync::atomic::AtomicBool,
    any: std::sync::atomic::AtomicBool,
    /// `Kind name` of every child created.
    created: std::sync::Mutex<Vec<String>>,
}

impl Done {
    fn applied(&self) {
        self.any.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn created(&self, child: String) {
        self.applied();
        crate::locked::lock(&self.created).push(child);
    }

    fn wait_for_slot(&self) {
        self.slot_wait.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn into_parts(self) -> (bool, Vec<String>) {
        let created = self.created.into_inner().unwrap_or_else(|e| e.into_inner());
        (self.any.into_inner(), created)
    }
}

/// Ensure one child given its cached metadata; returns the apply response, if any. An
/// update (or a revert of someone's edit) gets its own Event, related to the child.
async fn ensure<K>(
    app: &CounterApp,
    ctx: &Context,
    name: &str,
    desired: K,
    live: Option<ObjectMeta>,
    done: &Done,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let applied = apply::ensure(&ctx.client, &ctx.applied, name, desired, live.as_ref()).await?;
    if let (true, Some(object)) = (applied.decision.applies(), &applied.object) {
        let kind = K::kind(&());
        ctx.metrics.applied(&kind);
        done.applied();
        let verb = match applied.decision {
            Decision::Create => {
                done.created(format!("{kind} {}", object.name_any()));
                None
            }
            Decision::Revert => Some("reverted out-of-band changes to"),
            _ => Some("updated"),
        };
        if let Some(verb) = verb {
            let note = format!("{verb} {kind} {}", object.name_any());
            ctx.events.about_child(app, reason::UPDATED, "Apply", note, object.object_ref(&())).await;
        }
    }
    Ok(applied.object)
}

/// A Service, applied like any child, except that one the API server refuses because
/// it would lose its ClusterIP (`NAME-redis-replicas` of a stack made by an earlier
/// build, now headless) is deleted and created anew: a ClusterIP cannot be removed in
/// place. Clients connected through it keep their connections; new ones resolve the
/// pods.
async fn ensure_service(
    app: &CounterApp,
    ctx: &Context,
    name: &str,
    desired: Service,
    live: Option<ObjectMeta>,
    done: &Done,
) -> Result<Option<Service>, Error> {
    // Kept for a second try only where one can be needed.
    let retry = children::service::is_headless(&desired).then(|| (desired.clone(), live.clone()));
    match ensure(app, ctx, name, desired, live, done).await {
        Err(e) if e.invalid() => {
            let Some((desired, Some(live))) = retry else { return Err(e) };
            let ns = app.namespace().unwrap_or_default();
            let uid = app.metadata.uid.as_deref().unwrap_or_default();
            let child = desired.name_any();
            let why = "it becomes headless, and a ClusterIP cannot be removed in place";
            if !apply::remove::<Service>(&ctx.client, &ns, &child, uid, &live, why).await? {
                return Err(e);
            }
            // Deleted by us: create it now, not wait for the cache to show it.
            ctx.applied.forget_object(&ns, "Service", &child);
            let note = format!("replaced Service {child}: {why}");
            ctx.events.normal(app, reason::UPDATED, "Apply", note).await;
            ensure(app, ctx, name, desired, None, done).await
        }
        other => other,
    }
}

/// A child that exists only when the spec asks for it: applied like the others when
/// built, deleted (if this CounterApp controls it) when not.
async fn ensure_optional<K>(
    app: &CounterApp,
    ctx: &Context,
    name: &str,
    desired: Option<K>,
    child_name: &str,
    live: Option<ObjectMeta>,
    done: &Done,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    match (desired, live) {
        (Some(d), live) => {
            ensure(app, ctx, name, d, live, done).await?;
        }
        (None, Some(live)) => {
            let ns = app.namespace().unwrap_or_default();
            let uid = app.metadata.uid.as_deref().unwrap_or_default();
            let why = "the spec no longer asks for it";
            if apply::remove::<K>(&ctx.client, &ns, child_name, uid, &live, why).await? {
                done.applied();
                let note = format!("deleted {} {child_name}: {why}", K::kind(&()));
                ctx.events.normal(app, reason::UPDATED, "Apply", note).await;
            }
        }
        (None, None) => {}
    }
    Ok(())
}

/// The builders rejected the spec: report Stalled (one Event when that is news) and wait
/// for the next change of the CounterApp instead of retrying.
async fn stall_on_invalid_spec(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    e: children::Error,
) -> Result<Action, Error> {
    let redis_status = app.status.as_ref().and_then(|st| st.redis.clone());
    let changed = report_without_applying(
        app,
        ctx,
        ns,
        name,
        false,
        redis_status,
        Unapplied::InvalidSpec(e.to_string()),
    )
    .await?;
    if changed {
        ctx.events.warning(app, reason::INVALID_SPEC, "Validate", e.to_string()).await;
    }
    tracing::warn!(error = %e, "invalid spec; waiting for the CounterApp to change");
    Ok(Action::await_change())
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
    auth: &NodeAuth,
) -> Result<Outcome, Error> {
    let addressing = AppAddressing { app: name, mode: &ctx.redis_addressing };
    let client = ctx.redis_client(auth.clone());
    let outcome = ctx.replication.reconcile_with(app, pod_views, &client, &addressing).await?;
    // From now on the health checker watches these pods (fresh addresses, new primary).
    let primary = outcome.status.primary.as_deref();
    ctx.replication.watch(app, pod_views, &addressing, auth, primary);
    let changes = pods::label_changes(pod_views, &outcome.role_labels);
    if !changes.is_empty() {
        crate::failpoint::hit("before-labels")
            .map_err(|p| Error::from(crate::replication::Error::Failpoint(p)))?;
    }
    for (pod, role) in changes {
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
    // Planned restarts (StatefulSet OnDelete), only when the manager says it is safe,
    // and only the very pod it saw (a uid precondition instead of a fresh read).
    for pod in &outcome.pods_to_delete {
        let uid = pod_views.iter().find(|p| &p.name == pod).and_then(|p| p.uid.clone());
        tracing::info!(%pod, "deleting pod for a planned restart");
        pods::delete(&ctx.client, ns, pod, uid).await?;
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
/// when it differs from the current one; returns whether it was written.
async fn write_status(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    obs: &Observation,
) -> Result<bool, Error> {
    let desired = status::compute(app.status.as_ref(), obs, &status::now());
    write_computed_status(app, ctx, ns, name, obs, &desired).await
}

/// [`write_status`] of a status the caller computed from `obs` (and reads itself).
async fn write_computed_status(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    obs: &Observation,
    desired: &CounterAppStatus,
) -> Result<bool, Error> {
    let primary_available = status::primary_available(obs, desired.redis.as_ref());
    ctx.metrics.record_app(ns, name, desired, primary_available, obs.redis.desired.saturating_sub(1).max(0));
    if !status::needs_patch(app.status.as_ref(), desired) {
        return Ok(false);
    }
    let epoch = |s: Option<&CounterAppStatus>| s.and_then(|s| s.redis.as_ref()).map(|r| r.epoch);
    if epoch(Some(desired)) != epoch(app.status.as_ref()) {
        crate::failpoint::hit("before-status")
            .map_err(|p| Error::from(crate::replication::Error::Failpoint(p)))?;
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        let changed = status::changed_paths(app.status.as_ref(), desired);
        tracing::debug!(?changed, "status changed");
    }
    let written = patch_status(ctx, ns, name, desired).await?;
    ctx.statuses.record(app, desired, Some(&written));
    ctx.metrics.status_patches.inc();
    Ok(true)
}

async fn patch_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &CounterAppStatus,
) -> Result<CounterApp, Error> {
    let api: Api<CounterApp> = Api::namespaced(ctx.client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": CounterApp::api_version(&()),
        "kind": CounterApp::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|e| Error::kube(format!("patch status of CounterApp {ns}/{name}"), e))
}

/// How the operator logs in to Redis: its ACL user, the current password first (then
/// the one a rotation moves away from, until every node accepts the new one), the CA.
fn operator_auth(passwords: &Passwords, tls: Option<&TlsMaterial>) -> NodeAuth {
    let op = &passwords.operator;
    let mut list = vec![op.password.clone()];
    if op.rotating() {
        list.push(op.previous.clone());
    }
    NodeAuth {
        username: Some(RedisUser::Operator.name().to_string()),
        passwords: list,
        tls: tls.map(|t| t.ca.clone()),
        names: Default::default(),
    }
}

/// Bring every running Redis node's ACL passwords in line with the Secrets, then settle
/// each rotation whose clients all moved: its Secret's `previous` becomes `password`, and
/// the next pass removes the old password from the nodes. Returns the users still
/// rotating.
async fn sync_passwords(
    app: &CounterApp,
    ctx: &Context,
    name: &str,
    pod_views: &[PodView],
    auth: &NodeAuth,
    inputs: &Inputs,
    web: Option<&Deployment>,
) -> Result<Vec<RedisUser>, Error> {
    let addressing = AppAddressing { app: name, mode: &ctx.redis_addressing };
    let running: Vec<_> = pod_views.iter().filter(|p| p.ready && !p.terminating).collect();
    let nodes: Vec<_> = running.iter().filter_map(|p| addressing.dial(p)).collect();
    let desired = acl_sync::Desired::from_passwords(&inputs.passwords);
    let report = acl_sync::sync(&ctx.redis_client(auth.clone()), &nodes, &desired).await;
    for (node, why) in &report.failed {
        tracing::warn!(%node, error = %why, "could not bring the Redis ACL passwords in line");
    }
    let rotating: Vec<RedisUser> =
        RedisUser::ALL.into_iter().filter(|u| inputs.passwords.get(*u).rotating()).collect();
    if rotating.is_empty() {
        return Ok(rotating);
    }
    // Every pod of the spec runs, and every one accepts the new passwords.
    let every_node = running.len() == usize::try_from(app.spec.redis_pods()).unwrap_or(usize::MAX)
        && report.failed.is_empty()
        && report.in_line.len() == nodes.len();
    let mut still = vec![];
    for user in rotating {
        if !(every_node && credentials::rotation_done(user, web)) {
            still.push(user);
            continue;
        }
        let mut settled = inputs.clone();
        *settled.passwords.get_mut(user) = UserPassword::settled(inputs.passwords.get(user).password.clone());
        let secret = children::secret::redis_user(app, &settled, user);
        let ns = app.namespace().unwrap_or_default();
        let live = cache::meta(&ctx.caches.secrets, &ns, &names::redis_user_secret(name, user.name()));
        let done = Done::default();
        ensure(app, ctx, name, secret, live, &done).await?;
        let note = format!(
            "rotated the password of Redis user {user}: every client uses the new one; Redis forgets the old one"
        );
        ctx.events.normal(app, reason::PASSWORD_ROTATED, "Rotate", note).await;
    }
    Ok(still)
}

/// The annotation's rotations started (their new passwords are stored): say so, and
/// remove the annotation so the same request can be made again.
async fn answer_rotate_request(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    request: &str,
    secrets: &StackSecrets,
) -> Result<(), Error> {
    for user in &secrets.started {
        let note = format!("rotating the password of Redis user {user} ({ROTATE_ANNOTATION}={request})");
        ctx.events.normal(app, reason::PASSWORD_ROTATION_STARTED, "Rotate", note).await;
    }
    if !secrets.unknown_targets.is_empty() {
        let note = format!(
            "{ROTATE_ANNOTATION}: {} names no Redis user; use redis-web, redis-replication, redis-operator or redis-all",
            secrets.unknown_targets.join(", ")
        );
        ctx.events.warning(app, reason::INVALID_SPEC, "Rotate", note).await;
    }
    credentials::clear_rotate_request(ctx, ns, name).await
}

/// `spec.redis.tls` names a Secret that is not there (yet): apply the Certificate (if
/// cert-manager issues it) and the user Secrets, report Reconciling with why, and look
/// again shortly (cert-manager's Secret also wakes the CounterApp: it carries our labels).
async fn wait_for_tls(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    waiting: String,
) -> Result<Action, Error> {
    if let Some(cert) = children::certificate::redis(app) {
        apply::ensure_dynamic(&ctx.client, ns, &cert, &certificate::api_resource()).await?;
    }
    let redis_status = app.status.as_ref().and_then(|st| st.redis.clone());
    report_without_applying(app, ctx, ns, name, false, redis_status, Unapplied::Waiting(waiting.clone()))
        .await?;
    tracing::info!(%waiting, "waiting for TLS material");
    Ok(Action::requeue(Duration::from_secs(10)))
}

/// The pod named `primary` exists, is ready and is not terminating.
fn primary_ready(pods: &[PodView], primary: Option<&str>) -> bool {
    primary.is_some_and(|p| pods.iter().any(|v| v.name == p && v.ready && !v.terminating))
}
