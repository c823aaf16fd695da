//! State shared by every reconcile.

use std::sync::Arc;

use kube::Client;
use kube::runtime::reflector::ObjectRef;

use super::backoff::Backoff;
use super::events::Events;
use super::fence::Fence;
use super::metrics::Metrics;
use super::status_cache::StatusCache;
use super::{apply, cache, leader, terminating};
use crate::api::CounterApp;
use crate::replication;
use crate::replication::PodView;
use crate::replication::node::{
    Addressing, ClusterAddressing, LoopbackAddressing, NodeAddr, NodeAuth, RedisClient,
};

/// Where the replication manager reaches Redis pods.
#[derive(Clone, Debug, Default)]
pub enum RedisAddressing {
    /// In a cluster: pod IPs on 6379, replicas follow the stable DNS names.
    #[default]
    Cluster,
    /// Local `redis-server` processes on loopback ports (tests, benchmarks).
    Loopback(LoopbackAddressing),
}

/// [`RedisAddressing`] for one CounterApp.
pub struct AppAddressing<'a> {
    pub app: &'a str,
    pub mode: &'a RedisAddressing,
}

impl Addressing for AppAddressing<'_> {
    fn dial(&self, pod: &PodView) -> Option<NodeAddr> {
        match self.mode {
            RedisAddressing::Cluster => ClusterAddressing { app: self.app.to_string() }.dial(pod),
            RedisAddressing::Loopback(l) => l.dial(pod),
        }
    }
    fn replication_endpoint(&self, pod: &PodView) -> NodeAddr {
        match self.mode {
            RedisAddressing::Cluster => {
                ClusterAddressing { app: self.app.to_string() }.replication_endpoint(pod)
            }
            RedisAddressing::Loopback(l) => l.replication_endpoint(pod),
        }
    }
}

/// Reconciles at once by default: enough to keep the API server busy, few enough that
/// a burst of a thousand CounterApps does not open a thousand requests at once.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// What each reconcile gets besides the CounterApp.
pub struct Context {
    pub client: Client,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// `--default-web-image`: the web image of CounterApps that set none.
    pub default_web_image: String,
    /// Redis replication manager (keeps per-CounterApp state across reconciles).
    pub replication: replication::Manager,
    /// How the manager reaches Redis pods ([`RedisAddressing::Cluster`] in production).
    pub redis_addressing: RedisAddressing,
    /// Per-CounterApp retry delays.
    pub backoff: Backoff,
    /// What was last applied to each child (drift detection without re-applying).
    pub applied: apply::AppliedHashes,
    /// The last status written per CounterApp (fresher than the watch cache).
    pub statuses: StatusCache,
    /// The watch caches reconciles read children and Redis pods from.
    pub caches: cache::Caches,
    /// Their write side, taken by the controller's watches (tests fill caches by hand).
    pub cache_writers: cache::WriterSlot,
    /// Reconciles run at once, at most (`--max-concurrent-reconciles`).
    pub max_concurrent_reconciles: u16,
    /// `--max-concurrent-rollouts` and the stacks holding a slot (operator::rollouts).
    pub max_concurrent_rollouts: usize,
    pub rollout_slots: Arc<super::rollouts::Slots>,
    /// Whether this instance may act (leader election); checked at the start of a
    /// reconcile, and by the fence before every write (the API client's and Redis').
    pub leadership: leader::Leadership,
    /// Namespace the operator runs in (`--operator-namespace`): Redis NetworkPolicies
    /// admit it.
    pub operator_namespace: Option<String>,
    /// CounterApps a write was refused for because their namespace is terminating.
    pub refused: terminating::Refused,
    /// Backups running and finished (`spec.backup`, operator::backup).
    pub backups: Arc<super::backup::Backups>,
}

