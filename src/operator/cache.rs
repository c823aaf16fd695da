//! The watch caches a reconcile reads: every child kind the operator owns and the Redis
//! pods, filled by the controller's own watches (one per kind, label-selected, stripped
//! of what no reconcile reads). A steady reconcile sends the API server nothing.
//!
//! Kinds whose body no reconcile needs (Services, ConfigMaps, PodDisruptionBudgets,
//! HorizontalPodAutoscalers, NetworkPolicies) are
//! watched metadata-only: the apply decision needs only the hash annotation, the change
//! marker and the owner references. Deployments and StatefulSets keep their status (and
//! the replica count), Secrets their data (the Redis password), pods their status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::{Resource, ResourceExt};

use crate::locked::lock;

/// Read side of every cache.
#[derive(Clone)]
pub struct Caches {
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub configmaps: Store<PartialObjectMeta<ConfigMap>>,
    pub secrets: Store<Secret>,
    pub pdbs: Store<PartialObjectMeta<PodDisruptionBudget>>,
    pub hpas: Store<PartialObjectMeta<HorizontalPodAutoscaler>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub pods: Store<Pod>,
    /// Namespaces, metadata only: a CounterApp whose namespace is terminating is left
    /// alone. Filled only when the operator watches every namespace (a Role cannot grant
    /// Namespaces); empty otherwise, and never waited for.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// Write side: the controller's watches fill these (tests apply events by hand).
pub struct Writers {
    pub deployments: Writer<Deployment>,
    pub statefulsets: Writer<StatefulSet>,
    pub services: Writer<PartialObjectMeta<Service>>,
    pub configmaps: Writer<PartialObjectMeta<ConfigMap>>,
    pub secrets: Writer<Secret>,
    pub pdbs: Writer<PartialObjectMeta<PodDisruptionBudget>>,
    pub hpas: Writer<PartialObjectMeta<HorizontalPodAutoscaler>>,
    pub network_policies: Writer<PartialObjectMeta<NetworkPolicy>>,
    pub pods: Writer<Pod>,
    pub namespaces: Writer<PartialObjectMeta<Namespace>>,
}

/// New, empty caches and their writers.
pub fn new() -> (Caches, Writers) {
    let (deployments, dw) = reflector::store();
    let (statefulsets, sw) = reflector::store();
    let (services, svw) = reflector::store();
    let (configmaps, cw) = reflector::store();
    let (secrets, sew) = reflector::store();
    let (pdbs, pw) = reflector::store();
    let (hpas, hw) = reflector::store();
    let (network_policies, nw) = reflector::store();
    let (pods, pow) = reflector::store();
    let (namespaces, nsw) = reflector::store();
    (
        Caches {
            deployments,
            statefulsets,
            services,
            configmaps,
            secrets,
            pdbs,
            hpas,
            network_policies,
            pods,
            namespaces,
        },
        Writers {
            deployments: dw,
            statefulsets: sw,
            services: svw,
            configmaps: cw,
            secrets: sew,
            pdbs: pw,
            hpas: hw,
            network_policies: nw,
            pods: pow,
            namespaces: nsw,
        },
    )
}

/// The writers, handed once to whoever fills the caches.
#[derive(Default)]
pub struct WriterSlot(Mutex<Option<Writers>>);

impl WriterSlot {
    pub fn new(w: Writers) -> Self {
        Self(Mutex::new(Some(w)))
    }

    /// Take the writers (the controller does, once).
    pub fn take(&self) -> Option<Writers> {
        lock(&self.0).take()
    }

    /// Run `f` with the writers, if nobody took them (tests fill caches this way).
    pub fn with<T>(&self, f: impl FnOnce(&mut Writers) -> T) -> Option<T> {
        lock(&self.0).as_mut().map(f)
    }
}

impl Caches {
    /// Wait (at most `limit`) until every cache of children and pods holds its initial
    /// list; false on timeout. The Namespace cache is not waited for (it may never fill,
    /// see [`Caches::namespaces`]).
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let all = async {
            let _ = futures::join!(
                self.deployments.wait_until_ready(),
                self.statefulsets.wait_until_ready(),
                self.services.wait_until_ready(),
                self.configmaps.wait_until_ready(),
                self.secrets.wait_until_ready(),
                self.pdbs.wait_until_ready(),
                self.hpas.wait_until_ready(),
                self.network_policies.wait_until_ready(),
                self.pods.wait_until_ready(),
            );
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }

