//! PURE status computation: from what the reconcile observed to `CounterAppStatus`.
//!
//! kstatus rules (so Flux and Argo CD can wait on a CounterApp): `Ready` is always
//! present; `Reconciling` and `Stalled` are present only while true; `Available` and
//! `Degraded` are always present. A condition's `lastTransitionTime` moves only when
//! its status flips, so an unchanged stack computes an identical status and the
//! operator sends no status patch at all.
//!
//! Paused (`spec.paused`): nothing is applied and no failover runs. `Ready` keeps the
//! status it had (False if it had none) with reason `Paused`; `Reconciling` and
//! `Stalled` are absent; `Available`/`Degraded` and the web summary still follow what is
//! observed; `status.redis` is left as it was, unless the reconcile passes one (a
//! switchover requested while paused is answered there).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::image_pull::PullFailure;
use crate::api::condition::{AVAILABLE, DEGRADED, LAST_BACKUP_SUCCEEDED, READY, RECONCILING, STALLED};
pub use crate::api::now;
use crate::api::{CounterAppStatus, RedisStatus, WebStatus};
use crate::labels::{self, Component};
use crate::replication::Health;

/// Condition reasons (CamelCase, stable).
pub mod reason {
    pub const READY: &str = "Ready";
    pub const PAUSED: &str = "Paused";
    pub const PROGRESSING: &str = "Progressing";
    pub const AVAILABLE: &str = "WebAndPrimaryAvailable";
    pub const WEB_UNAVAILABLE: &str = "WebUnavailable";
    pub const NO_PRIMARY: &str = "NoRedisPrimary";
    pub const PRIMARY_NOT_READY: &str = "RedisPrimaryNotReady";
    pub const FULL_REDUNDANCY: &str = "FullRedundancy";
    pub const WEB_NOT_READY: &str = "WebReplicasNotReady";
    pub const REDIS_NOT_READY: &str = "RedisReplicasNotReady";
    pub const LINK_DOWN: &str = "ReplicationLinkDown";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
    pub const HIBERNATED: &str = "Hibernated";
    pub const HIBERNATING: &str = "Hibernating";
    pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
    pub const NO_BACKUP_YET: &str = "NoBackupYet";
    pub const RESTORE_FAILED: &str = "RestoreFailed";
}

/// Rollout and readiness of one workload (the web Deployment or the Redis StatefulSet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// Pods the CounterApp asks for.
    pub desired: i32,
    /// Pods that exist (old and new).
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
    /// Pods at the latest template.
    pub updated: i32,
    /// The workload controller has seen the latest spec (`observedGeneration`).
    pub observed_current: bool,
    /// Deployment condition Progressing=False, reason ProgressDeadlineExceeded.
    pub deadline_exceeded: bool,
    /// The workload object exists.
    pub exists: bool,
}

impl Workload {
    pub fn from_deployment(d: Option<&Deployment>, desired: i32) -> Self {
        let Some(d) = d else {
            return Self { desired, ..Self::default() };
        };
        let st = d.status.clone().unwrap_or_default();
        let deadline_exceeded = st.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some(reason::DEADLINE_EXCEEDED)
        });
        Self {
            desired,
            replicas: st.replicas.unwrap_or(0),
            ready: st.ready_replicas.unwrap_or(0),
            available: st.available_replicas.unwrap_or(0),
            updated: st.updated_replicas.unwrap_or(0),
            observed_current: st.observed_generation >= d.metadata.generation,
            deadline_exceeded,
            exists: true,
        }
    }

    pub fn from_statefulset(s: Option<&StatefulSet>, desired: i32) -> Self {
        let Some(s) = s else {
            return Self { desired, ..Self::default() };
        };
        let st = s.status.clone().unwrap_or_default();
        let revisions_match = st.current_revision.is_some() && st.current_revision == st.update_revision;
        Self {
            desired,
            replicas: st.replicas,
            ready: st.ready_replicas.unwrap_or(0),
            available: st.available_replicas.unwrap_or(0),
            // Once a rollout completes the StatefulSet controller makes the update
            // revision current; before that `updatedReplicas` counts new pods.
            updated: if revisions_match { st.replicas } else { st.updated_replicas.unwrap_or(0) },
            observed_current: st.observed_generation >= s.metadata.generation,
            deadline_exceeded: false,
            exists: true,
        }
    }

    /// Every pod runs the latest template and no old pod remains.
    pub fn rolled_out(&self) -> bool {
        self.exists && self.observed_current && self.updated >= self.desired && self.replicas == self.desired
    }
}

