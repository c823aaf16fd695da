//! NetworkPolicy `NAME-redis` (with `spec.networkPolicy.enabled`, the default): the Redis
//! port admits only this CounterApp's web pods, its other Redis pods, its backup Jobs
//! (with `spec.backup.volume`) and the operator's namespace (the replication manager's
//! checks). The exporter port, when there is one,
//! stays open to scrapers. Web pods are not selected: their port stays open.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::statefulset::EXPORTER_PORT_NAME;
use super::{Inputs, meta};
use crate::api::{CounterApp, REDIS_PORT};
use crate::labels::{self, Component};
use crate::names;

/// Label every namespace carries with its own name (Kubernetes 1.21+).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn pods(sel: std::collections::BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector { match_labels: Some(sel), match_expressions: None }),
        ..NetworkPolicyPeer::default()
    }
}

fn tcp(port: IntOrString) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(port), protocol: Some("TCP".to_string()), end_port: None }
}

/// The Redis pods' ingress policy; `None` when disabled.
pub fn redis(cr: &CounterApp, inputs: &Inputs) -> Option<NetworkPolicy> {
    if !cr.spec.network_policy.enabled {
        return None;
    }
    let app = meta::app_name(cr);
    let mut from =
        vec![pods(labels::selector(app, Component::Web)), pods(labels::selector(app, Component::Redis))];
    if cr.spec.backup.as_ref().is_some_and(|b| b.volume.is_some()) {
        // The Jobs of backups to a volume stream from a replica.
        from.push(pods(labels::selector(app, Component::Backup)));
    }
    if let Some(ns) = inputs.operator_namespace.as_deref().filter(|n| !n.is_empty()) {
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some([(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())].into()),
                match_expressions: None,
            }),
            ..NetworkPolicyPeer::default()
        });
    }
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(vec![tcp(IntOrString::Int(REDIS_PORT))]),
    }];
    if cr.spec.redis.metrics.enabled {
        // Prometheus runs wherever the cluster runs it: the metrics port is open.
        ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![tcp(IntOrString::String(EXPORTER_PORT_NAME.to_string()))]),
        });
    }
    Some(NetworkPolicy {
        metadata: meta::object_meta(cr, names::redis(app), Component::Redis),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::selector(app, Component::Redis)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(ingress),
            egress: None,
        }),
    })
}
