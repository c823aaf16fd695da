//! PURE topology decision: observations + spec + previous state -> [`Plan`].
//!
//! No I/O and no clock: how long the primary has been unavailable is measured by the
//! caller and passed in. The rules, and why each keeps acknowledged writes, are in
//! docs/replication.md.

use std::cmp::Reverse;
use std::time::Duration;

use super::node::NodeAddr;
use super::observe::{NodeInfo, NodeObservation, Role};
use crate::api::{CounterAppSpec, SwitchoverPhase, SwitchoverStatus};

/// A replica whose offset trails the primary by at most this many bytes counts as back
/// in sync during planned restarts.
pub const IN_SYNC_LAG_BYTES: i64 = 1024 * 1024;
/// A restarted replica counts as back only after this many seconds up: right after its
/// full sync it rewrites its AOF, and restarting the next replica then was seen to stall
/// `WAIT` for most of a second.
pub const SETTLE_SECS: u64 = 2;
/// A Redis process younger than this whose pod is not Ready yet is starting, not down:
/// the kubelet's startup and readiness probes (5 s periods) mark a new pod Ready 5–15 s
/// after Redis first answers the operator, which elects it at once. Counted as down, a
/// fresh stack's first primary was failed over to its empty replica after afterSeconds.
pub const READY_GRACE_SECS: u64 = 30;
/// How long `FAILOVER TO` may wait for the target to catch up before Redis aborts it
/// (and the old primary resumes writes).
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Requeue of a pass that waits for something the Redis health checks (or the pod
/// watch) will report: a safety net, not a poll (the operator is woken on the change).
pub const WAIT_FOR_CHANGE: Duration = Duration::from_secs(60);
/// A replica whose link went down at most this long before the primary was seen
/// unavailable still counts as having had a live link.
pub const LINK_RECENT_SLACK: Duration = Duration::from_secs(10);

/// The parts of the spec the decision depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Replicas besides the primary (`n`).
    pub replicas: u32,
    /// Replicas that confirm each acknowledged write (`k`, `WAIT k`).
    pub sync_replicas: u32,
    pub failover_enabled: bool,
    pub failover_after: Duration,
    pub paused: bool,
    /// The stack wakes from hibernation (`status.redis.hibernated`): all pods restart.
    pub waking: bool,
}

impl Spec {
    pub fn from_app(spec: &CounterAppSpec) -> Self {
        Self {
            replicas: u32::try_from(spec.redis.replicas).unwrap_or(0),
            sync_replicas: u32::try_from(spec.sync_replicas()).unwrap_or(0),
            failover_enabled: spec.redis.failover.enabled,
            failover_after: Duration::from_secs(
                u64::try_from(spec.redis.failover.after_seconds).unwrap_or(1),
            ),
            paused: spec.paused,
            waking: false,
        }
    }
}

/// What was decided before this pass (status, or the manager's memory when newer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prev {
    pub primary: Option<String>,
    pub epoch: i64,
    pub holds_data: bool,
    /// Replication id the primary last reported; replicas sharing it share its history,
    /// so their offsets compare.
    pub primary_replid: Option<String>,
}

/// Input of one decision.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub nodes: &'a [NodeObservation],
    pub spec: Spec,
    pub prev: Prev,
    /// How long `prev.primary` has been continuously unavailable (`None`: available).
    pub primary_unavailable_for: Option<Duration>,
    /// A switchover requested through the CounterApp's annotations and not answered yet
    /// ([`pending_request`]).
    pub switchover: Option<SwitchoverRequest>,
}

/// A requested switchover (`counterstack.io/switchover` and `counterstack.io/switchover-to`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchoverRequest {
    /// The request token, as the annotation has it.
    pub token: String,
    /// The pod to hand over to; `None`: the most advanced replica in sync.
    pub to: Option<String>,
}

/// What a pass does with a pending switchover request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchoverVerdict {
    /// Hand the primary over to `to` now (the plan's `Handover` action).
    Start { to: String },
    /// Accepted, but replication is not settled yet: the message says what it waits for.
    Wait(String),
    /// Refused; the message says why. The token is answered (Failed) and not retried.
    Refuse(String),
}