    /// Objects held per kind (the `counterstack_cache_objects` gauge).
    pub fn sizes(&self) -> [(&'static str, usize); 10] {
        [
            ("Deployment", self.deployments.len()),
            ("StatefulSet", self.statefulsets.len()),
            ("Service", self.services.len()),
            ("ConfigMap", self.configmaps.len()),
            ("Secret", self.secrets.len()),
            ("PodDisruptionBudget", self.pdbs.len()),
            ("HorizontalPodAutoscaler", self.hpas.len()),
            ("NetworkPolicy", self.network_policies.len()),
            ("Pod", self.pods.len()),
            ("Namespace", self.namespaces.len()),
        ]
    }

    /// Namespace `ns` is being deleted, as far as the Namespace cache knows.
    pub fn namespace_terminating(&self, ns: &str) -> bool {
        self.namespaces.get(&ObjectRef::new(ns)).is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    }
}

/// The cached object `name` in `namespace`.
pub fn get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// The metadata of a cached object (any kind, full or metadata-only).
pub fn meta<K>(
    store: &Store<K>,
    namespace: &str,
    name: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    get(store, namespace, name).map(|o| o.meta().clone())
}

/// Drop what no reconcile reads, before an object enters a cache: managed fields always
/// (the largest part of most objects), the last-applied annotation; kind-specific parts
/// in the functions below.
pub fn strip_meta<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
    o.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// A child keeps what the apply decision and the owner mapping read: its hash
/// annotation, generation, resourceVersion, uid and owner references; no labels or
/// other annotations (a thousand stacks hold ten thousand children).
pub fn strip_child<K: Resource>(o: &mut K) {
    strip_meta(o);
    o.labels_mut().clear();
    o.annotations_mut().retain(|k, _| k == super::apply::HASH_ANNOTATION);
}

/// A Deployment keeps what [`strip_child`] keeps, `spec.replicas` and status.
pub fn strip_deployment(d: &mut Deployment) {
    strip_child(d);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// A StatefulSet keeps what [`strip_child`] keeps, `spec.replicas` and status
/// (`updateRevision`).
pub fn strip_statefulset(s: &mut StatefulSet) {
    strip_child(s);
    if let Some(spec) = s.spec.as_mut() {
        spec.template = Default::default();
        spec.volume_claim_templates = None;
    }
}

/// A Namespace keeps its name, uid, resourceVersion and deletionTimestamp: whether it is
/// terminating is all a reconcile asks of it.
pub fn strip_namespace<K: Resource>(n: &mut K) {
    strip_meta(n);
    n.labels_mut().clear();
    n.annotations_mut().clear();
}

/// A pod keeps metadata (labels, deletionTimestamp, uid), its IP and its conditions.
pub fn strip_pod(p: &mut Pod) {
    strip_meta(p);
    p.annotations_mut().clear();
    p.spec = None;
    if let Some(st) = p.status.as_mut() {
        st.container_statuses = None;
        st.init_container_statuses = None;
        st.ephemeral_container_statuses = None;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

    use super::*;

    #[test]
    fn stripping_keeps_what_reconciles_read() {
        let mut p = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                labels: Some([("a".to_string(), "b".to_string())].into()),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus { pod_ip: Some("10.0.0.1".into()), ..Default::default() }),
        };
        strip_pod(&mut p);
        assert!(p.spec.is_none() && p.metadata.managed_fields.as_deref().unwrap_or_default().is_empty());
        assert_eq!(p.status.unwrap().pod_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(p.metadata.labels.unwrap()["a"], "b");

        let mut s = StatefulSet {
            spec: Some(StatefulSetSpec { replicas: Some(3), ..Default::default() }),
            ..Default::default()
        };
        strip_statefulset(&mut s);
        assert_eq!(s.spec.unwrap().replicas, Some(3));
    }
}
