//! cert-manager Certificate `NAME-redis-tls` of `spec.redis.tls.issuerRef`: cert-manager
//! writes the Secret `NAME-redis-tls` (`tls.crt`, `tls.key`, `ca.crt`) that the Redis
//! pods serve and the web pods verify with.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::meta;
use crate::api::{CounterApp, MAX_REDIS_REPLICAS};
use crate::labels::{self, Component};
use crate::names;

/// cert-manager's Certificate kind.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// Every name Redis is reached by: each pod by its stable name (replicas follow the
/// primary by it, the web service follows a named primary by it, the operator verifies
/// it), and the primary and replicas Services (the web service dials them).
///
/// Pods are listed one by one (`NAME-redis-0.NAME-redis-headless` ... for every pod a
/// CounterApp may ever have): rustls, like browsers, honours a wildcard only with at
/// least two labels after it, so `*.NAME-redis-headless` would match nothing. The
/// namespaced forms take a wildcard (`*.NAME-redis-headless.NS.svc`).
pub fn dns_names(app: &str, namespace: Option<&str>) -> Vec<String> {
    let headless = names::redis_headless(app);
    let mut out: Vec<String> =
        (0..=MAX_REDIS_REPLICAS.unsigned_abs()).map(|k| names::redis_pod_host(app, k)).collect();
    for service in [names::redis_primary(app), names::redis_replicas(app)] {
        out.push(service);
    }
    if let Some(ns) = namespace {
        for host in [format!("*.{headless}"), names::redis_primary(app), names::redis_replicas(app)] {
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

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn every_pod_the_schema_allows_is_named() {
        let crd = serde_json::to_value(CounterApp::crd()).unwrap();
        let max = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["redis"]["properties"]["replicas"]["maximum"];
        assert_eq!(
            max.as_f64(),
            Some(f64::from(MAX_REDIS_REPLICAS)),
            "schema bound and MAX_REDIS_REPLICAS differ"
        );
        let names = dns_names("demo", Some("shop"));
        assert!(names.contains(&"demo-redis-0.demo-redis-headless".to_string()));
        assert!(names.contains(&format!("demo-redis-{MAX_REDIS_REPLICAS}.demo-redis-headless")));
        assert!(names.contains(&"*.demo-redis-headless.shop.svc".to_string()));
        // No single-label wildcard: it would match nothing.
        assert!(names.iter().all(|n| !n.starts_with('*') || n.matches('.').count() >= 2), "{names:?}");
    }
}
