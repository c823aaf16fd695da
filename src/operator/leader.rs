//! Leader election: several operator replicas, one reconciles. The lease itself is
//! kube-lease-manager's (a `coordination.k8s.io` Lease, renewed with server-side apply);
//! on top of it a guard makes sure a leader that can no longer renew stops acting
//! *before* any standby may take the lease over.
//!
//! The lease expires `duration` after its last renewal; the holder renews `grace` before
//! that. The guard watches the Lease (one long-lived watch, no polling) and declares the
//! leadership lost when the Lease names someone else, or when no renewal by us was seen for
//! [`Leadership::renew_deadline`] (between the renewal period and the expiry): a leader
//! cut off from the API server stops before the lease it can no longer renew expires, so
//! two leaders never act at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

use super::Error;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This instance (the pod name in a cluster).
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal.
    pub duration: u64,
    /// Seconds before expiry the holder renews.
    pub grace: u64,
}

impl LeaseConfig {
    /// How long without a renewal seen before the guard steps down: two seconds before
    /// the expiry (room for the renewal's own event to arrive), which leaves a late
    /// renewal `grace - 2` seconds past the renewal period (`duration - grace`).
    pub fn renew_deadline(&self) -> Duration {
        Duration::from_secs(self.duration.saturating_sub(2).max(1))
    }
}

/// Whether this instance may act as the leader right now; cheap to check before every
/// step that changes something.
#[derive(Clone, Debug, Default)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    /// Always the leader (leader election off: a single replica).
    pub fn always() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, v: bool) {
        self.0.store(v, Ordering::Release);
    }
}

/// Wait until this instance holds the lease. Returns the leadership flag (true now) and
/// a future that resolves when the leadership is lost (the caller stops then).
pub async fn acquire(
    client: Client,
    cfg: LeaseConfig,
) -> Result<(Leadership, impl std::future::Future<Output = String> + Send), Error> {
    let manager: LeaseManager = LeaseManagerBuilder::new(client.clone(), &cfg.name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration)
        .with_grace(cfg.grace)
        .build()
        .await
        .map_err(|e| Error::Lease(e.to_string()))?;
    let (mut held, task) = manager.watch().await;
    tracing::info!(lease = %cfg.name, namespace = %cfg.namespace, identity = %cfg.identity, "waiting for the lease");
    while !*held.borrow_and_update() {
        held.changed().await.map_err(|_| Error::Lease("the lease manager stopped".into()))?;
    }
    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "holding the lease: leading");
    let leadership = Leadership(Arc::new(AtomicBool::new(true)));
    let lost = guard(client, cfg, leadership.clone(), held, task);
    Ok((leadership, lost))
}

/// Resolves (with the reason) when the leadership is lost; clears the flag first.
async fn guard(
    client: Client,
    cfg: LeaseConfig,
    leadership: Leadership,
    mut held: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<kube_lease_manager::Result<LeaseManager>>,
) -> String {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", cfg.name));
    let mut leases = watcher(api, config).default_backoff().applied_objects().boxed();
    let deadline = cfg.renew_deadline();
    let mut renewed_at = Instant::now();
    let mut last_renew: Option<String> = None;
    let why = loop {
        tokio::select! {
            changed = held.changed() => {
                if changed.is_err() || !*held.borrow() {
                    break "the lease manager reports the lease lost".to_string();
                }
            }
            ev = leases.next() => match ev {
                Some(Ok(lease)) => {
                    let spec = lease.spec.unwrap_or_default();
                    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
                        break format!("the lease is held by {:?}", spec.holder_identity);
                    }
                    let renew = spec.renew_time.map(|t| t.0.to_string());
                    if renew != last_renew {
                        last_renew = renew;
                        renewed_at = Instant::now();
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "watching the lease failed; retrying"),
                None => break "the lease watch ended".to_string(),
            },
            _ = tokio::time::sleep_until((renewed_at + deadline).into()) => {
                break format!("no renewal of the lease seen for {deadline:?}");
            }
        }
    };
    leadership.set(false);
    tracing::error!(reason = %why, "leadership lost; stopping");
    task.abort();
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(duration: u64, grace: u64) -> LeaseConfig {
        LeaseConfig { namespace: "ns".into(), name: "l".into(), identity: "me".into(), duration, grace }
    }

    #[test]
    fn the_guard_steps_down_after_the_renewal_period_and_before_the_expiry() {
        for (d, g) in [(15, 6), (20, 8), (30, 10)] {
            let c = cfg(d, g);
            let t = c.renew_deadline();
            assert!(t > Duration::from_secs(d - g), "{d}/{g}: {t:?} not past the renewal period");
            assert!(t < Duration::from_secs(d), "{d}/{g}: {t:?} not before the expiry");
        }
    }
}
