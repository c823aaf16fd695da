//! The operator's own watch on Redis. Every registered CounterApp's Redis pods get
//! `PING` + `ROLE` about once a second (500 ms timeout), over connections kept between
//! checks, independent of Kubernetes events and of the API server (it sends nothing
//! there). Pod readiness is ~10 s late and a hung process never changes its pod; this is
//! how a dead or frozen primary is noticed within a second.
//!
//! Two outputs: a *wake-up* (the CounterApp's key, sent to the controller) whenever what
//! a pod answers changes — it stops answering, the primary is no longer a master, a stray
//! master appears — and the *failover clock*: since when the primary has been
//! continuously unavailable. A failed check starts it, a good check stops it; the
//! replication pass feeds it too ([`Monitor::observe_primary`]) and reads it to time
//! `failover.afterSeconds`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::node::{self, NodeAddr, NodeAuth};
use crate::locked::lock;

/// How often every pod is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often each primary is checked: its failure starts the failover clock, so it is
/// checked twice per [`CHECK_INTERVAL`] (half a second less to notice, on average a quarter).
pub const PRIMARY_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// A check (connect when needed, then PING + ROLE) that takes longer has failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Checks in flight at once, over all CounterApps (a bounded pool).
const MAX_IN_FLIGHT: usize = 256;

/// A CounterApp, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    pub namespace: String,
    pub name: String,
}

impl AppKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One Redis pod to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetPod {
    pub name: String,
    /// Where to connect (the pod IP from the API, refreshed by every pass).
    pub dial: NodeAddr,
    /// The pod's Ready condition and deletionTimestamp: a primary whose pod is not Ready
    /// or is terminating gets no Service traffic, so it counts as unavailable.
    pub ready: bool,
    pub terminating: bool,
}

/// What to check for one CounterApp; every replication pass registers it anew.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub pods: Vec<TargetPod>,
    /// The primary as decided by the last pass.
    pub primary: Option<String>,
    pub auth: NodeAuth,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Target").field("pods", &self.pods).field("primary", &self.primary).finish()
    }
}

/// What one check saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// No answer within [`CHECK_TIMEOUT`] (down, frozen, refused, no route).
    Down,
    /// Answers `-LOADING`: up, but not serving yet.
    Loading,
    Master,
    /// A master that refuses writes (and PING) with `-MISCONF`: it cannot persist (a full
    /// or failing disk). Alive, and it holds its data: no failover reason. A change to or
    /// from it wakes the CounterApp, so status and Events follow within a second.
    RefusingWrites,
    /// A replica of `master` (`None`: a reply we could not read); `linked` when its
    /// replication link is up.
    Replica {
        master: Option<NodeAddr>,
        linked: bool,
    },
}

/// Parse a `ROLE` reply.
pub fn parse_role(v: &Value) -> Option<Seen> {
    let Value::Array(items) = v else { return None };
    let text = |v: &Value| match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_string),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match text(items.first()?)?.as_str() {
        "master" => Some(Seen::Master),
        "slave" => {
            let host = items.get(1).and_then(text);
            let port = match items.get(2) {
                Some(Value::Int(p)) => u16::try_from(*p).ok(),
                _ => None,
            };
            let linked = items.get(3).and_then(text).as_deref() == Some("connected");
            Some(Seen::Replica { master: host.zip(port).map(|(h, p)| NodeAddr::new(h, p)), linked })
        }
        _ => None,
    }
}

/// Since when a primary has been unavailable.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Clock {
    primary: String,
    /// The last moment it was known up (its last good check, when recent), else the
    /// first failure: the outage is timed from the last sign of life, as Sentinel's
    /// down-after does.
    since: Instant,
    /// The earliest failed check: a good result from before it does not stop the clock.
    first_failure: Instant,
}

/// How far back a failure's clock may start, at its primary's last good check: one
/// check interval plus one check's timeout covers a round that came late; an older good
/// check (the monitor was stopped, a standby took over) says nothing about now.
const MAX_UP_CREDIT: Duration = Duration::from_millis(1000);

#[derive(Default)]
struct Watched {
    target: Option<Target>,
    /// When the target's primary was registered: a round that started earlier checked
    /// the previous primary's world and says nothing about this one's availability.
    primary_since: Option<Instant>,
    seen: BTreeMap<String, Seen>,
    clock: Option<Clock>,
    /// The primary's last good check.
    last_up: Option<(String, Instant)>,
}