/// The request the annotations make (`token`, `to`), unless a recorded result already
/// answers that token. A result still `InProgress` does not: the request stays pending.
pub fn pending_request(
    token: Option<&str>,
    to: Option<&str>,
    recorded: &[&SwitchoverStatus],
) -> Option<SwitchoverRequest> {
    let token = token.filter(|t| !t.trim().is_empty())?;
    if recorded.iter().any(|r| r.request == token && r.phase != SwitchoverPhase::InProgress) {
        return None;
    }
    Some(SwitchoverRequest {
        token: token.to_string(),
        to: to.map(str::trim).filter(|t| !t.is_empty()).map(str::to_string),
    })
}

/// One step to apply, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// `REPLICAOF <primary>` on `pod`. `fence` marks a node that currently is a master:
    /// if demoting it fails, nothing after it may run (no second writable primary).
    Follow { pod: String, primary: String, fence: bool },
    /// `REPLICAOF NO ONE` on `pod`.
    Promote { pod: String },
    /// `CONFIG SET min-replicas-to-write value` on `pod`.
    SetMinReplicas { pod: String, value: i64 },
    /// `FAILOVER TO <target> TIMEOUT` on `from` (planned switchover), then wait until
    /// done. `target` is `to` as `from` lists it among its replicas: Redis knows a replica
    /// by the address it announced or connected from, not by the name others dial.
    Handover { from: String, to: String, target: NodeAddr, timeout: Duration },
}

/// Why a requested switchover is refused while `spec.paused` is true.
pub const PAUSED_REFUSAL: &str = "spec.paused is true: the operator changes no roles while paused";

/// Where replication stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Paused,
    /// No primary chosen yet.
    Bootstrapping,
    Steady,
    /// The primary is unavailable; waiting `failover.afterSeconds` (or failover is off).
    PrimaryUnavailable,
    /// The primary is gone and not enough replicas can be inspected to promote safely.
    FailoverBlocked,
    /// Promoting a replica now.
    FailingOver,
    /// Restarting outdated replicas one at a time.
    RollingReplicas,
    /// Handing the primary over with FAILOVER TO.
    Switchover,
}

impl Phase {
    /// Condition reason for this phase.
    pub fn reason(self) -> &'static str {
        match self {
            Phase::Paused => "Paused",
            Phase::Bootstrapping => "Bootstrapping",
            Phase::Steady => "ReplicationHealthy",
            Phase::PrimaryUnavailable => "PrimaryUnavailable",
            Phase::FailoverBlocked => "FailoverBlocked",
            Phase::FailingOver => "FailoverInProgress",
            Phase::RollingReplicas => "RollingUpdate",
            Phase::Switchover => "SwitchoverInProgress",
        }
    }
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub phase: Phase,
    /// The primary once `actions` are applied.
    pub primary: Option<String>,
    pub epoch: i64,
    pub holds_data: bool,
    pub actions: Vec<NodeAction>,
    /// Pods the operator must delete (planned restarts; the StatefulSet uses OnDelete).
    pub delete_pods: Vec<String>,
    /// Why, for logs, Events and condition messages.
    pub message: String,
    pub requeue_after: Option<Duration>,
    /// The answer to `Input::switchover`, when there was a request.
    pub switchover: Option<SwitchoverVerdict>,
}

impl Plan {
    fn keep(prev: &Prev, phase: Phase, message: impl Into<String>, requeue_after: Option<Duration>) -> Self {
        Plan {
            phase,
            primary: prev.primary.clone(),
            epoch: prev.epoch,
            holds_data: prev.holds_data,
            actions: vec![],
            delete_pods: vec![],
            message: message.into(),
            requeue_after,
            switchover: None,
        }
    }

    /// `min-replicas-to-write` the plan's primary gets (its `SetMinReplicas` action),
    /// 0 when it sets none.
    pub fn min_replicas(&self) -> i64 {
        self.actions
            .iter()
            .find_map(|a| match a {
                NodeAction::SetMinReplicas { pod, value } if Some(pod) == self.primary.as_ref() => {
                    Some(*value)
                }
                _ => None,
            })
            .unwrap_or(0)
    }

    /// The primary changes when these actions succeed.
    pub fn changes_primary(&self, prev: &Prev) -> bool {
        self.primary != prev.primary
    }
}

