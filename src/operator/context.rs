//! State shared by every reconcile.

use std::sync::Arc;

use kube::Client;

use super::apply;
use super::backoff::Backoff;
use super::events::Events;
use super::metrics::Metrics;
use super::status_cache::StatusCache;
use crate::redis;

/// What each reconcile gets besides the CounterApp.
pub struct Context {
    pub client: Client,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// `--default-web-image`: the web image of CounterApps that set none.
    pub default_web_image: String,
    /// Redis replication manager (keeps per-CounterApp state across reconciles).
    pub redis: redis::Manager,
    /// Per-CounterApp retry delays.
    pub backoff: Backoff,
    /// What was last applied to each child (drift detection without re-applying).
    pub applied: apply::Memory,
    /// The last status written per CounterApp (fresher than the watch cache).
    pub statuses: StatusCache,
}

impl Context {
    /// A context with fresh metrics. `POD_NAME` (the downward API) names this operator
    /// instance in Events.
    pub fn new(client: Client, default_web_image: impl Into<String>) -> Self {
        let redis = redis::Manager::new();
        let metrics = Metrics::default();
        Self {
            events: Events::new(client.clone(), std::env::var("POD_NAME").ok()),
            client,
            metrics: Arc::new(metrics),
            default_web_image: default_web_image.into(),
            redis,
            backoff: Backoff::default(),
            applied: apply::Memory::default(),
            statuses: StatusCache::default(),
        }
    }
}
