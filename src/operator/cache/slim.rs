//! What the caches keep of each kind ([`Slim`]): exactly what reconciles read, no more.
//!
//! - every child: the applied-hash annotation, the change marker (generation, and the
//!   resourceVersion for kinds without one) and the uid of its controller owner (the
//!   apply decision and the ownership checks of `operator::apply`);
//! - Deployments and StatefulSets: that, `spec.replicas` and the status fields the
//!   status computation reads (a Deployment's conditions only when one says
//!   ProgressDeadlineExceeded, without its message);
//! - Secrets: that, and the data keys the operator reads (a user's `password` and
//!   `previous`, a TLS Secret's `tls.crt`, `tls.key`, `ca.crt`);
//! - Redis pods: uid, the labels the replication manager and the trigger read, whether
//!   it is terminating, its IP and its Ready condition; Redis and web pods: the
//!   containers that cannot pull their image (`operator::image_pull`), nothing else of a
//!   web pod (its IP and readiness reach the status through its Deployment);
//! - Namespaces: whether they are terminating.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetSpec,
    StatefulSetStatus,
};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};

use super::store::Slim;
use crate::children::restore;
use crate::labels::{self, Component};
use crate::operator::apply::HASH_ANNOTATION;
use crate::operator::image_pull;
use crate::operator::pods::REVISION_LABEL;
use crate::operator::rollouts;

/// What reconciles read of a child's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildMeta {
    /// `counterstack.io/applied-hash`.
    hash: Option<Box<str>>,
    generation: Option<i64>,
    /// Only for kinds without a generation: the apply decision's change marker is the
    /// generation when there is one (`operator::apply::marker`), and a resourceVersion
    /// kept beside it would make every status update of a PodDisruptionBudget a change.
    resource_version: Option<Box<str>>,
    /// The controller owner reference, without what no check reads.
    controller: Option<Controller>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Controller {
    api_version: Box<str>,
    kind: Box<str>,
    name: Box<str>,
    uid: Box<str>,
}

impl ChildMeta {
    pub fn of(meta: &ObjectMeta) -> Self {
        let controller = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true));
        ChildMeta {
            hash: meta.annotations.as_ref().and_then(|a| a.get(HASH_ANNOTATION)).map(|h| h.as_str().into()),
            generation: meta.generation,
            resource_version: match meta.generation {
                Some(_) => None,
                None => meta.resource_version.as_deref().map(Into::into),
            },
            controller: controller.map(|o| Controller {
                api_version: o.api_version.as_str().into(),
                kind: o.kind.as_str().into(),
                name: o.name.as_str().into(),
                uid: o.uid.as_str().into(),
            }),
        }
    }

    /// The metadata of the child `name` with what was kept.
    pub fn meta(&self, namespace: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()).filter(|n| !n.is_empty()),
            annotations: self
                .hash
                .as_ref()
                .map(|h| BTreeMap::from([(HASH_ANNOTATION.to_string(), h.to_string())])),
            generation: self.generation,
            resource_version: self.resource_version.as_deref().map(str::to_string),
            owner_references: self.controller.as_ref().map(|c| {
                vec![OwnerReference {
                    api_version: c.api_version.to_string(),
                    kind: c.kind.to_string(),
                    name: c.name.to_string(),
                    uid: c.uid.to_string(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]
            }),
            ..ObjectMeta::default()
        }
    }
}

/// Metadata-only children (Services, ConfigMaps, PodDisruptionBudgets, autoscalers,
/// NetworkPolicies).
impl<K: Resource<DynamicType = ()> + Send + Sync + 'static> Slim<PartialObjectMeta<K>> for ChildMeta {
    fn slim(obj: &PartialObjectMeta<K>) -> Self {
        ChildMeta::of(&obj.metadata)
    }
    fn restore(&self, namespace: &str, name: &str) -> PartialObjectMeta<K> {
        self.meta(namespace, name).into_response_partial::<K>()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlimDeployment {
    meta: ChildMeta,
    replicas: Option<i32>,
    status: Option<DeploymentStatus>,
    /// The rollout stamps (`operator::rollouts`).
    stamps: Stamps,
}

/// A workload's rollout stamps (`operator::rollouts`): template and inputs hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stamps {
    template: Option<Box<str>>,
    inputs: Option<Box<str>>,
}

impl Stamps {
    fn of(meta: &ObjectMeta) -> Self {
        let get = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).map(|v| v.as_str().into());
        Stamps { template: get(rollouts::TEMPLATE_ANNOTATION), inputs: get(rollouts::INPUTS_ANNOTATION) }
    }

    fn restore(&self, meta: &mut ObjectMeta) {
        for (k, v) in
            [(rollouts::TEMPLATE_ANNOTATION, &self.template), (rollouts::INPUTS_ANNOTATION, &self.inputs)]
        {
            if let Some(v) = v {
                meta.annotations.get_or_insert_with(Default::default).insert(k.to_string(), v.to_string());
            }
        }
    }
}

