//! `spec.redis.config` on running pods: the settings Redis accepts at runtime
//! (`redis_config::is_live`) are applied with `CONFIG SET` to every Redis pod that
//! answers, without a restart. Settings that need a restart are not touched here: they
//! change the pod template (`children::statefulset`), which the manager rolls.
//!
//! What was applied is remembered per pod and per Redis process (`run_id` of `INFO`):
//! a key is set again only when its desired value changes or the process is new (a
//! restarted pod reads redis.conf, but a ConfigMap volume may lag by up to a minute,
//! so the manager sets it anyway). Comparing with `CONFIG GET` instead would need
//! Redis' own normalisation (`100mb` reads back as `104857600`, `Ex` as `xE`).
//!
//! A key removed from the spec is left as it runs: the operator does not know the
//! default the pod started with; the next restart of the pod reads redis.conf without
//! it. A value Redis refuses (`ERR ...`) is not retried on that process until the spec
//! changes it: one `ConfigRejected` Warning Event per refusal and the `Degraded`
//! condition (reason `ConfigRejected`) while any pod refuses a setting. A pod that did
//! not answer is tried again on the next pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tracing::{debug, info, warn};

use super::node::{NodeAddr, RedisNodes};
use super::observe::NodeObservation;
use super::{AppKey, ReplicationEvent, event};
use crate::api::redis_config;
use crate::locked::lock;

/// Event and condition reason of a refused setting.
pub const REJECTED_REASON: &str = "ConfigRejected";
/// Event reason of a setting the server takes only at start (applied at the next restart).
pub const PENDING_RESTART_REASON: &str = "ConfigPendingRestart";

/// What was applied to one Redis process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PodState {
    run_id: String,
    /// Key -> value Redis accepted.
    applied: BTreeMap<String, String>,
    /// Key -> (value, Redis' error) Redis refused.
    rejected: BTreeMap<String, (String, String)>,
}

/// The live settings each CounterApp's pods run with, as far as the manager set them.
/// Losing it (operator restart) only means setting every key once more.
#[derive(Debug, Default)]
pub struct LiveConfig {
    apps: Mutex<HashMap<AppKey, BTreeMap<String, PodState>>>,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub events: Vec<ReplicationEvent>,
    /// `pod: key value: error` for every setting a pod currently refuses; empty when
    /// every pod runs what the spec asks (as far as it answered).
    pub rejected: Vec<String>,
    /// The same for settings this server version takes only at start: they apply at the
    /// pods' next restart (not a degradation).
    pub pending: Vec<String>,
}

