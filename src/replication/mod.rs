//! Redis replication manager: observe every Redis pod, decide roles (pure), actuate.
//!
//! One pass ([`Manager::reconcile`]): read every pod's `INFO` at the address the API
//! gives now ([`observe`]), decide the topology as a pure function of what was seen
//! ([`decide`]), apply it through the [`node::RedisNodes`] trait ([`actuate`]), and
//! report status, labels, Events and metrics ([`report`], [`metrics`]). The safety
//! argument is in docs/replication.md.

pub mod acl_sync;
pub mod actuate;
pub mod clock;
pub mod decide;
pub mod live_config;
pub mod metrics;
pub mod monitor;
pub mod node;
pub mod observe;
pub mod persistence;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::{info, warn};

use crate::api::{
    CounterApp, RedisStatus, SWITCHOVER_ANNOTATION, SWITCHOVER_TO_ANNOTATION, SwitchoverPhase,
    SwitchoverStatus,
};
use crate::locked::lock;

pub use decide::{NodeAction, Phase, Plan, SwitchoverRequest, SwitchoverVerdict};
pub use metrics::Metrics;
pub use monitor::{AppKey, Monitor};
use node::{Addressing, NodeAuth, RedisNodes};
use observe::{NodeObservation, parse_info};
pub use report::Health;

/// Errors of the replication manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis error on {pod}: {source}")]
    Redis { pod: String, source: ::redis::RedisError },
    #[error("pod {pod} has no address to reach it")]
    NoAddress { pod: String },
    #[error("hand-over from {from} to {to} failed: {message}")]
    Handover { from: String, to: String, message: String },
    /// A test's crash point (`crate::failpoint`) ended the pass.
    #[error("failpoint {0}")]
    Failpoint(&'static str),
}

impl Error {
    fn redis(pod: &str, source: ::redis::RedisError) -> Self {
        Error::Redis { pod: pod.to_string(), source }
    }

    /// Short label for error metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Redis { .. } => "redis",
            Error::NoAddress { .. } => "no_address",
            Error::Handover { .. } => "handover",
            Error::Failpoint(_) => "failpoint",
        }
    }
}

/// What the operator read from the API about one Redis pod (fresh every reconcile).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// The pod's uid: a deletion names the very pod that was seen (a precondition).
    pub uid: Option<String>,
    pub ordinal: u32,
    /// Pod IP, when it has one; the manager connects here, never to a cached address.
    pub ip: Option<String>,
    /// The pod's Ready condition.
    pub ready: bool,
    /// Current value of the `counterstack.io/role` label.
    pub role_label: Option<String>,
    /// The pod has a deletionTimestamp.
    pub terminating: bool,
    /// The pod's `controller-revision-hash` differs from the StatefulSet's
    /// `status.updateRevision`: it runs an old template and must be restarted (the
    /// StatefulSet uses `OnDelete`; the manager says when, in `Outcome::pods_to_delete`).
    pub outdated: bool,
}

/// Something worth an Event on the CounterApp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationEvent {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// Result of one replication pass, for the operator to apply.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// New `status.redis`.
    pub status: RedisStatus,
    /// Desired `counterstack.io/role` label per pod name.
    pub role_labels: BTreeMap<String, String>,
    pub events: Vec<ReplicationEvent>,
    /// Come back this soon (e.g. while waiting for `failover.afterSeconds`).
    pub requeue_after: Option<Duration>,
    /// Pods to delete now so the StatefulSet recreates them at the new revision (planned
    /// changes, one at a time, primary last and only after it was handed over).
    pub pods_to_delete: Vec<String>,
    /// Replication health for the `Available` / `Degraded` conditions.
    pub health: Health,
}

