//! Server-side apply of children, only when needed.
//!
//! Every desired child carries `counterstack.io/applied-hash`, a hash of the desired
//! object itself. A child is applied only when it is missing, when its hash differs
//! from the desired one (the CounterApp or the operator changed), or when someone else
//! changed it after we did (its generation, or resourceVersion for kinds without
//! generation, moved since our last apply). Re-applying unchanged objects is not
//! harmless: SSA of a StatefulSet with volumeClaimTemplates bumps its resourceVersion
//! every time (kubernetes/kubernetes#119304), which would re-trigger the controller
//! forever.
//!
//! The live state comes from the watch caches, which can lag behind our own last apply
//! by a moment. A cached object older than what our apply returned (or missing, right
//! after we created it) is our own write on its way, never someone else's edit: the
//! decision is [`Decision::Wait`] (the watch event of our write wakes the CounterApp).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::Error;
use crate::api::FIELD_MANAGER;
use crate::locked;

/// Annotation holding the hash of the desired object last applied.
pub const HASH_ANNOTATION: &str = "counterstack.io/applied-hash";

/// What to do with one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It does not exist: apply (create).
    Create,
    /// Its hash differs from the desired one: apply.
    Update,
    /// Same hash, but someone else changed it since our last apply: apply again.
    Revert,
    /// Up to date: send nothing.
    Skip,
    /// The cache has not caught up with our own last apply yet: send nothing now.
    Wait,
}

impl Decision {
    pub fn applies(self) -> bool {
        matches!(self, Decision::Create | Decision::Update | Decision::Revert)
    }
}

/// What the operator last saw of a child that matched its desired hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub hash: String,
    /// `g<generation>`, or `rv<resourceVersion>` for kinds without generation.
    pub marker: Option<String>,
}

/// Identity of a child in [`AppliedHashes`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ChildKey {
    namespace: String,
    app: String,
    kind: String,
    name: String,
}

/// Per-child [`Seen`] records, kept across reconciles, by CounterApp (namespace, name)
/// and then `Kind/name` (ten children share their CounterApp's strings). Lost on
/// restart, which only means the first reconcile after a restart takes the live object
/// as the baseline.
#[derive(Debug, Default)]
pub struct AppliedHashes {
    seen: Mutex<HashMap<(String, String), HashMap<String, Seen>>>,
}

