//! PURE: Redis nodes that cannot persist (a full or failing volume), as the `Degraded`
//! condition, Events and a per-pod metric report them.
//!
//! A master that cannot append to its AOF, or whose RDB snapshot failed (with
//! `stop-writes-on-bgsave-error`, the default), refuses every write with `-MISCONF`; it
//! keeps serving reads and its replicas. Redis retries by itself (the AOF every second, a
//! due snapshot every 5 s) and takes writes again once the volume has space. The operator
//! cannot fix a disk, and a failover would not either (the replicas' volumes are as big,
//! and one may hold less): it reports, and the decision keeps the primary
//! (`decide::primary_state`).

use super::ReplicationEvent;
use super::decide::Phase;
use super::observe::NodeObservation;
use super::report::Health;

/// Condition and Event reason: Redis cannot persist because its volume is full (it said
/// `No space left on device`, or `Disk quota exceeded`).
pub const STORAGE_FULL: &str = "StorageFull";
/// Condition and Event reason: Redis cannot persist and did not say it is for space (a
/// failed RDB snapshot's refusal names no cause; or another I/O error).
pub const PERSISTENCE_FAILED: &str = "PersistenceFailed";
/// Event reason: every Redis node persists again.
pub const STORAGE_RECOVERED: &str = "StorageRecovered";

/// What cannot persist in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// [`STORAGE_FULL`] or [`PERSISTENCE_FAILED`].
    pub reason: &'static str,
    pub message: String,
    /// Pods that cannot persist.
    pub pods: Vec<String>,
}

/// The nodes that answered and cannot persist, `None` when there are none. `was` is the
/// reason of the episode under way: one that was known to be a full volume stays
/// [`STORAGE_FULL`] until it ends (once a snapshot fails too, Redis's refusal names the
/// snapshot, no longer the cause).
pub fn problem(nodes: &[NodeObservation], primary: Option<&str>, was: Option<&str>) -> Option<Problem> {
    let failing: Vec<&NodeObservation> =
        nodes.iter().filter(|n| n.info.as_ref().is_some_and(|i| i.persistence.failing())).collect();
    if failing.is_empty() {
        return None;
    }
    let full = was == Some(STORAGE_FULL)
        || failing.iter().any(|n| n.info.as_ref().is_some_and(|i| i.persistence.volume_full()));
    let parts: Vec<String> = failing.iter().map(|n| describe(n, Some(n.pod.as_str()) == primary)).collect();
    Some(Problem {
        reason: if full { STORAGE_FULL } else { PERSISTENCE_FAILED },
        message: format!(
            "Redis cannot write to its volume: {}. Redis retries by itself and takes writes again once \
             the volume has space (free space, or grow spec.redis.storage.size); the operator does not \
             fail over for this",
            parts.join("; ")
        ),
        pods: failing.iter().map(|n| n.pod.clone()).collect(),
    })
}

fn describe(n: &NodeObservation, primary: bool) -> String {
    let who = if primary { format!("{} (the primary)", n.pod) } else { n.pod.clone() };
    let Some(p) = n.info.as_ref().map(|i| &i.persistence) else { return who };
    if let Some(refusal) = &p.write_refusal {
        return format!("{who} refuses writes: {refusal}");
    }
    let failed = match (p.aof_write_failed, p.rdb_save_failed) {
        (true, true) => "its last AOF write and RDB snapshot failed",
        (true, false) => "its last AOF write failed",
        _ => "its last RDB snapshot failed",
    };
    format!("{who}: {failed}")
}

/// The Event for going from the episode `was` (its reason; `None`: none under way) to
/// `now`: a Warning when an episode starts (and once more if its cause turns out to be a
/// full volume), `StorageRecovered` when it ends, nothing while it lasts.
pub fn event(was: Option<&str>, now: Option<&Problem>) -> Option<ReplicationEvent> {
    match (was, now) {
        (None, Some(p)) => Some(warning(p)),
        (Some(w), Some(p)) if w != p.reason && p.reason == STORAGE_FULL => Some(warning(p)),
        (Some(_), None) => Some(ReplicationEvent {
            warning: false,
            reason: STORAGE_RECOVERED.into(),
            note: "every Redis node persists to its volume again; writes are accepted".into(),
        }),
        _ => None,
    }
}

fn warning(p: &Problem) -> ReplicationEvent {
    ReplicationEvent { warning: true, reason: p.reason.into(), note: p.message.clone() }
}

