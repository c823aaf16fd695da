//! `CounterApp.status`: kstatus-compatible conditions plus web and Redis summaries.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types the operator writes.
pub mod condition {
    /// Always present: True when the web service answers and Redis has a writable primary.
    pub const READY: &str = "Ready";
    /// Present (True) only while the operator is still converging the stack.
    pub const RECONCILING: &str = "Reconciling";
    /// Present (True) only while the operator cannot make progress without user action.
    pub const STALLED: &str = "Stalled";
    /// True when at least the minimum of web pods and a Redis primary are available.
    pub const AVAILABLE: &str = "Available";
    /// True when the stack runs with less redundancy than the spec asks for.
    pub const DEGRADED: &str = "Degraded";
}

/// Observed state of a CounterApp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterAppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions: Ready (always), Reconciling and Stalled (only while true),
    /// Available, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The web Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebStatus>,

    /// Redis replication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStatus>,
}

/// Observed state of the web Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebStatus {
    /// Web pods the Deployment currently has.
    #[serde(default)]
    pub replicas: i32,
    /// Web pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the web pods (used by the scale subresource and HPA).
    #[serde(default)]
    pub selector: String,
    /// Ready/desired web pods, e.g. `3/4` (the Web printer column).
    #[serde(default)]
    pub ready: String,
}

/// Observed state of Redis replication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisStatus {
    /// Name of the pod that is the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Increases by one on every change of primary; never goes back.
    #[serde(default)]
    pub epoch: i64,
    /// Redis pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// When the last failover (automatic or planned) completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover_time: Option<Time>,
    /// True once the primary has held data; from then on no node may full-sync from
    /// an empty node and an empty node is never promoted.
    #[serde(default)]
    pub holds_data: bool,
    /// Per-pod replication state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<RedisNodeStatus>,
}

/// Replication state of one Redis pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisNodeStatus {
    /// Pod name.
    pub pod: String,
    /// `primary`, `replica`, or `unknown` when the pod could not be reached.
    pub role: String,
    /// Replication offset the pod reported.
    #[serde(default)]
    pub offset: i64,
    /// Bytes the pod is behind the primary (0 for the primary).
    #[serde(default)]
    pub lag_bytes: i64,
    /// For replicas: whether the link to the primary is up.
    #[serde(default)]
    pub link_up: bool,
}
