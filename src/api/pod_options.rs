//! Per-component pod options of `spec.web` and `spec.redis`: scheduling and the pods'
//! own metadata. Every doc comment becomes `kubectl explain` text.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration, TopologySpreadConstraint};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a component's pods run and what metadata they carry. Flattened into
/// `spec.web` and `spec.redis`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodOptions {
    /// Node labels the pods require (`pod.spec.nodeSelector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate (`pod.spec.tolerations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Node and pod (anti-)affinity of the pods (`pod.spec.affinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// PriorityClass of the pods. Empty means the cluster's default priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::bounds::MAX_DNS_SUBDOMAIN_LEN))]
    pub priority_class_name: Option<String>,

    /// Extra annotations on the pods (not on the Deployment or StatefulSet). The
    /// operator's own annotations (`counterstack.io/*`) win on conflict.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Extra labels on the pods. The operator's own labels (`app.kubernetes.io/name`,
    /// `instance`, `component`, `managed-by`, `counterstack.io/role`) win on conflict:
    /// the Services and the operator select pods by them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,

    /// Topology spread constraints of the pods. When set (even to an empty list) they
    /// replace the defaults: web pods spread over nodes; Redis pods over nodes and zones,
    /// both preferred (`ScheduleAnyway`), so losing one node or zone never takes the
    /// primary and all replicas where the cluster has room to avoid it. Constraints
    /// without a `labelSelector` get the component's pod selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}
