//! Operator-caused rollouts, a few stacks at a time. A new operator version or a new
//! `--default-web-image` can change the pod template of every stack at once; applied as
//! is, every stack would restart together (CloudNativePG #5950). Such a change waits for
//! one of `--max-concurrent-rollouts` slots; a stack keeps its slot until it is Ready with
//! both workloads rolled out, then the next one goes. Changes the user made (the spec,
//! `counterstack.io/restartedAt`, a password or TLS change) roll at once, as always.
//!
//! How a change is told apart: the operator stamps each workload (its metadata, not its
//! pod template, so the stamps restart nothing) with two short hashes: the pod template
//! it applied ([`TEMPLATE_ANNOTATION`]), and the user's inputs it was rendered from
//! ([`INPUTS_ANNOTATION`]: the spec's generation and the CounterApp's `counterstack.io/`
//! requests such as a restart or a password rotation).
//! A template that differs while the inputs are the same was changed by the operator.
//! Same rendering, same template hash: an upgrade that changes nothing in effect rolls
//! nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::api::CounterApp;
use crate::locked::lock;

/// Workload annotation: hash of the pod template last applied.
pub const TEMPLATE_ANNOTATION: &str = "counterstack.io/template-hash";
/// Workload annotation: hash of the user's inputs that template was rendered from.
pub const INPUTS_ANNOTATION: &str = "counterstack.io/inputs-hash";
/// Default of `--max-concurrent-rollouts`.
pub const DEFAULT_MAX: usize = 2;

/// First 16 hex digits of a sha256 over `value`'s JSON (enough to tell versions apart).
fn short_hash<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let full = crate::children::meta::config_hash([("v", json.as_slice())]);
    full[..16].to_string()
}

/// The two stamps of a desired workload: (template hash, inputs hash). The inputs stamp
/// covers what a user changes without a new generation: the CounterApp's own
/// `counterstack.io/` requests (restart, password rotation). Spec changes are told by the
/// generation against `status.observedGeneration` instead ([`operator_caused`]): a stamp
/// of the generation would re-apply both workloads on every spec edit.
pub fn stamps(app: &CounterApp, template: &PodTemplateSpec) -> (String, String) {
    let requests: Vec<(&String, &String)> =
        app.metadata.annotations.iter().flatten().filter(|(k, _)| REQUESTS.contains(&k.as_str())).collect();
    (short_hash(template), short_hash(&requests))
}

/// The CounterApp annotations that ask for a pod-template change.
const REQUESTS: [&str; 2] = [crate::api::RESTARTED_AT_ANNOTATION, crate::api::ROTATE_ANNOTATION];

/// Put the stamps on a desired workload's metadata. While the template is the one `live`
/// has, its inputs stamp is kept: a request that changes no template (or the removal of
/// a handled one) re-applies nothing.
pub fn stamp(meta: &mut ObjectMeta, (template, inputs): &(String, String), live: Option<&ObjectMeta>) {
    let get = |k: &str| live.and_then(|l| l.annotations.as_ref()?.get(k).cloned());
    let inputs = match get(INPUTS_ANNOTATION) {
        Some(kept) if get(TEMPLATE_ANNOTATION).as_deref() == Some(template.as_str()) => kept,
        _ => inputs.clone(),
    };
    let a = meta.annotations.get_or_insert_with(Default::default);
    a.insert(TEMPLATE_ANNOTATION.to_string(), template.clone());
    a.insert(INPUTS_ANNOTATION.to_string(), inputs);
}

/// Whether applying `desired` stamps over `live` (the cached workload's metadata) is a
/// pod-template change the operator caused: the template differs, the spec has not
/// changed since the last status (`spec_observed`: generation = observedGeneration) and
/// no new request was made. A workload stamped by no version yet (an upgrade from one
/// before stamps) counts as the operator's when the spec was observed.
pub fn operator_caused(desired: &(String, String), live: Option<&ObjectMeta>, spec_observed: bool) -> bool {
    let Some(live) = live else {
        return false; // created: nothing rolls
    };
    let get = |k: &str| live.annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str);
    if !spec_observed || get(TEMPLATE_ANNOTATION) == Some(desired.0.as_str()) {
        return false;
    }
    get(INPUTS_ANNOTATION).is_none_or(|inputs| inputs == desired.1)
}

/// Longest a stack keeps a slot: one that never becomes Ready (broken before the
/// upgrade, or by it) must not hold the others back for ever.
pub const SLOT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a stack refused a slot keeps its place in line without asking again: a
/// waiting stack asks every few seconds (the reconcile's recheck); one that stopped
/// (deleted, its change no longer the operator's) must not block the line.
pub const WAITER_TIMEOUT: Duration = Duration::from_secs(20);

