//! The last status this operator wrote per CounterApp.
//!
//! The Controller hands reconcile the CounterApp from its watch cache, which can lag
//! behind our own status patch by a moment. The operator is the only writer of the
//! status, so its last write is the freshest truth: a stale status read back would be
//! patched again for nothing (undoing our own write for a moment: a flapping condition,
//! a `status.redis.primary` that names the former primary, an epoch going back).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;

use crate::api::{CounterApp, CounterAppStatus};
use crate::locked::lock;

/// What we wrote: for which object (uid), at which resourceVersion, what status.
#[derive(Debug)]
struct Written {
    uid: String,
    resource_version: Option<u64>,
    status: CounterAppStatus,
}

#[derive(Debug, Default)]
pub struct StatusCache {
    /// Keyed by reference, tagged with the uid (a re-created CounterApp starts afresh).
    /// An entry goes once the watch cache has caught up with it: a thousand CounterApps
    /// do not keep a thousand statuses twice.
    last: Mutex<HashMap<ObjectRef<CounterApp>, Written>>,
}

/// A resourceVersion as the etcd revision it is (None when it is not a number).
fn revision(app: &CounterApp) -> Option<u64> {
    app.metadata.resource_version.as_deref()?.parse().ok()
}

impl StatusCache {
    /// `app` with the freshest status: ours if we wrote one for this very object.
    pub fn freshest(&self, app: &CounterApp) -> CounterApp {
        let mut app = app.clone();
        let uid = app.metadata.uid.clone().unwrap_or_default();
        let key = ObjectRef::from_obj(&app);
        let mut last = lock(&self.last);
        match last.get(&key) {
            Some(w) if w.uid != uid => {}
            // The watch delivered our write (or something newer): nothing to add.
            Some(w)
                if w.resource_version.is_some_and(|ours| revision(&app).is_some_and(|seen| seen >= ours)) =>
            {
                last.remove(&key);
            }
            Some(w) => app.status = Some(w.status.clone()),
            None => {}
        }
        app
    }

    /// Remember the status just written for `app`; `written` is the CounterApp the
    /// status patch returned (its resourceVersion tells when the watch caught up).
    pub fn record(&self, app: &CounterApp, status: &CounterAppStatus, written: Option<&CounterApp>) {
        let uid = app.metadata.uid.clone().unwrap_or_default();
        let resource_version = written.and_then(revision);
        lock(&self.last)
            .insert(ObjectRef::from_obj(app), Written { uid, resource_version, status: status.clone() });
    }

    /// CounterApps with a status the watch cache has not caught up with.
    pub fn len(&self) -> usize {
        lock(&self.last).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget `app` (it is being deleted).
    pub fn forget(&self, app: &ObjectRef<CounterApp>) {
        lock(&self.last).remove(app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(uid: &str, primary: &str) -> CounterApp {
        let mut a: CounterApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "counterstack.io/v1alpha1", "kind": "CounterApp",
            "metadata": { "name": "demo", "namespace": "ns", "uid": uid },
            "spec": {},
            "status": { "redis": { "primary": primary, "epoch": 1 } },
        }))
        .unwrap();
        a.metadata.generation = Some(1);
        a
    }

    fn primary(a: &CounterApp) -> Option<String> {
        a.status.as_ref()?.redis.as_ref()?.primary.clone()
    }

    #[test]
    fn our_last_write_wins_over_a_stale_cache_for_the_same_object() {
        let cache = StatusCache::default();
        let stale = app("u1", "demo-redis-0");
        assert_eq!(primary(&cache.freshest(&stale)).as_deref(), Some("demo-redis-0"));
        let mut stale = stale;
        stale.metadata.resource_version = Some("10".into());
        let mut returned = app("u1", "demo-redis-1");
        returned.metadata.resource_version = Some("12".into());
        cache.record(&stale, &returned.status.clone().unwrap(), Some(&returned));
        assert_eq!(primary(&cache.freshest(&stale)).as_deref(), Some("demo-redis-1"));
        // A re-created CounterApp (new uid) does not inherit it.
        assert_eq!(primary(&cache.freshest(&app("u2", "demo-redis-0"))).as_deref(), Some("demo-redis-0"));
        cache.forget(&ObjectRef::from_obj(&stale));
        assert_eq!(primary(&cache.freshest(&stale)).as_deref(), Some("demo-redis-0"));
    }

    #[test]
    fn the_entry_goes_once_the_watch_cache_has_caught_up() {
        let cache = StatusCache::default();
        let mut seen = app("u1", "demo-redis-0");
        seen.metadata.resource_version = Some("10".into());
        let mut returned = app("u1", "demo-redis-1");
        returned.metadata.resource_version = Some("12".into());
        cache.record(&seen, &returned.status.clone().unwrap(), Some(&returned));
        assert_eq!(cache.len(), 1);
        // The watch delivers our write: the cache's object is as new; the entry goes.
        assert_eq!(primary(&cache.freshest(&returned)).as_deref(), Some("demo-redis-1"));
        assert!(cache.is_empty());
    }
}