/// Per-CounterApp state kept between passes. Losing it (operator restart) is safe: the
/// status holds the last committed primary and epoch, and Redis itself shows a hand-over
/// that was never recorded (see `decide::handed_over_to`).
#[derive(Clone, Debug, Default)]
struct AppMemory {
    /// The CounterApp's uid: a new CounterApp of the same name starts from nothing.
    uid: Option<String>,
    primary: Option<String>,
    epoch: i64,
    holds_data: bool,
    primary_replid: Option<String>,
    last_phase: Option<Phase>,
    /// Pods with a replication-lag series, to remove the series when the pod goes.
    lag_series: Vec<String>,
    /// The last answer to a requested switchover (newer than the status until written).
    switchover: Option<SwitchoverStatus>,
    /// The reason of the persistence episode under way (`StorageFull`...), `Some(None)`
    /// when there is none; `None` until a pass knows (a new leader reads the status).
    storage: Option<Option<String>>,
}

/// Keeps per-CounterApp replication state across reconciles, and the [`Monitor`] that
/// checks every Redis pod between them.
#[derive(Default)]
pub struct Manager {
    memory: Mutex<HashMap<AppKey, AppMemory>>,
    metrics: Metrics,
    monitor: Arc<Monitor>,
    /// `spec.redis.config` settings applied with CONFIG SET, per pod process.
    live_config: live_config::LiveConfig,
}

fn event(warning: bool, reason: &str, note: impl Into<String>) -> ReplicationEvent {
    ReplicationEvent { warning, reason: reason.to_string(), note: note.into() }
}

/// Event reason of a requested switchover that was refused or did not complete (Warning).
pub const SWITCHOVER_FAILED: &str = "SwitchoverFailed";

/// The switchover token and target the CounterApp's annotations carry.
fn switchover_annotations(app: &CounterApp) -> (Option<&str>, Option<&str>) {
    let a = app.metadata.annotations.as_ref();
    let get = |k: &str| a.and_then(|a| a.get(k)).map(String::as_str);
    (get(SWITCHOVER_ANNOTATION), get(SWITCHOVER_TO_ANNOTATION))
}

/// The recorded answer that matters for `token`: ours when it answers that token (the
/// status write may not have landed yet), else the status's, else ours.
fn recorded_switchover(mem: &AppMemory, app: &CounterApp, token: Option<&str>) -> Option<SwitchoverStatus> {
    let status = app.status.as_ref().and_then(|s| s.redis.as_ref()?.switchover.clone());
    match &mem.switchover {
        Some(m) if token == Some(m.request.as_str()) => Some(m.clone()),
        _ => status.or_else(|| mem.switchover.clone()),
    }
}

/// A pending request for this app, given what this manager and the status recorded.
fn pending_switchover(mem: &AppMemory, app: &CounterApp) -> Option<SwitchoverRequest> {
    let (token, to) = switchover_annotations(app);
    let status = app.status.as_ref().and_then(|s| s.redis.as_ref()?.switchover.as_ref());
    let recorded: Vec<&SwitchoverStatus> = mem.switchover.iter().chain(status).collect();
    decide::pending_request(token, to, &recorded)
}

/// The answer to `req`: `InProgress` has no completion time.
fn answer(
    req: &SwitchoverRequest,
    phase: SwitchoverPhase,
    to: Option<&str>,
    message: String,
    pause: Option<Duration>,
) -> SwitchoverStatus {
    SwitchoverStatus {
        request: req.token.clone(),
        to: to.or(req.to.as_deref()).unwrap_or_default().to_string(),
        phase,
        message,
        pause_seconds: pause.map(|d| d.as_secs_f64()),
        completed_time: (phase != SwitchoverPhase::InProgress).then(crate::api::now),
    }
}

/// Record the answer to a switchover request; a Warning Event when it failed.
fn record_switchover(mem: &mut AppMemory, status: SwitchoverStatus, events: &mut Vec<ReplicationEvent>) {
    if mem.switchover.as_ref().is_some_and(|m| m.request == status.request && m.phase == status.phase) {
        return;
    }
    if status.phase == SwitchoverPhase::Failed {
        events.push(event(
            true,
            SWITCHOVER_FAILED,
            format!("switchover {}: {}", status.request, status.message),
        ));
    }
    mem.switchover = Some(status);
}

/// The key of a CounterApp.
pub fn app_key(app: &CounterApp) -> AppKey {
    AppKey::new(
        app.metadata.namespace.clone().unwrap_or_default(),
        app.metadata.name.clone().unwrap_or_default(),
    )
}

