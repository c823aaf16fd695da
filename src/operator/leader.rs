//! Leader election: several operator replicas, one reconciles. The lease itself is
//! kube-lease-manager's (a `coordination.k8s.io` Lease, renewed with server-side apply);
//! on top of it a guard makes sure a leader that can no longer renew stops acting
//! *before* any standby may take the lease over.
//!
//! The lease expires `duration` after its last renewal; the holder renews `grace` before
//! that. The guard watches the Lease (one long-lived watch, no polling): every renewal of
//! ours it sees moves the [`Leadership`]'s deadline to [`LeaseConfig::renew_deadline`]
//! after that renewal was made (between the renewal period and the expiry), and it
//! declares the leadership lost when the Lease names someone else or the deadline passes.
//! The deadline is on the monotonic clock and [`Leadership::is_leader`] compares with it
//! at every call, so a leader cut off from the API server, or frozen and woken after its
//! lease passed, stops acting before a standby may take the lease over: two leaders
//! never act at once. The fence (`operator::fence`) checks it before every write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
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

/// Whether this instance may act as the leader right now: cheap to check before every
/// step that changes something (and the fence checks it before every write it lets out).
///
/// Valid only until a deadline on the monotonic clock, which only the guard moves forward,
/// each time it sees a renewal of ours: [`LeaseConfig::renew_deadline`] after the renewal
/// was made. A process that was frozen (SIGSTOP, a stalled node) and wakes after that
/// deadline reads "not the leader" at its very first check, whatever order its tasks then
/// run in: it no longer depends on the guard's timer firing first.
#[derive(Clone, Debug)]
pub struct Leadership(Arc<State>);

#[derive(Debug)]
struct State {
    /// Leader election off: always the leader.
    always: bool,
    /// What `valid_until` counts from.
    origin: Instant,
    /// Nanoseconds after `origin` until which this instance leads (exclusive); 0: not.
    valid_until: AtomicU64,
    /// Stepped down for good (the lease is lost): renewals seen later no longer count.
    lost: AtomicBool,
    /// How long a renewal keeps the leadership valid.
    term: Duration,
}

impl Default for Leadership {
    fn default() -> Self {
        Self::always()
    }
}

impl Leadership {
    /// Always the leader (leader election off: a single replica).
    pub fn always() -> Self {
        Self::with(true, Duration::ZERO)
    }

    /// Not the leader until a renewal is seen; each one makes it the leader for `term`
    /// after the renewal was made.
    pub fn until_renewed(term: Duration) -> Self {
        Self::with(false, term)
    }

    fn with(always: bool, term: Duration) -> Self {
        Self(Arc::new(State {
            always,
            origin: Instant::now(),
            valid_until: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            term,
        }))
    }

    pub fn is_leader(&self) -> bool {
        self.is_leader_at(Instant::now())
    }

    /// Whether this instance leads at `now`.
    pub fn is_leader_at(&self, now: Instant) -> bool {
        let s = &self.0;
        s.always
            || (!s.lost.load(Ordering::Acquire) && self.nanos(now) < s.valid_until.load(Ordering::Acquire))
    }

    /// A renewal of ours made at `at` was seen: lead until `at + term`. Never moves the
    /// deadline back (an older renewal seen late changes nothing), and does nothing once
    /// stepped down.
    pub fn renewed(&self, at: Instant) {
        let s = &self.0;
        if s.lost.load(Ordering::Acquire) {
            return;
        }
        s.valid_until.fetch_max(self.nanos(at + s.term), Ordering::AcqRel);
    }

    /// The lease is lost: never the leader again in this process.
    pub fn step_down(&self) {
        self.0.lost.store(true, Ordering::Release);
        self.0.valid_until.store(0, Ordering::Release);
    }

    /// When the leadership ends unless renewed (`None`: it does not lead).
    fn valid_until(&self) -> Option<Instant> {
        let n = self.0.valid_until.load(Ordering::Acquire);
        (n > 0 && !self.0.lost.load(Ordering::Acquire)).then(|| self.0.origin + Duration::from_nanos(n))
    }

    /// Nanoseconds from `origin` to `t` (0 before it; saturating: u64 nanoseconds last
    /// 584 years).
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.0.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The renewal time a Lease records for `identity`: `Ok(None)` when it has none, `Err`
/// (with why) when the Lease names someone else.
fn our_renewal(lease: &Lease, identity: &str) -> Result<Option<Timestamp>, String> {
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(identity) {
        return Err(format!("the lease is held by {:?}", spec.holder_identity));
    }
    Ok(spec.renew_time.map(|t| t.0))
}

/// When a renewal stamped `renew` (by this process's wall clock: the holder writes
/// `renewTime`) was made, on the monotonic clock, seen at `now` / `wall_now`. A stamp in
/// the future (the wall clock stepped back) counts as made now; `None` when the monotonic
/// clock cannot go back that far (the renewal is too old to extend anything).
fn renewal_instant(renew: Timestamp, wall_now: Timestamp, now: Instant) -> Option<Instant> {
    let age = wall_now.duration_since(renew);
    let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
    now.checked_sub(age)
}

/// Wait until this instance holds the lease, then make `leadership` valid (from the
/// renewal that acquired it) and return a future that resolves, with the reason, when the
/// leadership is lost (the caller stops then; `leadership` says "not the leader" from then
/// on, or earlier when its deadline passes first).
pub async fn acquire(
    client: Client,
    cfg: LeaseConfig,
    leadership: Leadership,
) -> Result<impl std::future::Future<Output = String> + Send, Error> {
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
    // Valid from the renewal that acquired the lease, as the Lease records it (not from
    // now: a freeze between that write and this line must not stretch the term).
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let lease = api.get(&cfg.name).await.map_err(|e| Error::Lease(format!("read the lease: {e}")))?;
    let renewed = our_renewal(&lease, &cfg.identity).map_err(Error::Lease)?;
    if let Some(at) = renewed.and_then(|t| renewal_instant(t, Timestamp::now(), Instant::now())) {
        leadership.renewed(at);
    }
    if !leadership.is_leader() {
        return Err(Error::Lease("the lease was acquired too long ago to act on it".into()));
    }
    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "holding the lease: leading");
    Ok(guard(client, cfg, leadership, held, task))
}