/// The pass's health with the persistence problem in it: `Degraded` with its reason when
/// replication is otherwise steady (a failover, hand-over or rollout keeps its own
/// reason; the problem is added to the message).
pub fn with_problem(mut health: Health, problem: Option<&Problem>, phase: Phase) -> Health {
    let Some(p) = problem else { return health };
    health.degraded = true;
    if phase == Phase::Steady {
        health.reason = p.reason.to_string();
        health.message = p.message.clone();
    } else {
        health.message = format!("{}; {}", health.message, p.message);
    }
    health
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::node::NodeAddr;
    use crate::replication::observe::{NodeInfo, Persistence, Role};

    const AOF_FULL: &str = "MISCONF Errors writing to the AOF file: No space left on device";
    const RDB: &str =
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.";

    fn node(i: u32, persistence: Persistence) -> NodeObservation {
        let info = crate::replication::observe::parse_info(&format!(
            "role:{}\nmaster_replid:r\nmaster_repl_offset:10\nslave_repl_offset:10\n",
            if i == 0 { "master" } else { "slave" }
        ))
        .map(|i| NodeInfo { persistence, ..i })
        .ok();
        NodeObservation {
            pod: format!("demo-redis-{i}"),
            ordinal: i,
            endpoint: NodeAddr::new(format!("demo-redis-{i}.demo-redis-headless"), 6379),
            ip: None,
            pod_ready: true,
            terminating: false,
            outdated: false,
            info,
        }
    }

    fn refusing(text: &str) -> Persistence {
        Persistence { aof_write_failed: true, write_refusal: Some(text.into()), ..Persistence::default() }
    }

    #[test]
    fn a_full_primary_is_storage_full_and_names_the_pod_and_the_cause() {
        let nodes = [node(0, refusing(AOF_FULL)), node(1, Persistence::default())];
        let p = problem(&nodes, Some("demo-redis-0"), None).unwrap();
        assert_eq!(p.reason, STORAGE_FULL);
        assert_eq!(p.pods, ["demo-redis-0"]);
        assert!(p.message.contains("demo-redis-0 (the primary) refuses writes: MISCONF Errors writing to the AOF file: No space left on device"), "{}", p.message);
        assert!(!p.message.contains("demo-redis-1"), "{}", p.message);
        assert_eq!(nodes[0].info.as_ref().unwrap().role, Role::Master);
    }

    #[test]
    fn a_cause_redis_does_not_name_is_persistence_failed_unless_the_episode_was_a_full_volume() {
        let rdb =
            Persistence { rdb_save_failed: true, write_refusal: Some(RDB.into()), ..Persistence::default() };
        let nodes = [node(0, rdb), node(2, Persistence { aof_write_failed: true, ..Persistence::default() })];
        let p = problem(&nodes, Some("demo-redis-0"), None).unwrap();
        assert_eq!(p.reason, PERSISTENCE_FAILED);
        assert!(p.message.contains("demo-redis-2: its last AOF write failed"), "{}", p.message);
        assert_eq!(problem(&nodes, Some("demo-redis-0"), Some(STORAGE_FULL)).unwrap().reason, STORAGE_FULL);
        assert_eq!(
            problem(&nodes, Some("demo-redis-0"), Some(PERSISTENCE_FAILED)).unwrap().reason,
            PERSISTENCE_FAILED
        );
    }

    #[test]
    fn nodes_that_persist_or_do_not_answer_are_no_problem() {
        let mut down = node(0, Persistence::default());
        down.info = None;
        assert_eq!(problem(&[down, node(1, Persistence::default())], None, Some(STORAGE_FULL)), None);
    }

    #[test]
    fn one_warning_when_an_episode_starts_and_one_event_when_it_ends() {
        let full = problem(&[node(0, refusing(AOF_FULL))], Some("demo-redis-0"), None).unwrap();
        let other = Problem { reason: PERSISTENCE_FAILED, ..full.clone() };
        let start = event(None, Some(&full)).unwrap();
        assert!(start.warning);
        assert_eq!((start.reason.as_str(), start.note.as_str()), (STORAGE_FULL, full.message.as_str()));
        assert_eq!(event(Some(STORAGE_FULL), Some(&full)), None, "no Event while it lasts");
        assert_eq!(event(Some(PERSISTENCE_FAILED), Some(&other)), None);
        let known = event(Some(PERSISTENCE_FAILED), Some(&full)).unwrap();
        assert_eq!((known.warning, known.reason.as_str()), (true, STORAGE_FULL), "the cause became known");
        let end = event(Some(STORAGE_FULL), None).unwrap();
        assert_eq!((end.warning, end.reason.as_str()), (false, STORAGE_RECOVERED));
        assert_eq!(event(None, None), None);
    }

    #[test]
    fn the_problem_is_the_degraded_reason_of_a_steady_stack_and_joins_any_other() {
        let full = problem(&[node(0, refusing(AOF_FULL))], Some("demo-redis-0"), None).unwrap();
        let healthy = Health {
            available: true,
            degraded: false,
            reason: "ReplicationHealthy".into(),
            message: "demo-redis-0 is the primary".into(),
            pending_restart: vec![],
        };
        let h = with_problem(healthy.clone(), Some(&full), Phase::Steady);
        assert!(h.available && h.degraded);
        assert_eq!((h.reason.as_str(), h.message.as_str()), (STORAGE_FULL, full.message.as_str()));
        let rolling = with_problem(
            Health { reason: "RollingUpdate".into(), ..healthy.clone() },
            Some(&full),
            Phase::RollingReplicas,
        );
        assert_eq!(rolling.reason, "RollingUpdate");
        assert!(rolling.degraded && rolling.message.ends_with(&full.message), "{}", rolling.message);
        assert_eq!(with_problem(healthy.clone(), None, Phase::Steady), healthy);
    }
}