/// How long observing a frozen node takes (connect + AUTH timeout): a pass that must
/// fail over at a deadline starts its last observation this much earlier.
const OBSERVE_LEAD: Duration = Duration::from_millis(500);
/// A pass this close to the failover deadline waits for it instead of requeueing.
const FINAL_WAIT: Duration = Duration::from_secs(1);
/// How long a promoted primary may take to accept writes (its replicas reconnect) before
/// the failover is reported without that confirmation.
const WRITABLE_WAIT: Duration = Duration::from_secs(2);

impl Manager {
    pub fn new() -> Self {
        Self::default()
    }

    /// The manager's metrics; register them with [`Metrics::register`].
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The health checker; the operator runs it ([`Monitor::run`]) and feeds its
    /// wake-ups to the controller.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// Check these pods from now on (the operator calls it after each pass with the pods'
    /// fresh addresses and the primary the pass decided).
    pub fn watch<A: Addressing>(
        &self,
        app: &CounterApp,
        pods: &[PodView],
        addressing: &A,
        auth: &NodeAuth,
        primary: Option<&str>,
    ) {
        let target = monitor::Target {
            pods: pods
                .iter()
                .filter_map(|p| {
                    Some(monitor::TargetPod {
                        name: p.name.clone(),
                        dial: addressing.dial(p)?,
                        ready: p.ready,
                        terminating: p.terminating,
                    })
                })
                .collect(),
            primary: primary.map(str::to_string),
            auth: auth.clone(),
        };
        self.monitor.watch(&app_key(app), target);
    }

    /// Forget a deleted CounterApp: its memory, its checks and its metric series.
    pub fn forget(&self, key: &AppKey) {
        let mem = lock(&self.memory).remove(key);
        self.monitor.forget(key);
        self.live_config.forget(key);
        for kind in [metrics::KIND_AUTOMATIC, metrics::KIND_PLANNED] {
            let l = metrics::FailoverLabels::new(key, kind);
            self.metrics.failovers.remove(&l);
            self.metrics.failover_duration.remove(&l);
        }
        for pod in mem.map(|m| m.lag_series).unwrap_or_default() {
            self.metrics.replication_lag.remove(&metrics::PodLabels::new(key, &pod));
            self.metrics.persistence_failing.remove(&metrics::PodLabels::new(key, &pod));
        }
    }

    fn memory_of(&self, app: &CounterApp) -> AppMemory {
        let memory = lock(&self.memory);
        memory
            .get(&app_key(app))
            .filter(|m| m.uid == app.metadata.uid)
            .cloned()
            .unwrap_or_else(|| AppMemory { uid: app.metadata.uid.clone(), ..AppMemory::default() })
    }

    fn remember(&self, key: &AppKey, mem: AppMemory) {
        lock(&self.memory).insert(key.clone(), mem);
    }

    /// `spec.paused`: no replication pass runs, but a pending switchover request is
    /// answered (Failed: the operator changes no roles while paused) rather than left
    /// waiting. Returns `status.redis` with that answer and its Warning Event, or `None`
    /// when no request is pending.
    pub fn refuse_switchover_while_paused(
        &self,
        app: &CounterApp,
    ) -> Option<(RedisStatus, ReplicationEvent)> {
        let mut mem = self.memory_of(app);
        let req = pending_switchover(&mem, app)?;
        let mut events = vec![];
        let why = decide::PAUSED_REFUSAL.to_string();
        record_switchover(&mut mem, answer(&req, SwitchoverPhase::Failed, None, why, None), &mut events);
        let mut status = app.status.as_ref().and_then(|s| s.redis.clone()).unwrap_or_default();
        status.switchover = mem.switchover.clone();
        self.remember(&app_key(app), mem);
        Some((status, events.pop()?))
    }

