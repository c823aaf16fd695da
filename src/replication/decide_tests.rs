//! Table-driven tests of [`decide`]: one `#[test]` per rule of issue 4 (`decide_case!`), then
//! properties and scenarios.

use std::time::Duration;

use super::*;
use crate::replication::node::NodeAddr;
use crate::replication::observe::{ListedReplica, NodeInfo, NodeObservation, Role};

const H: &str = "r-history";

fn ep(ord: u32) -> NodeAddr {
    NodeAddr::new(format!("demo-redis-{ord}.demo-redis-headless"), 6379)
}
fn pod(ord: u32) -> String {
    format!("demo-redis-{ord}")
}
fn ip(ord: u32) -> String {
    format!("10.244.0.{}", 10 + ord)
}

/// Fill each master's replica list as Redis would: every node that follows it with a
/// live link, under the stable name it announces.
fn listed(mut nodes: Vec<NodeObservation>) -> Vec<NodeObservation> {
    let all = nodes.clone();
    for m in nodes.iter_mut().filter(|n| n.is_master()) {
        let replicas = all
            .iter()
            .filter_map(|n| {
                let i = n.info.as_ref()?;
                (i.follows(&m.endpoint) && i.link_up).then(|| ListedReplica {
                    addr: n.endpoint.clone(),
                    online: true,
                    offset: i.offset,
                    lag_secs: 0,
                })
            })
            .collect();
        if let Some(i) = m.info.as_mut() {
            i.replicas = replicas;
        }
    }
    nodes
}

fn info(role: Role, offset: i64, keys: u64) -> NodeInfo {
    NodeInfo {
        role,
        master_host: None,
        master_port: None,
        link_up: false,
        link_down_since_secs: None,
        sync_in_progress: false,
        replid: H.into(),
        replid2: String::new(),
        second_offset: -1,
        offset,
        loading: false,
        persisting: false,
        keys,
        run_id: "run".into(),
        uptime_secs: 100,
        connected_replicas: 0,
        online_replicas: 2,
        replicas: vec![],
        failover_state: "no-failover".into(),
        min_replicas_to_write: Some(1),
        persistence: Default::default(),
    }
}

/// A pod whose Redis answered.
fn node(ord: u32, i: NodeInfo) -> NodeObservation {
    NodeObservation {
        pod: pod(ord),
        ordinal: ord,
        endpoint: ep(ord),
        ip: Some(ip(ord)),
        pod_ready: true,
        terminating: false,
        outdated: false,
        info: Some(i),
    }
}
fn master(ord: u32, offset: i64, keys: u64) -> NodeObservation {
    node(ord, info(Role::Master, offset, keys))
}
/// A replica of `of` with its link up.
fn replica(ord: u32, of: u32, offset: i64) -> NodeObservation {
    let mut i = info(Role::Replica, offset, 10);
    i.master_host = Some(ep(of).host);
    i.master_port = Some(6379);
    i.link_up = true;
    node(ord, i)
}
/// A replica of `of` whose link went down `secs` ago (None: never linked).
fn replica_down(ord: u32, of: u32, offset: i64, secs: Option<u64>) -> NodeObservation {
    let mut n = replica(ord, of, offset);
    let i = n.info.as_mut().unwrap();
    i.link_up = false;
    i.link_down_since_secs = secs;
    n
}
fn unreachable(ord: u32) -> NodeObservation {
    NodeObservation {
        pod: pod(ord),
        ordinal: ord,
        endpoint: ep(ord),
        ip: Some(ip(ord)),
        pod_ready: false,
        terminating: false,
        outdated: false,
        info: None,
    }
}
fn with(mut n: NodeObservation, f: impl FnOnce(&mut NodeObservation)) -> NodeObservation {
    f(&mut n);
    n
}
fn with_info(mut n: NodeObservation, f: impl FnOnce(&mut NodeInfo)) -> NodeObservation {
    f(n.info.as_mut().unwrap());
    n
}

fn spec(n: u32, k: u32) -> Spec {
    Spec {
        replicas: n,
        sync_replicas: k,
        failover_enabled: true,
        failover_after: Duration::from_secs(5),
        paused: false,
        waking: false,
    }
}
fn prev(primary: Option<u32>, holds_data: bool) -> Prev {
    Prev {
        primary: primary.map(pod),
        epoch: if primary.is_some() { 3 } else { 0 },
        holds_data,
        primary_replid: Some(H.into()),
    }
}

fn follow(p: u32, of: u32, fence: bool) -> NodeAction {
    NodeAction::Follow { pod: pod(p), primary: pod(of), fence }
}
fn promote(p: u32) -> NodeAction {
    NodeAction::Promote { pod: pod(p) }
}
fn min_repl(p: u32, v: i64) -> NodeAction {
    NodeAction::SetMinReplicas { pod: pod(p), value: v }
}
fn handover(from: u32, to: u32, target: NodeAddr) -> NodeAction {
    NodeAction::Handover { from: pod(from), to: pod(to), target, timeout: HANDOVER_TIMEOUT }
}

struct Case {
    name: &'static str,
    nodes: Vec<NodeObservation>,
    spec: Spec,
    prev: Prev,
    down_for: Option<u64>,
    phase: Phase,
    primary: Option<u32>,
    epoch: i64,
    actions: Vec<NodeAction>,
    delete: Vec<u32>,
}

