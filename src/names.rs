//! Names of every child object of a CounterApp `NAME` (design.md; fixed after release).

use crate::api::REDIS_PORT;

pub fn web(app: &str) -> String {
    format!("{app}-web")
}
pub fn redis(app: &str) -> String {
    format!("{app}-redis")
}
pub fn redis_headless(app: &str) -> String {
    format!("{app}-redis-headless")
}
pub fn redis_primary(app: &str) -> String {
    format!("{app}-redis-primary")
}
pub fn redis_replicas(app: &str) -> String {
    format!("{app}-redis-replicas")
}
/// Secret holding the password of one Redis ACL user (`web`, `replication`, `operator`).
pub fn redis_user_secret(app: &str, user: &str) -> String {
    format!("{app}-redis-auth-{user}")
}
/// cert-manager Certificate, and its Secret, of `spec.redis.tls.issuerRef`.
pub fn redis_tls(app: &str) -> String {
    format!("{app}-redis-tls")
}
/// Name of Redis pod `ordinal` (the StatefulSet's naming scheme).
pub fn redis_pod(app: &str, ordinal: u32) -> String {
    format!("{app}-redis-{ordinal}")
}
/// Stable DNS name of Redis pod `ordinal` inside its namespace.
pub fn redis_pod_host(app: &str, ordinal: u32) -> String {
    format!("{}.{}", redis_pod(app, ordinal), redis_headless(app))
}
/// Ordinal of a Redis pod name of this app (`NAME-redis-K` -> K).
pub fn redis_ordinal(app: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(&redis(app))?.strip_prefix('-')?.parse().ok()
}
/// `redis://` (or with TLS `rediss://`) URL of a Service in the same namespace.
pub fn redis_url(service: &str, tls: bool) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    format!("{scheme}://{service}:{REDIS_PORT}")
}
/// Key in a user's Secret that holds the password clients use.
pub const PASSWORD_KEY: &str = "password";
/// Key in a user's Secret that holds the password being rotated away from. Redis
/// accepts both while they differ; equal to `password` when no rotation is running.
pub const PREVIOUS_KEY: &str = "previous";