    /// One pass with injected Redis I/O and addressing (tests use local processes):
    /// observe, recall the previous state, time the failover, decide, act, report.
    #[tracing::instrument(skip_all, fields(app = app.metadata.name.as_deref().unwrap_or("")))]
    pub async fn reconcile_with<N: RedisNodes, A: Addressing>(
        &self,
        app: &CounterApp,
        pods: &[PodView],
        nodes: &N,
        addressing: &A,
    ) -> Result<Outcome, Error> {
        let key = app_key(app);
        let mut spec = decide::Spec::from_app(&app.spec);
        spec.waking = app.status.as_ref().and_then(|s| s.redis.as_ref()).is_some_and(|r| r.hibernated);
        let mut mem = self.memory_of(app);
        let mut events = vec![];
        let request = pending_switchover(&mem, app);
        // An outage an earlier leader was counting down (a restart, a standby taking over).
        if let Some(redis) = app.status.as_ref().and_then(|s| s.redis.as_ref())
            && let (Some(primary), Some(since)) = (&redis.primary, &redis.primary_unavailable_since)
            && let Some(since) =
                clock::from_status(since, k8s_openapi::jiff::Timestamp::now(), Instant::now())
        {
            self.monitor.resume_clock(&key, primary, since);
        }
        let (observed, prev, down_since, mut plan) = loop {
            let observed = observe_all(pods, nodes, addressing).await;
            let now = Instant::now();
            let prev = previous(&mut mem, app, &observed);
            let down_since = self.failover_clock(&key, &observed, &prev, now);
            let plan = decide::decide(&decide::Input {
                nodes: &observed,
                spec,
                prev: prev.clone(),
                primary_unavailable_for: down_since.map(|since| now.saturating_duration_since(since)),
                switchover: request.clone(),
            });
            // Within a second of the failover deadline: wait for it here, observing again,
            // rather than in a requeue whose reconcile would first redo its API reads.
            match plan.requeue_after {
                Some(left)
                    if plan.phase == Phase::PrimaryUnavailable
                        && spec.failover_enabled
                        && left <= FINAL_WAIT =>
                {
                    events.extend(phase_events(&mut mem, &plan));
                    // Start observing early enough that a frozen primary's timeout ends at the deadline.
                    tokio::time::sleep(
                        left.saturating_sub(OBSERVE_LEAD).max(left.min(Duration::from_millis(50))),
                    )
                    .await;
                }
                _ => break (observed, prev, down_since, plan),
            }
        };
        if plan.phase == Phase::PrimaryUnavailable && spec.failover_enabled {
            // Come back just before the deadline; the pass then waits for it (above).
            plan.requeue_after =
                plan.requeue_after.map(|d| d.saturating_sub(FINAL_WAIT).max(Duration::from_millis(100)));
        }
        events.extend(phase_events(&mut mem, &plan));

        let addrs = actuate::Addresses {
            dial: pods.iter().filter_map(|p| Some((p.name.clone(), addressing.dial(p)?))).collect(),
            replication: pods.iter().map(|p| (p.name.clone(), addressing.replication_endpoint(p))).collect(),
        };
        if !plan.actions.is_empty() {
            info!(phase = ?plan.phase, actions = ?plan.actions, "{}", plan.message);
        }
        let applied = match actuate::apply(&plan, &addrs, nodes).await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "replication actions failed; deciding again next pass");
                // A requested hand-over that failed is answered, not retried: the next
                // pass writes this Failed result (the request needs a new token).
                if let (Some(req), Some(SwitchoverVerdict::Start { to })) = (&request, &plan.switchover) {
                    let failed = answer(req, SwitchoverPhase::Failed, Some(to), e.to_string(), None);
                    record_switchover(&mut mem, failed, &mut vec![]);
                }
                self.remember(&key, mem);
                return Err(e);
            }
        };
        events.extend(applied_events(&plan, &applied));
        let live = match plan.phase {
            Phase::Paused => live_config::Report::default(),
            _ => self.live_config.apply(&key, &app.spec.redis.config, &observed, &addrs.dial, nodes).await,
        };
        events.extend(live.events);
        if let (Some(req), Some(verdict)) = (&request, &plan.switchover) {
            let result = match verdict {
                SwitchoverVerdict::Start { to } => {
                    let pause = applied.handed_over.as_ref().map(|h| h.2);
                    let msg = format!(
                        "{} handed the primary over to {to}; writes paused {} ms",
                        prev.primary.as_deref().unwrap_or("-"),
                        pause.unwrap_or_default().as_millis()
                    );
                    answer(req, SwitchoverPhase::Succeeded, Some(to), msg, pause)
                }
                SwitchoverVerdict::Wait(why) => {
                    answer(req, SwitchoverPhase::InProgress, None, why.clone(), None)
                }
                SwitchoverVerdict::Refuse(why) => {
                    answer(req, SwitchoverPhase::Failed, None, why.clone(), None)
                }
            };
            record_switchover(&mut mem, result, &mut events);
        }

        let changed = plan.changes_primary(&prev);
        let mut last_failover_time =
            app.status.as_ref().and_then(|s| s.redis.as_ref()?.last_failover_time.clone());
        if changed {
            events.push(self.primary_changed(&key, &prev, &plan, &applied, down_since, &addrs, nodes).await);
            if prev.primary.is_some() {
                // Whole seconds, as the API keeps it: read back, it compares equal.
                last_failover_time = Some(crate::api::now());
            }
            mem.primary = plan.primary.clone();
            mem.epoch = plan.epoch;
            mem.primary_replid = None;
        }
        mem.holds_data = plan.holds_data;
        for pod in &plan.delete_pods {
            events.push(event(false, "RestartingPod", format!("deleting {pod}: {}", plan.message)));
        }
        // A volume that is full or failing: one Event per episode, the Degraded reason.
        let was = mem.storage.clone().unwrap_or_else(|| storage_episode(app));
        let storage = persistence::problem(&observed, plan.primary.as_deref(), was.as_deref());
        events.extend(persistence::event(was.as_deref(), storage.as_ref()));
        mem.storage = Some(storage.as_ref().map(|p| p.reason.to_string()));
        let report =
            Report { pods, observed: &observed, plan: &plan, changed, replicas_wanted: spec.replicas };
        let mut outcome = self.outcome(&key, &mut mem, &report, last_failover_time, events);
        // Still waking until this pass elected a primary (the epoch moved).
        outcome.status.hibernated = spec.waking && plan.epoch == prev.epoch;
        let health = persistence::with_problem(outcome.health, storage.as_ref(), plan.phase);
        outcome.health = live_config::with_rejections(health, &live.rejected, &live.pending);
        outcome.status.switchover = recorded_switchover(&mem, app, switchover_annotations(app).0);
        let kept = app.status.as_ref().and_then(|s| s.redis.as_ref()?.primary_unavailable_since.as_ref());
        outcome.status.primary_unavailable_since = self
            .monitor
            .down_since(&key)
            .map(|since| clock::to_status(since.elapsed(), k8s_openapi::jiff::Timestamp::now(), kept));
        self.remember(&key, mem);
        Ok(outcome)
    }

    /// Since when the primary has been unavailable, from this pass's observation and the
    /// monitor's checks (whichever saw it first).
    fn failover_clock(
        &self,
        key: &AppKey,
        observed: &[NodeObservation],
        prev: &decide::Prev,
        now: Instant,
    ) -> Option<Instant> {
        let primary = prev.primary.as_deref()?;
        let available = decide::primary_available(observed, prev);
        self.monitor.observe_primary(key, primary, available, now)
    }

    /// Metrics, memory and the Event of a change of primary. For a failover, waits until
    /// the new primary accepts writes and measures from the first failed check to then.
    #[allow(clippy::too_many_arguments)]
    async fn primary_changed<N: RedisNodes>(
        &self,
        key: &AppKey,
        prev: &decide::Prev,
        plan: &Plan,
        applied: &actuate::Actuated,
        down_since: Option<Instant>,
        addrs: &actuate::Addresses,
        nodes: &N,
    ) -> ReplicationEvent {
        self.monitor.reset_clock(key);
        info!(primary = ?plan.primary, epoch = plan.epoch, "primary changed");
        let labels = |kind: &str| metrics::FailoverLabels::new(key, kind);
        match (&prev.primary, plan.phase) {
            (None, _) => event(false, "PrimaryElected", &plan.message),
            (Some(_), Phase::Switchover) => {
                let took = applied.handed_over.as_ref().map_or(Duration::ZERO, |h| h.2);
                self.metrics.failovers.get_or_create(&labels(metrics::KIND_PLANNED)).inc();
                self.metrics
                    .failover_duration
                    .get_or_create(&labels(metrics::KIND_PLANNED))
                    .observe(took.as_secs_f64());
                event(
                    false,
                    "SwitchedOver",
                    format!("{} (writes paused {} ms)", plan.message, took.as_millis()),
                )
            }
            (Some(_), _) => {
                let writable = match plan.primary.as_deref().and_then(|p| addrs.dial.get(p)) {
                    Some(ep) => actuate::wait_writable(nodes, ep, plan.min_replicas(), WRITABLE_WAIT).await,
                    None => false,
                };
                let took = down_since.map_or(Duration::ZERO, |since| since.elapsed());
                self.metrics.failovers.get_or_create(&labels(metrics::KIND_AUTOMATIC)).inc();
                self.metrics
                    .failover_duration
                    .get_or_create(&labels(metrics::KIND_AUTOMATIC))
                    .observe(took.as_secs_f64());
                let end = if writable { "accepting writes" } else { "promoted (not yet confirmed writable)" };
                event(
                    true,
                    "FailedOver",
                    format!(
                        "{} (epoch {}); {:.1} s from the first failed check to the new primary {end}",
                        plan.message,
                        plan.epoch,
                        took.as_secs_f64()
                    ),
                )
            }
        }
    }

    /// Status, labels, metrics and health after the pass.
    fn outcome(
        &self,
        key: &AppKey,
        mem: &mut AppMemory,
        r: &Report,
        last_failover_time: Option<Time>,
        events: Vec<ReplicationEvent>,
    ) -> Outcome {
        let Report { pods, observed, plan, changed, replicas_wanted } = *r;
        let primary = plan.primary.as_deref();
        let primary_is_master = changed
            || primary.and_then(|p| observed.iter().find(|n| n.pod == p)).is_some_and(|n| n.is_master());
        let nodes_status = report::node_statuses(observed, primary);
        let current: Vec<String> = nodes_status.iter().map(|n| n.pod.clone()).collect();
        for gone in mem.lag_series.iter().filter(|p| !current.contains(p)) {
            self.metrics.replication_lag.remove(&metrics::PodLabels::new(key, gone));
            self.metrics.persistence_failing.remove(&metrics::PodLabels::new(key, gone));
        }
        for n in &nodes_status {
            self.metrics
                .replication_lag
                .get_or_create(&metrics::PodLabels::new(key, &n.pod))
                .set(n.lag_bytes);
        }
        // A pod that did not answer keeps its last value.
        for n in observed {
            let failing =
                self.metrics.persistence_failing.get_or_create(&metrics::PodLabels::new(key, &n.pod));
            if let Some(i) = &n.info {
                failing.set(i64::from(i.persistence.failing()));
            }
        }
        mem.lag_series = current;
        Outcome {
            status: RedisStatus {
                primary: plan.primary.clone(),
                epoch: plan.epoch,
                ready_replicas: i32::try_from(pods.iter().filter(|p| p.ready).count()).unwrap_or(i32::MAX),
                last_failover_time,
                holds_data: plan.holds_data,
                nodes: report::with_wanted_pods(nodes_status, &key.name, replicas_wanted.saturating_add(1)),
                switchover: None,
                // The operator's reconcile fills it in after the password sync.
                rotating_passwords: vec![],
                // Filled in by the reconcile's storage step (operator::expand).
                storage: None,
                // Set by the caller (waking from hibernation).
                hibernated: false,
                // Set by the caller from the monitor's clock after the pass.
                primary_unavailable_since: None,
            },
            role_labels: if plan.phase == Phase::Paused {
                pods.iter().filter_map(|p| Some((p.name.clone(), p.role_label.clone()?))).collect()
            } else {
                report::role_labels(pods, observed, primary, primary_is_master)
            },
            events,
            requeue_after: plan.requeue_after,
            pods_to_delete: plan.delete_pods.clone(),
            health: report::health(plan, observed, primary_is_master, replicas_wanted),
        }
    }
}

