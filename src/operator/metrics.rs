//! Operator metrics (prometheus-client) and the tiny HTTP server that exposes them with
//! the health endpoints: `/metrics`, `/livez`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Every metric the operator records.
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: Counter,
    /// Failed reconciles by `Error::metric_label()`.
    pub errors: Family<ErrorLabels, Counter>,
    /// Wall time of one reconcile, in seconds.
    pub duration: Histogram,
    /// Server-side applies of children, by kind (silent in steady state).
    pub applies: Family<KindLabels, Counter>,
    /// Status subresource patches.
    pub status_patches: Counter,
    /// Redis pod role-label changes.
    pub role_label_patches: Counter,
    /// Set once the controller runs (the `/readyz` answer).
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        // Unprefixed, so other parts (the replication manager) can register their own
        // `counterstack_*` metrics here too.
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        // 5 ms .. ~20 s
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        let applies = Family::<KindLabels, Counter>::default();
        let status_patches = Counter::default();
        let role_label_patches = Counter::default();
        registry.register("counterstack_reconciles", "CounterApp reconciles started", reconciles.clone());
        registry.register(
            "counterstack_reconcile_errors",
            "Failed CounterApp reconciles by error",
            errors.clone(),
        );
        registry.register(
            "counterstack_reconcile_duration_seconds",
            "Duration of one reconcile",
            duration.clone(),
        );
        registry.register(
            "counterstack_child_applies",
            "Server-side applies of child objects by kind",
            applies.clone(),
        );
        registry.register("counterstack_status_patches", "CounterApp status patches", status_patches.clone());
        registry.register(
            "counterstack_role_label_patches",
            "Redis pod role-label patches",
            role_label_patches.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            applies,
            status_patches,
            role_label_patches,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// The registry `/metrics` serves, for other components' metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Start timing a reconcile; the returned guard records the duration when dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer { metrics: self, start: Instant::now() }
    }

    pub fn reconcile_failed(&self, e: &Error) {
        self.errors.get_or_create(&ErrorLabels { error: e.metric_label().to_string() }).inc();
    }

    pub fn applied(&self, kind: &str) {
        self.applies.get_or_create(&KindLabels { kind: kind.to_string() }).inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records a reconcile's duration when dropped (on success, error or cancellation).
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.duration.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Routes of the metrics/health server.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cannot encode metrics".to_string(),
        ),
    }
}

async fn readyz(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if m.is_ready() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "starting") }
}

/// Bind `addr` now (so a busy port fails at startup) and serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<impl std::future::Future<Output = Result<(), Error>>, Error> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::MetricsServer { addr, source })?;
    tracing::info!(%addr, "serving /metrics, /livez and /readyz");
    Ok(async move {
        axum::serve(listener, router(metrics))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::MetricsServer { addr, source })
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(m: &Arc<Metrics>, path: &str) -> (StatusCode, String) {
        let res = router(m.clone()).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_and_metrics_endpoints() {
        let m = Arc::new(Metrics::default());
        assert_eq!(get(&m, "/livez").await.0, StatusCode::OK);
        assert_eq!(get(&m, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        m.set_ready(true);
        assert_eq!(get(&m, "/readyz").await.0, StatusCode::OK);
        let (status, body) = get(&m, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("# TYPE counterstack_reconciles counter"), "{body}");
        assert_eq!(get(&m, "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn encodes_counters_with_error_labels() {
        let m = Metrics::default();
        {
            let _t = m.reconcile_started();
        }
        m.reconcile_failed(&Error::CrdNotInstalled);
        m.applied("Deployment");
        let text = m.encode().unwrap();
        assert!(text.contains("counterstack_reconciles_total 1"), "{text}");
        assert!(
            text.contains("counterstack_reconcile_errors_total{error=\"crd_not_installed\"} 1"),
            "{text}"
        );
        assert!(text.contains("counterstack_child_applies_total{kind=\"Deployment\"} 1"), "{text}");
        assert!(text.contains("counterstack_reconcile_duration_seconds_count 1"), "{text}");
    }
}