/// Whether the previous primary can serve writes now. The manager uses this to time
/// `failover.afterSeconds`.
pub fn primary_available(nodes: &[NodeObservation], prev: &Prev) -> bool {
    let Some(p) = prev.primary.as_deref().and_then(|p| nodes.iter().find(|n| n.pod == p)) else {
        return prev.primary.is_none();
    };
    matches!(primary_state(p, prev.holds_data), PrimaryState::Healthy)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PrimaryState {
    Healthy,
    /// Down, frozen, not ready, loading or terminating: it may come back, so wait
    /// `failover.afterSeconds` before failing over.
    Unavailable,
    /// Answers as a master but lost its data: fail over now, waiting only lets replicas
    /// copy its empty dataset.
    LostData,
    /// Answers as a replica: it restarted (a Redis pod always starts as one) or someone
    /// demoted it. It never takes writes again by itself, so waiting gains nothing.
    Demoted,
}

fn primary_state(p: &NodeObservation, holds_data: bool) -> PrimaryState {
    match &p.info {
        Some(i) if i.role == Role::Master && !i.loading && holds_data && i.is_empty() => {
            PrimaryState::LostData
        }
        // A master that refuses writes because it cannot persist (`-MISCONF`: a full or
        // failing disk) is alive and holds every acknowledged write: no failover reason,
        // even while its pod is unready (a probe that wants PONG fails on it). A replica
        // may hold less, and its volume is no bigger; Redis resumes writes by itself once
        // the volume has space again. A master younger than READY_GRACE_SECS is starting:
        // its pod's probes have not run yet.
        Some(i)
            if i.role == Role::Master
                && !i.loading
                && (p.pod_ready || i.persistence.refuses_writes() || i.uptime_secs < READY_GRACE_SECS)
                && !p.terminating =>
        {
            PrimaryState::Healthy
        }
        Some(i) if i.role == Role::Replica && !i.loading => PrimaryState::Demoted,
        _ => PrimaryState::Unavailable,
    }
}

/// Decide the topology, and answer a requested switchover.
pub fn decide(input: &Input) -> Plan {
    let plan = topology(input);
    match &input.switchover {
        Some(req) => requested(input, plan, req),
        None => plan,
    }
}

/// Answer a requested switchover given the plan the topology needs anyway. Only a
/// steady stack with a healthy primary hands over; everything else is refused with the
/// reason (the token is then answered, never retried in a loop).
fn requested(input: &Input, mut plan: Plan, req: &SwitchoverRequest) -> Plan {
    let refuse = |mut plan: Plan, why: String| {
        plan.switchover = Some(SwitchoverVerdict::Refuse(why));
        plan
    };
    if input.spec.paused {
        return refuse(plan, PAUSED_REFUSAL.into());
    }
    match plan.phase {
        Phase::Steady => {}
        Phase::Bootstrapping => return refuse(plan, "Redis has no primary yet".into()),
        Phase::RollingReplicas => {
            let why = format!("a planned rolling restart is in progress ({})", plan.message);
            return refuse(plan, why);
        }
        Phase::Switchover => {
            let why = format!("a hand-over is already in progress ({})", plan.message);
            return refuse(plan, why);
        }
        other => {
            let why = format!("a failover is in progress ({}: {})", other.reason(), plan.message);
            return refuse(plan, why);
        }
    }
    let Some(p) = plan.primary.as_deref().and_then(|p| input.nodes.iter().find(|n| n.pod == p)) else {
        return refuse(plan, "Redis has no primary".into());
    };
    let others: Vec<&str> = input.nodes.iter().filter(|n| n.pod != p.pod).map(|n| n.pod.as_str()).collect();
    if others.is_empty() || input.spec.replicas == 0 {
        return refuse(plan, "Redis has no replicas to hand the primary over to".into());
    }
    if let Some(to) = req.to.as_deref() {
        if to == p.pod {
            let why = format!("{to} is already the primary");
            return refuse(plan, why);
        }
        if !others.contains(&to) {
            let why =
                format!("{to} is not a Redis pod of this CounterApp (its replicas: {})", others.join(", "));
            return refuse(plan, why);
        }
    }
    if plan.actions.iter().any(|a| matches!(a, NodeAction::Follow { .. })) {
        let why = format!("waiting until every replica follows {} before handing over", p.pod);
        plan.message = format!("switchover {}: {why}", req.token);
        plan.switchover = Some(SwitchoverVerdict::Wait(why));
        plan.requeue_after = Some(Duration::from_secs(1));
        return plan;
    }
    let why = format!("as requested (switchover {})", req.token);
    match handover(input, p, req.to.as_deref(), &why) {
        Some(mut h) => {
            // Keep this pass's min-replicas-to-write fixes in front of the hand-over.
            plan.actions.append(&mut h.actions);
            let to = h.primary.clone().unwrap_or_default();
            Plan { actions: plan.actions, switchover: Some(SwitchoverVerdict::Start { to }), ..h }
        }
        None => {
            let why = match req.to.as_deref() {
                Some(to) => format!(
                    "{to} is not a replica linked to primary {}: it must be ready, follow it with its link up, \
                     not be loading or syncing, and be listed online by the primary",
                    p.pod
                ),
                None => format!("no replica is linked to primary {} and listed online by it", p.pod),
            };
            refuse(plan, why)
        }
    }
}

/// Decide the topology (what replication needs, regardless of any request).
fn topology(input: &Input) -> Plan {
    let prev = &input.prev;
    if input.spec.paused {
        return Plan::keep(prev, Phase::Paused, "spec.paused is true: replication is not changed", None);
    }
    let Some(primary) = prev.primary.as_deref() else {
        return bootstrap(input);
    };
    if input.spec.waking {
        // Every pod stopped on purpose and starts again as a replica: choose as at
        // bootstrap (the last primary among those with the most data, once every pod
        // answers), never fail over from a half-started stack.
        let wanted = usize::try_from(input.spec.replicas).unwrap_or(usize::MAX).saturating_add(1);
        if input.nodes.len() < wanted {
            let msg = format!("waking from hibernation: {}/{wanted} Redis pods exist", input.nodes.len());
            return Plan::keep(prev, Phase::Bootstrapping, msg, Some(WAIT_FOR_CHANGE));
        }
        // A pod still loading its data would compare as empty.
        if let Some(n) = input.nodes.iter().find(|n| n.info.as_ref().is_some_and(|i| i.loading)) {
            let msg = format!("waking from hibernation: {} is loading its data", n.pod);
            return Plan::keep(prev, Phase::Bootstrapping, msg, Some(WAIT_FOR_CHANGE));
        }
        let mut plan = bootstrap(input);
        plan.message = format!("waking from hibernation; {}", plan.message);
        return plan;
    }
    let Some(p) = input.nodes.iter().find(|n| n.pod == primary) else {
        return failover(input, PrimaryState::Unavailable);
    };
    if let Some(x) = handed_over_to(input, p) {
        return adopt(input, p, x);
    }
    if p.terminating
        && let Some(plan) = handover(input, p, None, "because its pod is terminating")
    {
        return plan;
    }
    match primary_state(p, prev.holds_data) {
        PrimaryState::Healthy => steady(input, p),
        PrimaryState::Demoted if every_node_restarted(input) => {
            let mut plan = bootstrap(input);
            plan.message = format!("every Redis pod restarted; {}", plan.message);
            plan
        }
        other => failover(input, other),
    }
}

/// Every pod answers as a replica that never linked since it started, and none is a
/// master: the whole stack restarted (a node reboot, all pods deleted). No replica has a
/// live history to fail over to; choose again as at bootstrap, preferring the primary.
fn every_node_restarted(input: &Input) -> bool {
    input.nodes.iter().all(|n| {
        n.info.as_ref().is_some_and(|i| {
            i.role == Role::Replica && !i.link_up && i.link_down_since_secs.is_none() && !i.loading
        })
    })
}

/// `p` answers as a replica, linked to `x`, a master that continued p's replication
/// history (both name p's old history as `master_replid2`, which only a partial resync
/// after a promotion gives): a FAILOVER from p to x completed, though this operator never
/// recorded it (it died or failed between the hand-over and its status write).
fn handed_over_to<'a>(input: &'a Input, p: &NodeObservation) -> Option<&'a NodeObservation> {
    let pi = p.info.as_ref().filter(|i| i.role == Role::Replica && i.link_up && !i.replid2.is_empty())?;
    let x = input.nodes.iter().find(|n| n.pod != p.pod && pi.follows(&n.endpoint))?;
    let xi = x.info.as_ref().filter(|i| i.role == Role::Master && !i.loading)?;
    let same_history = xi.replid2 == pi.replid2
        && xi.replid == pi.replid
        && input.prev.primary_replid.as_ref().is_none_or(|r| *r == xi.replid2);
    same_history.then_some(x)
}