/// What a pass reports from.
#[derive(Clone, Copy)]
struct Report<'a> {
    pods: &'a [PodView],
    observed: &'a [NodeObservation],
    plan: &'a Plan,
    /// The primary changed in this pass.
    changed: bool,
    replicas_wanted: u32,
}

/// What was decided before this pass: the status, or the memory when it is newer (a
/// status write that has not landed yet). Records the primary's replication id while it
/// is healthy: replicas sharing it share its history.
fn previous(mem: &mut AppMemory, app: &CounterApp, observed: &[NodeObservation]) -> decide::Prev {
    let status = app.status.as_ref().and_then(|s| s.redis.clone()).unwrap_or_default();
    let (primary, epoch) = if mem.epoch > status.epoch {
        (mem.primary.clone(), mem.epoch)
    } else {
        (status.primary.clone(), status.epoch)
    };
    let prev = decide::Prev {
        primary,
        epoch,
        holds_data: mem.holds_data || status.holds_data,
        primary_replid: None,
    };
    let prev = decide::Prev {
        primary_replid: mem.primary_replid.clone().filter(|_| mem.primary == prev.primary),
        ..prev
    };
    if decide::primary_available(observed, &prev)
        && let Some(p) = prev.primary.as_deref().and_then(|p| observed.iter().find(|n| n.pod == p))
    {
        mem.primary = prev.primary.clone();
        mem.primary_replid = p.info.as_ref().map(|i| i.replid.clone());
    }
    prev
}

