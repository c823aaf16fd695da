//! Default values of the spec. They appear in the CRD schema (so the API server fills
//! them in and `kubectl explain` shows them) and in `render`, which applies the same
//! serde defaults offline.

/// Web image used when `spec.web.image` is empty and the operator was given no
/// `--default-web-image`.
pub const DEFAULT_WEB_IMAGE: &str = concat!("ghcr.io/counterstack/counterstack:", env!("CARGO_PKG_VERSION"));
/// The official Redis image at a pinned 7.x tag.
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7.4.2";
/// The redis_exporter image of `spec.redis.metrics`, at a pinned tag.
pub const DEFAULT_EXPORTER_IMAGE: &str = "oliver006/redis_exporter:v1.67.0";
/// Port the exporter sidecar serves metrics on.
pub const EXPORTER_PORT: i32 = 9121;
/// Annotation on a CounterApp that restarts its pods when its value changes
/// (`kubectl annotate capp NAME counterstack.io/restartedAt=$(date -Is) --overwrite`).
pub const RESTARTED_AT_ANNOTATION: &str = "counterstack.io/restartedAt";
/// Annotation on a CounterApp that rotates Redis passwords: a comma-separated list of
/// `redis-web`, `redis-replication`, `redis-operator` or `redis-all`. The operator
/// generates the new passwords, rotates them without downtime and removes the annotation.
pub const ROTATE_ANNOTATION: &str = "counterstack.io/rotate";
/// Port every Redis pod listens on.
pub const REDIS_PORT: i32 = 6379;

pub(crate) fn web_replicas() -> i32 {
    4
}
pub(crate) fn web_port() -> i32 {
    8080
}
pub(crate) fn service_port() -> i32 {
    80
}
pub(crate) fn redis_replicas() -> i32 {
    2
}
pub(crate) fn storage_size() -> String {
    "1Gi".to_string()
}
pub(crate) fn redis_image() -> String {
    DEFAULT_REDIS_IMAGE.to_string()
}
pub(crate) fn yes() -> bool {
    true
}
pub(crate) fn failover_after_seconds() -> i32 {
    5
}
pub(crate) fn exporter_image() -> String {
    DEFAULT_EXPORTER_IMAGE.to_string()
}
pub(crate) fn autoscaling_min_replicas() -> i32 {
    2
}
pub(crate) fn autoscaling_cpu_percent() -> i32 {
    80
}

/// Kind of a cert-manager issuer when `spec.redis.tls.issuerRef.kind` is not set.
pub(crate) fn issuer_kind() -> String {
    "Issuer".to_string()
}

/// API group of a cert-manager issuer when `spec.redis.tls.issuerRef.group` is not set.
pub(crate) fn issuer_group() -> String {
    "cert-manager.io".to_string()
}