/// Make `x` the primary after a hand-over Redis reports done; the rest as in steady state.
fn adopt(input: &Input, p: &NodeObservation, x: &NodeObservation) -> Plan {
    let mut plan = steady(input, x);
    plan.phase = Phase::Switchover;
    plan.epoch = input.prev.epoch + 1;
    plan.message =
        format!("{} handed the primary over to {}: Redis reports it done; recording it", p.pod, x.pod);
    plan.delete_pods.clear();
    plan.requeue_after = Some(Duration::from_secs(1));
    plan
}

/// `FAILOVER TO` the most advanced replica that `p` lists as online and that follows it
/// with a live link. Redis pauses writes on `p` until the target has its whole stream,
/// then swaps roles: nothing acknowledged is lost, whatever `k`. `None` without a target.
/// `only`: that replica or none.
fn handover(input: &Input, p: &NodeObservation, only: Option<&str>, why: &str) -> Option<Plan> {
    let pi = p.info.as_ref().filter(|i| i.role == Role::Master && !i.loading)?;
    let (to, listed) = input
        .nodes
        .iter()
        .filter(|n| n.pod != p.pod && n.pod_ready && !n.terminating)
        .filter(|n| only.is_none_or(|o| n.pod == o))
        .filter_map(|n| {
            let i = n.info.as_ref()?;
            let linked = i.follows(&p.endpoint) && i.link_up && !i.loading && !i.sync_in_progress;
            let listed = n.listed_by(pi).filter(|l| l.online)?;
            linked.then_some((n, listed))
        })
        .max_by_key(|(n, _)| (n.info.as_ref().map_or(0, |i| i.offset), Reverse(n.ordinal)))?;
    let mut actions = vec![NodeAction::Handover {
        from: p.pod.clone(),
        to: to.pod.clone(),
        target: listed.addr.clone(),
        timeout: HANDOVER_TIMEOUT,
    }];
    // The other replicas follow the new primary at once: behind the old one (which is
    // about to stop) they would not count for its `WAIT k` / min-replicas-to-write.
    for n in input.nodes.iter().filter(|n| n.pod != p.pod && n.pod != to.pod && n.info.is_some()) {
        actions.push(NodeAction::Follow { pod: n.pod.clone(), primary: to.pod.clone(), fence: false });
    }
    Some(Plan {
        phase: Phase::Switchover,
        primary: Some(to.pod.clone()),
        epoch: input.prev.epoch + 1,
        holds_data: input.prev.holds_data || !pi.is_empty(),
        actions,
        delete_pods: vec![],
        message: format!("handing the primary over from {} to {} {why}", p.pod, to.pod),
        requeue_after: Some(Duration::from_secs(1)),
        switchover: None,
    })
}

