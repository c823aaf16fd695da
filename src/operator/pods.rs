//! Redis pods: read them from the watch cache for the replication manager (it dials
//! the IPs and checks Redis itself), and move the `counterstack.io/role` labels the
//! primary and replicas Services select on.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};

use super::Error;
use super::cache::{Cache, Slim, SlimPod};
use crate::labels::{self, Component};
use crate::names;
use crate::replication::PodView;

/// Field manager of role-label patches, separate from the one that applies children so
/// the two never contend for ownership.
pub const ROLE_FIELD_MANAGER: &str = "counterstack-operator-roles";

/// Label the StatefulSet controller puts on each pod: the revision it was created at.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The pods of CounterApp `app` in `namespace` (Redis and web), from the pod cache: one
/// pass over it per reconcile, for the replication manager ([`views`] keeps the Redis
/// pods) and the image-pull check (`operator::image_pull::failure`).
pub fn of_stack(pods: &Cache<Pod, SlimPod>, namespace: &str, app: &str) -> Vec<Pod> {
    pods.select(namespace, |name, p| {
        (p.label(labels::INSTANCE) == Some(app) && p.label(labels::NAME) == Some(labels::APP_NAME))
            .then(|| p.restore(namespace, name))
    })
}

/// Pure: the Redis pods among `pods` (what [`of_stack`] returns).
pub fn redis(pods: &[Pod]) -> Vec<Pod> {
    pods.iter()
        .filter(|p| {
            p.metadata.labels.as_ref().and_then(|l| l.get(labels::COMPONENT)).map(String::as_str)
                == Some(Component::Redis.as_str())
        })
        .cloned()
        .collect()
}

/// Pure: the pods of `app` as the replication manager sees them, by ordinal. Pods whose
/// name is not `APP-redis-K` are ignored. A pod is outdated when its revision label is
/// known and differs from `update_revision`.
pub fn views(app: &str, pods: &[Pod], update_revision: Option<&str>) -> Vec<PodView> {
    let mut out: Vec<PodView> = pods
        .iter()
        .filter_map(|p| {
            let name = p.metadata.name.clone()?;
            let ordinal = names::redis_ordinal(app, &name)?;
            let status = p.status.as_ref();
            let pod_labels = p.metadata.labels.as_ref();
            let revision = pod_labels.and_then(|l| l.get(REVISION_LABEL)).map(String::as_str);
            Some(PodView {
                uid: p.metadata.uid.clone(),
                outdated: matches!((revision, update_revision), (Some(r), Some(u)) if r != u),
                ordinal,
                ip: status.and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()),
                ready: status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
                role_label: pod_labels.and_then(|l| l.get(labels::ROLE).cloned()),
                terminating: p.metadata.deletion_timestamp.is_some(),
                name,
            })
        })
        .collect();
    out.sort_by_key(|p| p.ordinal);
    out
}

/// Pure: the label changes to make, as `(pod, role)`. Demotions come first and the new
/// primary last, so the primary Service never selects two pods at once (it may briefly
/// select none, which fails writes instead of splitting them). A pod without an IP yet
/// (Pending) is left alone: no Service routes to it, and labelling it would cost a
/// request per pod of every stack still waiting for a node; it is labelled once it runs.
pub fn label_changes(pods: &[PodView], desired: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut changes: Vec<(String, String)> = pods
        .iter()
        .filter(|p| p.ip.is_some())
        .filter_map(|p| {
            let role = desired.get(&p.name)?;
            (p.role_label.as_ref() != Some(role)).then(|| (p.name.clone(), role.clone()))
        })
        .collect();
    changes.sort_by_key(|(_, role)| role == labels::ROLE_PRIMARY);
    changes
}

