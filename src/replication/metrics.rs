//! Replication metrics (prometheus-client). The operator registers them once with
//! [`Metrics::register`]; clones share the same series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::monitor::{AppKey, MonitorMetrics};

/// Labels of per-stack failover series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    pub namespace: String,
    pub app: String,
    /// `automatic` (primary lost) or `planned` (FAILOVER TO before a restart).
    pub kind: String,
}

/// `kind` of a failover that the operator made because the primary was lost.
pub const KIND_AUTOMATIC: &str = "automatic";
/// `kind` of a planned hand-over (FAILOVER TO).
pub const KIND_PLANNED: &str = "planned";

impl FailoverLabels {
    pub fn new(app: &AppKey, kind: &str) -> Self {
        Self { namespace: app.namespace.clone(), app: app.name.clone(), kind: kind.to_string() }
    }
}

/// Labels of per-pod series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    pub app: String,
    pub pod: String,
}

impl PodLabels {
    pub fn new(app: &AppKey, pod: &str) -> Self {
        Self { namespace: app.namespace.clone(), app: app.name.clone(), pod: pod.to_string() }
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// Metrics of the replication manager.
#[derive(Clone)]
pub struct Metrics {
    pub failovers: Family<FailoverLabels, Counter>,
    pub failover_duration: Family<FailoverLabels, Histogram>,
    pub replication_lag: Family<PodLabels, Gauge>,
    /// 1 while the pod's Redis cannot persist (failed AOF write or RDB snapshot).
    pub persistence_failing: Family<PodLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            failovers: Family::default(),
            failover_duration: Family::new_with_constructor(duration_histogram),
            replication_lag: Family::default(),
            persistence_failing: Family::default(),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Add every series to `registry` (names get the registry's prefix, if any), with
    /// the health checker's.
    pub fn register(&self, monitor: &MonitorMetrics, registry: &mut Registry) {
        registry.register(
            "counterstack_redis_checks",
            "Checks of Redis pods by the operator's own health checker (PING + ROLE), by result",
            monitor.checks.clone(),
        );
        registry.register(
            "counterstack_redis_check_wakeups",
            "Reconciles triggered because a Redis pod answered a check differently",
            monitor.wakeups.clone(),
        );
        registry.register(
            "counterstack_redis_failovers",
            "Changes of Redis primary made by the operator (automatic failovers and planned switchovers)",
            self.failovers.clone(),
        );
        registry.register(
            "counterstack_redis_failover_duration_seconds",
            "Automatic: from the first failed check of the primary to the new primary accepting writes; planned: the write pause of the FAILOVER TO hand-over",
            self.failover_duration.clone(),
        );
        registry.register(
            "counterstack_redis_replication_lag_bytes",
            "Bytes a Redis replica is behind its primary at the last observation",
            self.replication_lag.clone(),
        );
        registry.register(
            "counterstack_redis_persistence_failing",
            "1 while the Redis pod cannot write to its volume (its last AOF write or RDB snapshot failed; a primary then refuses writes), else 0",
            self.persistence_failing.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_series_are_encoded() {
        let m = Metrics::default();
        let mut reg = Registry::default();
        m.register(&MonitorMetrics::default(), &mut reg);
        let l = FailoverLabels { namespace: "ns".into(), app: "demo".into(), kind: "automatic".into() };
        m.failovers.get_or_create(&l).inc();
        m.failover_duration.get_or_create(&l).observe(1.5);
        m.replication_lag
            .get_or_create(&PodLabels {
                namespace: "ns".into(),
                app: "demo".into(),
                pod: "demo-redis-1".into(),
            })
            .set(42);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains(
                r#"counterstack_redis_failovers_total{namespace="ns",app="demo",kind="automatic"} 1"#
            ),
            "{out}"
        );
        assert!(out.contains("counterstack_redis_failover_duration_seconds_count"), "{out}");
        assert!(
            out.contains(
                r#"counterstack_redis_replication_lag_bytes{namespace="ns",app="demo",pod="demo-redis-1"} 42"#
            ),
            "{out}"
        );
    }
}