/// Resolves (with the reason) when the leadership is lost; steps down first. Moves the
/// leadership's deadline on with every renewal of ours it sees.
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
    let term = cfg.renew_deadline();
    let why = loop {
        let Some(deadline) = leadership.valid_until() else {
            break format!("no renewal of the lease seen for {term:?}");
        };
        tokio::select! {
            changed = held.changed() => {
                if changed.is_err() || !*held.borrow() {
                    break "the lease manager reports the lease lost".to_string();
                }
            }
            ev = leases.next() => match ev {
                Some(Ok(lease)) => match our_renewal(&lease, &cfg.identity) {
                    Err(why) => break why,
                    Ok(renew) => {
                        if let Some(at) = renew.and_then(|t| renewal_instant(t, Timestamp::now(), Instant::now())) {
                            leadership.renewed(at);
                        }
                    }
                },
                Some(Err(e)) => tracing::warn!(error = %e, "watching the lease failed; retrying"),
                None => break "the lease watch ended".to_string(),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                if !leadership.is_leader() {
                    break format!("no renewal of the lease seen for {term:?}");
                }
            }
        }
    };
    leadership.step_down();
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

    const TERM: Duration = Duration::from_secs(13);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_leadership_is_valid_from_a_renewal_until_its_term_has_passed() {
        let l = Leadership::until_renewed(TERM);
        let t0 = Instant::now();
        assert!(!l.is_leader_at(t0), "leading before any renewal");
        l.renewed(t0);
        assert!(l.is_leader_at(t0));
        assert!(l.is_leader_at(t0 + TERM - Duration::from_millis(1)));
        assert!(!l.is_leader_at(t0 + TERM), "still leading when the term ended");
        // A process frozen for longer than the term reads "not the leader" on waking,
        // before anything else (the guard included) ran.
        assert!(!l.is_leader_at(t0 + secs(60)));
    }

    #[test]
    fn each_renewal_seen_extends_it_and_an_old_one_seen_late_does_not_shorten_it() {
        let l = Leadership::until_renewed(TERM);
        let t0 = Instant::now();
        l.renewed(t0);
        l.renewed(t0 + secs(9));
        assert!(l.is_leader_at(t0 + secs(20)), "the second renewal did not extend it");
        assert!(!l.is_leader_at(t0 + secs(22)));
        l.renewed(t0 + secs(1));
        assert!(l.is_leader_at(t0 + secs(21)), "an older renewal moved the deadline back");
        assert_eq!(l.valid_until(), Some(t0 + secs(22)));
    }

    #[test]
    fn a_stepped_down_leadership_stays_down_whatever_renewal_comes_later() {
        let l = Leadership::until_renewed(TERM);
        let t0 = Instant::now();
        l.renewed(t0);
        l.step_down();
        assert!(!l.is_leader_at(t0));
        l.renewed(t0 + secs(1));
        assert!(!l.is_leader_at(t0 + secs(2)));
        assert_eq!(l.valid_until(), None);
        // Clones share the state (the fence holds one).
        assert!(!l.clone().is_leader_at(t0));
    }

    #[test]
    fn without_leader_election_it_always_leads() {
        let l = Leadership::always();
        assert!(l.is_leader());
        assert!(l.is_leader_at(Instant::now() + secs(3600)));
    }

    fn lease(holder: Option<&str>, renew: Option<Timestamp>) -> Lease {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: renew.map(MicroTime),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_lease_naming_us_carries_our_renewal() {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(our_renewal(&lease(Some("me"), Some(t)), "me"), Ok(Some(t)));
        assert_eq!(our_renewal(&lease(Some("me"), None), "me"), Ok(None));
        assert!(our_renewal(&lease(Some("other"), Some(t)), "me").unwrap_err().contains("other"));
        assert!(our_renewal(&lease(None, None), "me").is_err());
    }

    #[test]
    fn a_renewal_counts_from_when_it_was_made_not_from_when_it_was_seen() {
        let now = Instant::now() + secs(100);
        let wall = Timestamp::from_second(1_700_000_100).unwrap();
        let made = Timestamp::from_second(1_700_000_095).unwrap();
        // Seen 5 s late (a slow watch, or a freeze): 5 s of its term are gone.
        assert_eq!(renewal_instant(made, wall, now), Some(now - secs(5)));
        // Stamped in the future (the wall clock stepped back since): counts as made now.
        let future = Timestamp::from_second(1_700_000_160).unwrap();
        assert_eq!(renewal_instant(future, wall, now), Some(now));
        // A renewal seen after its whole term (a frozen process reading its watch's
        // backlog) makes no leader.
        let l = Leadership::until_renewed(TERM);
        let stale = Timestamp::from_second(1_700_000_100 - 60).unwrap();
        if let Some(at) = renewal_instant(stale, wall, now) {
            l.renewed(at);
        }
        assert!(!l.is_leader_at(now));
    }
}
