//! The one list of Kubernetes permissions the operator needs. The Helm chart's and the
//! kustomize base's ClusterRoles are checked against [`RULES`] by `tests/it/packaging.rs`:
//! a ClusterRole that grants more or less than this list fails the build.
//!
//! Why each verb is here:
//! - Children are written with server-side apply. Apply is a PATCH, but when the object
//!   does not exist yet the API server also authorizes the request as `create` on that
//!   name (apiserver `handlers/patch.go`, `createAuthorizerAttributes`), so owned kinds
//!   need both `create` and `patch`. Every owned kind is watched (`get list watch`).
//! - Children are not deleted by the operator: owner references let the garbage
//!   collector remove them with their CounterApp, and PVCs are kept on purpose. The
//!   exceptions are the optional children (HorizontalPodAutoscaler, NetworkPolicy),
//!   deleted when the spec stops asking for them (`delete` on those two only).
//! - Owner references set `blockOwnerDeletion: true`, which needs `update` on
//!   `counterapps/finalizers` where the OwnerReferencesPermissionEnforcement admission
//!   plugin is on (OpenShift).
//! - Redis pods get their role label patched (`patch`) and are deleted for planned
//!   restarts by the replication manager (`delete`).
//! - A `counterstack.io/rotate` request is removed from the CounterApp once its rotation
//!   started (`patch` on `counterapps`, a merge patch of that one annotation).
//! - `spec.redis.tls.issuerRef`: the operator reads (`get`) and applies (`create`,
//!   `patch`) the cert-manager Certificate `NAME-redis-tls`. It is read by name when a
//!   CounterApp asks for it, not watched (cert-manager's Secret is, with our labels).
//! - Events go through kube's `Recorder`: `create`, and `patch` for event series.
//! - Leader election: kube-lease-manager reads, creates and renews (server-side apply, a
//!   PATCH) the `coordination.k8s.io` Lease; the leadership guard watches it
//!   (`list`, `watch`). No `delete` or `update`.
//! - Namespaces are watched metadata-only (`list`, `watch`) so that a CounterApp whose
//!   namespace is terminating is left alone instead of having its children created again
//!   (refused) while the namespace controller deletes them. A namespace-scoped install's
//!   Role cannot grant a cluster-scoped kind: that operator does not watch Namespaces and
//!   learns it from the first refused write instead (`operator::terminating`).
//!
//! - A larger `spec.redis.storage.size` (operator::storage): the stack's Redis
//!   PersistentVolumeClaims are listed (`list`, by label, only while an expansion runs:
//!   not watched) and their request raised (`patch`); the StatefulSet, whose claim
//!   templates are immutable, is deleted with `propagationPolicy: Orphan` (`delete`, its
//!   pods keep running) and applied again. PVCs are never deleted.
//! - `spec.backup.volume` (operator::backup_job): the backup claim is checked to exist
//!   (`list` by name, the verb above), and each backup is a Job the operator creates,
//!   reads (`get`; its pod's termination message through the pod verbs above) and
//!   deletes when done (`delete`); `list` (by label) finds a Job left running by a
//!   previous operator. Jobs are not watched.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// One permission: `verbs` on `resource` (possibly `kind/subresource`) of API `group`
/// (`""` is the core group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Owned children: watched, and written with server-side apply (create + patch).
const OWNED: &[&str] = &["get", "list", "watch", "create", "patch"];
/// Optional children: also deleted when the spec no longer asks for them.
const OPTIONAL: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Everything the operator is allowed to do, and nothing more.
pub const RULES: &[Rule] = &[
    Rule { group: "counterstack.io", resource: "counterapps", verbs: &["get", "list", "watch", "patch"] },
    Rule { group: "counterstack.io", resource: "counterapps/status", verbs: &["patch"] },
    Rule { group: "counterstack.io", resource: "counterapps/finalizers", verbs: &["update"] },
    Rule { group: "apps", resource: "deployments", verbs: OWNED },
    // `delete`: replaced (orphaning its pods) when the volumes grow.
    Rule { group: "apps", resource: "statefulsets", verbs: OPTIONAL },
    Rule { group: "", resource: "services", verbs: OWNED },
    Rule { group: "", resource: "configmaps", verbs: OWNED },
    Rule { group: "", resource: "secrets", verbs: OWNED },
    Rule { group: "policy", resource: "poddisruptionbudgets", verbs: OWNED },
    Rule { group: "autoscaling", resource: "horizontalpodautoscalers", verbs: OPTIONAL },
    Rule { group: "networking.k8s.io", resource: "networkpolicies", verbs: OPTIONAL },
    Rule { group: "cert-manager.io", resource: "certificates", verbs: &["get", "create", "patch"] },
    Rule { group: "", resource: "pods", verbs: &["get", "list", "watch", "patch", "delete"] },
    Rule { group: "events.k8s.io", resource: "events", verbs: &["create", "patch"] },
    Rule {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    Rule { group: "", resource: "namespaces", verbs: &["list", "watch"] },
    Rule { group: "", resource: "persistentvolumeclaims", verbs: &["list", "patch"] },
    Rule { group: "batch", resource: "jobs", verbs: &["get", "list", "create", "delete"] },
];

/// Every (group, resource, verb) triple [`RULES`] grants, sorted: the form the
/// packaging test compares ClusterRoles in.
pub fn grants() -> Vec<(String, String, String)> {
    let mut out: Vec<_> = RULES
        .iter()
        .flat_map(|r| {
            r.verbs.iter().map(move |v| (r.group.to_string(), r.resource.to_string(), v.to_string()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// [`RULES`] as ClusterRole rules: one rule per (group, verbs), resources in list order.
pub fn policy_rules() -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for r in RULES {
        let verbs: Vec<String> = r.verbs.iter().map(|v| v.to_string()).collect();
        let same = out
            .iter_mut()
            .find(|p| p.api_groups.as_deref() == Some(&[r.group.to_string()][..]) && p.verbs == verbs);
        match same {
            Some(p) => p.resources.get_or_insert_with(Vec::new).push(r.resource.to_string()),
            None => out.push(PolicyRule {
                api_groups: Some(vec![r.group.to_string()]),
                resources: Some(vec![r.resource.to_string()]),
                verbs,
                ..PolicyRule::default()
            }),
        }
    }
    out
}

/// [`policy_rules`] as YAML, the block the chart's and the base's ClusterRoles hold
/// under `rules:`.
pub fn rules_yaml() -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&policy_rules())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::Resource;
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
    use k8s_openapi::api::events::v1::Event;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;

    use super::*;

    const KNOWN_VERBS: &[&str] =
        &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];

    fn verbs_of(group: &str, resource: &str) -> BTreeSet<&'static str> {
        RULES
            .iter()
            .filter(|r| r.group == group && r.resource == resource)
            .flat_map(|r| r.verbs.iter().copied())
            .collect()
    }

    fn has<K: Resource>(verbs: &[&str]) -> bool {
        let granted = verbs_of(K::GROUP, K::URL_PATH_SEGMENT);
        verbs.iter().all(|v| granted.contains(v))
    }

    #[test]
    fn no_wildcards_no_unknown_verbs_no_duplicate_entries() {
        let mut seen = BTreeSet::new();
        for r in RULES {
            assert!(!r.group.contains('*') && !r.resource.contains('*'), "{r:?}");
            assert!(seen.insert((r.group, r.resource)), "{r:?} listed twice");
            for v in r.verbs {
                assert!(KNOWN_VERBS.contains(v), "unknown verb {v} in {r:?}");
            }
        }
    }

    #[test]
    fn every_child_kind_can_be_watched_and_server_side_applied() {
        let owned = ["get", "list", "watch", "create", "patch"];
        assert!(has::<Deployment>(&owned));
        assert!(has::<StatefulSet>(&owned));
        assert!(has::<Service>(&owned));
        assert!(has::<ConfigMap>(&owned));
        assert!(has::<Secret>(&owned));
        assert!(has::<PodDisruptionBudget>(&owned));
        assert!(has::<HorizontalPodAutoscaler>(OPTIONAL));
        assert!(has::<NetworkPolicy>(OPTIONAL));
        assert!(has::<Pod>(&["get", "list", "watch", "patch", "delete"]));
        assert!(has::<Event>(&["create", "patch"]));
        // Namespaces are only watched (terminating ones are left alone).
        assert_eq!(verbs_of("", "namespaces"), BTreeSet::from(["list", "watch"]));
    }

    #[test]
    fn only_pods_optional_children_the_statefulset_and_backup_jobs_are_deleted_and_pvcs_never() {
        let deletable = ["pods", "horizontalpodautoscalers", "networkpolicies", "statefulsets", "jobs"];
        for r in RULES.iter().filter(|r| !deletable.contains(&r.resource)) {
            assert!(!r.verbs.contains(&"delete"), "{r:?}");
        }
        // Listed and patched (expansion), never deleted, not watched.
        assert_eq!(verbs_of("", "persistentvolumeclaims"), BTreeSet::from(["list", "patch"]));
        // Backup Jobs: created, followed by GET (not watched), deleted when read.
        assert_eq!(verbs_of("batch", "jobs"), BTreeSet::from(["get", "list", "create", "delete"]));
    }

    #[test]
    fn counterapp_rules_use_the_api_group() {
        for r in RULES.iter().filter(|r| r.resource.starts_with("counterapps")) {
            assert_eq!(r.group, crate::api::GROUP);
        }
        assert_eq!(verbs_of(crate::api::GROUP, "counterapps/finalizers"), BTreeSet::from(["update"]));
        assert_eq!(verbs_of(crate::api::GROUP, "counterapps/status"), BTreeSet::from(["patch"]));
        // `patch` only removes a handled `counterstack.io/rotate` annotation.
        assert_eq!(
            verbs_of(crate::api::GROUP, "counterapps"),
            BTreeSet::from(["get", "list", "watch", "patch"])
        );
    }

    #[test]
    fn certificates_are_read_by_name_and_applied_never_listed_or_deleted() {
        assert_eq!(verbs_of("cert-manager.io", "certificates"), BTreeSet::from(["get", "create", "patch"]));
    }

    #[test]
    fn policy_rules_grant_exactly_rules() {
        let mut from_policy: Vec<(String, String, String)> = policy_rules()
            .iter()
            .flat_map(|p| {
                let groups = p.api_groups.clone().unwrap_or_default();
                let resources = p.resources.clone().unwrap_or_default();
                let verbs = p.verbs.clone();
                groups.into_iter().flat_map(move |g| {
                    let verbs = verbs.clone();
                    resources.clone().into_iter().flat_map(move |r| {
                        let g = g.clone();
                        verbs.clone().into_iter().map(move |v| (g.clone(), r.clone(), v))
                    })
                })
            })
            .collect();
        from_policy.sort();
        assert_eq!(from_policy, grants());
        // Merged by (group, verbs): the core group's owned kinds share one rule.
        let core: Vec<_> = policy_rules()
            .into_iter()
            .filter(|p| p.api_groups == Some(vec!["".into()]) && p.verbs == OWNED)
            .collect();
        assert_eq!(core.len(), 1);
        assert_eq!(core[0].resources, Some(vec!["services".into(), "configmaps".into(), "secrets".into()]));
    }
}
