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
pub fn redis_auth(app: &str) -> String {
    format!("{app}-redis-auth")
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
/// `redis://` URL of a Service in the same namespace.
pub fn redis_url(service: &str) -> String {
    format!("redis://{service}:{REDIS_PORT}")
}
/// Key in the auth Secret that holds the Redis password.
pub const PASSWORD_KEY: &str = "password";
