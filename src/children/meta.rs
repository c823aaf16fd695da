//! Metadata and pod-level helpers shared by every builder: object metadata (namespace,
//! labels, controller owner reference), the restricted security contexts, the
//! config hash.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, LocalObjectReference, PodSecurityContext, PodSpec, SeccompProfile,
    SecretKeySelector, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::api::{CounterApp, PodOptions, RESTARTED_AT_ANNOTATION};
use crate::labels::{self, Component};

/// Pod-template annotation whose value changes whenever something the pods read at
/// start-up changes, so that such a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "counterstack.io/config-hash";

/// Name of the CR. Callers validated it first (`validate` rejects a missing name), so
/// the empty fallback is never used for a real object.
pub fn app_name(cr: &CounterApp) -> &str {
    cr.metadata.name.as_deref().unwrap_or_default()
}

/// Metadata of a child: the CR's namespace, the labels of design.md, and a controller
/// owner reference to the CR.
///
/// A CR without `metadata.uid` (rendered offline from a file) gets children WITHOUT an
/// owner reference: an owner reference with an empty uid is rejected by the API server,
/// while the children as rendered can still be applied by hand. The operator always
/// builds from a CR read from the API server, which has a uid.
///
/// The CR's own labels and annotations are never copied (GitOps tracking labels on
/// children make Argo CD prune them).
pub fn object_meta(cr: &CounterApp, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cr.metadata.namespace.clone(),
        labels: Some(labels::labels(app_name(cr), component)),
        owner_references: owner_reference(cr).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// Controller owner reference to the CR, with `blockOwnerDeletion` so that foreground
/// deletion of the CR waits for its children. `None` when the CR has no uid.
pub fn owner_reference(cr: &CounterApp) -> Option<OwnerReference> {
    Some(OwnerReference { block_owner_deletion: Some(true), ..cr.controller_owner_ref(&())? })
}

/// Image pull secrets of the spec, `None` when there are none (keeps output minimal).
pub fn image_pull_secrets(cr: &CounterApp) -> Option<Vec<LocalObjectReference>> {
    let secrets = &cr.spec.image_pull_secrets;
    (!secrets.is_empty()).then(|| secrets.clone())
}

/// Pod security context meeting the Pod Security Standard "restricted".
pub fn pod_security_context(uid: i64, fs_group: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group,
        fs_group_change_policy: fs_group.map(|_| "OnRootMismatch".to_string()),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// Container security context meeting the Pod Security Standard "restricted", with a
/// read-only root filesystem (writable paths are volumes).
pub fn container_security_context(uid: i64) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), add: None }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".to_string(), localhost_profile: None }
}

/// Writable `/tmp` for containers with a read-only root filesystem.
pub fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume { name: "tmp".to_string(), empty_dir: Some(Default::default()), ..Volume::default() },
        VolumeMount { name: "tmp".to_string(), mount_path: "/tmp".to_string(), ..VolumeMount::default() },
    )
}

/// sha256 (hex) over named parts, each length-prefixed so that moving bytes from one
/// part to the next changes the hash.
pub fn config_hash<'a>(parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in parts {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

/// Pod-template annotations carrying the config hash.
pub fn hash_annotations(hash: String) -> BTreeMap<String, String> {
    BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), hash)])
}

/// Pod-template metadata of a component: the user's `podLabels`/`podAnnotations` first,
/// then ours on top (ours win: Services and the operator select pods by our labels),
/// the config hash and the CounterApp's `counterstack.io/restartedAt` (a new value
/// changes the template, which restarts the pods).
pub fn pod_template_meta(
    cr: &CounterApp,
    component: Component,
    opts: &PodOptions,
    hash: String,
) -> ObjectMeta {
    let mut labels = opts.pod_labels.clone();
    labels.extend(labels::labels(app_name(cr), component));
    let mut annotations = opts.pod_annotations.clone();
    annotations.extend(hash_annotations(hash));
    if let Some(at) = cr.metadata.annotations.as_ref().and_then(|a| a.get(RESTARTED_AT_ANNOTATION)) {
        annotations.insert(RESTARTED_AT_ANNOTATION.to_string(), at.clone());
    } else {
        annotations.remove(RESTARTED_AT_ANNOTATION);
    }
    ObjectMeta { labels: Some(labels), annotations: Some(annotations), ..ObjectMeta::default() }
}

/// Put a component's scheduling options into its pod spec. `default_spread` applies
/// unless the user set `topologySpreadConstraints`; the user's constraints without a
/// label selector get the component's pod selector (else they would match no pod).
pub fn apply_pod_options(
    pod: &mut PodSpec,
    opts: &PodOptions,
    selector: &BTreeMap<String, String>,
    default_spread: Vec<TopologySpreadConstraint>,
) {
    pod.node_selector = (!opts.node_selector.is_empty()).then(|| opts.node_selector.clone());
    pod.tolerations = (!opts.tolerations.is_empty()).then(|| opts.tolerations.clone());
    pod.affinity = opts.affinity.clone();
    pod.priority_class_name = opts.priority_class_name.clone().filter(|p| !p.is_empty());
    let spread = match &opts.topology_spread_constraints {
        None => default_spread,
        Some(user) => user
            .iter()
            .cloned()
            .map(|mut c| {
                if c.label_selector.is_none() {
                    c.label_selector =
                        Some(LabelSelector { match_labels: Some(selector.clone()), match_expressions: None });
                }
                c
            })
            .collect(),
    };
    pod.topology_spread_constraints = (!spread.is_empty()).then_some(spread);
}

/// Spread Redis pods over nodes and over zones, both preferred: one node or zone lost
/// then never takes the primary and every replica, where the cluster has room.
pub fn spread_over_nodes_and_zones(selector: &BTreeMap<String, String>) -> Vec<TopologySpreadConstraint> {
    let mut spread = spread_over_nodes(selector, None);
    spread.push(TopologySpreadConstraint {
        topology_key: "topology.kubernetes.io/zone".to_string(),
        ..spread[0].clone()
    });
    spread
}

/// Spread a component's pods over nodes (best effort: ScheduleAnyway, so a one-node
/// cluster such as k3s still schedules them). `match_label_keys` narrows the spread to
/// pods that share those label values (e.g. `pod-template-hash`: one ReplicaSet).
pub fn spread_over_nodes(
    selector: &BTreeMap<String, String>,
    match_label_keys: Option<Vec<String>>,
) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".to_string(),
        when_unsatisfiable: "ScheduleAnyway".to_string(),
        label_selector: Some(LabelSelector { match_labels: Some(selector.clone()), match_expressions: None }),
        match_label_keys,
        ..TopologySpreadConstraint::default()
    }]
}

/// An environment variable with a value.
pub fn env_var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.into()), value_from: None }
}

/// An environment variable from a key of a Secret (`secretKeyRef`).
pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}