/// The persistence episode the status reports (`Degraded` with reason `StorageFull` or
/// `PersistenceFailed`): what a new leader continues, without a second Event.
fn storage_episode(app: &CounterApp) -> Option<String> {
    let conditions = app.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    conditions
        .iter()
        .find(|c| {
            c.type_ == crate::api::condition::DEGRADED
                && c.status == "True"
                && [persistence::STORAGE_FULL, persistence::PERSISTENCE_FAILED].contains(&c.reason.as_str())
        })
        .map(|c| c.reason.clone())
}

/// Events for entering a phase (once, not every pass).
fn phase_events(mem: &mut AppMemory, plan: &Plan) -> Vec<ReplicationEvent> {
    let mut events = vec![];
    if mem.last_phase != Some(plan.phase) {
        match plan.phase {
            Phase::PrimaryUnavailable => events.push(event(true, "PrimaryUnavailable", &plan.message)),
            Phase::FailoverBlocked => events.push(event(true, "FailoverBlocked", &plan.message)),
            Phase::RollingReplicas => events.push(event(false, "RollingUpdate", &plan.message)),
            _ => {}
        }
    }
    mem.last_phase = Some(plan.phase);
    events
}

/// Events for what actuation did besides changing the primary.
fn applied_events(plan: &Plan, applied: &actuate::Actuated) -> Vec<ReplicationEvent> {
    let mut events = vec![];
    for pod in &applied.fenced {
        events.push(event(
            true,
            "Demoted",
            format!(
                "{pod} was a writable primary but {} is the primary; made it a replica",
                plan.primary.as_deref().unwrap_or("-")
            ),
        ));
    }
    for w in &applied.warnings {
        warn!("{w}");
        events.push(event(true, "ReplicationWarning", w.clone()));
    }
    events
}

