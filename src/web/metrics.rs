//! Prometheus metrics of the web service (prometheus-client), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisErrorLabels {
    pub node: &'static str,
    pub kind: &'static str,
}

type HistogramCtor = fn() -> Histogram;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RequestLabels, Histogram, HistogramCtor>,
    pub redis_errors: Family<RedisErrorLabels, Counter>,
    pub in_flight: Gauge,
    pub reconnects: Counter,
    /// Writes per batch sent to Redis, and commands per batch (coalescing at work).
    batch_writes: Histogram,
    batch_commands: Histogram,
    /// The series every successful API call lands in, looked up once: a `Family` lookup
    /// hashes the labels under a lock, twice per request.
    hot: Vec<HotSeries>,
}

struct HotSeries {
    labels: RequestLabels,
    count: Counter,
    latency: Histogram,
}

/// Successful API calls: the labels nearly every request carries.
const HOT: [(&str, &str); 4] = [
    ("/api/counter", "GET"),
    ("/api/counter/increment", "POST"),
    ("/api/counter/decrement", "POST"),
    ("/api/counter/reset", "POST"),
];

/// 1 .. 512 (the most writes one batch holds), doubling.
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s, doubling: resolves both the sub-millisecond hot path and WAITs.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("counterstack_web");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<RequestLabels, Histogram, HistogramCtor>::new_with_constructor(latency_histogram);
        let redis_errors = Family::<RedisErrorLabels, Counter>::default();
        let in_flight = Gauge::default();
        let reconnects = Counter::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            latency.clone(),
        );
        registry.register("redis_errors", "Redis failures by node and kind", redis_errors.clone());
        registry.register("http_requests_in_flight", "HTTP requests being served", in_flight.clone());
        registry.register(
            "redis_reconnects",
            "Redis connections dropped for a reconnect",
            reconnects.clone(),
        );
        let batch_writes = batch_histogram();
        let batch_commands = batch_histogram();
        registry.register("write_batch_writes", "Writes per batch sent to Redis", batch_writes.clone());
        registry.register(
            "write_batch_commands",
            "Redis commands per batch of writes (without WAIT)",
            batch_commands.clone(),
        );
        let hot = HOT
            .iter()
            .map(|&(route, method)| {
                let labels = RequestLabels { route, method, status: 200 };
                let count = requests.get_or_create(&labels).clone();
                let latency = latency.get_or_create(&labels).clone();
                HotSeries { labels, count, latency }
            })
            .collect();
        Self {
            hot,
            registry,
            requests,
            latency,
            redis_errors,
            in_flight,
            reconnects,
            batch_writes,
            batch_commands,
        }
    }
}

impl Metrics {
    pub fn redis_error(&self, node: &'static str, kind: &'static str) {
        self.redis_errors.get_or_create(&RedisErrorLabels { node, kind }).inc();
    }

    /// One batch of `writes` sent as `commands` commands.
    pub fn write_batch(&self, writes: usize, commands: usize) {
        // Counts of at most a few hundred: exact as f64.
        self.batch_writes.observe(writes as f64);
        self.batch_commands.observe(commands as f64);
    }

    pub fn observe(&self, labels: &RequestLabels, seconds: f64) {
        if let Some(hot) = self.hot.iter().find(|h| h.labels == *labels) {
            hot.count.inc();
            hot.latency.observe(seconds);
            return;
        }
        self.requests.get_or_create(labels).inc();
        self.latency.get_or_create(labels).observe(seconds);
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Route label for a path: fixed strings only, so unknown paths cannot blow up cardinality.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/api/counter" => "/api/counter",
        "/api/counter/increment" => "/api/counter/increment",
        "/api/counter/decrement" => "/api/counter/decrement",
        "/api/counter/reset" => "/api/counter/reset",
        "/livez" => "/livez",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        _ => "unmatched",
    }
}

/// Method label: the usual verbs, everything else as `other`.
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests_and_errors() {
        let m = Metrics::default();
        m.observe(&RequestLabels { route: "/api/counter", method: "GET", status: 200 }, 0.0004);
        m.redis_error("primary", "readonly");
        m.in_flight.inc();
        m.write_batch(40, 1);
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                r#"counterstack_web_http_requests_total{route="/api/counter",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("counterstack_web_http_request_duration_seconds_bucket"), "{text}");
        assert!(
            text.contains(r#"counterstack_web_redis_errors_total{node="primary",kind="readonly"} 1"#),
            "{text}"
        );
        assert!(text.contains("counterstack_web_http_requests_in_flight 1"), "{text}");
        assert!(text.contains("counterstack_web_write_batch_writes_sum 40.0"), "{text}");
        assert!(text.contains("counterstack_web_write_batch_commands_count 1"), "{text}");
    }

    #[test]
    fn the_hot_series_are_the_family_s_own() {
        let m = Metrics::default();
        let labels = RequestLabels { route: "/api/counter/increment", method: "POST", status: 200 };
        m.observe(&labels, 0.0004);
        m.observe(&labels, 0.0004);
        m.observe(&RequestLabels { status: 503, ..labels.clone() }, 0.0004);
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                r#"counterstack_web_http_requests_total{route="/api/counter/increment",method="POST",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"counterstack_web_http_requests_total{route="/api/counter/increment",method="POST",status="503"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"counterstack_web_http_request_duration_seconds_count{route="/api/counter/increment",method="POST",status="200"} 2"#
            ),
            "{text}"
        );
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(route_label("/api/counter/reset"), "/api/counter/reset");
        assert_eq!(route_label("/wp-admin/x"), "unmatched");
    }
}
