//! Redis replication manager: observe every Redis pod, decide roles (pure), actuate.
//!
//! (Interface used by the operator; the decision logic and Redis I/O are being filled in
//! by the replication work. Until then pod 0 is the primary.)

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::{CounterApp, RedisStatus};
use crate::build::{labels, names};

/// Errors of the replication manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis error on {pod}: {source}")]
    Redis { pod: String, source: ::redis::RedisError },
}

/// What the operator read from the API about one Redis pod (fresh every reconcile).
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// Keeps per-CounterApp replication state across reconciles.
#[derive(Default)]
pub struct Manager {}

impl Manager {
    pub fn new() -> Self {
        Self {}
    }

    /// One pass: observe `pods`, decide, actuate. Placeholder: pod 0 is the primary.
    pub async fn reconcile(
        &self,
        app: &CounterApp,
        pods: &[PodView],
        _password: &str,
    ) -> Result<Outcome, Error> {
        let name = app.metadata.name.clone().unwrap_or_default();
        let primary = names::redis_pod(&name, 0);
        let role_labels = pods
            .iter()
            .map(|p| {
                let role = if p.ordinal == 0 { labels::ROLE_PRIMARY } else { labels::ROLE_REPLICA };
                (p.name.clone(), role.to_string())
            })
            .collect();
        let prev = app.status.as_ref().and_then(|s| s.redis.clone()).unwrap_or_default();
        let status = RedisStatus {
            primary: Some(primary),
            epoch: prev.epoch.max(1),
            ready_replicas: pods.iter().filter(|p| p.ready).count() as i32,
            ..prev
        };
        Ok(Outcome { status, role_labels, events: vec![], requeue_after: None })
    }
}