/// `k + r > n`: how many replicas must be inspected so that at least one of them holds
/// every write acknowledged with `WAIT k`. With k = 0 nothing was promised beyond the
/// primary, so any one replica will do.
pub fn replicas_needed(spec: &Spec, n: u32) -> u32 {
    if spec.sync_replicas == 0 { 1.min(n) } else { (n + 1).saturating_sub(spec.sync_replicas) }
}

fn set_min_replicas(input: &Input, out: &mut Vec<NodeAction>) {
    let k = i64::from(input.spec.sync_replicas);
    for n in input.nodes {
        if let Some(i) = &n.info
            && i.min_replicas_to_write != Some(k)
        {
            out.push(NodeAction::SetMinReplicas { pod: n.pod.clone(), value: k });
        }
    }
}

/// Choose a primary: at first (no primary yet), or again after every pod restarted (then
/// the last primary is preferred among the nodes that hold data).
fn bootstrap(input: &Input) -> Plan {
    let prev = &input.prev;
    let last = prev.primary.as_deref();
    // Pods that answer (or change) wake the CounterApp through the health checks; pods
    // without an address yet through the pod watch when they get one.
    let wait = |msg: &str| Plan::keep(prev, Phase::Bootstrapping, msg, Some(WAIT_FOR_CHANGE));
    let reachable: Vec<(&NodeObservation, &NodeInfo)> =
        input.nodes.iter().filter_map(|n| n.info.as_ref().map(|i| (n, i))).collect();
    let with_data = reachable.iter().any(|(_, i)| !i.is_empty());
    let chosen = if with_data {
        // Volumes kept from an earlier stack: adopt the best dataset, but only once every
        // pod can be compared.
        if reachable.len() < input.nodes.len() {
            return wait("some Redis pods hold data; waiting for every pod before choosing a primary");
        }
        reachable
            .iter()
            .max_by_key(|(n, i)| {
                (
                    !i.is_empty(),
                    Some(n.pod.as_str()) == last,
                    i.role == Role::Master && i.connected_replicas > 0,
                    i.role == Role::Master,
                    i.keys,
                    Reverse(n.ordinal),
                )
            })
            .map(|(n, _)| *n)
    } else {
        let first = |(n, _): &&(&NodeObservation, &NodeInfo)| match last {
            Some(p) => n.pod == p,
            None => n.ordinal == 0,
        };
        match reachable.iter().find(first) {
            Some((n, _)) => Some(*n),
            None => return wait("waiting for Redis pod 0 (or the last primary) to answer"),
        }
    };
    let Some(chosen) = chosen else { return wait("no Redis pod answers yet") };
    let mut actions = vec![];
    // Demote other masters first: never two writable primaries.
    for (n, i) in &reachable {
        if n.pod != chosen.pod && i.role == Role::Master {
            actions.push(NodeAction::Follow { pod: n.pod.clone(), primary: chosen.pod.clone(), fence: true });
        }
    }
    if !chosen.is_master() {
        actions.push(NodeAction::Promote { pod: chosen.pod.clone() });
    }
    for (n, i) in &reachable {
        if n.pod != chosen.pod && i.role == Role::Replica && !i.follows(&chosen.endpoint) {
            actions.push(NodeAction::Follow {
                pod: n.pod.clone(),
                primary: chosen.pod.clone(),
                fence: false,
            });
        }
    }
    set_min_replicas(input, &mut actions);
    Plan {
        phase: Phase::Bootstrapping,
        primary: Some(chosen.pod.clone()),
        epoch: prev.epoch + 1,
        holds_data: prev.holds_data || chosen.info.as_ref().is_some_and(|i| !i.is_empty()),
        actions,
        delete_pods: vec![],
        message: format!("{} is the primary", chosen.pod),
        requeue_after: Some(Duration::from_secs(1)),
        switchover: None,
    }
}