/// Delete a Redis pod so the StatefulSet (`OnDelete`) recreates it at the new
/// revision; the replication manager says when this is safe. Its PVC stays. With `uid`,
/// only that very pod is deleted (a replacement the cache has not seen yet is not).
pub async fn delete(client: &Client, namespace: &str, pod: &str, uid: Option<String>) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(pod, &params).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced since it was seen (uid precondition): nothing to do.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("delete pod {namespace}/{pod}"), e)),
    }
}

/// Set `counterstack.io/role=role` on one pod (JSON merge patch of its labels only).
pub async fn set_role(client: &Client, namespace: &str, pod: &str, role: &str) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({ "metadata": { "labels": { labels::ROLE: role } } });
    let params = PatchParams { field_manager: Some(ROLE_FIELD_MANAGER.to_string()), ..Default::default() };
    match api.patch(pod, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // Deleted since it was listed: its replacement is labelled on the next pass.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("label pod {namespace}/{pod} {}={role}", labels::ROLE), e)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn pod(name: &str, ip: Option<&str>, ready: bool, role: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: role.map(|r| BTreeMap::from([(labels::ROLE.to_string(), r.to_string())])),
                ..Default::default()
            },
            status: Some(PodStatus {
                pod_ip: ip.map(Into::into),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn views_sorted_by_ordinal_and_foreign_pods_ignored() {
        let mut gone = pod("demo-redis-0", Some("10.0.0.1"), true, Some("primary"));
        gone.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let pods = vec![
            pod("demo-redis-2", None, false, None),
            gone,
            pod("other-redis-1", Some("10.0.0.9"), true, None),
            pod("demo-redis-1", Some("10.0.0.2"), true, Some("replica")),
        ];
        let v = views("demo", &pods, None);
        assert_eq!(v.iter().map(|p| p.ordinal).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(v[0].terminating && v[0].ready);
        assert_eq!(v[1].ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(v[1].role_label.as_deref(), Some("replica"));
        assert!(!v[2].ready && v[2].ip.is_none() && !v[2].terminating);
    }

    #[test]
    fn outdated_when_revision_differs_from_update_revision() {
        let mut old = pod("demo-redis-0", Some("a"), true, None);
        old.metadata.labels =
            Some(BTreeMap::from([(REVISION_LABEL.to_string(), "demo-redis-1".to_string())]));
        let mut new = pod("demo-redis-1", Some("b"), true, None);
        new.metadata.labels =
            Some(BTreeMap::from([(REVISION_LABEL.to_string(), "demo-redis-2".to_string())]));
        let unknown = pod("demo-redis-2", Some("c"), true, None);
        let v = views("demo", &[old, new, unknown], Some("demo-redis-2"));
        assert_eq!(v.iter().map(|p| p.outdated).collect::<Vec<_>>(), [true, false, false]);
        let v = views("demo", &[pod("demo-redis-0", None, true, None)], None);
        assert!(!v[0].outdated);
    }

    #[test]
    fn label_changes_demote_before_promote_and_skip_equal() {
        let pods = views(
            "demo",
            &[
                pod("demo-redis-0", Some("a"), true, Some("primary")),
                pod("demo-redis-1", Some("b"), true, Some("replica")),
                pod("demo-redis-2", Some("c"), true, Some("replica")),
            ],
            None,
        );
        let desired = BTreeMap::from([
            ("demo-redis-0".to_string(), "replica".to_string()),
            ("demo-redis-1".to_string(), "primary".to_string()),
            ("demo-redis-2".to_string(), "replica".to_string()),
        ]);
        assert_eq!(
            label_changes(&pods, &desired),
            [
                ("demo-redis-0".to_string(), "replica".to_string()),
                ("demo-redis-1".to_string(), "primary".to_string())
            ]
        );
        let same = BTreeMap::from([("demo-redis-0".to_string(), "primary".to_string())]);
        assert!(label_changes(&pods, &same).is_empty());
        let pending = views("demo", &[pod("demo-redis-0", None, false, None)], None);
        assert!(label_changes(&pending, &desired).is_empty(), "a Pending pod is labelled once it runs");
    }
}