/// Everything the status depends on, gathered by the reconcile.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// CounterApp name (for the web selector).
    pub app: String,
    pub generation: Option<i64>,
    pub paused: bool,
    /// This pass applied at least one child.
    pub applied: bool,
    pub web: Workload,
    pub redis: Workload,
    /// New `status.redis` (from the replication manager; while paused, `None` keeps the
    /// current one).
    pub redis_status: Option<RedisStatus>,
    /// The pod named as primary exists, is ready and is not terminating.
    pub primary_ready: bool,
    /// Replication health from the manager's pass (absent while paused).
    pub redis_health: Option<Health>,
    /// Set when the spec cannot be turned into objects (the message says why).
    pub invalid_spec: Option<String>,
    /// Something the stack waits for besides its pods (the TLS Secret, a password
    /// rotation): reported as Reconciling with this message.
    pub waiting: Option<String>,
    /// Pods of the stack cannot pull their image: Stalled (it needs the user: a pull
    /// Secret, a tag, the registry's CA), not a rollout to wait for.
    pub image_pull: Option<PullFailure>,
    /// The volumes cannot grow to `spec.redis.storage.size` (the message says why):
    /// Stalled, everything else still applied.
    pub storage_stalled: Option<String>,
    /// Volumes being expanded (`status.redis.storage`): Reconciling until all have grown.
    pub expanding: Option<crate::api::StorageStatus>,
    /// `spec.hibernate`: how many of the stack's pods still run (0: hibernated).
    pub hibernating: Option<i32>,
    /// New `status.backup` (None keeps the current one).
    pub backup: Option<crate::api::BackupStatus>,
    /// `spec.backup` is set: the LastBackupSucceeded condition is reported.
    pub backup_configured: bool,
    /// New `status.bootstrap` (None keeps the current one).
    pub bootstrap: Option<crate::api::BootstrapStatus>,
    /// The restore of `spec.bootstrap` failed (the message says why): Stalled.
    pub restore_failed: Option<String>,
}

/// Compute the new status. Pure: `now` is only used for conditions that flip.
pub fn compute(current: Option<&CounterAppStatus>, obs: &Observation, now: &Time) -> CounterAppStatus {
    let prev_conditions: &[Condition] = current.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let redis = if obs.paused {
        obs.redis_status.clone().or_else(|| current.and_then(|s| s.redis.clone()))
    } else {
        obs.redis_status.clone()
    };

    let hibernation = obs.hibernating.map(hibernation);
    let available = match &hibernation {
        Some((reason, message)) => (false, *reason, message.clone()),
        None => available(obs, redis.as_ref()),
    };
    let degraded = match &hibernation {
        Some((reason, message)) => (false, *reason, message.clone()),
        None => degraded(obs, redis.as_ref()),
    };
    let stalled = if obs.paused { None } else { stalled(obs, prev_conditions) };
    let reconciling = match (&hibernation, obs.paused || stalled.is_some()) {
        (_, true) => None,
        (Some((r, m)), _) if *r == reason::HIBERNATING => Some((*r, m.clone())),
        (Some(_), _) => None,
        (None, _) => reconciling(obs),
    };
    let ready = if let (Some((reason::HIBERNATED, message)), None) = (&hibernation, &stalled) {
        // What was asked (no pod, data kept) is what there is.
        (true, reason::HIBERNATED, message.clone())
    } else if obs.paused {
        let was = prev_conditions.iter().find(|c| c.type_ == READY).is_some_and(|c| c.status == "True");
        (
            was,
            reason::PAUSED,
            "spec.paused is true: the operator applies no changes and performs no failover".to_string(),
        )
    } else if let Some((r, m)) = &stalled {
        (false, *r, m.clone())
    } else if let Some((r, m)) = &reconciling {
        (false, if *r == reason::HIBERNATING { reason::HIBERNATING } else { reason::PROGRESSING }, m.clone())
    } else if !available.0 {
        (false, available.1, available.2.clone())
    } else if degraded.0 {
        (false, degraded.1, degraded.2.clone())
    } else {
        let mut message = "the web service and Redis are fully available".to_string();
        if let Some(h) = obs.redis_health.as_ref().filter(|h| !h.pending_restart.is_empty()) {
            message.push_str(&format!(
                "; spec.redis.config settings that apply at the pods' next restart: {}",
                h.pending_restart.join("; ")
            ));
        }
        (true, reason::READY, message)
    };

    let mut conditions = vec![
        condition(AVAILABLE, available.0, available.1, available.2),
        condition(DEGRADED, degraded.0, degraded.1, degraded.2),
        condition(READY, ready.0, ready.1, ready.2),
    ];
    if let Some((r, m)) = reconciling {
        conditions.push(condition(RECONCILING, true, r, m));
    }
    if let Some((r, m)) = stalled {
        conditions.push(condition(STALLED, true, r, m));
    }
    let backup = obs.backup.clone().map(Box::new).or_else(|| current.and_then(|s| s.backup.clone()));
    if obs.backup_configured {
        let (ok, r, m) = last_backup(backup.as_deref());
        conditions.push(condition(LAST_BACKUP_SUCCEEDED, ok, r, m));
    }
    for c in &mut conditions {
        c.observed_generation = obs.generation;
        c.last_transition_time = match prev_conditions.iter().find(|p| p.type_ == c.type_) {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => now.clone(),
        };
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));

    CounterAppStatus {
        observed_generation: obs.generation,
        conditions,
        web: Some(WebStatus {
            replicas: obs.web.replicas,
            ready_replicas: obs.web.ready,
            selector: labels::selector_string(&labels::selector(&obs.app, Component::Web)),
            ready: format!("{}/{}", obs.web.ready, obs.web.desired),
        }),
        redis,
        backup,
        bootstrap: obs.bootstrap.clone().map(Box::new).or_else(|| current.and_then(|s| s.bootstrap.clone())),
    }
}