fn steady(input: &Input, p: &NodeObservation) -> Plan {
    let prev = &input.prev;
    let mut actions = vec![];
    for n in input.nodes.iter().filter(|n| n.pod != p.pod) {
        match &n.info {
            // Fencing: a former primary that came back is demoted before anything else.
            Some(i) if i.role == Role::Master => {
                actions.push(NodeAction::Follow { pod: n.pod.clone(), primary: p.pod.clone(), fence: true })
            }
            Some(i) if !i.follows(&p.endpoint) => {
                actions.push(NodeAction::Follow { pod: n.pod.clone(), primary: p.pod.clone(), fence: false })
            }
            _ => {}
        }
    }
    actions.sort_by_key(|a| !matches!(a, NodeAction::Follow { fence: true, .. }));
    set_min_replicas(input, &mut actions);
    let p_info = p.info.as_ref();
    let holds_data = prev.holds_data || p_info.is_some_and(|i| !i.is_empty());
    let mut plan = Plan {
        phase: Phase::Steady,
        primary: Some(p.pod.clone()),
        epoch: prev.epoch,
        holds_data,
        actions,
        delete_pods: vec![],
        message: format!("{} is the primary", p.pod),
        requeue_after: None,
        switchover: None,
    };
    let replicas: Vec<&NodeObservation> = input.nodes.iter().filter(|n| n.pod != p.pod).collect();
    let p_offset = p_info.map_or(0, |i| i.offset);
    let in_sync = |n: &NodeObservation| {
        n.pod_ready
            && !n.terminating
            && n.info.as_ref().is_some_and(|i| {
                i.follows(&p.endpoint)
                    && i.link_up
                    && !i.sync_in_progress
                    && !i.loading
                    && !i.persisting
                    && i.uptime_secs >= SETTLE_SECS
                    && p_offset - i.offset <= IN_SYNC_LAG_BYTES
            })
    };
    // Both views must agree: each replica says it is linked and close, and the primary
    // sees all of them online and acknowledging (it only counts those for WAIT).
    let replica_count = u32::try_from(replicas.len()).unwrap_or(u32::MAX);
    let all_in_sync = replicas.iter().all(|n| in_sync(n))
        && replica_count >= input.spec.replicas
        && p_info.is_some_and(|i| i.online_replicas >= replica_count);
    if !all_in_sync {
        // Links coming up wake the CounterApp (health checks); this is a safety net.
        plan.requeue_after = Some(WAIT_FOR_CHANGE);
    }
    let outdated = replicas.iter().any(|n| n.outdated) || p.outdated;
    if !outdated {
        return plan;
    }
    plan.phase = Phase::RollingReplicas;
    plan.requeue_after = Some(Duration::from_secs(1));
    if plan.actions.iter().any(|a| matches!(a, NodeAction::Follow { .. })) || !all_in_sync {
        plan.message = "planned restart waits until every replica is back in sync".into();
        return plan;
    }
    // One replica at a time, highest ordinal first (as a StatefulSet rolls).
    if let Some(r) = replicas.iter().filter(|n| n.outdated).max_by_key(|n| n.ordinal) {
        plan.delete_pods.push(r.pod.clone());
        plan.message = format!("restarting replica {} to apply the new revision", r.pod);
        return plan;
    }
    // Only the primary is outdated: hand over to the most advanced replica, then (next
    // passes) it is an outdated replica and gets restarted like the others.
    if replicas.is_empty() {
        plan.delete_pods.push(p.pod.clone());
        plan.message = format!("restarting {} (no replica to hand over to)", p.pod);
        return plan;
    }
    match handover(input, p, None, "before restarting it") {
        Some(mut h) => {
            // Keep min-replicas-to-write fixes of this pass in front of the hand-over.
            plan.actions.append(&mut h.actions);
            Plan { actions: plan.actions, ..h }
        }
        None => {
            plan.message = format!("planned restart waits until {} lists a replica as online", p.pod);
            plan
        }
    }
}