impl AppliedHashes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), HashMap<String, Seen>>> {
        locked::lock(&self.seen)
    }

    fn get(&self, key: &ChildKey) -> Option<Seen> {
        let app = (key.namespace.clone(), key.app.clone());
        self.lock().get(&app)?.get(&format!("{}/{}", key.kind, key.name)).cloned()
    }

    fn record(&self, key: ChildKey, seen: Seen) {
        let child = format!("{}/{}", key.kind, key.name);
        self.lock().entry((key.namespace, key.app)).or_default().insert(child, seen);
    }

    /// Drop every record of the children of `app` (it is being deleted).
    pub fn forget_app(&self, namespace: &str, app: &str) {
        self.lock().remove(&(namespace.to_string(), app.to_string()));
    }

    /// Drop the record of one child (its watch saw it deleted): when it is missing from
    /// the cache now, it must be created again, not waited for.
    pub fn forget_object(&self, namespace: &str, kind: &str, name: &str) {
        let child = format!("{kind}/{name}");
        for ((ns, _), children) in self.lock().iter_mut() {
            if ns == namespace {
                children.remove(&child);
            }
        }
    }

    /// Children with a record.
    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The change marker of a live object: its generation when the kind has one (status
/// updates do not move it), else its resourceVersion.
pub fn marker(meta: &ObjectMeta) -> Option<String> {
    match (meta.generation, &meta.resource_version) {
        (Some(g), _) => Some(format!("g{g}")),
        (None, Some(rv)) => Some(format!("rv{rv}")),
        (None, None) => None,
    }
}

/// `live` is an older version of the object than `ours` (both markers of the same kind:
/// generations, or resourceVersions, which are etcd revisions and grow).
fn is_older(live: Option<&str>, ours: Option<&str>) -> bool {
    let split = |m: &str| -> Option<(String, u64)> {
        let digits = m.trim_start_matches(|c: char| !c.is_ascii_digit());
        Some((m[..m.len() - digits.len()].to_string(), digits.parse().ok()?))
    };
    match (live.and_then(split), ours.and_then(split)) {
        (Some((lk, l)), Some((ok, o))) => lk == ok && l < o,
        _ => false,
    }
}

/// Pure decision for one child, from its cached state and what our last apply returned.
pub fn decide(desired_hash: &str, live: Option<&ObjectMeta>, seen: Option<&Seen>) -> Decision {
    let ours = seen.filter(|s| s.hash == desired_hash);
    let Some(live) = live else {
        // Created by us and not in the cache yet. (A child deleted since loses its record
        // with the delete event, so it is created again.)
        return if ours.is_some() { Decision::Wait } else { Decision::Create };
    };
    if ours.is_some_and(|s| is_older(marker(live).as_deref(), s.marker.as_deref())) {
        return Decision::Wait;
    }
    let live_hash = live.annotations.as_ref().and_then(|a| a.get(HASH_ANNOTATION));
    if live_hash.map(String::as_str) != Some(desired_hash) {
        return Decision::Update;
    }
    match seen {
        Some(s) if s.hash == desired_hash && s.marker != marker(live) => Decision::Revert,
        _ => Decision::Skip,
    }
}

/// Hash of a desired object (before the hash annotation is added).
pub fn hash_of<K: Serialize>(desired: &K, what: &str) -> Result<String, Error> {
    let bytes =
        serde_json::to_vec(desired).map_err(|source| Error::Serialize { what: what.into(), source })?;
    // 128 bits are plenty to tell versions of one object apart.
    Ok(hex::encode(&Sha256::digest(&bytes)[..16]))
}

/// A desired child's identity and hash, the hash also put in its annotation.
struct Stamped {
    kind: String,
    name: String,
    namespace: String,
    hash: String,
}

fn stamp_hash<K>(desired: &mut K) -> Result<Stamped, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Serialize,
{
    let kind = K::kind(&()).to_string();
    let name = desired.name_any();
    let namespace = desired
        .namespace()
        .ok_or_else(|| Error::InvalidObject(format!("desired {kind} {name} has no namespace")))?;
    // Hashed before the annotation goes in: the hash is of the desired object itself.
    let hash = hash_of(&*desired, &format!("{kind} {name}"))?;
    desired.annotations_mut().insert(HASH_ANNOTATION.to_string(), hash.clone());
    Ok(Stamped { kind, name, namespace, hash })
}

/// Result of [`ensure`].
#[derive(Clone, Debug)]
pub struct ApplyOutcome<K> {
    /// The object as the API server returned it, when it was applied.
    pub object: Option<K>,
    pub decision: Decision,
}

/// GET a namespaced object; `None` when it does not exist. Only for what the caches
/// cannot answer safely (a Secret we are about to create with a new password).
pub async fn get<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.map_err(|e| Error::kube(format!("get {} {namespace}/{name}", K::kind(&())), e))
}

/// Make the child `desired` of CounterApp `app` exist as built, given its `live`
/// metadata (from the watch cache): server-side apply with force when [`decide`] says so.
pub async fn ensure<K>(
    client: &Client,
    memory: &AppliedHashes,
    app: &str,
    mut desired: K,
    live: Option<&ObjectMeta>,
) -> Result<ApplyOutcome<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    check_controller(desired.meta(), live, &K::kind(&()), &desired.name_any())?;
    let Stamped { kind, name, namespace, hash } = stamp_hash(&mut desired)?;
    let key = ChildKey {
        namespace: namespace.clone(),
        app: app.to_string(),
        kind: kind.clone(),
        name: name.clone(),
    };
    let seen = memory.get(&key);
    let decision = decide(&hash, live, seen.as_ref());
    if !decision.applies() {
        if decision == Decision::Skip
            && let Some(live) = live
        {
            // Baseline for telling a later foreign edit from our own (after a restart).
            memory.record(key, Seen { hash, marker: marker(live) });
        }
        return Ok(ApplyOutcome { object: None, decision });
    }
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    tracing::info!(%kind, %name, ?decision, "applying");
    let object = api
        .patch(&name, &params, &Patch::Apply(&desired))
        .await
        .map_err(|e| Error::kube(format!("apply {kind} {namespace}/{name}"), e))?;
    memory.record(key, Seen { hash, marker: marker(object.meta()) });
    Ok(ApplyOutcome { object: Some(object), decision })
}

/// Create `desired` only if no object of that name exists: `POST`, which the API server
/// refuses when one does, where an apply would overwrite it. For children whose content
/// must never be replaced by a guess (a Secret with a new password, decided while the
/// cache had none). `Ok(None)`: it exists already (read it). The object carries the hash
/// annotation and is recorded as our own, like an applied one.
pub async fn create_new<K>(
    client: &Client,
    memory: &AppliedHashes,
    app: &str,
    mut desired: K,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let Stamped { kind, name, namespace, hash } = stamp_hash(&mut desired)?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PostParams::default() };
    match api.create(&params, &desired).await {
        Ok(object) => {
            tracing::info!(%kind, %name, "created");
            let key = ChildKey { namespace, app: app.to_string(), kind, name };
            memory.record(key, Seen { hash, marker: marker(object.meta()) });
            Ok(Some(object))
        }
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => Ok(None),
        Err(e) => Err(Error::kube(format!("create {kind} {namespace}/{name}"), e)),
    }
}