impl Watched {
    /// Record whether `primary` was available at `at`; returns since when it has been
    /// unavailable. A good observation stops the clock only if it is not older than the
    /// failure that started it (a check and a pass may report out of order); an older
    /// one only moves the start of the outage later.
    fn observe(&mut self, primary: &str, available: bool, at: Instant) -> Option<Instant> {
        if available {
            match &mut self.last_up {
                Some((p, t)) if p == primary => *t = (*t).max(at),
                _ => self.last_up = Some((primary.to_string(), at)),
            }
        }
        match (&mut self.clock, available) {
            (Some(c), true) if c.primary == primary && at < c.first_failure => c.since = c.since.max(at),
            (_, true) => self.clock = None,
            (Some(c), false) if c.primary == primary => {
                c.first_failure = c.first_failure.min(at);
                c.since = c.since.min(at);
            }
            (_, false) => {
                let since = match &self.last_up {
                    Some((p, up)) if p == primary && *up <= at && at.duration_since(*up) <= MAX_UP_CREDIT => {
                        *up
                    }
                    _ => at,
                };
                self.clock = Some(Clock { primary: primary.to_string(), since, first_failure: at });
            }
        }
        self.clock.as_ref().map(|c| c.since)
    }
}

/// Monitor counters.
#[derive(Clone, Default)]
pub struct MonitorMetrics {
    pub checks:
        prometheus_client::metrics::family::Family<CheckLabels, prometheus_client::metrics::counter::Counter>,
    pub wakeups: prometheus_client::metrics::counter::Counter,
}

/// Result label of `counterstack_redis_checks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CheckLabels {
    /// `up` or `down`.
    pub result: String,
}

/// The watch on every CounterApp's Redis pods. Shared: passes register targets and read
/// the clock; [`Monitor::run`] checks.
pub struct Monitor {
    apps: Mutex<HashMap<AppKey, Watched>>,
    wake: mpsc::UnboundedSender<AppKey>,
    wakeups: Mutex<Option<mpsc::UnboundedReceiver<AppKey>>>,
    pub metrics: MonitorMetrics,
}

impl Default for Monitor {
    fn default() -> Self {
        let (wake, rx) = mpsc::unbounded_channel();
        Self {
            apps: Mutex::default(),
            wake,
            wakeups: Mutex::new(Some(rx)),
            metrics: MonitorMetrics::default(),
        }
    }
}