/// The one master besides `p` that a failover promoted from p's history (its
/// `master_replid2`) and that holds everything any reachable replica of that history
/// has: a promotion whose record was lost (the operator died between `REPLICAOF NO ONE`
/// and its status write). Every replica still following p must be on that history and
/// no further along; every node following it must be on its new history.
fn promoted_from<'a>(input: &'a Input, p: &str) -> Option<&'a NodeObservation> {
    let p_ep = input.nodes.iter().find(|n| n.pod == p).map(|n| &n.endpoint)?;
    let mut masters = input.nodes.iter().filter(|n| n.pod != p && n.is_master());
    let x = masters.next()?;
    if masters.next().is_some() {
        return None;
    }
    let xi = x.info.as_ref().filter(|i| !i.replid2.is_empty() && !i.loading)?;
    if input.prev.primary_replid.as_ref().is_some_and(|r| *r != xi.replid2) {
        return None;
    }
    let replicas: Vec<&NodeInfo> = input.nodes.iter().filter_map(|n| n.info.as_ref()).collect();
    let of_p: Vec<&&NodeInfo> = replicas.iter().filter(|i| i.follows(p_ep)).collect();
    let of_x: Vec<&&NodeInfo> = replicas.iter().filter(|i| i.follows(&x.endpoint)).collect();
    let continued = of_p.iter().all(|i| i.replid == xi.replid2 && i.offset <= xi.second_offset)
        && of_x.iter().all(|i| i.replid == xi.replid)
        && !(of_p.is_empty() && of_x.is_empty());
    continued.then_some(x)
}

