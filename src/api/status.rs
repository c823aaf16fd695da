//! `CounterApp.status`: kstatus-compatible conditions plus web and Redis summaries.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Now, at the second precision the API server keeps a `Time` at (`Time` serializes
/// whole seconds): a time the operator writes reads back equal to what it holds in
/// memory, so a status compares equal to itself after a round trip through the API.
pub fn now() -> Time {
    let t = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

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
    /// Present with `spec.backup`: whether the last backup attempt succeeded (the name
    /// CloudNativePG users know).
    pub const LAST_BACKUP_SUCCEEDED: &str = "LastBackupSucceeded";
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

    /// Backups (`spec.backup`): the last successful and failed ones, the schedule, and
    /// what the store holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Box<super::BackupStatus>>,

    /// What the first primary was started from (`spec.bootstrap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Box<super::BootstrapStatus>>,
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
    /// Set while the primary is unavailable: since when (its last sign of life, rounded
    /// up to the second). The failover countdown (`spec.redis.failover.afterSeconds`)
    /// runs from here, so an operator that restarts or a standby that takes over
    /// continues it instead of starting it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_unavailable_since: Option<Time>,
    /// True once the primary has held data; from then on no node may full-sync from
    /// an empty node and an empty node is never promoted.
    #[serde(default)]
    pub holds_data: bool,
    /// Per-pod replication state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<RedisNodeStatus>,
    /// The last switchover requested through the `counterstack.io/switchover` annotation
    /// (`kubectl counterstack switchover`) and what became of it. A request is done when
    /// `request` equals the annotation's token and `phase` is not `InProgress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverStatus>,
    /// Redis users whose password rotation is running (`web`, `replication`,
    /// `operator`): Redis accepts the old and the new password until every client uses
    /// the new one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotating_passwords: Vec<String>,
    /// Present while the Redis volumes are being expanded to a larger
    /// `spec.redis.storage.size` (or cannot be): how many have reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,
    /// True while the stack is hibernated (`spec.hibernate`), and after it wakes until
    /// its Redis pods have chosen a primary again (the last one, when it holds the most
    /// data).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hibernated: bool,
}

/// Progress of a volume expansion (`spec.redis.storage.size` raised).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// The size every Redis volume is being expanded to.
    #[serde(default)]
    pub size: String,
    /// Redis PersistentVolumeClaims of the stack.
    #[serde(default)]
    pub volumes: i32,
    /// Claims whose capacity has reached `size`.
    #[serde(default)]
    pub resized: i32,
    /// What the expansion waits for, or why it cannot happen.
    #[serde(default)]
    pub message: String,
}

/// Result of a requested switchover (a planned hand-over of the Redis primary).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverStatus {
    /// The request token: the value of the `counterstack.io/switchover` annotation this
    /// result answers. The operator acts on each token once.
    pub request: String,
    /// The Redis pod that became (or was to become) the primary; empty when the request
    /// was refused before a target was chosen.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// `InProgress` (accepted, waiting for replication to settle), `Succeeded`, or
    /// `Failed` (refused or not completed; `message` says why).
    pub phase: SwitchoverPhase,
    /// What happened, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// How long writes were paused on the old primary, in seconds: from `FAILOVER TO`
    /// until the target was a master and the old primary its replica (the same figure as
    /// the SwitchedOver Event and `counterstack_redis_failover_duration_seconds{kind="planned"}`).
    /// Set when `phase` is `Succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_seconds: Option<f64>,
    /// When the request succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_time: Option<Time>,
}

/// Phase of a requested switchover.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SwitchoverPhase {
    /// Accepted; the hand-over waits until replication is settled.
    #[default]
    InProgress,
    /// The primary was handed over to `to`.
    Succeeded,
    /// Refused or not completed; `message` says why. A new token is needed to try again.
    Failed,
}

impl SwitchoverPhase {
    /// The name as it appears in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchoverPhase::InProgress => "InProgress",
            SwitchoverPhase::Succeeded => "Succeeded",
            SwitchoverPhase::Failed => "Failed",
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_reads_back_equal_after_a_round_trip() {
        let t = now();
        let back: Time = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
