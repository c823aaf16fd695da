//! PURE: what a pass reports — per-pod status, role labels, and replication health for
//! the `Available` / `Degraded` conditions.

use std::collections::BTreeMap;

use super::PodView;
use super::decide::{Phase, Plan};
use super::observe::{NodeObservation, Role};
use crate::api::RedisNodeStatus;
use crate::build::labels;

/// Replication health, for the operator's conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// A writable primary exists and carries the primary label.
    pub available: bool,
    /// Less redundancy than the spec asks for, or a failover/switchover/restart is running.
    pub degraded: bool,
    /// Condition reason (`ReplicationHealthy`, `FailoverInProgress`, `RollingUpdate`, ...).
    pub reason: String,
    pub message: String,
}

/// Per-pod replication state; lag is measured against `primary` when it answered.
pub fn node_statuses(nodes: &[NodeObservation], primary: Option<&str>) -> Vec<RedisNodeStatus> {
    let p = primary.and_then(|p| nodes.iter().find(|n| n.pod == p));
    let p_offset = p.and_then(|p| p.info.as_ref()).filter(|i| i.role == Role::Master).map(|i| i.offset);
    nodes
        .iter()
        .map(|n| match &n.info {
            None => RedisNodeStatus { pod: n.pod.clone(), role: "unknown".into(), ..Default::default() },
            Some(i) => {
                let replica = i.role == Role::Replica;
                RedisNodeStatus {
                    pod: n.pod.clone(),
                    role: if replica { labels::ROLE_REPLICA } else { labels::ROLE_PRIMARY }.into(),
                    offset: i.offset,
                    lag_bytes: match (replica, p_offset) {
                        (true, Some(po)) => (po - i.offset).max(0),
                        _ => 0,
                    },
                    link_up: i.link_up,
                }
            }
        })
        .collect()
}

/// `counterstack.io/role` per pod. Only `primary` may carry `primary`, and only when it
/// is (now) a master — or when it merely did not answer this pass and already had the
/// label (a blip to the operator must not empty the primary Service). Everyone else is a
/// replica, so a returning old primary never gets the label back.
pub fn role_labels(
    pods: &[PodView],
    nodes: &[NodeObservation],
    primary: Option<&str>,
    primary_is_master: bool,
) -> BTreeMap<String, String> {
    pods.iter()
        .map(|pod| {
            let is_primary = Some(pod.name.as_str()) == primary
                && (primary_is_master
                    || (nodes.iter().any(|n| n.pod == pod.name && !n.reachable())
                        && pod.role_label.as_deref() == Some(labels::ROLE_PRIMARY)));
            let role = if is_primary { labels::ROLE_PRIMARY } else { labels::ROLE_REPLICA };
            (pod.name.clone(), role.to_string())
        })
        .collect()
}

/// Health of the stack after this pass.
pub fn health(
    plan: &Plan,
    nodes: &[NodeObservation],
    primary_is_master: bool,
    replicas_wanted: u32,
) -> Health {
    let primary = plan.primary.as_deref();
    let p_ep = primary.and_then(|p| nodes.iter().find(|n| n.pod == p)).map(|n| &n.endpoint);
    let linked = nodes
        .iter()
        .filter(|n| Some(n.pod.as_str()) != primary)
        .filter(|n| {
            n.pod_ready && n.info.as_ref().is_some_and(|i| i.link_up && p_ep.is_some_and(|ep| i.follows(ep)))
        })
        .count();
    let linked = u32::try_from(linked).unwrap_or(u32::MAX);
    let available = primary.is_some() && primary_is_master;
    let mut reason = plan.phase.reason().to_string();
    let mut message = plan.message.clone();
    if plan.phase == Phase::Steady && linked < replicas_wanted {
        reason = "ReplicasDegraded".into();
        message = format!(
            "{linked} of {replicas_wanted} Redis replicas are linked to primary {}",
            primary.unwrap_or("-")
        );
    }
    Health {
        available,
        degraded: !available || linked < replicas_wanted || plan.phase != Phase::Steady,
        reason,
        message,
    }
}
