//! The watch caches a reconcile reads: every child kind the operator owns, the Redis pods
//! and the Namespaces, filled by the controller's own watches (one per kind,
//! label-selected). A steady reconcile sends the API server nothing.
//!
//! Each cache keeps only what reconciles read ([`slim`]); kinds whose body no reconcile
//! needs (Services, ConfigMaps, PodDisruptionBudgets, HorizontalPodAutoscalers,
//! NetworkPolicies, Namespaces) are watched metadata-only, so the API server does not
//! even send it. docs/operator.md says what each cache costs (measured by
//! `cargo run --release --example cache_cost`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::PartialObjectMeta;

use crate::locked::lock;

pub mod slim;
pub mod store;

pub use slim::{ChildMeta, SlimDeployment, SlimNamespace, SlimPod, SlimSecret, SlimStatefulSet};
pub use store::{Cache, Slim, Writer};

/// A metadata-only child kind's cache.
pub type MetaCache<K> = Cache<PartialObjectMeta<K>, ChildMeta>;
/// Its writer.
pub type MetaWriter<K> = Writer<PartialObjectMeta<K>, ChildMeta>;

/// Read side of every cache.
#[derive(Clone)]
pub struct Caches {
    pub deployments: Cache<Deployment, SlimDeployment>,
    pub statefulsets: Cache<StatefulSet, SlimStatefulSet>,
    pub services: MetaCache<Service>,
    pub configmaps: MetaCache<ConfigMap>,
    pub secrets: Cache<Secret, SlimSecret>,
    pub pdbs: MetaCache<PodDisruptionBudget>,
    pub hpas: MetaCache<HorizontalPodAutoscaler>,
    pub network_policies: MetaCache<NetworkPolicy>,
    pub pods: Cache<Pod, SlimPod>,
    /// Namespaces, metadata only: a CounterApp whose namespace is terminating is left
    /// alone. Filled only when the operator watches every namespace (a Role cannot grant
    /// Namespaces); empty otherwise, and never waited for.
    pub namespaces: Cache<PartialObjectMeta<Namespace>, SlimNamespace>,
}

/// Write side: the controller's watches fill these (tests apply events by hand).
pub struct Writers {
    pub deployments: Writer<Deployment, SlimDeployment>,
    pub statefulsets: Writer<StatefulSet, SlimStatefulSet>,
    pub services: MetaWriter<Service>,
    pub configmaps: MetaWriter<ConfigMap>,
    pub secrets: Writer<Secret, SlimSecret>,
    pub pdbs: MetaWriter<PodDisruptionBudget>,
    pub hpas: MetaWriter<HorizontalPodAutoscaler>,
    pub network_policies: MetaWriter<NetworkPolicy>,
    pub pods: Writer<Pod, SlimPod>,
    pub namespaces: Writer<PartialObjectMeta<Namespace>, SlimNamespace>,
}

/// New, empty caches and their writers.
pub fn new() -> (Caches, Writers) {
    let (deployments, dw) = store::new();
    let (statefulsets, sw) = store::new();
    let (services, svw) = store::new();
    let (configmaps, cw) = store::new();
    let (secrets, sew) = store::new();
    let (pdbs, pw) = store::new();
    let (hpas, hw) = store::new();
    let (network_policies, nw) = store::new();
    let (pods, pow) = store::new();
    let (namespaces, nsw) = store::new();
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
            futures::join!(
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
        self.namespaces.get("", ns).is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    }
}

/// The cached object `name` in `namespace` (only what the cache keeps of it). Behind an
/// `Arc`, as kube's stores hand them out: a typed object is kilobytes, and reconcile
/// futures hold several across awaits.
pub fn get<K, S: Slim<K>>(cache: &Cache<K, S>, namespace: &str, name: &str) -> Option<Arc<K>> {
    cache.get(namespace, name).map(Arc::new)
}

/// The metadata of a cached object, as far as the cache keeps it.
pub fn meta<K: Resource, S: Slim<K>>(cache: &Cache<K, S>, namespace: &str, name: &str) -> Option<ObjectMeta> {
    cache.get(namespace, name).map(|o| o.meta().clone())
}

/// Drop what no reconcile reads of a CounterApp before it enters the controller's own
/// store (kube's, which the Controller needs): managed fields (the largest part) and the
/// last-applied annotation.
pub fn strip_meta<K: Resource>(o: &mut K) {
    use kube::ResourceExt;
    o.managed_fields_mut().clear();
    o.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};
    use kube::runtime::watcher::Event;

    use super::*;

    #[test]
    fn caches_keep_what_reconciles_read() {
        let (caches, mut w) = new();
        let owner = OwnerReference {
            api_version: "counterstack.io/v1alpha1".into(),
            kind: "CounterApp".into(),
            name: "demo".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let meta = |name: &str| ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some("child-uid".into()),
            generation: Some(3),
            resource_version: Some("42".into()),
            labels: Some([("a".to_string(), "b".to_string())].into()),
            annotations: Some(
                [
                    (crate::operator::apply::HASH_ANNOTATION.to_string(), "h1".to_string()),
                    ("other".to_string(), "x".to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner.clone()]),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            ..Default::default()
        };
        let p = Pod {
            metadata: ObjectMeta {
                labels: Some(
                    [
                        (crate::labels::INSTANCE.to_string(), "demo".to_string()),
                        ("statefulset.kubernetes.io/pod-name".to_string(), "demo-redis-0".to_string()),
                    ]
                    .into(),
                ),
                ..meta("demo-redis-0")
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus { pod_ip: Some("10.0.0.1".into()), ..Default::default() }),
        };
        w.pods.apply_watcher_event(&Event::Apply(p));
        let p = caches.pods.get("ns", "demo-redis-0").expect("cached");
        assert!(p.spec.is_none());
        assert_eq!(p.status.unwrap().pod_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(p.metadata.uid.as_deref(), Some("child-uid"), "a planned deletion names the pod's uid");
        let labels = p.metadata.labels.unwrap();
        assert_eq!(labels[crate::labels::INSTANCE], "demo");
        assert!(!labels.contains_key("statefulset.kubernetes.io/pod-name"));

        let s = StatefulSet {
            metadata: meta("demo-redis"),
            spec: Some(StatefulSetSpec { replicas: Some(3), ..Default::default() }),
            ..Default::default()
        };
        w.statefulsets.apply_watcher_event(&Event::Apply(s));
        let s = caches.statefulsets.get("ns", "demo-redis").expect("cached");
        assert_eq!(s.spec.unwrap().replicas, Some(3));
        // The apply decision's inputs: hash, generation, resourceVersion, controller.
        let m = s.metadata;
        assert_eq!(
            m.annotations.unwrap(),
            [(crate::operator::apply::HASH_ANNOTATION.to_string(), "h1".to_string())].into()
        );
        // The change marker of a kind with a generation is the generation alone.
        assert_eq!((m.generation, m.resource_version.as_deref()), (Some(3), None));
        let kept = &m.owner_references.unwrap()[0];
        assert_eq!((kept.uid.as_str(), kept.kind.as_str(), kept.name.as_str()), ("u1", "CounterApp", "demo"));
        assert_eq!(kept.controller, Some(true));
        assert!(m.labels.is_none() && m.managed_fields.is_none());
        // What a volume expansion reads: the uid (delete precondition), the claim size,
        // whether it is being deleted.
        assert_eq!(m.uid.as_deref(), Some("child-uid"));
        assert!(m.deletion_timestamp.is_none());
        assert_eq!(
            crate::operator::storage::claim_size(&caches.statefulsets.get("ns", "demo-redis").unwrap()),
            None
        );
    }
}