/// Read every pod concurrently; a pod without an address or that does not answer in
/// time is observed as unreachable.
async fn observe_all<N: RedisNodes, A: Addressing>(
    pods: &[PodView],
    nodes: &N,
    addressing: &A,
) -> Vec<NodeObservation> {
    let one = |pod: &PodView| {
        let dial = addressing.dial(pod);
        let endpoint = addressing.replication_endpoint(pod);
        let pod = pod.clone();
        async move {
            let info = match &dial {
                None => None,
                Some(at) => match tokio::time::timeout(Duration::from_secs(2), nodes.snapshot(at)).await {
                    Ok(Ok(snap)) => match parse_info(&snap.info) {
                        Ok(mut i) => {
                            i.min_replicas_to_write = snap.min_replicas_to_write;
                            i.persistence.write_refusal = snap.write_refusal;
                            Some(i)
                        }
                        Err(e) => {
                            warn!(pod = %pod.name, error = %e, "unusable INFO reply");
                            None
                        }
                    },
                    Ok(Err(e)) => {
                        tracing::debug!(pod = %pod.name, error = %e, "redis pod unreachable");
                        None
                    }
                    Err(_) => None,
                },
            };
            NodeObservation {
                pod: pod.name.clone(),
                ordinal: pod.ordinal,
                endpoint,
                ip: dial.map(|d| d.host),
                pod_ready: pod.ready,
                terminating: pod.terminating,
                outdated: pod.outdated,
                info,
            }
        }
    };
    futures::future::join_all(pods.iter().map(one)).await
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    fn app(name: &str) -> CounterApp {
        let mut app = CounterApp::new(name, crate::api::CounterAppSpec::default());
        app.metadata.namespace = Some("ns".into());
        app.metadata.uid = Some(format!("uid-{name}"));
        app
    }

    #[test]
    fn forgetting_a_counterapp_drops_its_memory_checks_and_metric_series() {
        let m = Manager::new();
        let mut reg = Registry::default();
        m.metrics().register(&m.monitor().metrics, &mut reg);
        let (gone, kept) = (app("gone"), app("kept"));
        for a in [&gone, &kept] {
            let key = app_key(a);
            m.remember(
                &key,
                AppMemory {
                    uid: a.metadata.uid.clone(),
                    lag_series: vec![format!("{}-redis-0", key.name)],
                    ..AppMemory::default()
                },
            );
            m.metrics
                .replication_lag
                .get_or_create(&metrics::PodLabels::new(&key, &format!("{}-redis-0", key.name)))
                .set(7);
            m.metrics
                .failovers
                .get_or_create(&metrics::FailoverLabels::new(&key, metrics::KIND_AUTOMATIC))
                .inc();
            m.watch(
                a,
                &[],
                &node::ClusterAddressing { app: key.name.clone() },
                &NodeAuth::password("pw"),
                None,
            );
        }
        assert_eq!(m.monitor().len(), 2);
        m.forget(&app_key(&gone));
        let mut text = String::new();
        encode(&mut text, &reg).unwrap();
        assert!(!text.contains(r#"app="gone""#), "{text}");
        assert!(text.contains(r#"app="kept""#), "{text}");
        assert_eq!(m.monitor().len(), 1);
        assert!(m.memory.lock().unwrap().get(&app_key(&gone)).is_none());
    }

    #[test]
    fn a_new_leader_continues_the_storage_episode_the_status_reports() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let degraded = |status: &str, reason: &str| Condition {
            type_: crate::api::condition::DEGRADED.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        let mut a = app("demo");
        assert_eq!(storage_episode(&a), None);
        for (status, reason, episode) in [
            ("True", persistence::STORAGE_FULL, Some(persistence::STORAGE_FULL)),
            ("True", persistence::PERSISTENCE_FAILED, Some(persistence::PERSISTENCE_FAILED)),
            ("True", "ReplicasDegraded", None),
            ("False", persistence::STORAGE_FULL, None),
        ] {
            a.status = Some(crate::api::CounterAppStatus {
                conditions: vec![degraded(status, reason)],
                ..Default::default()
            });
            assert_eq!(storage_episode(&a).as_deref(), episode, "{status} {reason}");
        }
    }

    #[test]
    fn a_new_counterapp_of_the_same_name_starts_without_the_old_memory() {
        let m = Manager::new();
        let old = app("demo");
        m.remember(
            &app_key(&old),
            AppMemory { uid: old.metadata.uid.clone(), epoch: 7, ..AppMemory::default() },
        );
        assert_eq!(m.memory_of(&old).epoch, 7);
        let mut new = app("demo");
        new.metadata.uid = Some("another".into());
        assert_eq!(m.memory_of(&new).epoch, 0);
    }
}