impl Monitor {
    fn apps(&self) -> std::sync::MutexGuard<'_, HashMap<AppKey, Watched>> {
        lock(&self.apps)
    }

    /// The wake-ups, once (the controller turns them into reconciles).
    pub fn take_wakeups(&self) -> Option<mpsc::UnboundedReceiver<AppKey>> {
        lock(&self.wakeups).take()
    }

    /// Reconcile `key` soon, for a reason of the caller's (a rollout slot freed for it).
    pub fn wake(&self, key: AppKey) {
        // The receiver is gone only when the controller stopped: nothing to wake.
        let _ = self.wake.send(key);
    }

    /// Check `target` from now on (replaces what the previous pass registered).
    pub fn watch(&self, key: &AppKey, target: Target) {
        let mut apps = self.apps();
        let w = apps.entry(key.clone()).or_default();
        let names: Vec<&str> = target.pods.iter().map(|p| p.name.as_str()).collect();
        w.seen.retain(|pod, _| names.contains(&pod.as_str()));
        if w.target.as_ref().map(|t| &t.primary) != Some(&target.primary) {
            w.primary_since = Some(Instant::now());
        }
        w.target = Some(target);
    }

    /// Stop checking `key` and forget its clock (the CounterApp is gone).
    pub fn forget(&self, key: &AppKey) {
        self.apps().remove(key);
    }

    /// Record the pass's own view of `primary` at `at`; returns since when it has been
    /// unavailable (`None`: available).
    pub fn observe_primary(
        &self,
        key: &AppKey,
        primary: &str,
        available: bool,
        at: Instant,
    ) -> Option<Instant> {
        self.apps().entry(key.clone()).or_default().observe(primary, available, at)
    }

    /// Continue a countdown an earlier leader started (`status.redis
    /// .primaryUnavailableSince`): when this monitor has no clock for `primary` and has
    /// not seen it up since `since`, the next failed observation counts from `since`
    /// rather than from itself. A good observation stops it as any other clock.
    pub fn resume_clock(&self, key: &AppKey, primary: &str, since: Instant) {
        let mut apps = self.apps();
        let w = apps.entry(key.clone()).or_default();
        let seen_up_since = w.last_up.as_ref().is_some_and(|(p, up)| p == primary && *up >= since);
        if w.clock.is_none() && !seen_up_since {
            w.clock = Some(Clock { primary: primary.to_string(), since, first_failure: since });
        }
    }

    /// Since when the primary of `key` has been unavailable, as last recorded (`None`:
    /// available, or not known).
    pub fn down_since(&self, key: &AppKey) -> Option<Instant> {
        self.apps().get(key)?.clock.as_ref().map(|c| c.since)
    }

    /// The primary changed (failover or hand-over): its clock starts afresh.
    pub fn reset_clock(&self, key: &AppKey) {
        if let Some(w) = self.apps().get_mut(key) {
            w.clock = None;
        }
    }

    /// CounterApps being watched.
    pub fn len(&self) -> usize {
        self.apps().values().filter(|w| w.target.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record one round of checks of `key`, done at `at`; wake the CounterApp when any
    /// pod answers differently than in the previous round.
    fn record(&self, key: &AppKey, results: Vec<(String, Seen)>, at: Instant) {
        let mut apps = self.apps();
        let Some(w) = apps.get_mut(key) else { return };
        let Some(target) = w.target.clone() else { return };
        let mut changed = false;
        for (pod, seen) in results {
            self.metrics
                .checks
                .get_or_create(&CheckLabels { result: if seen == Seen::Down { "down" } else { "up" }.into() })
                .inc();
            if w.seen.get(&pod) != Some(&seen) {
                tracing::debug!(app = %key, %pod, ?seen, "redis pod answers differently");
                changed = true;
                w.seen.insert(pod, seen);
            }
        }
        if let Some(primary) = target.primary.as_deref().filter(|_| w.primary_since.is_none_or(|t| at >= t)) {
            let pod = target.pods.iter().find(|p| p.name == primary);
            // As `decide::primary_available` judges it: a master refusing writes for its
            // disk counts as up even when its pod is unready (a probe that wants PONG).
            let available = match w.seen.get(primary) {
                Some(Seen::Master) => pod.is_some_and(|p| p.ready && !p.terminating),
                Some(Seen::RefusingWrites) => pod.is_some_and(|p| !p.terminating),
                _ => false,
            };
            let was_running = w.clock.is_some();
            w.observe(primary, available, at);
            if was_running != w.clock.is_some() {
                changed = true;
                match w.seen.get(primary) {
                    _ if available => {
                        tracing::info!(app = %key, %primary, "primary answers again; failover clock stopped")
                    }
                    seen => {
                        tracing::info!(app = %key, %primary, ?seen, "primary failed a check; failover clock started")
                    }
                }
            }
        }
        drop(apps);
        if changed {
            self.metrics.wakeups.inc();
            // The receiver is gone only when the controller stopped: nothing to wake.
            let _ = self.wake.send(key.clone());
        }
    }

    fn targets(&self) -> Vec<(AppKey, Target)> {
        self.apps().iter().filter_map(|(k, w)| Some((k.clone(), w.target.clone()?))).collect()
    }

    /// Check every registered pod every [`CHECK_INTERVAL`] and every primary every
    /// [`PRIMARY_CHECK_INTERVAL`], forever (abort the task to stop). Connections are kept
    /// per pod and dropped on any failure or address change.
    pub async fn run(&self) {
        let mut conns: HashMap<(AppKey, String), Conn> = HashMap::new();
        let mut tick = tokio::time::interval(PRIMARY_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every =
            u32::try_from(CHECK_INTERVAL.as_millis() / PRIMARY_CHECK_INTERVAL.as_millis()).unwrap_or(1);
        let mut round: u32 = 0;
        loop {
            tick.tick().await;
            let all = round.is_multiple_of(every.max(1));
            round = round.wrapping_add(1);
            let at = Instant::now();
            let targets = self.targets();
            let mut jobs: Vec<(AppKey, TargetPod, NodeAuth, Option<Conn>)> = Vec::new();
            for (key, t) in &targets {
                for p in t.pods.iter().filter(|p| all || t.primary.as_ref() == Some(&p.name)) {
                    let conn = conns
                        .remove(&(key.clone(), p.name.clone()))
                        .filter(|c| c.dial == p.dial && c.auth == t.auth);
                    jobs.push((key.clone(), p.clone(), t.auth.clone(), conn));
                }
            }
            // Whatever was not taken belongs to pods no longer registered (only known in
            // rounds that check every pod).
            if all {
                conns.clear();
            }
            let results: Vec<(AppKey, String, Seen, Option<Conn>)> = futures::stream::iter(jobs)
                .map(|(key, pod, auth, conn)| async move {
                    let (seen, conn) = check(conn, &pod.dial, &auth).await;
                    (key, pod.name, seen, conn)
                })
                .buffer_unordered(MAX_IN_FLIGHT)
                .collect()
                .await;
            let mut by_app: BTreeMap<AppKey, Vec<(String, Seen)>> = BTreeMap::new();
            for (key, pod, seen, conn) in results {
                if let Some(c) = conn {
                    conns.insert((key.clone(), pod.clone()), c);
                }
                by_app.entry(key).or_default().push((pod, seen));
            }
            for (key, results) in by_app {
                self.record(&key, results, at);
            }
        }
    }
}

/// A kept connection and what it was opened for.
struct Conn {
    dial: NodeAddr,
    auth: NodeAuth,
    conn: MultiplexedConnection,
}

/// One check: reuse `conn` or connect, then `PING` + `ROLE` in one round trip, all within
/// [`CHECK_TIMEOUT`]. The connection comes back only when the check succeeded.
async fn check(conn: Option<Conn>, dial: &NodeAddr, auth: &NodeAuth) -> (Seen, Option<Conn>) {
    let attempt = async {
        let mut c = match conn {
            Some(c) => c,
            None => Conn {
                dial: dial.clone(),
                auth: auth.clone(),
                conn: node::connect(dial, auth, CHECK_TIMEOUT, CHECK_TIMEOUT).await?,
            },
        };
        let mut pipe = redis::pipe();
        pipe.cmd("PING").cmd("ROLE");
        // Raw replies: an error answer to PING says what state the node is in.
        let replies = {
            use redis::aio::ConnectionLike;
            c.conn.req_packed_commands(&pipe, 0, 2).await?
        };
        let mut replies = replies.into_iter();
        let (ping, role) = (replies.next().unwrap_or(Value::Nil), replies.next().unwrap_or(Value::Nil));
        let seen = match ping.extract_error() {
            Ok(_) => parse_role(&role).unwrap_or(Seen::Down),
            // PING answers -LOADING while the node loads its dataset.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) => {
                Seen::Loading
            }
            // A master that cannot persist refuses PING like any write (ROLE still answers).
            Err(e) if e.code() == Some("MISCONF") => match parse_role(&role) {
                Some(Seen::Master) => Seen::RefusingWrites,
                other => other.unwrap_or(Seen::Down),
            },
            Err(e) => return Err(e),
        };
        Ok::<_, redis::RedisError>((seen, Some(c)))
    };
    match tokio::time::timeout(CHECK_TIMEOUT, attempt).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::trace!(%dial, error = %e, "redis check failed");
            (Seen::Down, None)
        }
        Err(_) => (Seen::Down, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn role_replies_are_read() {
        let master = Value::Array(vec![bulk("master"), Value::Int(10), Value::Array(vec![])]);
        assert_eq!(parse_role(&master), Some(Seen::Master));
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("demo-redis-0.demo-redis-headless"),
            Value::Int(6379),
            bulk("connected"),
            Value::Int(10),
        ]);
        assert_eq!(
            parse_role(&replica),
            Some(Seen::Replica {
                master: Some(NodeAddr::new("demo-redis-0.demo-redis-headless", 6379)),
                linked: true
            })
        );
        let connecting = Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Int(1),
            bulk("connect"),
            Value::Int(-1),
        ]);
        assert!(matches!(parse_role(&connecting), Some(Seen::Replica { linked: false, .. })));
        assert_eq!(parse_role(&Value::Nil), None);
        assert_eq!(parse_role(&Value::Array(vec![bulk("sentinel")])), None);
    }

    #[test]
    fn the_clock_starts_at_the_last_good_check_and_a_newer_good_check_stops_it() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let mut w = Watched::default();
        // Never seen up: the outage starts at the first failure.
        assert_eq!(w.observe("p", false, s(100)), Some(s(100)));
        assert_eq!(w.observe("p", true, s(200)), None, "a newer good check stops it");
        // Seen up 500 ms before the failure: the outage counts from then.
        assert_eq!(w.observe("p", true, s(700)), None);
        assert_eq!(w.observe("p", false, s(1200)), Some(s(700)));
        assert_eq!(w.observe("p", false, s(2200)), Some(s(700)), "a later failure keeps the start");
        assert_eq!(
            w.observe("p", true, s(1000)),
            Some(s(1000)),
            "an older good result moves the start later"
        );
        assert_eq!(w.observe("p", false, s(1100)), Some(s(1000)), "an earlier failure reported late");
        assert_eq!(w.observe("p", true, s(1150)), None, "a good check after the first failure stops it");
        assert_eq!(w.observe("p", false, s(1200)), Some(s(1150)));
        assert_eq!(w.observe("p", true, s(2300)), None, "a newer good check stops it");
        // A good check long ago gives no credit.
        assert_eq!(w.observe("p", false, s(2300 + 1001)), Some(s(3301)));
        assert_eq!(w.observe("q", false, s(3400)), Some(s(3400)), "another primary has its own clock");
    }

    #[test]
    fn a_changed_answer_wakes_the_app_and_the_same_answer_does_not() {
        let m = Monitor::default();
        let mut rx = m.take_wakeups().unwrap();
        let key = AppKey::new("ns", "demo");
        let pod = |name: &str| TargetPod {
            name: name.into(),
            dial: NodeAddr::new("10.0.0.1", 6379),
            ready: true,
            terminating: false,
        };
        m.watch(
            &key,
            Target {
                pods: vec![pod("p0"), pod("p1")],
                primary: Some("p0".into()),
                auth: NodeAuth::default(),
            },
        );
        let replica = Seen::Replica { master: Some(NodeAddr::new("p0.h", 6379)), linked: true };
        let t0 = Instant::now();
        m.record(&key, vec![("p0".into(), Seen::Master), ("p1".into(), replica.clone())], t0);
        assert_eq!(rx.try_recv().ok(), Some(key.clone()), "first answers are a change");
        m.record(&key, vec![("p0".into(), Seen::Master), ("p1".into(), replica.clone())], t0);
        assert!(rx.try_recv().is_err(), "same answers: no wake-up");
        let t1 = t0 + Duration::from_secs(1);
        m.record(&key, vec![("p0".into(), Seen::Down), ("p1".into(), replica.clone())], t1);
        assert_eq!(rx.try_recv().ok(), Some(key.clone()));
        // The outage counts from the last good check, a second before.
        assert_eq!(m.observe_primary(&key, "p0", false, t1 + Duration::from_millis(300)), Some(t0));
        // A primary that refuses writes for its disk is up, even when its pod is unready.
        let t2 = t1 + Duration::from_secs(1);
        m.record(&key, vec![("p0".into(), Seen::RefusingWrites), ("p1".into(), replica.clone())], t2);
        assert_eq!(rx.try_recv().ok(), Some(key.clone()), "refusing writes is news");
        assert_eq!(m.down_since(&key), None, "a primary refusing writes is up: the clock stops");
        let unready = TargetPod { ready: false, ..pod("p0") };
        m.watch(
            &key,
            Target { pods: vec![unready, pod("p1")], primary: Some("p0".into()), auth: NodeAuth::default() },
        );
        m.record(&key, vec![("p0".into(), Seen::RefusingWrites), ("p1".into(), replica.clone())], t2);
        assert_eq!(m.down_since(&key), None, "an unready pod refusing writes is still up");
        assert!(rx.try_recv().is_err(), "same answers: no wake-up");
        m.forget(&key);
        m.record(&key, vec![("p0".into(), Seen::Master)], t1);
        assert!(rx.try_recv().is_err(), "a forgotten app is not woken");
        assert!(m.is_empty());
    }
}
