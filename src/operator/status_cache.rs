//! The last status this operator wrote per CounterApp.
//!
//! The Controller hands reconcile the CounterApp from its watch cache, which can lag
//! behind our own status patch by a moment. The operator is the only writer of the
//! status, so its last write is the freshest truth: reading a stale `status.redis.primary`
//! would point the Redis ConfigMap back at a former primary for a moment, and a stale
//! status would be patched again for nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;

use crate::api::{CounterApp, CounterAppStatus};

#[derive(Debug, Default)]
pub struct StatusCache {
    /// Keyed by reference, tagged with the uid (a re-created CounterApp starts afresh).
    last: Mutex<HashMap<ObjectRef<CounterApp>, (String, CounterAppStatus)>>,
}

impl StatusCache {
    /// `app` with the freshest status: ours if we wrote one for this very object.
    pub fn freshest(&self, app: &CounterApp) -> CounterApp {
        let mut app = app.clone();
        let uid = app.metadata.uid.clone().unwrap_or_default();
        // A poisoned lock only means a panic elsewhere mid-insert; the map is usable.
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_uid, status)) = last.get(&ObjectRef::from_obj(&app))
            && *cached_uid == uid
        {
            app.status = Some(status.clone());
        }
        app
    }

    /// Remember the status just written for `app`.
    pub fn record(&self, app: &CounterApp, status: &CounterAppStatus) {
        let uid = app.metadata.uid.clone().unwrap_or_default();
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ObjectRef::from_obj(app), (uid, status.clone()));
    }

    /// Forget `app` (it is being deleted).
    pub fn forget(&self, app: &ObjectRef<CounterApp>) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).remove(app);
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
        let written = app("u1", "demo-redis-1").status.unwrap();
        cache.record(&stale, &written);
        assert_eq!(primary(&cache.freshest(&stale)).as_deref(), Some("demo-redis-1"));
        // A re-created CounterApp (new uid) does not inherit it.
        assert_eq!(primary(&cache.freshest(&app("u2", "demo-redis-0"))).as_deref(), Some("demo-redis-0"));
        cache.forget(&ObjectRef::from_obj(&stale));
        assert_eq!(primary(&cache.freshest(&stale)).as_deref(), Some("demo-redis-0"));
    }
}