impl Slim<Deployment> for SlimDeployment {
    fn slim(d: &Deployment) -> Self {
        let status = d.status.as_ref().map(|s| DeploymentStatus {
            observed_generation: s.observed_generation,
            replicas: s.replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            updated_replicas: s.updated_replicas,
            // Only ProgressDeadlineExceeded is read (Stalled); the rest is long text.
            conditions: s
                .conditions
                .iter()
                .flatten()
                .filter(|c| c.type_ == "Progressing" && c.status == "False")
                .map(|c| DeploymentCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    ..DeploymentCondition::default()
                })
                .map(|c| vec![c])
                .next(),
            ..DeploymentStatus::default()
        });
        SlimDeployment {
            meta: ChildMeta::of(&d.metadata),
            replicas: d.spec.as_ref().and_then(|s| s.replicas),
            status,
            stamps: Stamps::of(&d.metadata),
        }
    }
    fn restore(&self, namespace: &str, name: &str) -> Deployment {
        let mut metadata = self.meta.meta(namespace, name);
        self.stamps.restore(&mut metadata);
        Deployment {
            metadata,
            spec: Some(DeploymentSpec { replicas: self.replicas, ..DeploymentSpec::default() }),
            status: self.status.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlimStatefulSet {
    meta: ChildMeta,
    replicas: Option<i32>,
    status: Option<StatefulSetStatus>,
    /// The claim template's storage request and what a replacement needs
    /// (`operator::storage`): the uid (delete precondition) and whether it is being
    /// deleted.
    claim_size: Option<Box<str>>,
    uid: Option<Box<str>>,
    deleting: bool,
    stamps: Stamps,
}

impl Slim<StatefulSet> for SlimStatefulSet {
    fn slim(s: &StatefulSet) -> Self {
        let status = s.status.as_ref().map(|st| StatefulSetStatus {
            observed_generation: st.observed_generation,
            replicas: st.replicas,
            ready_replicas: st.ready_replicas,
            available_replicas: st.available_replicas,
            updated_replicas: st.updated_replicas,
            current_revision: st.current_revision.clone(),
            update_revision: st.update_revision.clone(),
            ..StatefulSetStatus::default()
        });
        SlimStatefulSet {
            meta: ChildMeta::of(&s.metadata),
            replicas: s.spec.as_ref().and_then(|s| s.replicas),
            status,
            claim_size: crate::operator::storage::claim_size(s).map(Into::into),
            uid: s.metadata.uid.as_deref().map(Into::into),
            deleting: s.metadata.deletion_timestamp.is_some(),
            stamps: Stamps::of(&s.metadata),
        }
    }
    fn restore(&self, namespace: &str, name: &str) -> StatefulSet {
        let mut metadata = self.meta.meta(namespace, name);
        self.stamps.restore(&mut metadata);
        metadata.uid = self.uid.as_deref().map(str::to_string);
        // The time itself is not kept: only whether there is one is read.
        metadata.deletion_timestamp = self.deleting.then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let claims =
            self.claim_size.as_deref().map(|size| vec![crate::operator::storage::claim_of_size(size)]);
        StatefulSet {
            metadata,
            spec: Some(StatefulSetSpec {
                replicas: self.replicas,
                volume_claim_templates: claims,
                ..StatefulSetSpec::default()
            }),
            status: self.status.clone(),
        }
    }
}

/// The data keys of a Secret the operator reads.
pub const SECRET_KEYS: [&str; 5] = ["password", "previous", "tls.crt", "tls.key", "ca.crt"];

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlimSecret {
    meta: ChildMeta,
    data: Vec<(&'static str, Box<[u8]>)>,
}

impl Slim<Secret> for SlimSecret {
    fn slim(s: &Secret) -> Self {
        let data = SECRET_KEYS
            .iter()
            .filter_map(|k| Some((*k, s.data.as_ref()?.get(*k)?.0.clone().into_boxed_slice())))
            .collect();
        SlimSecret { meta: ChildMeta::of(&s.metadata), data }
    }
    fn restore(&self, namespace: &str, name: &str) -> Secret {
        Secret {
            metadata: self.meta.meta(namespace, name),
            data: Some(self.data.iter().map(|(k, v)| (k.to_string(), ByteString(v.to_vec()))).collect()),
            ..Secret::default()
        }
    }
}

/// A Redis pod as the replication manager and the pod trigger read it; a web pod as the
/// image-pull check reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlimPod {
    uid: Option<Box<str>>,
    /// Only the labels in [`POD_LABELS`].
    labels: Vec<(&'static str, Box<str>)>,
    deletion_timestamp: Option<Time>,
    ip: Option<Box<str>>,
    ready: bool,
    /// Containers waiting for an image that cannot be pulled: (image, reason, message).
    pull_errors: Vec<(Box<str>, Box<str>, Box<str>)>,
    /// The `restore` init container's last end (`spec.bootstrap`): (succeeded, message).
    restore: Option<(bool, Box<str>)>,
}

/// The pod labels read: which stack and component (the trigger, the views), its role
/// and its revision (the replication manager).
const POD_LABELS: [&str; 5] =
    [labels::NAME, labels::INSTANCE, labels::COMPONENT, labels::ROLE, REVISION_LABEL];

impl SlimPod {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == key).map(|(_, v)| &**v)
    }
}

/// How the `restore` init container last ended: its current state when it terminated,
/// else the last one (a failed one waits in CrashLoopBackOff meanwhile).
fn restore_outcome(status: Option<&PodStatus>) -> Option<(bool, Box<str>)> {
    let c = status?.init_container_statuses.as_ref()?.iter().find(|c| c.name == restore::CONTAINER)?;
    let ended = c
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))?;
    let message = ended.message.as_deref().unwrap_or(ended.reason.as_deref().unwrap_or("")).trim();
    Some((ended.exit_code == 0, message.into()))
}

