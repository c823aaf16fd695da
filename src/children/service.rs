//! Services: `NAME-web` (in front of the web pods), and for Redis `NAME-redis-headless`
//! (stable pod DNS names), `NAME-redis-primary` and `NAME-redis-replicas` (select the
//! pods by the `counterstack.io/role` label the operator sets). Only the web and the
//! primary Services take a ClusterIP: the API server allocates ClusterIPs one at a time,
//! and at 1,000 stacks each one more per stack costs about 40 s of convergence.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use super::statefulset::EXPORTER_PORT_NAME;
use crate::api::{CounterApp, EXPORTER_PORT, REDIS_PORT, ServiceType};
use crate::labels::{self, Component};
use crate::names;

/// Name of the web container port and of the web Service port.
pub const WEB_PORT_NAME: &str = "http";
/// Name of the Redis container port and of the Redis Services' port.
pub const REDIS_PORT_NAME: &str = "redis";

pub fn web(cr: &CounterApp) -> Service {
    let app = meta::app_name(cr);
    let svc = &cr.spec.web.service;
    let type_ = match svc.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: meta::object_meta(cr, names::web(app), Component::Web),
        spec: Some(ServiceSpec {
            type_: Some(type_.to_string()),
            selector: Some(labels::selector(app, Component::Web)),
            ports: Some(vec![ServicePort {
                name: Some(WEB_PORT_NAME.to_string()),
                protocol: Some("TCP".to_string()),
                port: svc.port,
                target_port: Some(IntOrString::Int(cr.spec.web.port)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Headless Service giving each Redis pod the stable name `NAME-redis-K.NAME-redis-headless`.
/// Not-ready pods are published too: replicas must reach a primary that is still
/// loading, and a pod must resolve its own name before it is ready.
pub fn redis_headless(cr: &CounterApp) -> Service {
    let app = meta::app_name(cr);
    let mut svc = redis_service(cr, names::redis_headless(app), labels::selector(app, Component::Redis));
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ip = Some("None".to_string());
        spec.publish_not_ready_addresses = Some(true);
        if cr.spec.redis.metrics.enabled {
            spec.ports.get_or_insert_with(Vec::new).push(ServicePort {
                name: Some(EXPORTER_PORT_NAME.to_string()),
                protocol: Some("TCP".to_string()),
                port: EXPORTER_PORT,
                target_port: Some(IntOrString::String(EXPORTER_PORT_NAME.to_string())),
                ..ServicePort::default()
            });
        }
    }
    svc
}

/// Service of the current primary (writes).
pub fn redis_primary(cr: &CounterApp) -> Service {
    let app = meta::app_name(cr);
    redis_service(cr, names::redis_primary(app), role_selector(app, labels::ROLE_PRIMARY))
}

/// Service of the replicas (reads when `readFrom: replicas`; whom the replicas follow
/// when the primary Service looks stale). Headless: its name resolves to the ready
/// replicas' pod IPs, the web's client dials them all and keeps the first that answers,
/// and there is no ClusterIP to allocate. Stacks made by earlier builds have one: the
/// operator replaces such a Service, since a ClusterIP cannot be removed in place.
pub fn redis_replicas(cr: &CounterApp) -> Service {
    let app = meta::app_name(cr);
    let mut svc = redis_service(cr, names::redis_replicas(app), role_selector(app, labels::ROLE_REPLICA));
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ip = Some("None".to_string());
    }
    svc
}

/// Whether `svc` is headless (`clusterIP: None`).
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn role_selector(app: &str, role: &str) -> BTreeMap<String, String> {
    let mut sel = labels::selector(app, Component::Redis);
    sel.insert(labels::ROLE.to_string(), role.to_string());
    sel
}

fn redis_service(cr: &CounterApp, name: String, selector: BTreeMap<String, String>) -> Service {
    Service {
        metadata: meta::object_meta(cr, name, Component::Redis),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(REDIS_PORT_NAME.to_string()),
                protocol: Some("TCP".to_string()),
                port: REDIS_PORT,
                target_port: Some(IntOrString::String(REDIS_PORT_NAME.to_string())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