fn run(c: &Case) {
    let nodes = listed(c.nodes.clone());
    let plan = decide(&Input {
        nodes: &nodes,
        spec: c.spec,
        prev: c.prev.clone(),
        switchover: None,
        primary_unavailable_for: c.down_for.map(Duration::from_secs),
    });
    assert_eq!(plan.phase, c.phase, "{}: phase ({})", c.name, plan.message);
    assert_eq!(plan.primary, c.primary.map(pod), "{}: primary ({})", c.name, plan.message);
    assert_eq!(plan.epoch, c.epoch, "{}: epoch", c.name);
    assert_eq!(plan.actions, c.actions, "{}: actions ({})", c.name, plan.message);
    assert_eq!(
        plan.delete_pods,
        c.delete.iter().map(|o| pod(*o)).collect::<Vec<_>>(),
        "{}: deletions",
        c.name
    );
    if c.phase == Phase::FailingOver || c.phase == Phase::Bootstrapping {
        // Fencing comes before any promotion.
        let first_promote = plan
            .actions
            .iter()
            .position(|a| matches!(a, NodeAction::Promote { .. } | NodeAction::Handover { .. }));
        let last_fence =
            plan.actions.iter().rposition(|a| matches!(a, NodeAction::Follow { fence: true, .. }));
        if let (Some(p), Some(f)) = (first_promote, last_fence) {
            assert!(f < p, "{}: a fence after the promotion", c.name);
        }
    }
}

/// A bootstrapping pod that follows nobody and holds nothing.
fn empty_replica_of_nowhere(ord: u32) -> NodeObservation {
    with_info(replica_down(ord, 9, 0, None), |i| {
        i.keys = 0;
        i.replid = format!("fresh-{ord}");
    })
}

/// One `#[test]` per row of the table, named after the rule it checks, so that every
/// failing rule shows (a single table test stops at the first).
macro_rules! decide_case {
    ($test:ident, $case:expr) => {
        #[test]
        fn $test() {
            run(&$case);
        }
    };
}

decide_case!(
    a_fresh_stack_makes_pod_0_primary_and_the_others_follow_it,
    Case {
        name: "fresh stack: pod 0 becomes primary, the others follow it",
        nodes: vec![empty_replica_of_nowhere(0), empty_replica_of_nowhere(1), empty_replica_of_nowhere(2)],
        spec: spec(2, 1),
        prev: prev(None, false),
        down_for: None,
        phase: Phase::Bootstrapping,
        primary: Some(0),
        epoch: 1,
        actions: vec![promote(0), follow(1, 0, false), follow(2, 0, false)],
        delete: vec![],
    }
);

decide_case!(
    a_fresh_stack_of_standalone_masters_demotes_the_others_before_pod_0_is_primary,
    Case {
        name: "fresh stack of standalone masters: others demoted before pod 0 is primary",
        nodes: vec![
            master(0, 0, 0),
            master(1, 0, 0),
            with_info(master(2, 0, 0), |i| i.min_replicas_to_write = Some(0)),
        ],
        spec: spec(2, 1),
        prev: prev(None, false),
        down_for: None,
        phase: Phase::Bootstrapping,
        primary: Some(0),
        epoch: 1,
        actions: vec![follow(1, 0, true), follow(2, 0, true), min_repl(2, 1)],
        delete: vec![],
    }
);

