//! Redis replication manager: observe every Redis pod, decide roles (pure), actuate.
//!
//! One pass ([`Manager::reconcile`]): read every pod's `INFO` at the address the API
//! gives now ([`observe`]), decide the topology as a pure function of what was seen
//! ([`decide`]), apply it through the [`node::RedisNodes`] trait ([`actuate`]), and
//! report status, labels, Events and metrics ([`report`], [`metrics`]). The safety
//! argument is in docs/replication.md.

pub mod actuate;
pub mod decide;
pub mod metrics;
pub mod node;
pub mod observe;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::{info, warn};

use crate::api::{CounterApp, RedisStatus};
pub use decide::{Action, Phase, Plan};
pub use metrics::Metrics;
use node::{Addressing, ClusterAddressing, RedisClient, RedisNodes};
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
        }
    }
}

/// What the operator read from the API about one Redis pod (fresh every reconcile).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
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
/// failover timer starts again and the status holds the last committed primary.
#[derive(Clone, Debug, Default)]
struct Memory {
    primary: Option<String>,
    epoch: i64,
    holds_data: bool,
    primary_replid: Option<String>,
    unavailable_since: Option<(String, Instant)>,
    last_phase: Option<Phase>,
}

/// Keeps per-CounterApp replication state across reconciles.
#[derive(Default)]
pub struct Manager {
    memory: Mutex<HashMap<String, Memory>>,
    metrics: Metrics,
}

fn event(warning: bool, reason: &str, note: impl Into<String>) -> ReplicationEvent {
    ReplicationEvent { warning, reason: reason.to_string(), note: note.into() }
}

impl Manager {
    pub fn new() -> Self {
        Self::default()
    }

    /// The manager's metrics; register them with [`Metrics::register`].
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// One pass against the pods of a cluster: dial pod IPs, follow stable DNS names.
    pub async fn reconcile(
        &self,
        app: &CounterApp,
        pods: &[PodView],
        password: &str,
    ) -> Result<Outcome, Error> {
        let addressing = ClusterAddressing { app: app.metadata.name.clone().unwrap_or_default() };
        self.reconcile_with(app, pods, &RedisClient::new(password), &addressing).await
    }

    fn memory(&self, key: &str) -> Memory {
        // A poisoned lock only means another pass panicked; its data is still coherent
        // (plain values), so keep going with it.
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned().unwrap_or_default()
    }