/// The LastBackupSucceeded condition: (status, reason, message). True until the first
/// backup ran (nothing failed); False after a failure until the next success.
fn last_backup(b: Option<&crate::api::BackupStatus>) -> (bool, &str, String) {
    let ok = b.and_then(|b| b.last_successful.as_ref());
    let failed = b.and_then(|b| b.last_failed.as_ref());
    let ok_time = ok.and_then(|o| o.start_time.as_ref()).map(|t| t.0);
    let failed_time = failed.and_then(|f| f.time.as_ref()).map(|t| t.0);
    match (ok, failed) {
        (_, Some(f)) if ok_time.is_none() || failed_time > ok_time => {
            (false, f.reason.as_str(), f.message.clone())
        }
        (Some(o), _) => {
            (true, reason::BACKUP_SUCCEEDED, format!("backup {} succeeded ({} bytes)", o.name, o.size_bytes))
        }
        (None, _) => (true, reason::NO_BACKUP_YET, "no backup has run yet".to_string()),
    }
}

/// True when `desired` differs from `current` in anything but the order of conditions
/// (the API server may return them in another order) and the per-pod replication
/// offsets and lag. Those move all the time (the primary pings its replicas every few
/// seconds), so writing them alone would change the CounterApp on every resync; they are
/// refreshed whenever anything else in the status changes.
pub fn needs_patch(current: Option<&CounterAppStatus>, desired: &CounterAppStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    comparable(current) != comparable(desired)
}

/// The JSON paths where `desired` differs from `current` (as `needs_patch` compares them),
/// for the debug line that says why a status is written.
pub fn changed_paths(current: Option<&CounterAppStatus>, desired: &CounterAppStatus) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = Value::Null;
                    walk(&format!("{path}.{k}"), x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (a, b)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), a, b, out);
                }
            }
            _ if a != b => out.push(format!("{path}: {a} -> {b}")),
            _ => {}
        }
    }
    let json = |s: Option<&CounterAppStatus>| {
        s.map(comparable).and_then(|s| serde_json::to_value(s).ok()).unwrap_or_default()
    };
    let mut out = Vec::new();
    walk("status", &json(current), &json(Some(desired)), &mut out);
    out
}

fn comparable(s: &CounterAppStatus) -> CounterAppStatus {
    let mut s = s.clone();
    s.conditions.sort_by(|x, y| x.type_.cmp(&y.type_));
    for n in s.redis.iter_mut().flat_map(|r| r.nodes.iter_mut()) {
        n.offset = 0;
        n.lag_bytes = 0;
    }
    s
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// `spec.hibernate`: (reason, message) for every condition, by how many pods still run.
fn hibernation(running: i32) -> (&'static str, String) {
    if running == 0 {
        let m = "hibernated: no web or Redis pod runs, the Redis volumes are kept; set spec.hibernate to false to wake the stack";
        (reason::HIBERNATED, m.to_string())
    } else {
        (reason::HIBERNATING, format!("hibernating: waiting for {running} pod(s) to stop"))
    }
}

/// The Redis half of `Available`: a primary is named, its pod is ready, and the
/// replication manager's last pass (when there was one) found it writable. Reported as
/// `counterstack_redis_primary_available`.
pub fn primary_available(obs: &Observation, redis: Option<&RedisStatus>) -> bool {
    redis.is_some_and(|r| r.primary.is_some())
        && obs.primary_ready
        && obs.redis_health.as_ref().is_none_or(|h| h.available)
}

fn available<'a>(obs: &'a Observation, redis: Option<&RedisStatus>) -> (bool, &'a str, String) {
    if obs.web.available < 1 {
        return (false, reason::WEB_UNAVAILABLE, "no web pod is available".to_string());
    }
    let Some(primary) = redis.and_then(|r| r.primary.as_deref()) else {
        return (false, reason::NO_PRIMARY, "Redis has no primary yet".to_string());
    };
    if !obs.primary_ready {
        return (false, reason::PRIMARY_NOT_READY, format!("the Redis primary {primary} is not ready"));
    }
    if let Some(h) = obs.redis_health.as_ref().filter(|h| !h.available) {
        return (false, reason_or(&h.reason, reason::NO_PRIMARY), h.message.clone());
    }
    (
        true,
        reason::AVAILABLE,
        format!("{} web pod(s) available; Redis primary {primary} is ready", obs.web.available),
    )
}