decide_case!(
    a_fresh_stack_waits_for_pod_0,
    Case {
        name: "fresh stack waits for pod 0",
        nodes: vec![unreachable(0), empty_replica_of_nowhere(1), empty_replica_of_nowhere(2)],
        spec: spec(2, 1),
        prev: prev(None, false),
        down_for: None,
        phase: Phase::Bootstrapping,
        primary: None,
        epoch: 0,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    with_kept_volumes_the_pod_with_data_is_adopted_not_an_empty_pod_0,
    Case {
        name: "kept volumes: the pod with data is adopted, not empty pod 0",
        nodes: vec![
            empty_replica_of_nowhere(0),
            with_info(replica_down(1, 9, 500, None), |i| i.keys = 3),
            empty_replica_of_nowhere(2),
        ],
        spec: spec(2, 1),
        prev: prev(None, false),
        down_for: None,
        phase: Phase::Bootstrapping,
        primary: Some(1),
        epoch: 1,
        actions: vec![promote(1), follow(0, 1, false), follow(2, 1, false)],
        delete: vec![],
    }
);

decide_case!(
    with_kept_volumes_and_a_pod_missing_bootstrap_waits,
    Case {
        name: "kept volumes: data somewhere but a pod is missing -> wait",
        nodes: vec![
            empty_replica_of_nowhere(0),
            with_info(replica_down(1, 9, 500, None), |i| i.keys = 3),
            unreachable(2),
        ],
        spec: spec(2, 1),
        prev: prev(None, false),
        down_for: None,
        phase: Phase::Bootstrapping,
        primary: None,
        epoch: 0,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    a_steady_stack_needs_nothing,
    Case {
        name: "steady: nothing to do",
        nodes: vec![master(0, 1000, 10), replica(1, 0, 1000), replica(2, 0, 990)],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: None,
        phase: Phase::Steady,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    min_replicas_to_write_follows_sync_replicas,
    Case {
        name: "steady: min-replicas-to-write follows syncReplicas",
        nodes: vec![
            with_info(master(0, 1000, 10), |i| i.min_replicas_to_write = Some(0)),
            replica(1, 0, 1000),
            replica(2, 0, 990),
        ],
        spec: spec(2, 2),
        prev: prev(Some(0), true),
        down_for: None,
        phase: Phase::Steady,
        primary: Some(0),
        epoch: 3,
        actions: vec![min_repl(0, 2), min_repl(1, 2), min_repl(2, 2)],
        delete: vec![],
    }
);

decide_case!(
    an_old_primary_returning_as_a_master_is_fenced_first,
    Case {
        name: "old primary returning as a master is demoted (fenced) first",
        nodes: vec![master(0, 50, 10), replica_down(2, 0, 0, Some(1)), master(1, 2000, 10)],
        spec: spec(2, 1),
        prev: prev(Some(1), true),
        down_for: None,
        phase: Phase::Steady,
        primary: Some(1),
        epoch: 3,
        actions: vec![follow(0, 1, true), follow(2, 1, false)],
        delete: vec![],
    }
);

decide_case!(
    an_old_primary_returning_empty_as_a_master_is_fenced_too,
    Case {
        name: "old primary returning EMPTY as a master is demoted too",
        nodes: vec![
            with_info(master(0, 0, 0), |i| i.replid = "new".into()),
            replica(2, 1, 2000),
            master(1, 2000, 10),
        ],
        spec: spec(2, 1),
        prev: prev(Some(1), true),
        down_for: None,
        phase: Phase::Steady,
        primary: Some(1),
        epoch: 3,
        actions: vec![follow(0, 1, true)],
        delete: vec![],
    }
);

decide_case!(
    a_primary_down_for_less_than_after_seconds_is_waited_for,
    Case {
        name: "primary down for less than afterSeconds: wait",
        nodes: vec![unreachable(0), replica_down(1, 0, 1000, Some(1)), replica_down(2, 0, 990, Some(1))],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: Some(2),
        phase: Phase::PrimaryUnavailable,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    a_replica_with_a_higher_offset_wins,
    Case {
        name: "highest offset wins",
        nodes: vec![unreachable(0), replica_down(1, 0, 990, Some(5)), replica_down(2, 0, 1000, Some(5))],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: Some(5),
        phase: Phase::FailingOver,
        primary: Some(2),
        epoch: 4,
        actions: vec![promote(2), min_repl(2, 1), follow(1, 2, false)],
        delete: vec![],
    }
);

decide_case!(
    with_equal_offsets_the_lowest_ordinal_wins,
    Case {
        name: "equal offsets: lowest ordinal wins (deterministic)",
        nodes: vec![unreachable(0), replica_down(1, 0, 1000, Some(5)), replica_down(2, 0, 1000, Some(5))],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: Some(6),
        phase: Phase::FailingOver,
        primary: Some(1),
        epoch: 4,
        actions: vec![promote(1), min_repl(1, 1), follow(2, 1, false)],
        delete: vec![],
    }
);

decide_case!(
    a_loading_replica_is_skipped,
    Case {
        name: "a loading replica is skipped (k=2 so one inspected replica suffices)",
        nodes: vec![
            unreachable(0),
            replica_down(1, 0, 990, Some(5)),
            with_info(replica_down(2, 0, 1000, Some(5)), |i| i.loading = true),
        ],
        spec: spec(2, 2),
        prev: prev(Some(0), true),
        down_for: Some(5),
        phase: Phase::FailingOver,
        primary: Some(1),
        epoch: 4,
        actions: vec![promote(1), min_repl(1, 2), follow(2, 1, false)],
        delete: vec![],
    }
);

decide_case!(
    a_loading_replica_does_not_count_as_inspected,
    Case {
        name: "a loading replica does not count as inspected (k=1): wait",
        nodes: vec![
            unreachable(0),
            replica_down(1, 0, 990, Some(5)),
            with_info(replica_down(2, 0, 1000, Some(5)), |i| i.loading = true),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: Some(5),
        phase: Phase::FailoverBlocked,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    a_replica_that_never_had_a_link_is_skipped,
    Case {
        name: "a replica that never had a link is skipped",
        nodes: vec![unreachable(0), replica_down(1, 0, 990, Some(5)), replica_down(2, 0, 5000, None)],
        spec: spec(2, 2),
        prev: prev(Some(0), true),
        down_for: Some(5),
        phase: Phase::FailingOver,
        primary: Some(1),
        epoch: 4,
        actions: vec![promote(1), min_repl(1, 2), follow(2, 1, false)],
        delete: vec![],
    }
);

decide_case!(
    a_replica_whose_link_died_long_before_the_primary_is_skipped,
    Case {
        name: "a replica whose link died long before the primary is skipped",
        nodes: vec![unreachable(0), replica_down(1, 0, 990, Some(5)), replica_down(2, 0, 5000, Some(3600))],
        spec: spec(2, 2),
        prev: prev(Some(0), true),
        down_for: Some(5),
        phase: Phase::FailingOver,
        primary: Some(1),
        epoch: 4,
        actions: vec![promote(1), min_repl(1, 2), follow(2, 1, false)],
        delete: vec![],
    }
);

decide_case!(
    too_few_inspected_replicas_block_the_promotion,
    Case {
        name: "too few replicas inspected (k=1, n=2, one frozen): wait, do not promote",
        nodes: vec![unreachable(0), replica_down(1, 0, 1000, Some(5)), unreachable(2)],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: Some(60),
        phase: Phase::FailoverBlocked,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    a_frozen_replica_that_comes_back_behind_loses_to_the_live_one,
    Case {
        name: "the frozen replica comes back behind: the live one wins",
        nodes: vec![unreachable(0), replica_down(1, 0, 1000, Some(8)), replica_down(2, 0, 700, Some(0))],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: Some(8),
        phase: Phase::FailingOver,
        primary: Some(1),
        epoch: 4,
        actions: vec![promote(1), min_repl(1, 1), follow(2, 1, false)],
        delete: vec![],
    }
);

decide_case!(
    an_empty_restarted_node_never_wins_even_with_a_higher_offset,
    Case {
        name: "an empty restarted node never wins, even with a higher offset",
        nodes: vec![
            unreachable(0),
            replica_down(1, 0, 900, Some(5)),
            with_info(replica_down(2, 0, 1000, Some(5)), |i| i.keys = 0),
        ],
        spec: spec(2, 2),
        prev: prev(Some(0), true),
        down_for: Some(5),
        phase: Phase::FailingOver,
        primary: Some(1),
        epoch: 4,
        actions: vec![promote(1), min_repl(1, 2), follow(2, 1, false)],
        delete: vec![],
    }
);

decide_case!(
    a_replica_of_another_history_is_neither_compared_nor_counted,
    Case {
        name: "a replica of another history is not compared (and not counted)",
        nodes: vec![
            unreachable(0),
            replica_down(1, 0, 900, Some(5)),
            with_info(replica_down(2, 0, 9000, Some(5)), |i| i.replid = "other".into()),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: Some(5),
        phase: Phase::FailoverBlocked,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    a_primary_restarted_without_its_data_is_fenced_and_failed_over_at_once,
    Case {
        name: "primary restarted without its data: fail over at once, fencing it first",
        nodes: vec![
            with_info(master(0, 0, 0), |i| i.replid = "new".into()),
            replica_down(1, 0, 990, Some(0)),
            replica_down(2, 0, 1000, Some(0)),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: Some(0),
        phase: Phase::FailingOver,
        primary: Some(2),
        epoch: 4,
        actions: vec![follow(0, 2, true), promote(2), min_repl(2, 1), follow(1, 2, false)],
        delete: vec![],
    }
);

decide_case!(
    a_primary_not_ready_past_after_seconds_is_fenced_then_replaced,
    Case {
        name: "primary answers but is not ready past afterSeconds: fenced, then replaced",
        nodes: vec![
            with(master(0, 1000, 10), |n| n.pod_ready = false),
            replica(1, 0, 1000),
            replica(2, 0, 990),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: Some(5),
        phase: Phase::FailingOver,
        primary: Some(1),
        epoch: 4,
        actions: vec![follow(0, 1, true), promote(1), min_repl(1, 1), follow(2, 1, false)],
        delete: vec![],
    }
);

decide_case!(
    with_sync_replicas_0_one_inspected_replica_is_enough,
    Case {
        name: "syncReplicas 0: one inspected replica is enough",
        nodes: vec![unreachable(0), replica_down(1, 0, 990, Some(5)), unreachable(2)],
        spec: spec(2, 0),
        prev: prev(Some(0), true),
        down_for: Some(5),
        phase: Phase::FailingOver,
        primary: Some(1),
        epoch: 4,
        actions: vec![promote(1), min_repl(1, 0)],
        delete: vec![],
    }
);

decide_case!(
    with_failover_disabled_the_primary_is_waited_for,
    Case {
        name: "failover disabled: wait for the primary",
        nodes: vec![unreachable(0), replica_down(1, 0, 990, Some(5)), replica_down(2, 0, 990, Some(5))],
        spec: Spec { failover_enabled: false, ..spec(2, 1) },
        prev: prev(Some(0), true),
        down_for: Some(500),
        phase: Phase::PrimaryUnavailable,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    a_paused_stack_changes_nothing,
    Case {
        name: "paused: nothing changes",
        nodes: vec![unreachable(0), replica_down(1, 0, 990, Some(5)), replica_down(2, 0, 990, Some(5))],
        spec: Spec { paused: true, ..spec(2, 1) },
        prev: prev(Some(0), true),
        down_for: Some(500),
        phase: Phase::Paused,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    outdated_replicas_restart_one_at_a_time_highest_ordinal_first,
    Case {
        name: "planned: outdated replicas restart one at a time, highest ordinal first",
        nodes: vec![
            with(master(0, 1000, 10), |n| n.outdated = true),
            with(replica(1, 0, 1000), |n| n.outdated = true),
            with(replica(2, 0, 1000), |n| n.outdated = true),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: None,
        phase: Phase::RollingReplicas,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![2],
    }
);

decide_case!(
    the_next_replica_waits_until_the_restarted_one_is_back_in_sync,
    Case {
        name: "planned: the next replica waits until the restarted one is back in sync",
        nodes: vec![
            with(master(0, 1000, 10), |n| n.outdated = true),
            with(replica(1, 0, 1000), |n| n.outdated = true),
            with_info(replica(2, 0, 0), |i| i.sync_in_progress = true),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: None,
        phase: Phase::RollingReplicas,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    the_next_replica_waits_until_the_primary_sees_the_restarted_one_online,
    Case {
        name: "planned: the primary does not yet see the restarted replica online -> wait",
        nodes: vec![
            with_info(with(master(0, 1000, 10), |n| n.outdated = true), |i| i.online_replicas = 1),
            with(replica(1, 0, 1000), |n| n.outdated = true),
            replica(2, 0, 1000),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: None,
        phase: Phase::RollingReplicas,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    the_next_replica_waits_while_a_restarted_one_settles,
    Case {
        name: "planned: a replica restarted a moment ago (still settling) -> wait",
        nodes: vec![
            with(master(0, 1000, 10), |n| n.outdated = true),
            with(replica(1, 0, 1000), |n| n.outdated = true),
            with_info(replica(2, 0, 1000), |i| i.uptime_secs = 1),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: None,
        phase: Phase::RollingReplicas,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    the_next_replica_waits_while_a_replica_rewrites_its_aof,
    Case {
        name: "planned: a replica rewriting its AOF -> wait",
        nodes: vec![
            with(master(0, 1000, 10), |n| n.outdated = true),
            with(replica(1, 0, 1000), |n| n.outdated = true),
            with_info(replica(2, 0, 1000), |i| i.persisting = true),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: None,
        phase: Phase::RollingReplicas,
        primary: Some(0),
        epoch: 3,
        actions: vec![],
        delete: vec![],
    }
);

decide_case!(
    an_outdated_primary_hands_over_to_the_most_advanced_replica,
    Case {
        name: "planned: only the primary is outdated -> FAILOVER TO the most advanced replica",
        nodes: vec![
            with(master(0, 1000, 10), |n| n.outdated = true),
            replica(1, 0, 990),
            replica(2, 0, 1000),
        ],
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        down_for: None,
        phase: Phase::Switchover,
        primary: Some(2),
        epoch: 4,
        actions: vec![handover(0, 2, ep(2)), follow(1, 2, false)],
        delete: vec![],
    }
);

decide_case!(
    after_the_hand_over_the_old_primary_restarts_as_a_replica,
    Case {
        name: "planned: after the hand-over the old primary is restarted as a replica",
        nodes: vec![
            with(replica(0, 2, 1000), |n| n.outdated = true),
            replica(1, 2, 1000),
            master(2, 1000, 10),
        ],
        spec: spec(2, 1),
        prev: prev(Some(2), true),
        down_for: None,
        phase: Phase::RollingReplicas,
        primary: Some(2),
        epoch: 3,
        actions: vec![],
        delete: vec![0],
    }
);

decide_case!(
    a_single_outdated_node_has_nobody_to_hand_over_to_and_is_just_restarted,
    Case {
        name: "planned: a single node has nobody to hand over to and is just restarted",
        nodes: vec![with(master(0, 1000, 10), |n| n.outdated = true)],
        spec: spec(0, 0),
        prev: prev(Some(0), true),
        down_for: None,
        phase: Phase::RollingReplicas,
        primary: Some(0),
        epoch: 3,
        actions: vec![min_repl(0, 0)],
        delete: vec![0],
    }
);

#[test]
fn replicas_needed_is_k_plus_r_greater_than_n() {
    for n in 0..=8u32 {
        for k in 0..=n {
            let r = replicas_needed(&spec(n, k), n);
            if k > 0 {
                assert!(k + r > n && k + r - 1 <= n, "n={n} k={k} r={r}");
            } else {
                assert_eq!(r, 1.min(n));
            }
        }
    }
}

#[test]
fn epoch_only_grows_and_never_two_masters_after_a_plan() {
    // Whatever the observation, the planned primary is the only node left a master
    // once the actions are applied, and the epoch never decreases.
    let cases: Vec<Vec<NodeObservation>> = vec![
        vec![master(0, 10, 1), master(1, 10, 1), master(2, 10, 1)],
        vec![unreachable(0), master(1, 10, 1), replica_down(2, 0, 10, Some(1))],
        vec![master(0, 0, 0), replica_down(1, 0, 10, Some(1)), replica_down(2, 0, 12, Some(1))],
    ];
    for nodes in cases {
        for down in [None, Some(0), Some(100)] {
            let p = prev(Some(0), true);
            let plan = decide(&Input {
                nodes: &nodes,
                spec: spec(2, 1),
                prev: p.clone(),
                switchover: None,
                primary_unavailable_for: down.map(Duration::from_secs),
            });
            assert!(plan.epoch >= p.epoch);
            let mut masters: Vec<String> =
                nodes.iter().filter(|n| n.is_master()).map(|n| n.pod.clone()).collect();
            for a in &plan.actions {
                match a {
                    NodeAction::Follow { pod, .. } => masters.retain(|m| m != pod),
                    NodeAction::Promote { pod } => masters.push(pod.clone()),
                    _ => {}
                }
            }
            masters.sort();
            masters.dedup();
            assert!(masters.len() <= 1, "two masters after {:?}: {masters:?}", plan.actions);
            if let (Some(m), true) = (masters.first(), plan.changes_primary(&p)) {
                assert_eq!(Some(m), plan.primary.as_ref());
            }
        }
    }
}

fn plan_for(nodes: Vec<NodeObservation>, prev: Prev, down_for: Option<u64>) -> Plan {
    decide(&Input {
        nodes: &listed(nodes),
        spec: spec(2, 1),
        prev,
        switchover: None,
        primary_unavailable_for: down_for.map(Duration::from_secs),
    })
}

#[test]
fn a_terminating_primary_is_handed_over_at_once_to_the_most_advanced_listed_replica() {
    let nodes =
        vec![with(master(0, 1000, 10), |n| n.terminating = true), replica(1, 0, 990), replica(2, 0, 1000)];
    let plan = plan_for(nodes, prev(Some(0), true), Some(0));
    assert_eq!(plan.phase, Phase::Switchover, "{}", plan.message);
    assert_eq!(plan.primary, Some(pod(2)));
    assert_eq!(plan.epoch, 4);
    assert_eq!(
        plan.actions,
        vec![handover(0, 2, ep(2)), follow(1, 2, false)],
        "the other replica follows the new primary"
    );
    assert!(plan.message.contains("terminating"), "{}", plan.message);
}

#[test]
fn a_terminating_primary_without_a_listed_replica_waits_like_any_unavailable_primary() {
    let nodes =
        vec![with(master(0, 1000, 10), |n| n.terminating = true), replica(1, 0, 990), replica(2, 0, 1000)];
    // decide() without listed(): the primary lists nobody (the replicas are not online yet).
    let plan = decide(&Input {
        nodes: &nodes,
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        switchover: None,
        primary_unavailable_for: Some(Duration::from_secs(1)),
    });
    assert_eq!(plan.phase, Phase::PrimaryUnavailable, "{}", plan.message);
    assert!(plan.actions.is_empty());
}

#[test]
fn the_hand_over_names_the_replica_as_the_primary_lists_it() {
    // Replicas started without replica-announce-ip: the primary knows them by pod IP.
    let mut nodes = listed(vec![with(master(0, 1000, 10), |n| n.outdated = true), replica(1, 0, 1000)]);
    let listing = &mut nodes[0].info.as_mut().unwrap().replicas;
    listing[0].addr = NodeAddr::new(ip(1), 6379);
    let plan = decide(&Input {
        nodes: &nodes,
        spec: spec(1, 1),
        prev: prev(Some(0), true),
        switchover: None,
        primary_unavailable_for: None,
    });
    assert_eq!(plan.actions, vec![handover(0, 1, NodeAddr::new(ip(1), 6379))], "{}", plan.message);
}

/// A primary whose volume is full: it answers INFO, ROLE and reads, and refuses writes
/// (and PING) with `-MISCONF`.
fn full_primary(ord: u32, offset: i64) -> NodeObservation {
    with_info(master(ord, offset, 10), |i| {
        i.persistence.aof_write_failed = true;
        i.persistence.write_refusal =
            Some("MISCONF Errors writing to the AOF file: No space left on device".into());
    })
}

#[test]
fn a_primary_that_refuses_writes_for_a_full_disk_is_no_failover_reason() {
    // Replicas linked, one behind: failing over could only lose data, and long past
    // afterSeconds the primary stays (its readiness probe may have failed on MISCONF).
    for ready in [true, false] {
        let nodes = vec![
            with(full_primary(0, 1000), |n| n.pod_ready = ready),
            replica(1, 0, 990),
            replica(2, 0, 1000),
        ];
        assert!(primary_available(&listed(nodes.clone()), &prev(Some(0), true)), "ready {ready}");
        let plan = plan_for(nodes, prev(Some(0), true), Some(600));
        assert_eq!(plan.phase, Phase::Steady, "pod ready {ready}: {}", plan.message);
        assert_eq!((plan.primary, plan.epoch), (Some(pod(0)), 3));
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    }
    // The same primary down for real (no answer) is failed over: the rule is MISCONF only.
    let nodes = vec![unreachable(0), replica_down(1, 0, 990, Some(1)), replica_down(2, 0, 1000, Some(1))];
    assert_eq!(plan_for(nodes, prev(Some(0), true), Some(6)).phase, Phase::FailingOver);
    // An unready master that does not refuse writes still counts as unavailable.
    let nodes = vec![with(master(0, 1000, 10), |n| n.pod_ready = false), replica(1, 0, 990)];
    assert!(!primary_available(&listed(nodes), &prev(Some(0), true)));
}

#[test]
fn a_new_primary_whose_pod_is_not_ready_yet_is_not_failed_over_until_its_grace_ends() {
    // A fresh stack: pod 0 answered and was elected at once; the kubelet's probes have
    // not marked it Ready yet. Its empty replica must not replace it after afterSeconds.
    let starting = |uptime| {
        let p = with(master(0, 0, 0), |n| n.pod_ready = false);
        let p = with_info(p, |i| i.uptime_secs = uptime);
        vec![p, replica(1, 0, 0), replica(2, 0, 0)]
    };
    let plan = plan_for(starting(READY_GRACE_SECS - 1), prev(Some(0), false), Some(6));
    assert_eq!(plan.phase, Phase::Steady, "{}", plan.message);
    assert_eq!((plan.primary, plan.epoch), (Some(pod(0)), 3));
    assert!(primary_available(&listed(starting(3)), &prev(Some(0), false)));
    // Past the grace an unready master counts as unavailable again, as before.
    assert!(!primary_available(&listed(starting(READY_GRACE_SECS)), &prev(Some(0), false)));
    let plan = plan_for(starting(READY_GRACE_SECS), prev(Some(0), false), Some(6));
    assert_eq!(plan.phase, Phase::FailingOver, "{}", plan.message);
}

#[test]
fn a_primary_that_answers_as_a_replica_is_failed_over_without_waiting() {
    // kill -9 and a restart: the start script brought it back as a replica of nobody.
    let restarted = with_info(replica_down(0, 0, 0, None), |i| {
        i.master_host = Some("127.0.0.1".into());
        i.master_port = Some(1);
        i.keys = 9;
    });
    let nodes = vec![restarted, replica_down(1, 0, 990, Some(1)), replica_down(2, 0, 1000, Some(1))];
    let plan = plan_for(nodes, prev(Some(0), true), Some(0));
    assert_eq!(plan.phase, Phase::FailingOver, "{}", plan.message);
    assert_eq!(plan.primary, Some(pod(2)));
    assert!(plan.actions.contains(&promote(2)));
    assert!(plan.actions.contains(&follow(0, 2, false)), "{:?}", plan.actions);
}

#[test]
fn a_hand_over_that_redis_completed_unrecorded_is_adopted_not_undone() {
    // FAILOVER TO 1 completed, then the operator died before recording it: 0 follows 1,
    // both continued history H (replid2), 2 is chained behind 0.
    let new_id = "r-after-handover";
    let moved = |mut n: NodeObservation| {
        let i = n.info.as_mut().unwrap();
        i.replid = new_id.into();
        i.replid2 = H.into();
        n
    };
    let nodes = vec![moved(replica(0, 1, 1000)), moved(master(1, 1000, 10)), moved(replica(2, 0, 1000))];
    let plan = plan_for(nodes, prev(Some(0), true), Some(0));
    assert_eq!(plan.phase, Phase::Switchover, "{}", plan.message);
    assert_eq!(plan.primary, Some(pod(1)));
    assert_eq!(plan.epoch, 4);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, NodeAction::Promote { .. } | NodeAction::Follow { fence: true, .. }))
    );
    assert!(plan.actions.contains(&follow(2, 1, false)), "the chained replica follows 1: {:?}", plan.actions);
}

#[test]
fn a_master_of_another_history_is_not_adopted() {
    // 0 restarted and full-synced from a stray master 1 (no shared replid2): not a hand-over.
    let nodes = vec![
        with_info(replica(0, 1, 10), |i| i.replid = "stray".into()),
        with_info(master(1, 10, 1), |i| i.replid = "stray".into()),
        replica_down(2, 0, 1000, Some(1)),
    ];
    let plan = plan_for(nodes, prev(Some(0), true), Some(0));
    assert_ne!(plan.primary, Some(pod(1)), "{}", plan.message);
}

#[test]
fn after_every_pod_restarted_the_last_primary_with_data_is_chosen_again() {
    // A node reboot: every pod came back as a replica of nobody, never linked since.
    let cold = |ord: u32, keys: u64| {
        with_info(replica_down(ord, ord, 0, None), |i| {
            i.master_host = Some("127.0.0.1".into());
            i.master_port = Some(1);
            i.keys = keys;
        })
    };
    let plan = plan_for(vec![cold(0, 5), cold(1, 5), cold(2, 5)], prev(Some(1), true), Some(0));
    assert_eq!(plan.phase, Phase::Bootstrapping, "{}", plan.message);
    assert_eq!(plan.primary, Some(pod(1)), "{}", plan.message);
    assert_eq!(plan.epoch, 4);
    assert!(plan.actions.contains(&promote(1)));
    // The last primary came back empty (lost its volume): a node with data wins.
    let plan = plan_for(vec![cold(0, 5), cold(1, 0), cold(2, 5)], prev(Some(1), true), Some(0));
    assert_eq!(plan.primary, Some(pod(0)), "{}", plan.message);
    // One replica still had a link when the primary died: a failover, not a cold start.
    let plan = plan_for(
        vec![cold(0, 5), replica_down(1, 0, 100, Some(2)), replica_down(2, 0, 90, Some(2))],
        prev(Some(0), true),
        Some(0),
    );
    assert_eq!(plan.phase, Phase::FailingOver, "{}", plan.message);
    assert_eq!(plan.primary, Some(pod(1)));
}

/// The nodes after a failover from 0 to 1 that an operator began but did not record:
/// 1 was promoted (new history, 0's as replid2, taken over at offset 1000); `repointed`
/// says whether 2 already follows 1.
fn half_done_failover(repointed: bool) -> Vec<NodeObservation> {
    let mut x = master(1, 1100, 10);
    let xi = x.info.as_mut().unwrap();
    xi.replid = "r-new".into();
    xi.replid2 = H.into();
    xi.second_offset = 1001;
    let other = if repointed {
        with_info(replica(2, 1, 1050), |i| {
            i.replid = "r-new".into();
            i.replid2 = H.into();
        })
    } else {
        replica_down(2, 0, 990, Some(3))
    };
    vec![unreachable(0), x, other]
}

#[test]
fn a_failover_the_last_operator_began_is_finished_not_undone() {
    for repointed in [false, true] {
        let plan = plan_for(half_done_failover(repointed), prev(Some(0), true), Some(0));
        assert_eq!(plan.phase, Phase::FailingOver, "{}", plan.message);
        assert_eq!(plan.primary, Some(pod(1)), "repointed={repointed}: {}", plan.message);
        assert_eq!(plan.epoch, 4);
        assert!(
            !plan
                .actions
                .iter()
                .any(|a| matches!(a, NodeAction::Promote { .. } | NodeAction::Follow { fence: true, .. })),
            "{:?}",
            plan.actions
        );
        if !repointed {
            assert!(plan.actions.contains(&follow(2, 1, false)), "{:?}", plan.actions);
        }
    }
}

#[test]
fn a_promoted_master_missing_writes_a_replica_has_is_not_adopted() {
    // 2 still follows 0 and got further than what 1 took over: 1 lacks acknowledged writes.
    let mut nodes = half_done_failover(false);
    nodes[2].info.as_mut().unwrap().offset = 1500;
    let plan = plan_for(nodes, prev(Some(0), true), Some(100));
    assert_ne!(plan.primary, Some(pod(1)), "{}", plan.message);
    // A master of another history is no promotion of 0's either.
    let mut nodes = half_done_failover(false);
    nodes[1].info.as_mut().unwrap().replid2 = "r-other".into();
    let plan = plan_for(nodes, prev(Some(0), true), Some(100));
    assert_ne!(plan.primary, Some(pod(1)), "{}", plan.message);
}

// Requested switchovers (`counterstack.io/switchover`, `kubectl counterstack switchover`).

fn request(to: Option<u32>) -> SwitchoverRequest {
    SwitchoverRequest { token: "2026-01-01T00:00:00Z".into(), to: to.map(pod) }
}

fn requested_plan(nodes: Vec<NodeObservation>, spec: Spec, to: Option<u32>) -> Plan {
    decide(&Input {
        nodes: &listed(nodes),
        spec,
        prev: prev(Some(0), true),
        switchover: Some(request(to)),
        primary_unavailable_for: None,
    })
}

fn refusal(plan: &Plan) -> String {
    match &plan.switchover {
        Some(SwitchoverVerdict::Refuse(why)) => why.clone(),
        other => panic!("expected a refusal, got {other:?} ({})", plan.message),
    }
}

#[test]
fn a_requested_switchover_picks_the_most_advanced_replica() {
    let plan =
        requested_plan(vec![master(0, 1000, 10), replica(1, 0, 1000), replica(2, 0, 990)], spec(2, 1), None);
    assert_eq!(plan.switchover, Some(SwitchoverVerdict::Start { to: pod(1) }), "{}", plan.message);
    assert_eq!(plan.phase, Phase::Switchover);
    assert_eq!((plan.primary, plan.epoch), (Some(pod(1)), 4));
    assert_eq!(plan.actions, vec![handover(0, 1, ep(1)), follow(2, 1, false)]);
    assert!(plan.message.contains("2026-01-01T00:00:00Z"), "the message names the request: {}", plan.message);
}

#[test]
fn a_requested_switchover_honours_the_target() {
    let plan = requested_plan(
        vec![master(0, 1000, 10), replica(1, 0, 1000), replica(2, 0, 990)],
        spec(2, 1),
        Some(2),
    );
    assert_eq!(plan.switchover, Some(SwitchoverVerdict::Start { to: pod(2) }), "{}", plan.message);
    assert_eq!(plan.actions, vec![handover(0, 2, ep(2)), follow(1, 2, false)]);
}

#[test]
fn a_requested_switchover_to_a_pod_that_is_no_linked_replica_is_refused() {
    let healthy = || vec![master(0, 1000, 10), replica(1, 0, 1000), replica(2, 0, 990)];
    let not_ours = requested_plan(healthy(), spec(2, 1), Some(7));
    assert!(refusal(&not_ours).contains("demo-redis-7 is not a Redis pod of this CounterApp"));
    assert!(not_ours.actions.is_empty());
    let the_primary = requested_plan(healthy(), spec(2, 1), Some(0));
    assert!(refusal(&the_primary).contains("already the primary"));
    // Replica 2's link is down: the primary does not list it, it may not take over.
    let down = requested_plan(
        vec![master(0, 1000, 10), replica(1, 0, 1000), replica_down(2, 0, 990, Some(3))],
        spec(2, 1),
        Some(2),
    );
    assert!(refusal(&down).contains("demo-redis-2 is not a replica linked to primary demo-redis-0"));
    assert!(!down.actions.iter().any(|a| matches!(a, NodeAction::Handover { .. })));
    assert_eq!(down.primary, Some(pod(0)));
}

#[test]
fn a_requested_switchover_without_replicas_is_refused() {
    let plan = requested_plan(vec![master(0, 1000, 10)], spec(0, 0), None);
    assert!(refusal(&plan).contains("no replicas"), "{}", refusal(&plan));
}

#[test]
fn a_requested_switchover_is_refused_while_paused() {
    let paused = Spec { paused: true, ..spec(2, 1) };
    let plan =
        requested_plan(vec![master(0, 1000, 10), replica(1, 0, 1000), replica(2, 0, 990)], paused, None);
    assert!(refusal(&plan).contains("paused"));
    assert!(plan.actions.is_empty());
}

#[test]
fn a_requested_switchover_is_refused_during_a_failover() {
    let nodes = vec![unreachable(0), replica_down(1, 0, 1000, Some(1)), replica_down(2, 0, 990, Some(1))];
    let plan = decide(&Input {
        nodes: &listed(nodes),
        spec: spec(2, 1),
        prev: prev(Some(0), true),
        switchover: Some(request(None)),
        primary_unavailable_for: Some(Duration::from_secs(1)),
    });
    assert!(refusal(&plan).contains("a failover is in progress (PrimaryUnavailable"), "{}", refusal(&plan));
}

#[test]
fn a_requested_switchover_waits_while_a_replica_is_repointed() {
    // Replica 2 follows nobody yet (it just restarted): hand over once it follows.
    let plan = requested_plan(
        vec![master(0, 1000, 10), replica(1, 0, 1000), replica_down(2, 9, 0, None)],
        spec(2, 1),
        None,
    );
    assert!(matches!(plan.switchover, Some(SwitchoverVerdict::Wait(_))), "{:?}", plan.switchover);
    assert_eq!(plan.actions, vec![follow(2, 0, false)]);
    assert_eq!(plan.primary, Some(pod(0)));
}

#[test]
fn a_switchover_token_is_acted_on_once() {
    let done = |phase| SwitchoverStatus { request: "t1".into(), phase, ..SwitchoverStatus::default() };
    let (succeeded, failed, waiting) =
        (done(SwitchoverPhase::Succeeded), done(SwitchoverPhase::Failed), done(SwitchoverPhase::InProgress));
    assert_eq!(pending_request(Some("t1"), None, &[&succeeded]), None);
    assert_eq!(pending_request(Some("t1"), Some("x"), &[&waiting, &failed]), None);
    assert_eq!(
        pending_request(Some("t1"), Some(" "), &[&waiting]),
        Some(SwitchoverRequest { token: "t1".into(), to: None }),
        "an InProgress result does not answer its token"
    );
    assert_eq!(
        pending_request(Some("t2"), Some("demo-redis-2"), &[&succeeded]),
        Some(SwitchoverRequest { token: "t2".into(), to: Some("demo-redis-2".into()) })
    );
    assert_eq!(pending_request(Some(""), None, &[]), None);
    assert_eq!(pending_request(None, Some("demo-redis-2"), &[]), None);
}

/// Waking from hibernation: every pod restarts as a replica that never linked. The last
/// primary (pod 1) is chosen again once every pod exists and answers, even though a
/// replica answers first; a half-started stack is never failed over.
#[test]
fn waking_from_hibernation_chooses_the_last_primary_once_every_pod_answers() {
    let waking = Spec { waking: true, ..spec(2, 1) };
    let restarted = |ord: u32, keys: u64| {
        with_info(node(ord, info(Role::Replica, 0, keys)), |i| {
            i.link_up = false;
            i.link_down_since_secs = None;
        })
    };
    let decide_for = |nodes: Vec<NodeObservation>| {
        let nodes = listed(nodes);
        decide(&Input {
            nodes: &nodes,
            spec: waking,
            prev: prev(Some(1), true),
            switchover: None,
            primary_unavailable_for: Some(Duration::from_secs(60)),
        })
    };
    // Two of three pods exist: wait, whatever they answer.
    let plan = decide_for(vec![restarted(0, 10), restarted(2, 10)]);
    assert_eq!((plan.phase, plan.epoch, plan.actions.len()), (Phase::Bootstrapping, 3, 0), "{plan:?}");
    // Every pod exists, the last primary does not answer yet: wait (no failover).
    let plan = decide_for(vec![restarted(0, 10), unreachable(1), restarted(2, 10)]);
    assert_eq!((plan.epoch, plan.actions.len()), (3, 0), "{plan:?}");
    assert_eq!(plan.primary.as_deref(), Some(pod(1).as_str()));
    // Every pod answers: the last primary again, the others follow it.
    let plan = decide_for(vec![restarted(0, 10), restarted(1, 10), restarted(2, 10)]);
    assert_eq!(plan.primary.as_deref(), Some(pod(1).as_str()));
    assert_eq!(plan.epoch, 4);
    assert!(plan.actions.contains(&promote(1)), "{plan:?}");
    assert!(plan.actions.contains(&follow(0, 1, false)), "{plan:?}");
    assert!(plan.actions.contains(&follow(2, 1, false)), "{plan:?}");
    // Without the hint the same half-started stack is a primary that is gone.
    let nodes = listed(vec![restarted(0, 10), unreachable(1), restarted(2, 10)]);
    let plan = decide(&Input {
        nodes: &nodes,
        spec: spec(2, 1),
        prev: prev(Some(1), true),
        switchover: None,
        primary_unavailable_for: Some(Duration::from_secs(60)),
    });
    assert_ne!(plan.phase, Phase::Bootstrapping, "{plan:?}");
}
