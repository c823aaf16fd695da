//! The kube-runtime Controller: CounterApps, every child kind they own, and their Redis
//! pods (so a dead primary triggers a reconcile at once, not at the next resync).

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Controller, Error as ControllerError};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::reconcile::{error_policy, reconcile};
use super::{Context, Error, cache};
use crate::api::CounterApp;
use crate::labels::{self, Component};

/// `Api` over all namespaces, or one when the operator is namespace-scoped.
fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The CounterApp a Redis or web pod belongs to, from its `app.kubernetes.io/instance`
/// label.
pub fn pod_to_app(pod: &Pod) -> Option<ObjectRef<CounterApp>> {
    let l = pod.metadata.labels.as_ref()?;
    let component = l.get(labels::COMPONENT).map(String::as_str);
    if !matches!(component, Some(c) if c == Component::Redis.as_str() || c == Component::Web.as_str())
        || l.get(labels::NAME).map(String::as_str) != Some(labels::APP_NAME)
    {
        return None;
    }
    let app = l.get(labels::INSTANCE)?;
    Some(ObjectRef::new(app).within(&pod.namespace()?))
}

/// Fail with a clear message when the CRD is missing (a 404 on the CounterApp list).
pub async fn check_crd(client: &Client, namespace: Option<&str>) -> Result<(), Error> {
    let apps: Api<CounterApp> = api(client, namespace);
    match apps.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        // The API server answers an unknown group/version with a plain-text
        // "404 page not found", which carries the code but no NotFound reason.
        Err(kube::Error::Api(s)) if s.code == 404 || s.is_not_found() => Err(Error::CrdNotInstalled),
        Err(e) => Err(Error::kube("list CounterApps (startup check)", e)),
    }
}

/// The CounterApp that controls a child (its controller owner reference).
pub fn owner_app<K: Resource>(child: &K) -> Option<ObjectRef<CounterApp>> {
    let owner = child
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == CounterApp::kind(&()))?;
    Some(ObjectRef::new(&owner.name).within(&child.namespace()?))
}

/// What of a CounterApp asks for a reconcile when it changes: its spec (generation), its
/// annotations (rotation, switchover and restart requests) and its deletion. Not its
/// status: only this operator writes it, and each of its own status patches would
/// otherwise wake the CounterApp once more for nothing (six times per new stack on its
/// way to running, a thousand stacks at once). A re-list after a watch gap triggers
/// nothing either unless one of these changed meanwhile.
fn app_asks_for_work(app: &CounterApp) -> Option<u64> {
    let mut h = std::hash::DefaultHasher::new();
    app.metadata.generation.hash(&mut h);
    app.metadata.annotations.hash(&mut h);
    app.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// A watch turned into a cache and a stream of triggers: the cache keeps what
/// reconciles read of each object (`cache::Slim`), an object triggers a reconcile only
/// when that changed (a status update of a PodDisruptionBudget, a pod condition nobody
/// reads, a re-list that finds everything as it was: nothing to do), and a deleted
/// child's apply record is dropped (so a child deleted by someone is created again
/// rather than awaited as our own write on its way).
fn reflected<K, Sl, St>(
    events: St,
    mut writer: cache::Writer<K, Sl>,
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    Sl: cache::Slim<K>,
    St: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events.default_backoff().filter_map(move |ev| {
        let trigger = match ev {
            Err(e) => Some(Err(e)),
            Ok(ev) => {
                if let watcher::Event::Delete(o) = &ev {
                    ctx.applied.forget_object(
                        &o.namespace().unwrap_or_default(),
                        &K::kind(&()),
                        &o.name_any(),
                    );
                }
                let changed = writer.apply_watcher_event(&ev);
                match ev {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o)
                        if changed =>
                    {
                        Some(Ok(o))
                    }
                    _ => None,
                }
            }
        };
        futures::future::ready(trigger)
    })
}