/// What [`ensure`] would decide for `desired`, without sending anything.
pub fn pending<K>(
    memory: &AppliedHashes,
    app: &str,
    desired: &K,
    live: Option<&ObjectMeta>,
) -> Result<Decision, Error>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let kind = K::kind(&()).to_string();
    let name = desired.name_any();
    let hash = hash_of(desired, &format!("{kind} {name}"))?;
    let key =
        ChildKey { namespace: desired.namespace().unwrap_or_default(), app: app.to_string(), kind, name };
    Ok(decide(&hash, live, memory.get(&key).as_ref()))
}

/// Field manager that keeps a Deployment's `replicas` when the operator stops writing
/// it (autoscaling turned on). Server-side apply removes a field its only manager stops
/// sending, and a Deployment without `replicas` defaults to 1: this second manager
/// holds the current count until the HorizontalPodAutoscaler takes it over.
pub const REPLICAS_HANDOFF_MANAGER: &str = "counterstack-replicas-handoff";

/// Apply only `spec.replicas = replicas` of a Deployment, as [`REPLICAS_HANDOFF_MANAGER`].
pub async fn hand_off_replicas(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> Result<(), Error> {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "replicas": replicas },
    });
    tracing::info!(%name, replicas, "handing the web replica count over to the autoscaler");
    api.patch(name, &PatchParams::apply(REPLICAS_HANDOFF_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|e| Error::kube(format!("apply Deployment {namespace}/{name} replicas"), e))?;
    Ok(())
}

/// Delete a child the spec no longer asks for (an autoscaler or NetworkPolicy turned
/// off), or one that must be replaced (a Service that loses its ClusterIP), only when
/// this CounterApp controls it. Never used for data (PVCs, Secrets). `why` is logged.
/// Returns whether a delete was sent.
pub async fn remove<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
    live: &ObjectMeta,
    why: &str,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let ours =
        live.owner_references.iter().flatten().any(|o| o.controller == Some(true) && o.uid == owner_uid);
    if !ours {
        return Ok(false);
    }
    let kind = K::kind(&());
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    tracing::info!(%kind, %name, why, "deleting");
    // Only the object seen: one re-created meanwhile (by us or anyone) is left alone.
    let params = DeleteParams {
        preconditions: live.uid.clone().map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        // Gone already, or another object of that name now (the next pass sees it).
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(format!("delete {kind} {namespace}/{name}"), e)),
    }
}

/// Refuse to take over an object that another owner controls (a name clash), rather
/// than silently stealing it.
fn check_controller(
    desired: &ObjectMeta,
    live: Option<&ObjectMeta>,
    kind: &str,
    name: &str,
) -> Result<(), Error> {
    let controller_uid = |m: &ObjectMeta| {
        m.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true)).map(|o| o.uid.clone())
    };
    match (controller_uid(desired), live.and_then(controller_uid)) {
        (Some(ours), Some(theirs)) if ours != theirs => {
            Err(Error::NotOwned { kind: kind.to_string(), name: name.to_string() })
        }
        _ => Ok(()),
    }
}

