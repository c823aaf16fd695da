//! Bounds of spec fields, in one place. The CRD schema takes them (schemars `range` and
//! `length`, and the CEL rule on the name's length), and so does the offline validation
//! of `render` and the operator (`children::validate`): both paths accept and refuse
//! the same values. (The doc comments that become `kubectl explain` text repeat them in
//! words, "(1 to 100)"; keep those in step when a bound changes.)

/// Fewest web pods: `spec.web.replicas`, `spec.web.autoscaling.minReplicas` and
/// `maxReplicas`.
pub const MIN_WEB_REPLICAS: i32 = 1;
/// Most web pods (same fields).
pub const MAX_WEB_REPLICAS: i32 = 100;
/// Lowest port: `spec.web.port`, `spec.web.service.port`.
pub const MIN_PORT: i32 = 1;
/// Highest port (same fields).
pub const MAX_PORT: i32 = 65535;
/// Most Redis replicas a CounterApp may have (`spec.redis.replicas`, and so
/// `spec.web.syncReplicas`; both start at 0): certificates name every pod that can exist.
pub const MAX_REDIS_REPLICAS: i32 = 8;
/// Lowest CPU target of the web autoscaler,
/// `spec.web.autoscaling.targetCPUUtilizationPercentage`.
pub const MIN_CPU_PERCENT: i32 = 1;
/// Highest CPU target (same field).
pub const MAX_CPU_PERCENT: i32 = 100;
/// Shortest `spec.redis.failover.afterSeconds`.
pub const MIN_FAILOVER_AFTER_SECONDS: i32 = 1;
/// Longest `spec.redis.failover.afterSeconds`.
pub const MAX_FAILOVER_AFTER_SECONDS: i32 = 300;
/// Longest `metadata.name` a CounterApp may have: `NAME-redis-headless` and the
/// StatefulSet's `controller-revision-hash` label (`NAME-redis-<10 chars>`) must stay
/// valid 63-character DNS labels.
pub const MAX_NAME_LEN: usize = 40;
/// Longest DNS subdomain (RFC 1123), the names of Secrets, StorageClasses,
/// PriorityClasses and issuers: `spec.redis.storage.storageClassName`,
/// `priorityClassName`, `spec.redis.tls.secretName`, `issuerRef.name` and `.group`.
pub const MAX_DNS_SUBDOMAIN_LEN: usize = 253;
