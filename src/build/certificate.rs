//! cert-manager Certificate `NAME-redis-tls` of `spec.redis.tls.issuerRef`: cert-manager
//! writes the Secret `NAME-redis-tls` (`tls.crt`, `tls.key`, `ca.crt`) that the Redis
//! pods serve and the web pods verify with.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::labels::{self, Component};
use super::{meta, names};
use crate::api::CounterApp;

/// cert-manager's Certificate kind.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// Every name Redis is reached by: each pod by its stable name (short, namespaced and
/// fully qualified; replicas follow the primary by it, the operator verifies it), and
/// the primary and replicas Services (the web service dials them).
pub fn dns_names(app: &str, namespace: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for host in
        [format!("*.{}", names::redis_headless(app)), names::redis_primary(app), names::redis_replicas(app)]
    {
        out.push(host.clone());
        if let Some(ns) = namespace {
            out.push(format!("{host}.{ns}.svc"));
            out.push(format!("{host}.{ns}.svc.cluster.local"));
        }
    }
    out
}

/// The Certificate, or None without `spec.redis.tls.issuerRef`.
pub fn redis(cr: &CounterApp) -> Option<DynamicObject> {
    let issuer = cr.spec.redis.tls.as_ref()?.issuer_ref.as_ref()?;
    let app = meta::app_name(cr);
    let name = names::redis_tls(app);
    let mut obj = DynamicObject::new(&name, &api_resource());
    obj.metadata = meta::object_meta(cr, name.clone(), Component::Redis);
    obj.data = json!({
        "spec": {
            "secretName": name,
            // Our labels on the Secret put it in the operator's (label-filtered) watch,
            // so a renewal wakes the CounterApp.
            "secretTemplate": { "labels": labels::labels(app, Component::Redis) },
            "issuerRef": { "name": issuer.name, "kind": issuer.kind, "group": issuer.group },
            "dnsNames": dns_names(app, cr.metadata.namespace.as_deref()),
            // Replicas present the same certificate when they connect to the primary.
            "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
        }
    });
    Some(obj)
}
