//! Per-object exponential backoff for failed reconciles: 5 s, 10 s, 20 s, ... up to
//! 5 min, keyed by the CounterApp's reference and reset by the next success. The
//! arithmetic is [`crate::backoff::exponential`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;

use crate::api::CounterApp;
use crate::locked::lock;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX: Duration = Duration::from_secs(300);

/// Consecutive failure counts per CounterApp.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<ObjectRef<CounterApp>, u32>>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BASE, MAX)
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, failures: Mutex::new(HashMap::new()) }
    }

    /// Record one more failure of `obj` and return how long to wait before retrying.
    pub fn next_delay(&self, obj: &ObjectRef<CounterApp>) -> Duration {
        let mut map = lock(&self.failures);
        let n = map.entry(obj.clone()).or_insert(0);
        *n = n.saturating_add(1);
        crate::backoff::exponential(*n, self.base, self.max)
    }

    /// Forget the failures of `obj` (after a successful reconcile or its deletion).
    pub fn reset(&self, obj: &ObjectRef<CounterApp>) {
        lock(&self.failures).remove(obj);
    }

    /// Current consecutive failures of `obj`.
    pub fn failures(&self, obj: &ObjectRef<CounterApp>) -> u32 {
        lock(&self.failures).get(obj).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_object_and_reset() {
        let b = Backoff::default();
        let a = ObjectRef::<CounterApp>::new("a").within("ns");
        let other = ObjectRef::<CounterApp>::new("b").within("ns");
        assert_eq!(b.next_delay(&a), Duration::from_secs(5));
        assert_eq!(b.next_delay(&a), Duration::from_secs(10));
        assert_eq!(b.next_delay(&other), Duration::from_secs(5));
        b.reset(&a);
        assert_eq!(b.failures(&a), 0);
        assert_eq!(b.next_delay(&a), Duration::from_secs(5));
    }
}