    fn remember(&self, key: &str, mem: Memory) {
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), mem);
    }

    /// One pass with injected Redis I/O and addressing (tests use local processes).
    #[tracing::instrument(skip_all, fields(app = app.metadata.name.as_deref().unwrap_or("")))]
    pub async fn reconcile_with<N: RedisNodes, A: Addressing>(
        &self,
        app: &CounterApp,
        pods: &[PodView],
        nodes: &N,
        addressing: &A,
    ) -> Result<Outcome, Error> {
        let name = app.metadata.name.clone().unwrap_or_default();
        let namespace = app.metadata.namespace.clone().unwrap_or_default();
        let key = app.metadata.uid.clone().unwrap_or_else(|| format!("{namespace}/{name}"));
        let spec = decide::Spec::from_app(&app.spec);
        let status = app.status.as_ref().and_then(|s| s.redis.clone()).unwrap_or_default();

        let observed = observe_all(pods, nodes, addressing).await;
        let mut mem = self.memory(&key);
        let prev = if mem.epoch > status.epoch {
            decide::Prev {
                primary: mem.primary.clone(),
                epoch: mem.epoch,
                holds_data: mem.holds_data || status.holds_data,
                primary_replid: None,
            }
        } else {
            decide::Prev {
                primary: status.primary.clone(),
                epoch: status.epoch,
                holds_data: status.holds_data,
                primary_replid: None,
            }
        };
        let prev = decide::Prev {
            primary_replid: mem.primary_replid.clone().filter(|_| mem.primary == prev.primary),
            ..prev
        };

        // Failover timer: since when the current primary has been unavailable.
        let now = Instant::now();
        let available = decide::primary_available(&observed, &prev);
        mem.unavailable_since = match (&prev.primary, mem.unavailable_since.take()) {
            (Some(p), Some((q, since))) if !available && *p == q => Some((q, since)),
            (Some(p), _) if !available => Some((p.clone(), now)),
            _ => None,
        };
        let unavailable_for = mem.unavailable_since.as_ref().map(|(_, since)| now.duration_since(*since));
        if available
            && let Some(p) = prev.primary.as_deref().and_then(|p| observed.iter().find(|n| n.pod == p))
        {
            mem.primary_replid = p.info.as_ref().map(|i| i.replid.clone());
        }

        let plan = decide::decide(&decide::Input {
            nodes: &observed,
            spec,
            prev: prev.clone(),
            primary_unavailable_for: unavailable_for,
        });

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
                self.remember(&key, mem);
                return Err(e);
            }
        };
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

        let changed = plan.changes_primary(&prev);
        let mut last_failover_time = status.last_failover_time.clone();
        if changed {
            let labels = |kind: &str| metrics::FailoverLabels {
                namespace: namespace.clone(),
                app: name.clone(),
                kind: kind.into(),
            };
            match (&prev.primary, plan.phase) {
                (None, _) => events.push(event(false, "PrimaryElected", &plan.message)),
                (Some(_), Phase::Switchover) => {
                    let took = applied.handed_over.as_ref().map_or(Duration::ZERO, |h| h.2);
                    self.metrics.failovers.get_or_create(&labels("planned")).inc();
                    self.metrics
                        .failover_duration
                        .get_or_create(&labels("planned"))
                        .observe(took.as_secs_f64());
                    events.push(event(
                        false,
                        "SwitchedOver",
                        format!("{} (took {} ms)", plan.message, took.as_millis()),
                    ));
                    last_failover_time = Some(Time(jiff::Timestamp::now()));
                }
                (Some(_), _) => {
                    let took = unavailable_for.unwrap_or_default();
                    self.metrics.failovers.get_or_create(&labels("automatic")).inc();
                    self.metrics
                        .failover_duration
                        .get_or_create(&labels("automatic"))
                        .observe(took.as_secs_f64());
                    events.push(event(
                        true,
                        "FailedOver",
                        format!("{} (epoch {})", plan.message, plan.epoch),
                    ));
                    last_failover_time = Some(Time(jiff::Timestamp::now()));
                }
            }
            info!(primary = ?plan.primary, epoch = plan.epoch, "primary changed");
            mem.primary = plan.primary.clone();
            mem.epoch = plan.epoch;
            mem.primary_replid = None;
            mem.unavailable_since = None;
        }
        mem.holds_data = plan.holds_data;
        for pod in &plan.delete_pods {
            events.push(event(false, "RestartingPod", format!("deleting {pod}: {}", plan.message)));
        }

        let primary = plan.primary.as_deref();
        let primary_is_master = changed
            || primary.and_then(|p| observed.iter().find(|n| n.pod == p)).is_some_and(|n| n.is_master());
        let nodes_status = report::node_statuses(&observed, primary);
        for n in &nodes_status {
            let l =
                metrics::PodLabels { namespace: namespace.clone(), app: name.clone(), pod: n.pod.clone() };
            self.metrics.replication_lag.get_or_create(&l).set(n.lag_bytes);
        }
        let outcome = Outcome {
            status: RedisStatus {
                primary: plan.primary.clone(),
                epoch: plan.epoch,
                ready_replicas: i32::try_from(pods.iter().filter(|p| p.ready).count()).unwrap_or(i32::MAX),
                last_failover_time,
                holds_data: plan.holds_data,
                nodes: nodes_status,
            },
            role_labels: if plan.phase == Phase::Paused {
                pods.iter().filter_map(|p| Some((p.name.clone(), p.role_label.clone()?))).collect()
            } else {
                report::role_labels(pods, &observed, primary, primary_is_master)
            },
            events,
            requeue_after: plan.requeue_after,
            pods_to_delete: plan.delete_pods.clone(),
            health: report::health(&plan, &observed, primary_is_master, spec.replicas),
        };
        self.remember(&key, mem);
        Ok(outcome)
    }
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
                pod_ready: pod.ready,
                terminating: pod.terminating,
                outdated: pod.outdated,
                info,
            }
        }
    };
    futures::future::join_all(pods.iter().map(one)).await
}