fn failover(input: &Input, state: PrimaryState) -> Plan {
    let prev = &input.prev;
    let primary = prev.primary.clone().unwrap_or_default();
    if let Some(x) = promoted_from(input, &primary) {
        let mut plan = steady(input, x);
        plan.phase = Phase::FailingOver;
        plan.epoch = prev.epoch + 1;
        plan.delete_pods.clear();
        plan.requeue_after = Some(Duration::from_secs(1));
        plan.message = format!(
            "{} was promoted from {primary}'s history and holds all its replicas have; finishing that failover",
            x.pod
        );
        return plan;
    }
    let n = input.spec.replicas.max(u32::try_from(input.nodes.len().saturating_sub(1)).unwrap_or(u32::MAX));
    let down_for = input.primary_unavailable_for.unwrap_or_default();
    if !input.spec.failover_enabled || n == 0 {
        let why = if n == 0 { "Redis has no replicas" } else { "failover is disabled" };
        return Plan::keep(
            prev,
            Phase::PrimaryUnavailable,
            format!("primary {primary} is unavailable and {why}; waiting for it to come back"),
            Some(WAIT_FOR_CHANGE),
        );
    }
    if state == PrimaryState::Unavailable && down_for < input.spec.failover_after {
        let left = input.spec.failover_after - down_for;
        return Plan::keep(
            prev,
            Phase::PrimaryUnavailable,
            format!(
                "primary {primary} unavailable for {:.1}s; failing over after {}s",
                down_for.as_secs_f64(),
                input.spec.failover_after.as_secs()
            ),
            Some(left.max(Duration::from_millis(100))),
        );
    }
    let p_node = input.nodes.iter().find(|x| x.pod == primary);
    let Some(p_ep) = p_node.map(|x| &x.endpoint) else {
        // The primary's pod object is gone: its replicas still name its stable endpoint,
        // but without the pod we cannot tell which it is. Wait for the StatefulSet.
        return Plan::keep(
            prev,
            Phase::FailoverBlocked,
            format!("pod {primary} does not exist; waiting for it"),
            Some(WAIT_FOR_CHANGE),
        );
    };
    let link_limit = down_for + input.spec.failover_after + LINK_RECENT_SLACK;
    let following: Vec<(&NodeObservation, &NodeInfo)> = input
        .nodes
        .iter()
        .filter(|x| x.pod != primary && !x.terminating)
        .filter_map(|x| x.info.as_ref().map(|i| (x, i)))
        .filter(|(_, i)| i.follows(p_ep) && !i.loading && !i.sync_in_progress)
        .filter(|(_, i)| {
            i.link_up || i.link_down_since_secs.is_some_and(|s| Duration::from_secs(s) <= link_limit)
        })
        .filter(|(_, i)| !(prev.holds_data && i.is_empty()))
        .collect();
    // Offsets compare only within one replication history: the primary's, when known,
    // else the one most replicas share.
    let history = prev.primary_replid.clone().or_else(|| {
        let mut ids: Vec<&str> = following.iter().map(|(_, i)| i.replid.as_str()).collect();
        ids.sort_unstable();
        ids.chunk_by(|a, b| a == b).max_by_key(|c| c.len()).and_then(|c| c.first()).map(|s| s.to_string())
    });
    let eligible: Vec<(&NodeObservation, &NodeInfo)> =
        following.into_iter().filter(|(_, i)| Some(&i.replid) == history.as_ref()).collect();
    let needed = replicas_needed(&input.spec, n);
    let r = u32::try_from(eligible.len()).unwrap_or(u32::MAX);
    if r < needed || r == 0 {
        return Plan::keep(
            prev,
            Phase::FailoverBlocked,
            format!(
                "primary {primary} is unavailable but only {r} of {n} replicas can be inspected with a live link; \
                 {needed} are needed so that no write acknowledged by {} replica(s) is lost (k + r > n)",
                input.spec.sync_replicas
            ),
            // A replica that comes back or links again wakes the CounterApp.
            Some(Duration::from_secs(10)),
        );
    }
    let Some((cand, cand_info)) =
        eligible.iter().max_by_key(|(x, i)| (i.offset, Reverse(x.ordinal))).copied()
    else {
        return Plan::keep(prev, Phase::FailoverBlocked, "no candidate", Some(Duration::from_secs(10)));
    };
    let mut actions = vec![];
    // Fence first: if the old primary still answers, it stops taking writes before the
    // candidate starts taking them.
    if let Some(p) = p_node
        && p.is_master()
    {
        actions.push(NodeAction::Follow { pod: primary.clone(), primary: cand.pod.clone(), fence: true });
    }
    for x in input.nodes.iter().filter(|x| x.pod != cand.pod && x.pod != primary && x.is_master()) {
        actions.push(NodeAction::Follow { pod: x.pod.clone(), primary: cand.pod.clone(), fence: true });
    }
    actions.push(NodeAction::Promote { pod: cand.pod.clone() });
    actions.push(NodeAction::SetMinReplicas {
        pod: cand.pod.clone(),
        value: i64::from(input.spec.sync_replicas),
    });
    for x in input.nodes.iter().filter(|x| x.pod != cand.pod) {
        if x.info.as_ref().is_some_and(|i| i.role == Role::Replica) {
            actions.push(NodeAction::Follow { pod: x.pod.clone(), primary: cand.pod.clone(), fence: false });
        }
    }
    Plan {
        phase: Phase::FailingOver,
        primary: Some(cand.pod.clone()),
        epoch: prev.epoch + 1,
        holds_data: prev.holds_data || !cand_info.is_empty(),
        actions,
        delete_pods: vec![],
        message: format!(
            "primary {primary} {}; promoting {} (offset {}, {r} of {n} replicas inspected)",
            match state {
                PrimaryState::LostData => "restarted without its data",
                PrimaryState::Demoted => "answers as a replica (it restarted)",
                _ => "is unavailable",
            },
            cand.pod,
            cand_info.offset
        ),
        requeue_after: Some(Duration::from_secs(1)),
        switchover: None,
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