type Key = (String, String);

/// A stack waiting for a slot.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    /// First refused: the line is served oldest first.
    since: Instant,
    /// Last asked.
    asked: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Stacks holding a slot, with when they took it.
    held: BTreeMap<Key, Instant>,
    waiting: BTreeMap<Key, Waiter>,
}

/// The stacks holding a rollout slot, and the line of those waiting for one, by
/// namespace and name. Slots go to the longest-waiting stacks first.
#[derive(Debug, Default)]
pub struct Slots {
    state: Mutex<State>,
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

impl Slots {
    /// Take a slot for the stack (or keep the one it has); false when all `max` are held
    /// by others, or the free ones belong to stacks that have waited longer (the stack
    /// then keeps its place in line). Slots held longer than [`SLOT_TIMEOUT`] are taken
    /// back first.
    pub fn acquire(&self, ns: &str, name: &str, max: usize) -> bool {
        self.acquire_at(ns, name, max, Instant::now())
    }

    fn acquire_at(&self, ns: &str, name: &str, max: usize, now: Instant) -> bool {
        let mut st = lock(&self.state);
        let me = key(ns, name);
        if st.held.contains_key(&me) {
            return true;
        }
        st.held.retain(|(n, a), since| {
            let keep = now.saturating_duration_since(*since) < SLOT_TIMEOUT;
            if !keep {
                tracing::warn!(namespace = %n, name = %a, "a stack held its rollout slot for {SLOT_TIMEOUT:?} without becoming Ready; giving the slot to the next");
            }
            keep
        });
        st.waiting.retain(|_, w| now.saturating_duration_since(w.asked) < WAITER_TIMEOUT);
        let free = max.saturating_sub(st.held.len());
        let since = st.waiting.get(&me).map_or(now, |w| w.since);
        let ahead = st.waiting.iter().filter(|(k, w)| **k != me && (w.since, *k) < (since, &me)).count();
        if ahead < free {
            st.waiting.remove(&me);
            st.held.insert(me, now);
            return true;
        }
        st.waiting.insert(me, Waiter { since, asked: now });
        false
    }

    pub fn holds(&self, ns: &str, name: &str) -> bool {
        lock(&self.state).held.contains_key(&key(ns, name))
    }

    /// Give the slot back (the stack is Ready again, hibernated, or gone) and leave the
    /// line. Returns the stacks that may take the free slots now (oldest waiting first),
    /// to be woken rather than left to their next recheck; `None` when it held no slot.
    pub fn release(&self, ns: &str, name: &str, max: usize) -> Option<Vec<(String, String)>> {
        let mut st = lock(&self.state);
        let me = key(ns, name);
        st.waiting.remove(&me);
        st.held.remove(&me)?;
        let free = max.saturating_sub(st.held.len());
        let mut line: Vec<(&Key, &Waiter)> = st.waiting.iter().collect();
        line.sort_by_key(|(k, w)| (w.since, *k));
        Some(line.into_iter().take(free).map(|(k, _)| k.clone()).collect())
    }

    /// The stack needs no slot (its change is not the operator's any more): out of line.
    pub fn not_waiting(&self, ns: &str, name: &str) {
        let mut st = lock(&self.state);
        if !st.waiting.is_empty() {
            st.waiting.remove(&key(ns, name));
        }
    }