/// The settings of `config` that Redis applies at runtime.
pub fn live_settings(config: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    config.iter().filter(|(k, _)| redis_config::is_live(k)).map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A reply Redis gave to refuse the command (as opposed to not answering).
fn refused(e: &::redis::RedisError) -> bool {
    e.code() == Some("ERR")
}

/// A refusal because this server version does not change the setting at runtime, though
/// it reads it from its config file at start: Valkey 8.1 answers `CONFIG SET dynamic-hz`
/// with "Unknown option or number of arguments for CONFIG SET", Redis with "can't set
/// immutable config" or "protected config" for such settings.
fn restart_only(e: &::redis::RedisError) -> bool {
    restart_only_message(&e.to_string())
}

fn restart_only_message(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    ["immutable config", "protected config", "unknown option"].iter().any(|m| text.contains(m))
}

/// Whether Redis' running value is the desired one (case and integer spelling aside).
pub fn same_value(desired: &str, running: &str) -> bool {
    desired.eq_ignore_ascii_case(running)
        || desired.parse::<i64>().ok().is_some_and(|d| running.parse::<i64>().ok() == Some(d))
}

impl LiveConfig {
    /// Forget a deleted CounterApp.
    pub fn forget(&self, key: &AppKey) {
        lock(&self.apps).remove(key);
    }

    /// Bring every answering, non-terminating pod in line with the live settings of
    /// `config`. `dial` gives where to reach each pod.
    pub async fn apply<N: RedisNodes>(
        &self,
        key: &AppKey,
        config: &BTreeMap<String, String>,
        observed: &[NodeObservation],
        dial: &BTreeMap<String, NodeAddr>,
        nodes: &N,
    ) -> Report {
        let desired = live_settings(config);
        let mut pods = lock(&self.apps).remove(key).unwrap_or_default();
        pods.retain(|pod, _| observed.iter().any(|n| &n.pod == pod));
        let mut refusals: Vec<(String, String, String, String)> = vec![];
        for n in observed.iter().filter(|n| !n.terminating) {
            let (Some(info), Some(at)) = (n.info.as_ref(), dial.get(&n.pod)) else { continue };
            let state = pods.entry(n.pod.clone()).or_default();
            if state.run_id != info.run_id {
                *state = PodState { run_id: info.run_id.clone(), ..PodState::default() };
            }
            // Keys no longer desired: forget them (the running value stays; see above).
            state.applied.retain(|k, _| desired.contains_key(k.as_str()));
            state.rejected.retain(|k, (v, _)| desired.get(k.as_str()) == Some(&v.as_str()));
            for (&k, &v) in &desired {
                if state.applied.get(k).is_some_and(|a| a == v) || state.rejected.contains_key(k) {
                    continue;
                }
                match nodes.config_set(at, k, v).await {
                    Ok(()) => {
                        info!(pod = %n.pod, key = k, value = v, "CONFIG SET");
                        state.applied.insert(k.to_string(), v.to_string());
                    }
                    // The process read the value from redis.conf at start: nothing to do.
                    Err(e)
                        if refused(&e)
                            && restart_only(&e)
                            && matches!(nodes.config_get(at, k).await, Ok(Some(r)) if same_value(v, &r)) =>
                    {
                        info!(pod = %n.pod, key = k, value = v, "runs the setting from redis.conf (not settable at runtime)");
                        state.applied.insert(k.to_string(), v.to_string());
                    }
                    Err(e) if refused(&e) => {
                        warn!(pod = %n.pod, key = k, value = v, error = %e, "Redis refused a setting");
                        state.applied.remove(k);
                        state.rejected.insert(k.to_string(), (v.to_string(), e.to_string()));
                        refusals.push((k.to_string(), v.to_string(), e.to_string(), n.pod.clone()));
                    }
                    // Not answering is not a verdict on the value: next pass.
                    Err(e) => {
                        debug!(pod = %n.pod, key = k, error = %e, "CONFIG SET not done; retrying next pass")
                    }
                }
            }
        }
        let (pending, rejected): (Vec<_>, Vec<_>) = pods
            .iter()
            .flat_map(|(pod, s)| {
                s.rejected.iter().map(move |(k, (v, e))| (format!("{pod}: {k} {v}: {e}"), e))
            })
            .partition(|(_, e)| restart_only_message(e));
        let (pending, rejected) =
            (pending.into_iter().map(|(m, _)| m).collect(), rejected.into_iter().map(|(m, _)| m).collect());
        lock(&self.apps).insert(key.clone(), pods);
        Report { events: refusal_events(refusals), rejected, pending }
    }
}

/// One Warning Event per refused (key, value, error), naming the pods that refused it.
/// A setting the server changes only at start is left for the pods' next restart (which
/// reads it from redis.conf); anything else keeps its previous value until the spec
/// changes. Either way it is said once per Redis process, never retried on every pass.
fn refusal_events(refusals: Vec<(String, String, String, String)>) -> Vec<ReplicationEvent> {
    let mut grouped: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for (k, v, e, pod) in refusals {
        grouped.entry((k, v, e)).or_default().push(pod);
    }
    grouped
        .into_iter()
        .map(|((k, v, e), pods)| {
            let (warning, reason, then) = if restart_only_message(&e) {
                (
                    false,
                    PENDING_RESTART_REASON,
                    "this server version takes it only at start: the pods read it from redis.conf at their next restart",
                )
            } else {
                (true, REJECTED_REASON, "it keeps its previous value until the spec changes")
            };
            event(
                warning,
                reason,
                format!("Redis refused spec.redis.config {k}={v:?} on {}: {e}; {then}", pods.join(", ")),
            )
        })
        .collect()
}

/// `health` with the refused settings folded in: `Degraded` (reason `ConfigRejected`)
/// when nothing more important already degrades the stack; settings pending a restart
/// are carried for the `Ready` message.
pub fn with_rejections(mut health: super::Health, rejected: &[String], pending: &[String]) -> super::Health {
    health.pending_restart = pending.to_vec();
    if !rejected.is_empty() && !health.degraded {
        health.degraded = true;
        health.reason = REJECTED_REASON.to_string();
        health.message = format!("Redis refused spec.redis.config settings: {}", rejected.join("; "));
    }
    health
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use super::*;
    use crate::replication::node::Snapshot;
    use crate::replication::observe::{NodeInfo, Role};

    /// Records CONFIG SETs; refuses `maxmemory-samples 0`, and `dynamic-hz` as immutable;
    /// `down` pods do not answer; `running` is what CONFIG GET answers (port, key, value).
    #[derive(Default)]
    struct Fake {
        sets: StdMutex<Vec<(u16, String, String)>>,
        down: Vec<u16>,
        running: Vec<(u16, String, String)>,
    }

    impl RedisNodes for Fake {
        async fn snapshot(&self, _: &NodeAddr) -> ::redis::RedisResult<Snapshot> {
            unimplemented!()
        }
        async fn replicaof(&self, _: &NodeAddr, _: Option<&NodeAddr>) -> ::redis::RedisResult<()> {
            unimplemented!()
        }
        async fn config_set(&self, at: &NodeAddr, key: &str, value: &str) -> ::redis::RedisResult<()> {
            if self.down.contains(&at.port) {
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
            }
            if key == "dynamic-hz" {
                // As Valkey 8.1 answers.
                return Err(::redis::make_extension_error(
                    "ERR".to_string(),
                    Some("Unknown option or number of arguments for CONFIG SET - 'dynamic-hz'".into()),
                ));
            }
            if key == "maxmemory-samples" && value == "0" {
                return Err(::redis::make_extension_error(
                    "ERR".to_string(),
                    Some("argument out of range".into()),
                ));
            }
            self.sets.lock().unwrap().push((at.port, key.to_string(), value.to_string()));
            Ok(())
        }
        async fn config_get(&self, at: &NodeAddr, key: &str) -> ::redis::RedisResult<Option<String>> {
            Ok(self.running.iter().find(|(p, k, _)| *p == at.port && k == key).map(|(_, _, v)| v.clone()))
        }
        async fn failover_to(&self, _: &NodeAddr, _: &NodeAddr, _: Duration) -> ::redis::RedisResult<()> {
            unimplemented!()
        }
        async fn request_ack(&self, _: &NodeAddr) -> ::redis::RedisResult<()> {
            unimplemented!()
        }
    }

    fn obs(i: u16, run_id: &str) -> NodeObservation {
        NodeObservation {
            pod: format!("demo-redis-{i}"),
            ordinal: u32::from(i),
            endpoint: NodeAddr::new("x", i),
            ip: None,
            pod_ready: true,
            terminating: false,
            outdated: false,
            info: Some(NodeInfo {
                role: Role::Master,
                master_host: None,
                master_port: None,
                link_up: false,
                link_down_since_secs: None,
                sync_in_progress: false,
                replid: String::new(),
                replid2: String::new(),
                second_offset: -1,
                offset: 0,
                loading: false,
                persisting: false,
                keys: 0,
                run_id: run_id.to_string(),
                uptime_secs: 1,
                connected_replicas: 0,
                online_replicas: 0,
                replicas: vec![],
                failover_state: "no-failover".into(),
                min_replicas_to_write: None,
                persistence: Default::default(),
            }),
        }
    }

    fn dial() -> BTreeMap<String, NodeAddr> {
        (0..3).map(|i| (format!("demo-redis-{i}"), NodeAddr::new("127.0.0.1", i))).collect()
    }

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_live_settings_are_set_at_runtime() {
        let c = config(&[("maxmemory-policy", "allkeys-lru"), ("io-threads", "4")]);
        assert_eq!(live_settings(&c), BTreeMap::from([("maxmemory-policy", "allkeys-lru")]));
    }

    #[tokio::test]
    async fn sets_each_key_once_per_process_and_again_after_a_restart_or_a_change() {
        let (lc, fake, key) = (LiveConfig::default(), Fake::default(), AppKey::new("ns", "demo"));
        let c = config(&[("maxmemory-policy", "allkeys-lru"), ("io-threads", "4")]);
        let two = [obs(0, "a"), obs(1, "b")];
        let r = lc.apply(&key, &c, &two, &dial(), &fake).await;
        assert_eq!(r, Report::default());
        assert_eq!(fake.sets.lock().unwrap().len(), 2, "one per pod, never io-threads");
        lc.apply(&key, &c, &two, &dial(), &fake).await;
        assert_eq!(fake.sets.lock().unwrap().len(), 2, "nothing new to set");
        lc.apply(&key, &c, &[obs(0, "a"), obs(1, "restarted")], &dial(), &fake).await;
        assert_eq!(fake.sets.lock().unwrap().last().unwrap().0, 1);
        assert_eq!(fake.sets.lock().unwrap().len(), 3, "the restarted process is set again");
        let c2 = config(&[("maxmemory-policy", "noeviction")]);
        lc.apply(&key, &c2, &[obs(0, "a"), obs(1, "restarted")], &dial(), &fake).await;
        assert_eq!(fake.sets.lock().unwrap().len(), 5, "a changed value reaches both");
        // Removing the key sets nothing (the running value stays until a restart).
        lc.apply(&key, &BTreeMap::new(), &[obs(0, "a"), obs(1, "restarted")], &dial(), &fake).await;
        assert_eq!(fake.sets.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn a_refused_value_is_reported_once_and_not_retried_until_it_changes() {
        let (lc, fake, key) = (LiveConfig::default(), Fake::default(), AppKey::new("ns", "demo"));
        let bad = config(&[("maxmemory-samples", "0")]);
        let pods = [obs(0, "a"), obs(1, "b")];
        let r = lc.apply(&key, &bad, &pods, &dial(), &fake).await;
        assert_eq!(r.events.len(), 1, "one Event for both pods: {r:?}");
        assert!(r.events[0].warning && r.events[0].reason == REJECTED_REASON);
        assert!(r.events[0].note.contains("demo-redis-0, demo-redis-1"), "{}", r.events[0].note);
        assert_eq!(r.rejected.len(), 2);
        let again = lc.apply(&key, &bad, &pods, &dial(), &fake).await;
        assert!(again.events.is_empty(), "no retry storm");
        assert_eq!(again.rejected.len(), 2, "still degraded");
        let health = with_rejections(super::super::Health::default(), &again.rejected, &again.pending);
        assert!(health.degraded && health.reason == REJECTED_REASON, "{health:?}");
        let fixed = lc.apply(&key, &config(&[("maxmemory-samples", "5")]), &pods, &dial(), &fake).await;
        assert_eq!(fixed, Report::default());
    }

    #[tokio::test]
    async fn a_setting_refused_at_runtime_that_the_process_already_runs_is_applied_silently() {
        let key = AppKey::new("ns", "demo");
        // Pod 0 started with dynamic-hz yes from redis.conf; pod 1 still runs no.
        let running =
            vec![(0, "dynamic-hz".to_string(), "yes".to_string()), (1, "dynamic-hz".into(), "no".into())];
        let (lc, fake) = (LiveConfig::default(), Fake { running, ..Fake::default() });
        let c = config(&[("dynamic-hz", "YES")]);
        let pods = [obs(0, "a"), obs(1, "b")];
        let r = lc.apply(&key, &c, &pods, &dial(), &fake).await;
        assert!(r.rejected.is_empty(), "not a degradation: {r:?}");
        assert!(r.pending.first().is_some_and(|x| x.starts_with("demo-redis-1: dynamic-hz YES")), "{r:?}");
        assert!(!r.events[0].warning && r.events[0].reason == PENDING_RESTART_REASON, "{r:?}");
        assert!(restart_only_message("ERR CONFIG SET failed - can't set immutable config"));
        assert!(!restart_only_message("ERR argument out of range"));
        assert_eq!(r.pending.len(), 1, "only the pod that runs another value: {r:?}");
        assert_eq!(r.events.len(), 1);
        assert!(r.events[0].note.contains("next restart"), "{}", r.events[0].note);
        assert!(r.events[0].note.contains("demo-redis-1") && !r.events[0].note.contains("demo-redis-0"));
        // Said once: the next pass neither retries nor repeats the Event.
        let again = lc.apply(&key, &c, &pods, &dial(), &fake).await;
        assert!(again.events.is_empty(), "{again:?}");
        assert_eq!(again.pending.len(), 1);
        let health = with_rejections(super::super::Health::default(), &again.rejected, &again.pending);
        assert!(!health.degraded && health.pending_restart.len() == 1, "{health:?}");
        // Pod 1 restarted and read it from redis.conf: nothing left to say.
        let fake = Fake { running: vec![(1, "dynamic-hz".into(), "yes".into())], ..Fake::default() };
        let restarted = lc.apply(&key, &c, &[obs(0, "a"), obs(1, "b2")], &dial(), &fake).await;
        assert_eq!(restarted, Report::default());
    }

    #[test]
    fn running_values_compare_by_case_and_integer_value() {
        assert!(same_value("yes", "yes") && same_value("YES", "yes") && same_value("010", "10"));
        assert!(!same_value("yes", "no") && !same_value("10", "11") && !same_value("100mb", "104857600"));
    }

    #[tokio::test]
    async fn a_pod_that_does_not_answer_is_tried_again_and_is_not_a_refusal() {
        let (lc, key) = (LiveConfig::default(), AppKey::new("ns", "demo"));
        let fake = Fake { down: vec![1], ..Fake::default() };
        let c = config(&[("timeout", "30")]);
        let pods = [obs(0, "a"), obs(1, "b")];
        assert_eq!(lc.apply(&key, &c, &pods, &dial(), &fake).await, Report::default());
        let fake = Fake::default();
        lc.apply(&key, &c, &pods, &dial(), &fake).await;
        assert_eq!(*fake.sets.lock().unwrap(), vec![(1, "timeout".to_string(), "30".to_string())]);
    }
}