impl Slim<Pod> for SlimPod {
    fn slim(p: &Pod) -> Self {
        let l = p.metadata.labels.as_ref();
        let status = p.status.as_ref();
        let pull_errors = status
            .into_iter()
            .flat_map(|s| {
                s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten())
            })
            .filter_map(|c| {
                let w = c.state.as_ref()?.waiting.as_ref()?;
                let reason = w.reason.as_deref().filter(|r| image_pull::REASONS.contains(r))?;
                Some((c.image.as_str().into(), reason.into(), w.message.as_deref().unwrap_or("").into()))
            })
            .collect();
        let web =
            l.and_then(|l| l.get(labels::COMPONENT)).map(String::as_str) == Some(Component::Web.as_str());
        if web {
            // A web pod: which stack, and whether it cannot pull; a change of its IP or
            // readiness wakes nothing (the Deployment's status does).
            return SlimPod {
                labels: POD_LABELS.iter().filter_map(|k| Some((*k, l?.get(*k)?.as_str().into()))).collect(),
                deletion_timestamp: p.metadata.deletion_timestamp.clone(),
                pull_errors,
                ..SlimPod::default()
            };
        }
        SlimPod {
            pull_errors,
            restore: restore_outcome(status),
            uid: p.metadata.uid.as_deref().map(Into::into),
            labels: POD_LABELS.iter().filter_map(|k| Some((*k, l?.get(*k)?.as_str().into()))).collect(),
            deletion_timestamp: p.metadata.deletion_timestamp.clone(),
            ip: status.and_then(|s| s.pod_ip.as_deref()).filter(|ip| !ip.is_empty()).map(Into::into),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        }
    }
    fn restore(&self, namespace: &str, name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: self.uid.as_deref().map(str::to_string),
                labels: Some(self.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                deletion_timestamp: self.deletion_timestamp.clone(),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                pod_ip: self.ip.as_deref().map(str::to_string),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if self.ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                init_container_statuses: self.restore.as_ref().map(|(ok, message)| {
                    vec![ContainerStatus {
                        name: restore::CONTAINER.to_string(),
                        state: Some(ContainerState {
                            terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                                exit_code: if *ok { 0 } else { 1 },
                                message: Some(message.to_string()),
                                ..Default::default()
                            }),
                            ..ContainerState::default()
                        }),
                        ..ContainerStatus::default()
                    }]
                }),
                container_statuses: (!self.pull_errors.is_empty()).then(|| {
                    self.pull_errors
                        .iter()
                        .map(|(image, reason, message)| ContainerStatus {
                            image: image.to_string(),
                            state: Some(ContainerState {
                                waiting: Some(ContainerStateWaiting {
                                    reason: Some(reason.to_string()),
                                    message: Some(message.to_string()),
                                }),
                                ..ContainerState::default()
                            }),
                            ..ContainerStatus::default()
                        })
                        .collect()
                }),
                ..PodStatus::default()
            }),
        }
    }
}

/// A Namespace: whether it is terminating (has a deletionTimestamp).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlimNamespace {
    pub terminating: bool,
}

impl<K: Resource<DynamicType = ()> + Send + Sync + 'static> Slim<PartialObjectMeta<K>> for SlimNamespace {
    fn slim(n: &PartialObjectMeta<K>) -> Self {
        SlimNamespace { terminating: n.metadata.deletion_timestamp.is_some() }
    }
    fn restore(&self, _namespace: &str, name: &str) -> PartialObjectMeta<K> {
        ObjectMeta {
            name: Some(name.to_string()),
            // Only whether it is set is kept.
            deletion_timestamp: self.terminating.then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            ..ObjectMeta::default()
        }
        .into_response_partial::<K>()
    }
}