impl Context {
    /// Drop everything kept about a CounterApp that is gone (or going): apply memory,
    /// last status, replication memory, health checks and metric series (the operator's
    /// per-CounterApp gauges and the replication manager's).
    pub fn forget(&self, app: &ObjectRef<CounterApp>) {
        let ns = app.namespace.clone().unwrap_or_default();
        self.applied.forget_app(&ns, &app.name);
        self.statuses.forget(app);
        self.metrics.forget_app(&ns, &app.name);
        self.refused.forget(&ns, &app.name);
        self.release_rollout_slot(&ns, &app.name);
        self.backups.forget(&replication::AppKey::new(ns.clone(), app.name.clone()));
        self.replication.forget(&replication::AppKey::new(ns, app.name.clone()));
    }

    /// Give back the stack's rollout slot, if it holds one, and wake the stacks next in
    /// line for it. Whether it held one.
    pub fn release_rollout_slot(&self, ns: &str, name: &str) -> bool {
        let Some(next) = self.rollout_slots.release(ns, name, self.max_concurrent_rollouts) else {
            return false;
        };
        for (ns, name) in next {
            self.replication.monitor().wake(replication::AppKey::new(ns, name));
        }
        true
    }

    /// A Redis client logging in with `auth`, behind the leadership fence: it sends no
    /// command that changes a node while this instance does not lead.
    pub fn redis_client(&self, auth: NodeAuth) -> RedisClient {
        let fence = Fence::new(self.leadership.clone(), self.metrics.fenced.clone());
        RedisClient::with_auth(auth).gated(Arc::new(fence))
    }

    /// Stop acting on a CounterApp whose namespace is terminating: drop what is kept
    /// about it (its Redis pods stop being checked) but remember a refusal (this one, or
    /// an earlier one), so that later wake-ups send nothing.
    pub fn stop_acting(&self, app: &CounterApp, refused: bool) {
        let (Some(ns), Some(name), Some(uid)) =
            (&app.metadata.namespace, &app.metadata.name, &app.metadata.uid)
        else {
            return;
        };
        let refused = refused || self.refused.contains(ns, name, uid);
        self.forget(&ObjectRef::from_obj(app));
        if refused {
            self.refused.record(ns, name, uid);
        }
    }

    /// Whether `app` is to be left alone: its namespace is terminating (the Namespace
    /// cache says so, or a write for it was refused for that reason).
    pub fn namespace_terminating(&self, app: &CounterApp) -> bool {
        let Some(ns) = app.metadata.namespace.as_deref() else { return false };
        let refused = match (app.metadata.name.as_deref(), app.metadata.uid.as_deref()) {
            (Some(name), Some(uid)) => self.refused.contains(ns, name, uid),
            _ => false,
        };
        refused || self.caches.namespace_terminating(ns)
    }

    /// A context with fresh metrics. `POD_NAME` (the downward API) names this operator
    /// instance in Events.
    pub fn new(client: Client, default_web_image: impl Into<String>) -> Self {
        Self::with_metrics(client, default_web_image, Metrics::default())
    }

    /// [`Context::new`] with metrics the client already records into (API requests).
    pub fn with_metrics(client: Client, default_web_image: impl Into<String>, mut metrics: Metrics) -> Self {
        let replication = replication::Manager::new();
        replication.metrics().register(&replication.monitor().metrics, metrics.registry_mut());
        let (caches, writers) = cache::new();
        Self {
            caches,
            cache_writers: cache::WriterSlot::new(writers),
            max_concurrent_reconciles: DEFAULT_CONCURRENCY,
            max_concurrent_rollouts: super::rollouts::DEFAULT_MAX,
            rollout_slots: Default::default(),
            leadership: leader::Leadership::always(),
            operator_namespace: None,
            refused: terminating::Refused::default(),
            events: Events::new(client.clone(), std::env::var("POD_NAME").ok()),
            client,
            metrics: Arc::new(metrics),
            default_web_image: default_web_image.into(),
            replication,
            redis_addressing: RedisAddressing::default(),
            backoff: Backoff::default(),
            applied: apply::AppliedHashes::default(),
            statuses: StatusCache::default(),
            backups: Default::default(),
        }
    }
}