fn degraded<'a>(obs: &'a Observation, redis: Option<&RedisStatus>) -> (bool, &'a str, String) {
    if obs.web.ready < obs.web.desired {
        return (
            true,
            reason::WEB_NOT_READY,
            format!("{}/{} web pods are ready", obs.web.ready, obs.web.desired),
        );
    }
    if let Some(h) = obs.redis_health.as_ref().filter(|h| h.degraded) {
        return (true, reason_or(&h.reason, reason::REDIS_NOT_READY), h.message.clone());
    }
    if obs.redis.ready < obs.redis.desired {
        return (
            true,
            reason::REDIS_NOT_READY,
            format!("{}/{} Redis pods are ready", obs.redis.ready, obs.redis.desired),
        );
    }
    let down: Vec<&str> = redis
        .map(|r| {
            r.nodes.iter().filter(|n| n.role == labels::ROLE_REPLICA && !n.link_up).map(|n| n.pod.as_str())
        })
        .into_iter()
        .flatten()
        .collect();
    if !down.is_empty() {
        return (true, reason::LINK_DOWN, format!("replication link down on {}", down.join(", ")));
    }
    (false, reason::FULL_REDUNDANCY, "every web and Redis pod is ready".to_string())
}

/// `reason` when it is a valid condition reason, else `fallback`.
fn reason_or<'a>(reason: &'a str, fallback: &'a str) -> &'a str {
    let valid = reason.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && reason.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        && !reason.ends_with([',', ':']);
    if valid { reason } else { fallback }
}

fn stalled(obs: &Observation, prev: &[Condition]) -> Option<(&'static str, String)> {
    if let Some(msg) = &obs.invalid_spec {
        return Some((reason::INVALID_SPEC, msg.clone()));
    }
    if let Some(f) = &obs.image_pull {
        // While backing off the kubelet may not repeat the cause: keep the one we had.
        let previous = prev
            .iter()
            .find(|c| c.type_ == STALLED && c.reason == reason::IMAGE_PULL_FAILED)
            .map(|c| c.message.as_str());
        return Some((reason::IMAGE_PULL_FAILED, f.message(previous)));
    }
    if let Some(msg) = &obs.storage_stalled {
        return Some((super::storage::NOT_EXPANDABLE, msg.clone()));
    }
    if let Some(msg) = &obs.restore_failed {
        return Some((reason::RESTORE_FAILED, msg.clone()));
    }
    if obs.web.deadline_exceeded {
        return Some((
            reason::DEADLINE_EXCEEDED,
            "the web Deployment exceeded its progress deadline; check its pods (image, probes, resources)"
                .to_string(),
        ));
    }
    None
}

fn reconciling(obs: &Observation) -> Option<(&'static str, String)> {
    let msg = if let Some(w) = &obs.waiting {
        w.clone()
    } else if let Some(s) = &obs.expanding {
        return Some((
            super::storage::EXPANDING,
            format!(
                "expanding the Redis volumes to {}: {}/{} resized; {}",
                s.size, s.resized, s.volumes, s.message
            ),
        ));
    } else if !obs.redis.rolled_out() {
        format!("Redis StatefulSet rolling out ({}/{} pods updated)", obs.redis.updated, obs.redis.desired)
    } else if !obs.web.rolled_out() {
        format!("web Deployment rolling out ({}/{} pods updated)", obs.web.updated, obs.web.desired)
    } else if obs.redis.ready < obs.redis.desired {
        format!("waiting for Redis pods ({}/{} ready)", obs.redis.ready, obs.redis.desired)
    } else if obs.web.ready < obs.web.desired {
        format!("waiting for web pods ({}/{} ready)", obs.web.ready, obs.web.desired)
    } else if obs.applied {
        // Said only when the workloads have nothing to say: a new stack's first status
        // already tells what it waits for (the workloads just applied are the API
        // server's answers, not the lagging cache), so the next pass has no reason to
        // write it again.
        "applied changes to the stack's objects".to_string()
    } else {
        return None;
    };
    Some((reason::PROGRESSING, msg))
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