/// Run the controller until `shutdown` resolves and in-flight reconciles finish.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let Some(w) = ctx.cache_writers.take() else {
        tracing::error!("the watch caches are filled by another controller already; not starting");
        return;
    };
    // Children carry managed-by; filtering keeps the watches (Secrets!) small.
    let owned = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    // Redis pods (the replication manager) and web pods (only whether they can pull
    // their image: operator::image_pull).
    let stack_pods = watcher::Config::default().labels(&format!(
        "{}={},{} in ({},{})",
        labels::NAME,
        labels::APP_NAME,
        labels::COMPONENT,
        Component::Redis.as_str(),
        Component::Web.as_str()
    ));
    let deployments =
        reflected(watcher(api::<Deployment>(&client, ns), owned.clone()), w.deployments, ctx.clone());
    let statefulsets =
        reflected(watcher(api::<StatefulSet>(&client, ns), owned.clone()), w.statefulsets, ctx.clone());
    let secrets = reflected(watcher(api::<Secret>(&client, ns), owned.clone()), w.secrets, ctx.clone());
    // Metadata is all a reconcile reads of these.
    let services = reflected(
        watcher(api::<PartialObjectMeta<Service>>(&client, ns), owned.clone()),
        w.services,
        ctx.clone(),
    );
    let configmaps = reflected(
        watcher(api::<PartialObjectMeta<ConfigMap>>(&client, ns), owned.clone()),
        w.configmaps,
        ctx.clone(),
    );
    let pdbs = reflected(
        watcher(api::<PartialObjectMeta<PodDisruptionBudget>>(&client, ns), owned.clone()),
        w.pdbs,
        ctx.clone(),
    );
    let hpas = reflected(
        watcher(api::<PartialObjectMeta<HorizontalPodAutoscaler>>(&client, ns), owned.clone()),
        w.hpas,
        ctx.clone(),
    );
    let network_policies = reflected(
        watcher(api::<PartialObjectMeta<NetworkPolicy>>(&client, ns), owned.clone()),
        w.network_policies,
        ctx.clone(),
    );
    let pods = reflected(watcher(api::<Pod>(&client, ns), stack_pods), w.pods, ctx.clone());
    // Namespaces (metadata only), to leave CounterApps in a terminating one alone. Only
    // when watching every namespace: a namespace-scoped install has a Role, which cannot
    // grant them; there the API server's refusal tells (operator::terminating). A
    // Namespace changing triggers nothing: the next wake-up of its CounterApps reads it.
    let namespaces = match ns {
        None => reflected(
            watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default()),
            w.namespaces,
            ctx.clone(),
        )
        .left_stream(),
        Some(_) => futures::stream::empty().right_stream(),
    };

    // The health checker's wake-ups: a Redis pod that answers differently (a primary that
    // stopped answering, a stray master) reconciles its CounterApp at once. It checks as
    // long as the controller runs.
    let monitor = ctx.replication.monitor().clone();
    let checks = tokio::spawn(async move { monitor.run().await });
    let wakeups = match ctx.replication.monitor().take_wakeups() {
        Some(mut rx) => futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .map(|key| ObjectRef::<CounterApp>::new(&key.name).within(&key.namespace))
            .left_stream(),
        None => futures::stream::empty().right_stream(),
    };
    // Every trigger counts as queued until its reconcile starts (the queue depth).
    let metrics = ctx.metrics.clone();
    let queued = move |app: Option<ObjectRef<CounterApp>>| {
        if let Some(a) = &app {
            metrics.queued(a);
        }
        app
    };
    let q = queued.clone();
    let wakeups = wakeups.inspect(move |a| {
        q(Some(a.clone()));
    });

    // The CounterApps themselves, through a cache of our own (stripped of managed fields).
    // The store sees every change; only those that ask for work trigger a reconcile.
    let (apps, apps_writer) = reflector::store();
    let app_stream = watcher(api::<CounterApp>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(cache::strip_meta)
        .reflect(apps_writer)
        .touched_objects()
        .predicate_filter(app_asks_for_work, Default::default())
        .inspect_ok({
            let q = queued.clone();
            move |a| {
                q(Some(ObjectRef::from_obj(a)));
            }
        });
    let forget = ctx.clone();

    Controller::for_stream(app_stream, apps)
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.max_concurrent_reconciles))
        .watches_stream(deployments, { let q = queued.clone(); move |o| q(owner_app(&o)) })
        .watches_stream(statefulsets, { let q = queued.clone(); move |o| q(owner_app(&o)) })
        .watches_stream(secrets, { let q = queued.clone(); move |o| q(owner_app(&o)) })
        .watches_stream(services, { let q = queued.clone(); move |o| q(owner_app(&o)) })
        .watches_stream(configmaps, { let q = queued.clone(); move |o| q(owner_app(&o)) })
        .watches_stream(pdbs, { let q = queued.clone(); move |o| q(owner_app(&o)) })
        .watches_stream(hpas, { let q = queued.clone(); move |o| q(owner_app(&o)) })
        .watches_stream(network_policies, { let q = queued.clone(); move |o| q(owner_app(&o)) })
        .watches_stream(pods, move |pod| queued(pod_to_app(&pod)))
        .watches_stream(namespaces, |_| None)
        .reconcile_on(wakeups)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(move |res| {
            // A CounterApp deleted without a reconcile seeing it go (no finalizer).
            if let Err(ControllerError::ObjectNotFound(obj)) = &res {
                let mut app = ObjectRef::<CounterApp>::new(&obj.name);
                app.namespace = obj.namespace.clone();
                forget.forget(&app);
            }
            async move {
                match res {
                    Ok((obj, action)) => tracing::debug!(object = %obj, ?action, "reconciled"),
                    // Already logged (with its backoff) by the error policy.
                    Err(ControllerError::ReconcilerFailed(_, obj)) => {
                        tracing::debug!(object = %obj, "reconcile failed")
                    }
                    Err(ControllerError::ObjectNotFound(obj)) => tracing::debug!(object = %obj, "object gone"),
                    // A failing watch (often RBAC: list/watch missing) must be visible.
                    Err(ControllerError::QueueError(e)) => {
                        tracing::error!(error = %e, "watch failed; check the operator's RBAC (list and watch on every watched kind)")
                    }
                    Err(e) => tracing::error!(error = %e, "controller error"),
                }
            }
        })
        .await;
    checks.abort();
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(labels: BTreeMap<String, String>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("demo-redis-0".into()),
                namespace: Some("ns".into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn redis_and_web_pods_map_to_their_counterapp() {
        let p = pod(labels::selector("demo", Component::Redis));
        assert_eq!(pod_to_app(&p), Some(ObjectRef::new("demo").within("ns")));
        // Web pods too: one that cannot pull its image must show in the status.
        let p = pod(labels::selector("demo", Component::Web));
        assert_eq!(pod_to_app(&p), Some(ObjectRef::new("demo").within("ns")));
    }

    #[test]
    fn only_spec_annotations_and_deletion_of_a_counterapp_ask_for_work() {
        let mut app = CounterApp::new("demo", Default::default());
        app.metadata.generation = Some(1);
        let before = app_asks_for_work(&app);
        app.status =
            Some(crate::api::CounterAppStatus { observed_generation: Some(1), ..Default::default() });
        app.metadata.resource_version = Some("2".into());
        assert_eq!(app_asks_for_work(&app), before, "our own status patch");
        let mut spec = app.clone();
        spec.metadata.generation = Some(2);
        assert_ne!(app_asks_for_work(&spec), before);
        let mut annotated = app.clone();
        annotated.metadata.annotations =
            Some([(crate::api::ROTATE_ANNOTATION.to_string(), "redis-web".into())].into());
        assert_ne!(app_asks_for_work(&annotated), before);
        let mut deleted = app;
        deleted.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_ne!(app_asks_for_work(&deleted), before);
    }

    #[test]
    fn other_pods_map_to_nothing() {
        let mut foreign = labels::selector("demo", Component::Web);
        foreign.insert(labels::NAME.to_string(), "something-else".to_string());
        assert_eq!(pod_to_app(&pod(foreign)), None);
        assert_eq!(pod_to_app(&pod(BTreeMap::new())), None);
    }
}
