//! A watch cache that keeps only what reconciles read of each object.
//!
//! kube's reflector `Store` keeps whole typed objects: a `Pod` or a `Deployment` is over
//! 2 KiB before its first string (the unused `spec` and `template` fields are inline), a
//! metadata-only object pays a `BTreeMap` node (~0.5 KiB) for its one annotation, and
//! every key repeats name, namespace, uid and resourceVersion. At a thousand stacks
//! (13,000 children, 2,000 Redis pods) that was most of the operator's memory. Here each
//! object becomes its [`Slim`] form when its watch event arrives, and reads rebuild the
//! typed object (with only those fields set) for the code that reads it.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::watch;

/// What a cache keeps of an object of kind `K`. Equality tells whether a change of the
/// object changed anything a reconcile reads.
pub trait Slim<K>: PartialEq + Send + Sync + 'static {
    /// The parts of `obj` reconciles read.
    fn slim(obj: &K) -> Self;
    /// `K` with only those parts (name and namespace from the cache key).
    fn restore(&self, namespace: &str, name: &str) -> K;
}

/// (namespace, name); the namespace is empty for cluster-scoped kinds.
type Key = (String, String);

struct Shared<S> {
    objects: RwLock<HashMap<Key, S>>,
    /// True once the first complete list is in.
    ready: watch::Sender<bool>,
}

/// Read side of one cache.
pub struct Cache<K, S> {
    shared: Arc<Shared<S>>,
    kind: PhantomData<fn() -> K>,
}

impl<K, S> Clone for Cache<K, S> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone(), kind: PhantomData }
    }
}

/// Write side of one cache: fed the watch's events (tests feed it by hand).
pub struct Writer<K, S> {
    shared: Arc<Shared<S>>,
    /// A re-list in progress: it replaces the cache when complete.
    relist: Option<HashMap<Key, S>>,
    kind: PhantomData<fn(&K)>,
}

/// A new, empty cache and its writer.
pub fn new<K, S>() -> (Cache<K, S>, Writer<K, S>) {
    let shared = Arc::new(Shared { objects: RwLock::new(HashMap::new()), ready: watch::Sender::new(false) });
    (Cache { shared: shared.clone(), kind: PhantomData }, Writer { shared, relist: None, kind: PhantomData })
}

fn key<K: Resource>(obj: &K) -> Key {
    let m = obj.meta();
    (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
}

impl<S> Shared<S> {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, S>> {
        // A writer that panicked left a map that is still a valid map.
        self.objects.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, S>> {
        self.objects.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<K: Resource, S: Slim<K>> Writer<K, S> {
    /// Apply one watch event, as kube's reflector does: a re-list (`Init`..`InitDone`)
    /// replaces the whole cache at its end; the cache is ready after the first one.
    /// Returns whether the event changed what the cache keeps of its object (a new
    /// object, a deleted one, or a change of a field a reconcile reads): only such a
    /// change can change what a reconcile decides.
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(obj) => {
                let (key, slim) = (key(obj), S::slim(obj));
                let changed = self.shared.read().get(&key) != Some(&slim);
                if let Some(relist) = self.relist.as_mut() {
                    relist.insert(key, slim);
                }
                changed
            }
            watcher::Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    *self.shared.write() = relist;
                }
                self.shared.ready.send_replace(true);
                false
            }
            watcher::Event::Apply(obj) => {
                let slim = S::slim(obj);
                let mut objects = self.shared.write();
                let key = key(obj);
                let changed = objects.get(&key) != Some(&slim);
                objects.insert(key, slim);
                changed
            }
            watcher::Event::Delete(obj) => {
                self.shared.write().remove(&key(obj));
                true
            }
        }
    }
}

impl<K, S: Slim<K>> Cache<K, S> {
    /// The object `name` in `namespace` (empty for cluster-scoped kinds), as far as the
    /// cache keeps it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<K> {
        let objects = self.shared.read();
        objects.get(&(namespace.to_string(), name.to_string())).map(|s| s.restore(namespace, name))
    }

    /// Whatever `f` picks from the objects of `namespace`.
    pub fn select<T>(&self, namespace: &str, mut f: impl FnMut(&str, &S) -> Option<T>) -> Vec<T> {
        let objects = self.shared.read();
        objects
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .filter_map(|((_, name), s)| f(name, s))
            .collect()
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.shared.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first complete list is in.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.shared.ready.subscribe();
        // Err only when the sender is gone, which it never is while `self` holds it.
        let _ = ready.wait_for(|r| *r).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// Keeps the resourceVersion only.
    #[derive(PartialEq)]
    struct Rv(Option<String>);

    impl Slim<ConfigMap> for Rv {
        fn slim(obj: &ConfigMap) -> Self {
            Rv(obj.metadata.resource_version.clone())
        }
        fn restore(&self, namespace: &str, name: &str) -> ConfigMap {
            ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(namespace.into()),
                    resource_version: self.0.clone(),
                    ..Default::default()
                },
                ..Default::default()
            }
        }
    }

    fn cm(name: &str, rv: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some("ns".into());
        c.metadata.resource_version = Some(rv.into());
        c
    }

    #[tokio::test]
    async fn events_apply_like_the_reflector_and_a_relist_replaces_everything() {
        let (cache, mut w) = new::<ConfigMap, Rv>();
        w.apply_watcher_event(&watcher::Event::Init);
        w.apply_watcher_event(&watcher::Event::InitApply(cm("a", "1")));
        assert!(cache.is_empty(), "a list in progress is not visible");
        w.apply_watcher_event(&watcher::Event::InitDone);
        cache.wait_until_ready().await;
        assert_eq!(cache.get("ns", "a").and_then(|c| c.metadata.resource_version).as_deref(), Some("1"));
        assert_eq!(cache.get("ns", "a").and_then(|c| c.metadata.name).as_deref(), Some("a"));
        assert!(w.apply_watcher_event(&watcher::Event::Apply(cm("b", "2"))), "new");
        assert!(!w.apply_watcher_event(&watcher::Event::Apply(cm("b", "2"))), "nothing kept changed");
        assert!(w.apply_watcher_event(&watcher::Event::Apply(cm("a", "3"))), "a kept field changed");
        assert_eq!(cache.get("ns", "a").and_then(|c| c.metadata.resource_version).as_deref(), Some("3"));
        w.apply_watcher_event(&watcher::Event::Delete(cm("b", "4")));
        assert!(cache.get("ns", "b").is_none());
        assert!(cache.get("other", "a").is_none());
        // A re-list after a watch gap: what it does not list is gone; what it lists as
        // it was is no change.
        w.apply_watcher_event(&watcher::Event::Init);
        assert!(!w.apply_watcher_event(&watcher::Event::InitApply(cm("a", "3"))));
        assert!(w.apply_watcher_event(&watcher::Event::InitApply(cm("c", "5"))));
        w.apply_watcher_event(&watcher::Event::InitDone);
        let mut names = cache.select("ns", |name, _| Some(name.to_string()));
        names.sort();
        assert_eq!(names, ["a", "c"]);
        w.apply_watcher_event(&watcher::Event::Init);
        w.apply_watcher_event(&watcher::Event::InitApply(cm("c", "5")));
        w.apply_watcher_event(&watcher::Event::InitDone);
        assert!(cache.get("ns", "a").is_none());
        assert_eq!(cache.select("ns", |name, _| Some(name.to_string())), ["c"]);
    }
}