/// Make an object of a kind the operator does not watch (cert-manager's Certificate)
/// exist as built: one GET, and a server-side apply only when its `spec` or our labels
/// differ (steady state stays silent). Returns whether it applied. A missing kind (no
/// cert-manager in the cluster) is an error that says so.
pub async fn ensure_dynamic(
    client: &Client,
    namespace: &str,
    desired: &kube::api::DynamicObject,
    resource: &kube::api::ApiResource,
) -> Result<bool, Error> {
    let name = desired.name_any();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let what = format!("{} {namespace}/{name}", resource.kind);
    let live = api.get_opt(&name).await.map_err(|e| Error::kube(format!("get {what}"), e))?;
    if let Some(live) = &live {
        let same_spec = live.data.get("spec") == desired.data.get("spec");
        let labels = desired.labels().iter().all(|(k, v)| live.labels().get(k) == Some(v));
        if same_spec && labels {
            return Ok(false);
        }
    }
    tracing::info!(kind = %resource.kind, %name, "applying");
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(desired)).await.map_err(
        |e| {
            // The kind itself is unknown: its CRD (cert-manager) is not installed.
            let hint = if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                format!("apply {what} (is cert-manager installed? its CRDs are missing)")
            } else {
                format!("apply {what}")
            };
            Error::kube(hint, e)
        },
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn meta(hash: Option<&str>, generation: Option<i64>, rv: &str) -> ObjectMeta {
        ObjectMeta {
            annotations: hash.map(|h| BTreeMap::from([(HASH_ANNOTATION.to_string(), h.to_string())])),
            generation,
            resource_version: Some(rv.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn missing_child_is_created() {
        assert_eq!(decide("h", None, None), Decision::Create);
    }

    #[test]
    fn other_or_absent_hash_is_updated() {
        assert_eq!(decide("h", Some(&meta(Some("old"), Some(1), "5")), None), Decision::Update);
        assert_eq!(decide("h", Some(&meta(None, Some(1), "5")), None), Decision::Update);
    }

    #[test]
    fn same_hash_without_memory_is_skipped() {
        assert_eq!(decide("h", Some(&meta(Some("h"), Some(3), "9")), None), Decision::Skip);
    }

    #[test]
    fn status_only_changes_do_not_trigger_apply_for_kinds_with_generation() {
        let seen = Seen { hash: "h".into(), marker: Some("g3".into()) };
        // resourceVersion moved (status update), generation did not.
        assert_eq!(decide("h", Some(&meta(Some("h"), Some(3), "42")), Some(&seen)), Decision::Skip);
    }

    #[test]
    fn foreign_spec_edit_is_reverted() {
        let seen = Seen { hash: "h".into(), marker: Some("g3".into()) };
        assert_eq!(decide("h", Some(&meta(Some("h"), Some(4), "43")), Some(&seen)), Decision::Revert);
        // Kinds without generation use the resourceVersion.
        let seen = Seen { hash: "h".into(), marker: Some("rv7".into()) };
        assert_eq!(decide("h", Some(&meta(Some("h"), None, "8")), Some(&seen)), Decision::Revert);
        assert_eq!(decide("h", Some(&meta(Some("h"), None, "7")), Some(&seen)), Decision::Skip);
    }

    #[test]
    fn a_cache_behind_our_own_apply_waits_and_is_never_taken_for_an_edit() {
        let ours = Seen { hash: "h".into(), marker: Some("g4".into()) };
        // Created by us, not cached yet.
        assert_eq!(decide("h", None, Some(&ours)), Decision::Wait);
        // The cache still has the version before our update (old hash, older generation).
        assert_eq!(decide("h", Some(&meta(Some("old"), Some(3), "40")), Some(&ours)), Decision::Wait);
        // Same for kinds without generation: resourceVersions are etcd revisions.
        let ours = Seen { hash: "h".into(), marker: Some("rv90".into()) };
        assert_eq!(decide("h", Some(&meta(Some("old"), None, "85")), Some(&ours)), Decision::Wait);
        // Caught up: nothing to do; someone's later edit: revert.
        assert_eq!(decide("h", Some(&meta(Some("h"), None, "90")), Some(&ours)), Decision::Skip);
        assert_eq!(decide("h", Some(&meta(Some("h"), None, "91")), Some(&ours)), Decision::Revert);
        // A new desired state is applied whatever the cache says.
        assert_eq!(decide("h2", Some(&meta(Some("h"), None, "85")), Some(&ours)), Decision::Update);
        assert_eq!(decide("h2", None, Some(&ours)), Decision::Create);
    }

    #[test]
    fn hash_is_stable_and_content_sensitive() {
        let mut a = ConfigMap::default();
        a.metadata.name = Some("x".into());
        a.data = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
        let b = a.clone();
        assert_eq!(hash_of(&a, "a").unwrap(), hash_of(&b, "b").unwrap());
        assert_eq!(hash_of(&a, "a").unwrap().len(), 32);
        let mut c = a.clone();
        c.data = Some(BTreeMap::from([("k".to_string(), "w".to_string())]));
        assert_ne!(hash_of(&a, "a").unwrap(), hash_of(&c, "c").unwrap());
    }

    #[test]
    fn refuses_objects_controlled_by_someone_else() {
        let owned_by = |uid: &str| {
            let mut cm = ConfigMap::default();
            cm.metadata.owner_references =
                Some(vec![OwnerReference { controller: Some(true), uid: uid.into(), ..Default::default() }]);
            cm
        };
        let desired = owned_by("ours");
        let m = |cm: &ConfigMap| cm.metadata.clone();
        assert!(check_controller(&m(&desired), Some(&m(&owned_by("ours"))), "ConfigMap", "x").is_ok());
        assert!(check_controller(&m(&desired), Some(&m(&ConfigMap::default())), "ConfigMap", "x").is_ok());
        assert!(check_controller(&m(&desired), None, "ConfigMap", "x").is_ok());
        assert!(matches!(
            check_controller(&m(&desired), Some(&m(&owned_by("theirs"))), "ConfigMap", "x"),
            Err(Error::NotOwned { .. })
        ));
    }
}