    /// Stacks rolling now.
    pub fn len(&self) -> usize {
        lock(&self.state).held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stacks waiting for a slot.
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn live(template: Option<&str>, inputs: Option<&str>) -> ObjectMeta {
        let mut a = BTreeMap::new();
        if let Some(t) = template {
            a.insert(TEMPLATE_ANNOTATION.to_string(), t.to_string());
        }
        if let Some(i) = inputs {
            a.insert(INPUTS_ANNOTATION.to_string(), i.to_string());
        }
        ObjectMeta { annotations: Some(a), ..ObjectMeta::default() }
    }

    #[test]
    fn only_a_template_change_with_the_same_user_inputs_is_the_operators() {
        let desired = ("t2".to_string(), "i1".to_string());
        assert!(operator_caused(&desired, Some(&live(Some("t1"), Some("i1"))), true));
        // The user asked for something (a restart): rolls at once.
        assert!(!operator_caused(&desired, Some(&live(Some("t1"), Some("i0"))), true));
        // The user changed the spec (not observed yet): rolls at once.
        assert!(!operator_caused(&desired, Some(&live(Some("t1"), Some("i1"))), false));
        // Same template: nothing rolls, whatever else changed.
        assert!(!operator_caused(&desired, Some(&live(Some("t2"), Some("i0"))), true));
        // New workload: nothing to roll.
        assert!(!operator_caused(&desired, None, true));
        // Stamped by no version yet: the operator's, unless the spec moved.
        assert!(operator_caused(&desired, Some(&live(None, None)), true));
        assert!(!operator_caused(&desired, Some(&live(None, None)), false));
    }

    #[test]
    fn slots_are_bounded_kept_by_their_holder_and_given_back() {
        let s = Slots::default();
        assert!(s.acquire("ns", "a", 2));
        assert!(s.acquire("ns", "b", 2));
        assert!(!s.acquire("ns", "c", 2), "a third stack waits");
        assert!(s.acquire("ns", "a", 2), "a holder keeps its slot");
        assert_eq!(
            s.release("ns", "a", 2),
            Some(vec![("ns".to_string(), "c".to_string())]),
            "the waiting one is woken"
        );
        assert!(s.acquire("ns", "c", 2));
        assert_eq!((s.len(), s.waiting()), (2, 0));
        assert_eq!(s.release("ns", "x", 2), None, "no slot, nothing freed");
        // A stack that never gets Ready loses its slot after SLOT_TIMEOUT.
        let later = Instant::now() + SLOT_TIMEOUT + Duration::from_secs(1);
        assert!(s.acquire_at("ns", "d", 2, later));
        assert!(!s.holds("ns", "b") && !s.holds("ns", "c"));
    }

    #[test]
    fn free_slots_go_to_the_longest_waiting_stacks() {
        let s = Slots::default();
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        assert!(s.acquire_at("ns", "a", 1, at(0)));
        assert!(!s.acquire_at("ns", "z-first", 1, at(1)));
        assert!(!s.acquire_at("ns", "b-second", 1, at(2)));
        assert_eq!(s.release("ns", "a", 1), Some(vec![("ns".to_string(), "z-first".to_string())]));
        // The later one asks first: the slot is kept for the one in front of it.
        assert!(!s.acquire_at("ns", "b-second", 1, at(3)));
        assert!(s.acquire_at("ns", "z-first", 1, at(4)));
        // A stack that stopped asking loses its place; one that needs no slot leaves.
        assert!(!s.acquire_at("ns", "c", 1, at(5)));
        s.not_waiting("ns", "c");
        assert_eq!(s.release("ns", "z-first", 1), Some(vec![("ns".to_string(), "b-second".to_string())]));
        assert!(!s.acquire_at("ns", "a", 1, at(6)), "a newcomer queues behind b-second");
        assert!(s.acquire_at("ns", "b-second", 1, at(7)));
        assert_eq!(s.release("ns", "b-second", 1), Some(vec![("ns".to_string(), "a".to_string())]));
        let much_later = at(7) + WAITER_TIMEOUT + Duration::from_secs(1);
        assert!(s.acquire_at("ns", "e", 1, much_later), "a stopped asking: its place is gone");
    }

    #[test]
    fn the_inputs_hash_follows_our_requests_only() {
        let app = CounterApp::new("demo", Default::default());
        let t = PodTemplateSpec::default();
        let (t1, i1) = stamps(&app, &t);
        let mut other = t.clone();
        other.metadata =
            Some(ObjectMeta { labels: Some([("x".into(), "y".into())].into()), ..Default::default() });
        let (t2, i2) = stamps(&app, &other);
        assert_ne!(t1, t2);
        assert_eq!(i1, i2, "a template change alone leaves the inputs");
        let mut restarted = app.clone();
        let restart = crate::api::RESTARTED_AT_ANNOTATION.to_string();
        restarted.metadata.annotations = Some([(restart, "now".to_string())].into());
        assert_ne!(stamps(&restarted, &t).1, i1);
        // The spec is told by the generation, not the stamp (no re-apply per edit).
        let mut edited = app.clone();
        edited.metadata.generation = Some(2);
        assert_eq!(stamps(&edited, &t).1, i1);
        // The stamp of an unchanged template is kept, whatever the requests.
        let mut meta = ObjectMeta::default();
        let live_meta = live(Some(&t1), Some("old"));
        stamp(&mut meta, &stamps(&restarted, &t), Some(&live_meta));
        assert_eq!(meta.annotations.as_ref().unwrap()[INPUTS_ANNOTATION], "old");
        stamp(&mut meta, &stamps(&restarted, &other), Some(&live_meta));
        assert_eq!(meta.annotations.as_ref().unwrap()[INPUTS_ANNOTATION], stamps(&restarted, &t).1);
        // Someone else's annotation (a GitOps tool's) is no request.
        let mut tracked = app.clone();
        tracked.metadata.annotations =
            Some([("argocd.argoproj.io/tracking-id".to_string(), "x".to_string())].into());
        assert_eq!(stamps(&tracked, &t).1, i1);
    }
}
