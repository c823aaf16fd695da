//! PURE: what a pass reports — per-pod status, role labels, and replication health for
//! the `Available` / `Degraded` conditions.

use std::collections::BTreeMap;

use super::PodView;
use super::decide::{Phase, Plan};
use super::observe::{NodeObservation, Role};
use crate::api::RedisNodeStatus;
use crate::labels;

/// Replication health, for the operator's conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// A writable primary exists and carries the primary label.
    pub available: bool,
    /// Less redundancy than the spec asks for, or a failover/switchover/restart is running.
    pub degraded: bool,
    /// Condition reason (`ReplicationHealthy`, `PrimaryUnavailable`, `FailoverBlocked`,
    /// `FailoverInProgress`, `SwitchoverInProgress`, `RollingUpdate`, ...).
    pub reason: String,
    pub message: String,
    /// `pod: key value: why` of `spec.redis.config` settings that apply at the pods' next
    /// restart (the server takes them only at start); said in the `Ready` message.
    pub pending_restart: Vec<String>,
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

/// `status.redis.nodes`: every observed pod, and every pod the spec asks for that does
/// not exist yet (`unknown`, like a pod that does not answer), by ordinal. Listing the
/// wanted pods from the start means a pod being created changes no status: a thousand
/// new stacks would otherwise each write their status once more per Redis pod.
pub fn with_wanted_pods(
    mut nodes: Vec<RedisNodeStatus>,
    app: &str,
    pods_wanted: u32,
) -> Vec<RedisNodeStatus> {
    for ordinal in 0..pods_wanted {
        let pod = crate::names::redis_pod(app, ordinal);
        if !nodes.iter().any(|n| n.pod == pod) {
            nodes.push(RedisNodeStatus { pod, role: "unknown".into(), ..Default::default() });
        }
    }
    nodes.sort_by_key(|n| (crate::names::redis_ordinal(app, &n.pod), n.pod.clone()));
    nodes
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
        pending_restart: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::node::NodeAddr;
    use crate::replication::observe::NodeInfo;

    fn pod_view(i: u32, label: Option<&str>) -> PodView {
        PodView {
            name: format!("demo-redis-{i}"),
            ordinal: i,
            role_label: label.map(str::to_string),
            ..Default::default()
        }
    }

    fn obs(i: u32, role: Option<Role>, offset: i64, link_up: bool) -> NodeObservation {
        NodeObservation {
            pod: format!("demo-redis-{i}"),
            ordinal: i,
            endpoint: NodeAddr::new(format!("demo-redis-{i}.demo-redis-headless"), 6379),
            ip: None,
            pod_ready: true,
            terminating: false,
            outdated: false,
            info: role.map(|role| NodeInfo {
                role,
                master_host: Some("demo-redis-1.demo-redis-headless".into()),
                master_port: Some(6379),
                link_up,
                link_down_since_secs: None,
                sync_in_progress: false,
                replid: "r".into(),
                replid2: String::new(),
                second_offset: -1,
                offset,
                loading: false,
                persisting: false,
                keys: 1,
                run_id: "x".into(),
                uptime_secs: 10,
                connected_replicas: 0,
                online_replicas: 0,
                replicas: vec![],
                failover_state: "no-failover".into(),
                min_replicas_to_write: Some(1),
                persistence: Default::default(),
            }),
        }
    }

    #[test]
    fn only_the_decided_primary_is_labelled_primary() {
        let pods = [pod_view(0, Some("primary")), pod_view(1, Some("replica")), pod_view(2, Some("replica"))];
        // Old primary 0 came back as a master; 1 is the primary.
        let nodes = [
            obs(0, Some(Role::Master), 10, false),
            obs(1, Some(Role::Master), 900, false),
            obs(2, Some(Role::Replica), 800, true),
        ];
        let l = role_labels(&pods, &nodes, Some("demo-redis-1"), true);
        assert_eq!(l["demo-redis-0"], "replica");
        assert_eq!(l["demo-redis-1"], "primary");
        assert_eq!(l["demo-redis-2"], "replica");
    }

    #[test]
    fn an_unreachable_primary_keeps_its_label_but_a_primary_that_is_a_replica_loses_it() {
        let pods = [pod_view(1, Some("primary")), pod_view(2, Some("replica"))];
        let unreachable = [obs(1, None, 0, false), obs(2, Some(Role::Replica), 800, false)];
        assert_eq!(role_labels(&pods, &unreachable, Some("demo-redis-1"), false)["demo-redis-1"], "primary");
        let came_back_as_replica =
            [obs(1, Some(Role::Replica), 0, false), obs(2, Some(Role::Replica), 800, false)];
        assert_eq!(
            role_labels(&pods, &came_back_as_replica, Some("demo-redis-1"), false)["demo-redis-1"],
            "replica"
        );
    }

    #[test]
    fn wanted_pods_that_do_not_exist_yet_are_listed_unknown() {
        let seen = node_statuses(&[obs(1, Some(Role::Master), 10, false)], Some("demo-redis-1"));
        let all = with_wanted_pods(seen, "demo", 3);
        let listed: Vec<(&str, &str)> = all.iter().map(|n| (n.pod.as_str(), n.role.as_str())).collect();
        assert_eq!(
            listed,
            [("demo-redis-0", "unknown"), ("demo-redis-1", "primary"), ("demo-redis-2", "unknown")]
        );
        // A pod beyond the spec (scaling down) stays listed while it exists.
        let extra = node_statuses(&[obs(3, None, 0, false)], None);
        assert_eq!(with_wanted_pods(extra, "demo", 1).len(), 2);
    }

    #[test]
    fn status_lag_and_health() {
        let nodes = [
            obs(0, None, 0, false),
            obs(1, Some(Role::Master), 1000, false),
            obs(2, Some(Role::Replica), 800, true),
        ];
        let st = node_statuses(&nodes, Some("demo-redis-1"));
        assert_eq!(st[0].role, "unknown");
        assert_eq!((st[1].role.as_str(), st[1].lag_bytes), ("primary", 0));
        assert_eq!((st[2].role.as_str(), st[2].lag_bytes, st[2].link_up), ("replica", 200, true));

        let plan = Plan {
            phase: Phase::Steady,
            primary: Some("demo-redis-1".into()),
            epoch: 2,
            holds_data: true,
            actions: vec![],
            delete_pods: vec![],
            message: String::new(),
            requeue_after: None,
            switchover: None,
        };
        let h = health(&plan, &nodes, true, 2);
        assert!(h.available && h.degraded, "one of two replicas linked");
        assert_eq!(h.reason, "ReplicasDegraded");
        let failing = Plan { phase: Phase::FailoverBlocked, ..plan };
        let h = health(&failing, &nodes, false, 2);
        assert!(!h.available && h.degraded);
        assert_eq!(h.reason, "FailoverBlocked");
        let waiting = Plan { phase: Phase::PrimaryUnavailable, ..failing.clone() };
        assert_eq!(health(&waiting, &nodes, false, 2).reason, "PrimaryUnavailable");
        let promoting = Plan { phase: Phase::FailingOver, ..failing };
        assert_eq!(health(&promoting, &nodes, true, 2).reason, "FailoverInProgress");
    }
}
