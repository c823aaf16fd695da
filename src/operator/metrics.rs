//! Operator metrics (prometheus-client) and the tiny HTTP server that exposes them with
//! the health endpoints: `/metrics`, `/livez`, `/readyz`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::ObjectRef;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Error;
use super::fence::{FenceLabels, Target};
use crate::api::condition::{AVAILABLE, DEGRADED, READY, RECONCILING, STALLED};
use crate::api::{CounterApp, CounterAppStatus};
use crate::labels::ROLE_REPLICA;
use crate::locked::lock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of `counterstack_api_requests_total`: both come from the request's method and
/// path, so the set of series is bounded by the kinds the operator touches.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// The resource, with its subresource when there is one: `secrets`,
    /// `counterapps/status`, `events`, `namespaces`.
    pub resource: String,
}

/// Labels of per-CounterApp series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub namespace: String,
    pub app: String,
}

/// Labels of `counterstack_app_condition`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub app: String,
    /// The condition type: one of [`CONDITION_TYPES`].
    pub r#type: String,
}

/// Labels of `counterstack_redis_replicas`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub namespace: String,
    pub app: String,
    /// `desired` (`spec.redis.replicas`) or `linked` (replicas whose link to the
    /// primary is up).
    pub state: String,
}

/// The condition types `counterstack_app_condition` reports (1 while True, else 0;
/// `Reconciling` and `Stalled` are 0 while absent from the status).
pub const CONDITION_TYPES: [&str; 5] = [AVAILABLE, DEGRADED, READY, RECONCILING, STALLED];

/// `state` values of `counterstack_redis_replicas`.
const REPLICA_STATES: [&str; 2] = ["desired", "linked"];

/// What this operator instance is, for `/readyz` and `counterstack_leader`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Starting = 0,
    /// Waiting for the lease: ready to take over, reconciling nothing.
    Standby = 1,
    Leader = 2,
    /// The CounterApp CRD is not installed yet: not ready, nothing to do until it is.
    WaitingForCrd = 3,
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
    /// Finished reconciles by result.
    pub results: Family<ResultLabels, Counter>,
    /// Reconciles running now.
    pub in_flight: Gauge,
    /// CounterApps triggered whose reconcile has not started yet.
    pub queue_depth: Gauge,
    queue: Mutex<HashSet<ObjectRef<CounterApp>>>,
    /// Requests to the API server by verb and resource (every request the client sends).
    pub api_requests: Family<ApiRequestLabels, Counter>,
    /// Objects in the watch caches by kind.
    pub cache_objects: Family<KindLabels, Gauge>,
    /// 1 while this instance holds the lease and reconciles.
    pub leader: Gauge,
    /// Writes the leadership fence refused, by target (`api`, `redis`).
    pub fenced: Family<FenceLabels, Counter>,
    /// Per CounterApp and condition type: 1 while the condition is True, else 0.
    pub app_condition: Family<ConditionLabels, Gauge>,
    /// Per CounterApp: 1 while a Redis primary that takes writes exists and is ready.
    pub primary_available: Family<AppLabels, Gauge>,
    /// Per CounterApp: Redis replicas desired and linked to the primary.
    pub redis_replicas: Family<ReplicaLabels, Gauge>,
    /// `spec.backup`: per CounterApp.
    pub backup: BackupMetrics,
    /// [`Role`], for `/readyz`.
    role: AtomicU8,
}

/// Labels of `counterstack_backups`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupResultLabels {
    pub namespace: String,
    pub app: String,
    pub result: String,
}

/// The backup series (per CounterApp with `spec.backup`), set from `status.backup` on
/// every reconcile, so an operator that restarts reports them again from the status.
#[derive(Default)]
pub struct BackupMetrics {
    /// Start time (Unix seconds) of the last successful backup; 0 before the first.
    pub last_success: Family<AppLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Size of the last successful backup.
    pub last_size: Family<AppLabels, Gauge>,
    /// Duration of the last successful backup.
    pub last_duration: Family<AppLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Time between two scheduled backups (0: on demand only); the staleness alert
    /// compares the last success against twice this.
    pub interval: Family<AppLabels, Gauge>,
    /// Backups finished by result (`succeeded`, `failed`) since this operator started.
    pub finished: Family<BackupResultLabels, Counter>,
}

impl BackupMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "counterstack_backup_last_success_timestamp_seconds",
            "Start time of the CounterApp's last successful backup (Unix seconds; 0 before the first)",
            self.last_success.clone(),
        );
        registry.register(
            "counterstack_backup_last_size_bytes",
            "Size of the CounterApp's last successful backup",
            self.last_size.clone(),
        );
        registry.register(
            "counterstack_backup_last_duration_seconds",
            "Snapshot and upload time of the CounterApp's last successful backup",
            self.last_duration.clone(),
        );
        registry.register(
            "counterstack_backup_schedule_interval_seconds",
            "Time between two scheduled backups of the CounterApp (0: on demand only)",
            self.interval.clone(),
        );
        registry.register("counterstack_backups", "Backups finished, by result", self.finished.clone());
    }
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
        let results = Family::<ResultLabels, Counter>::default();
        let in_flight = Gauge::default();
        let queue_depth = Gauge::default();
        let api_requests = Family::<ApiRequestLabels, Counter>::default();
        let cache_objects = Family::<KindLabels, Gauge>::default();
        let leader = Gauge::default();
        let fenced = Family::<FenceLabels, Counter>::default();
        // Both series from the start (at 0), so an alert on an increase sees the first one.
        for t in Target::ALL {
            let _ = fenced.get_or_create(&FenceLabels { target: t.as_str().to_string() });
        }
        let app_condition = Family::<ConditionLabels, Gauge>::default();
        let primary_available = Family::<AppLabels, Gauge>::default();
        let redis_replicas = Family::<ReplicaLabels, Gauge>::default();
        registry.register("counterstack_reconcile_results", "Finished reconciles by result", results.clone());
        registry.register("counterstack_reconciles_in_flight", "Reconciles running now", in_flight.clone());
        registry.register(
            "counterstack_reconcile_queue_depth",
            "CounterApps triggered (by a watch event or a Redis check) whose reconcile has not started",
            queue_depth.clone(),
        );
        registry.register(
            "counterstack_api_requests",
            "Requests this operator sent to the Kubernetes API server, by verb and resource",
            api_requests.clone(),
        );
        registry.register(
            "counterstack_cache_objects",
            "Objects in the operator's watch caches, by kind",
            cache_objects.clone(),
        );
        registry.register(
            "counterstack_leader",
            "1 while this operator instance holds the lease and reconciles",
            leader.clone(),
        );
        registry.register(
            "counterstack_leader_fenced",
            "Writes refused because this instance was not (or no longer) the leader, by target (api, redis)",
            fenced.clone(),
        );
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
        registry.register(
            "counterstack_app_condition",
            "1 while the CounterApp's status condition of this type is True, else 0 (as last computed by the leader)",
            app_condition.clone(),
        );
        registry.register(
            "counterstack_redis_primary_available",
            "1 while the CounterApp has a Redis primary that is ready and takes writes, else 0",
            primary_available.clone(),
        );
        registry.register(
            "counterstack_redis_replicas",
            "Redis replicas of the CounterApp: desired (spec.redis.replicas) and linked (replication link to the primary up)",
            redis_replicas.clone(),
        );
        let backup = BackupMetrics::default();
        backup.register(&mut registry);
        Self {
            backup,
            registry,
            reconciles,
            errors,
            duration,
            applies,
            status_patches,
            role_label_patches,
            results,
            in_flight,
            queue_depth,
            queue: Mutex::default(),
            api_requests,
            cache_objects,
            leader,
            fenced,
            app_condition,
            primary_available,
            redis_replicas,
            role: AtomicU8::new(Role::Starting as u8),
        }
    }
}

impl Metrics {
    /// The registry `/metrics` serves, for other components' metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, HashSet<ObjectRef<CounterApp>>> {
        lock(&self.queue)
    }

    /// `app` was triggered; it counts towards the queue depth until its reconcile starts.
    pub fn queued(&self, app: &ObjectRef<CounterApp>) {
        let mut q = self.queue();
        q.insert(app.clone());
        self.queue_depth.set(i64::try_from(q.len()).unwrap_or(i64::MAX));
    }

    /// Start timing a reconcile of `app`; the returned guard records the duration and
    /// the in-flight count when dropped.
    pub fn reconcile_started(&self, app: &ObjectRef<CounterApp>) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        self.in_flight.inc();
        let mut q = self.queue();
        q.remove(app);
        self.queue_depth.set(i64::try_from(q.len()).unwrap_or(i64::MAX));
        ReconcileTimer { metrics: self, start: Instant::now() }
    }

    pub fn reconcile_failed(&self, e: &Error) {
        self.errors.get_or_create(&ErrorLabels { error: e.metric_label().to_string() }).inc();
    }

    pub fn reconcile_result(&self, ok: bool) {
        self.results.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" }.into() }).inc();
    }

    /// Record the number of objects in one watch cache.
    pub fn cache_size(&self, kind: &str, n: usize) {
        self.cache_objects
            .get_or_create(&KindLabels { kind: kind.to_string() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Only the leader reports per-CounterApp series: an instance that is not (or no
    /// longer) the leader drops them, so a standby never alerts on stale values.
    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Relaxed);
        self.leader.set(i64::from(role == Role::Leader));
        if role != Role::Leader {
            self.app_condition.clear();
            self.primary_available.clear();
            self.redis_replicas.clear();
            self.backup.last_success.clear();
            self.backup.last_size.clear();
            self.backup.last_duration.clear();
            self.backup.interval.clear();
        }
    }

    /// Record the per-CounterApp series from a freshly computed `status`:
    /// `counterstack_app_condition`, `counterstack_redis_primary_available` and
    /// `counterstack_redis_replicas` (`linked` counts the replicas in `status.redis.nodes`
    /// whose link is up).
    pub fn record_app(
        &self,
        namespace: &str,
        app: &str,
        status: &CounterAppStatus,
        primary_available: bool,
        desired_replicas: i32,
    ) {
        for t in CONDITION_TYPES {
            let on = status.conditions.iter().any(|c| c.type_ == t && c.status == "True");
            self.app_condition.get_or_create(&condition_labels(namespace, app, t)).set(i64::from(on));
        }
        let app_labels = AppLabels { namespace: namespace.to_string(), app: app.to_string() };
        self.primary_available.get_or_create(&app_labels).set(i64::from(primary_available));
        let linked = status
            .redis
            .as_ref()
            .map_or(0, |r| r.nodes.iter().filter(|n| n.role == ROLE_REPLICA && n.link_up).count());
        let linked = i64::try_from(linked).unwrap_or(i64::MAX);
        self.redis_replicas
            .get_or_create(&replica_labels(namespace, app, "desired"))
            .set(i64::from(desired_replicas));
        self.redis_replicas.get_or_create(&replica_labels(namespace, app, "linked")).set(linked);
    }

    /// The backup gauges from `status.backup` (and the schedule's interval).
    pub fn record_backup(
        &self,
        namespace: &str,
        app: &str,
        status: &crate::api::BackupStatus,
        interval: Option<std::time::Duration>,
    ) {
        let l = AppLabels { namespace: namespace.to_string(), app: app.to_string() };
        let last = status.last_successful.as_ref();
        let at = last.and_then(|r| r.start_time.as_ref()).map_or(0.0, |t| t.0.as_second() as f64);
        self.backup.last_success.get_or_create(&l).set(at);
        self.backup.last_size.get_or_create(&l).set(last.map_or(0, |r| r.size_bytes));
        self.backup.last_duration.get_or_create(&l).set(last.and_then(|r| r.duration_seconds).unwrap_or(0.0));
        let secs = interval.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.backup.interval.get_or_create(&l).set(secs);
    }

    /// One backup finished.
    pub fn backup_finished(&self, namespace: &str, app: &str, ok: bool) {
        let result = if ok { "succeeded" } else { "failed" };
        let l = BackupResultLabels {
            namespace: namespace.to_string(),
            app: app.to_string(),
            result: result.into(),
        };
        self.backup.finished.get_or_create(&l).inc();
    }

    /// Drop the per-CounterApp series of a deleted CounterApp.
    pub fn forget_app(&self, namespace: &str, app: &str) {
        let l = AppLabels { namespace: namespace.to_string(), app: app.to_string() };
        self.backup.last_success.remove(&l);
        self.backup.last_size.remove(&l);
        self.backup.last_duration.remove(&l);
        self.backup.interval.remove(&l);
        for result in ["succeeded", "failed"] {
            let r = BackupResultLabels {
                namespace: namespace.to_string(),
                app: app.to_string(),
                result: result.into(),
            };
            self.backup.finished.remove(&r);
        }
        for t in CONDITION_TYPES {
            self.app_condition.remove(&condition_labels(namespace, app, t));
        }
        self.primary_available.remove(&AppLabels { namespace: namespace.to_string(), app: app.to_string() });
        for state in REPLICA_STATES {
            self.redis_replicas.remove(&replica_labels(namespace, app, state));
        }
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Standby,
            2 => Role::Leader,
            3 => Role::WaitingForCrd,
            _ => Role::Starting,
        }
    }

    pub fn applied(&self, kind: &str) {
        self.applies.get_or_create(&KindLabels { kind: kind.to_string() }).inc();
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn condition_labels(namespace: &str, app: &str, t: &str) -> ConditionLabels {
    ConditionLabels { namespace: namespace.to_string(), app: app.to_string(), r#type: t.to_string() }
}

fn replica_labels(namespace: &str, app: &str, state: &str) -> ReplicaLabels {
    ReplicaLabels { namespace: namespace.to_string(), app: app.to_string(), state: state.to_string() }
}

/// Records a reconcile's duration when dropped (on success, error or cancellation).
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        self.metrics.duration.observe(self.start.elapsed().as_secs_f64());
    }
}

/// The API verb of a request, from its method, path and query (as the API server's
/// audit log names it).
pub fn api_verb(method: &axum::http::Method, path: &str, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match *method {
        axum::http::Method::GET if watching => "watch",
        axum::http::Method::GET if names_one_object(path) => "get",
        axum::http::Method::GET => "list",
        axum::http::Method::POST => "create",
        axum::http::Method::PUT => "update",
        axum::http::Method::PATCH => "patch",
        axum::http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// The path segments after `/api/v1` or `/apis/G/V`.
fn after_version(path: &str) -> Vec<&str> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.first() {
        Some(&"api") => segs.get(2..),
        Some(&"apis") => segs.get(3..),
        _ => None,
    }
    .unwrap_or_default()
    .to_vec()
}

/// `/api/v1[/namespaces/NS]/RESOURCE/NAME[/SUB]` or `/apis/G/V[/namespaces/NS]/...`:
/// whether the path names one object (a get) rather than a collection (a list).
fn names_one_object(path: &str) -> bool {
    match after_version(path)[..] {
        ["namespaces", _] => true,
        ["namespaces", _, _resource, ref rest @ ..] => !rest.is_empty(),
        [_resource, ref rest @ ..] => !rest.is_empty(),
        [] => false,
    }
}

/// The resource a request is about, as RBAC names it: `secrets`, `counterapps/status`,
/// `namespaces` (a Namespace itself), `other` for paths outside `/api` and `/apis`.
pub fn api_resource(path: &str) -> String {
    match after_version(path)[..] {
        ["namespaces"] | ["namespaces", _] => "namespaces".to_string(),
        // A Namespace's own subresources (not a namespaced resource named `status`).
        ["namespaces", _, sub @ ("status" | "finalize")] => format!("namespaces/{sub}"),
        ["namespaces", _, resource] | ["namespaces", _, resource, _] | [resource] | [resource, _] => {
            resource.to_string()
        }
        ["namespaces", _, resource, _, sub, ..] | [resource, _, sub, ..] => format!("{resource}/{sub}"),
        _ => "other".to_string(),
    }
}

/// A tower layer for the kube client that counts every request by verb and resource into
/// `requests` ([`Metrics::api_requests`]).
pub fn api_request_layer(
    requests: Family<ApiRequestLabels, Counter>,
) -> tower::util::MapRequestLayer<
    impl Fn(axum::http::Request<kube::client::Body>) -> axum::http::Request<kube::client::Body> + Clone,
> {
    tower::util::MapRequestLayer::new(move |req: axum::http::Request<kube::client::Body>| {
        let verb = api_verb(req.method(), req.uri().path(), req.uri().query());
        let resource = api_resource(req.uri().path());
        requests.get_or_create(&ApiRequestLabels { verb: verb.to_string(), resource }).inc();
        req
    })
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

/// 200 `leader` or 200 `standby` (ready to take over), 503 while starting or waiting for
/// the CRD.
async fn readyz(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    match m.role() {
        Role::Leader => (StatusCode::OK, "leader"),
        Role::Standby => (StatusCode::OK, "standby"),
        Role::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        Role::WaitingForCrd => (StatusCode::SERVICE_UNAVAILABLE, "waiting for the CounterApp CRD"),
    }
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
    use axum::http::Method;
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
        m.set_role(Role::Standby);
        assert_eq!(get(&m, "/readyz").await, (StatusCode::OK, "standby".to_string()));
        m.set_role(Role::Leader);
        assert_eq!(get(&m, "/readyz").await, (StatusCode::OK, "leader".to_string()));
        assert!(get(&m, "/metrics").await.1.contains("counterstack_leader 1"));
        let (status, body) = get(&m, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("# TYPE counterstack_reconciles counter"), "{body}");
        assert_eq!(get(&m, "/nope").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn api_verbs_are_named_as_the_audit_log_names_them() {
        let v = |m: Method, p: &str, q: Option<&str>| api_verb(&m, p, q);
        assert_eq!(v(Method::GET, "/api/v1/namespaces/ns/pods", None), "list");
        assert_eq!(v(Method::GET, "/api/v1/pods", Some("labelSelector=a%3Db")), "list");
        assert_eq!(
            v(Method::GET, "/api/v1/namespaces/ns/pods", Some("watch=true&resourceVersion=1")),
            "watch"
        );
        assert_eq!(v(Method::GET, "/api/v1/namespaces/ns/secrets/demo-redis-auth", None), "get");
        assert_eq!(v(Method::GET, "/apis/apps/v1/namespaces/ns/statefulsets/demo-redis", None), "get");
        assert_eq!(v(Method::GET, "/apis/counterstack.io/v1alpha1/counterapps", Some("limit=1")), "list");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/ns", None), "get");
        assert_eq!(
            v(Method::PATCH, "/apis/counterstack.io/v1alpha1/namespaces/ns/counterapps/demo/status", None),
            "patch"
        );
        assert_eq!(v(Method::POST, "/apis/events.k8s.io/v1/namespaces/ns/events", None), "create");
        assert_eq!(v(Method::DELETE, "/api/v1/namespaces/ns/pods/demo-redis-0", None), "delete");
        assert_eq!(v(Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/ns/leases/x", None), "update");
    }

    #[test]
    fn api_resources_are_named_as_rbac_names_them() {
        let r = api_resource;
        assert_eq!(r("/api/v1/namespaces/ns/pods"), "pods");
        assert_eq!(r("/api/v1/pods"), "pods");
        assert_eq!(r("/api/v1/namespaces/ns/secrets/demo-redis-auth-web"), "secrets");
        assert_eq!(
            r("/apis/counterstack.io/v1alpha1/namespaces/ns/counterapps/demo/status"),
            "counterapps/status"
        );
        assert_eq!(r("/apis/counterstack.io/v1alpha1/counterapps"), "counterapps");
        assert_eq!(r("/apis/events.k8s.io/v1/namespaces/ns/events"), "events");
        assert_eq!(r("/api/v1/namespaces"), "namespaces");
        assert_eq!(r("/api/v1/namespaces/ns"), "namespaces");
        assert_eq!(r("/api/v1/namespaces/ns/status"), "namespaces/status");
        assert_eq!(r("/version"), "other");
    }

    #[test]
    fn encodes_counters_with_error_labels() {
        let m = Metrics::default();
        let app = ObjectRef::new("demo").within("ns");
        m.queued(&app);
        assert!(m.encode().unwrap().contains("counterstack_reconcile_queue_depth 1"));
        {
            let _t = m.reconcile_started(&app);
            assert!(m.encode().unwrap().contains("counterstack_reconciles_in_flight 1"));
        }
        assert!(m.encode().unwrap().contains("counterstack_reconcile_queue_depth 0"));
        assert!(m.encode().unwrap().contains("counterstack_reconciles_in_flight 0"));
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

    fn status_with(conditions: &[(&str, &str)], replicas_linked: &[bool]) -> CounterAppStatus {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

        use crate::api::{RedisNodeStatus, RedisStatus};
        let mut nodes = vec![RedisNodeStatus {
            pod: "demo-redis-0".into(),
            role: "primary".into(),
            ..Default::default()
        }];
        for (i, up) in replicas_linked.iter().enumerate() {
            nodes.push(RedisNodeStatus {
                pod: format!("demo-redis-{}", i + 1),
                role: ROLE_REPLICA.into(),
                link_up: *up,
                ..Default::default()
            });
        }
        CounterAppStatus {
            conditions: conditions
                .iter()
                .map(|(t, st)| Condition {
                    type_: (*t).into(),
                    status: (*st).into(),
                    last_transition_time: crate::operator::status::now(),
                    message: String::new(),
                    observed_generation: None,
                    reason: "Test".into(),
                })
                .collect(),
            redis: Some(RedisStatus { primary: Some("demo-redis-0".into()), nodes, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn per_app_series_follow_the_status_and_go_away_with_the_app() {
        let m = Metrics::default();
        m.set_role(Role::Leader);
        let st =
            status_with(&[("Ready", "False"), ("Available", "True"), ("Degraded", "True")], &[true, false]);
        m.record_app("ns", "demo", &st, true, 2);
        m.record_app("ns", "other", &status_with(&[("Ready", "True")], &[]), false, 0);
        let text = m.encode().unwrap();
        for line in [
            r#"counterstack_app_condition{namespace="ns",app="demo",type="Ready"} 0"#,
            r#"counterstack_app_condition{namespace="ns",app="demo",type="Available"} 1"#,
            r#"counterstack_app_condition{namespace="ns",app="demo",type="Degraded"} 1"#,
            r#"counterstack_app_condition{namespace="ns",app="demo",type="Stalled"} 0"#,
            r#"counterstack_app_condition{namespace="ns",app="demo",type="Reconciling"} 0"#,
            r#"counterstack_app_condition{namespace="ns",app="other",type="Ready"} 1"#,
            r#"counterstack_redis_primary_available{namespace="ns",app="demo"} 1"#,
            r#"counterstack_redis_primary_available{namespace="ns",app="other"} 0"#,
            r#"counterstack_redis_replicas{namespace="ns",app="demo",state="desired"} 2"#,
            r#"counterstack_redis_replicas{namespace="ns",app="demo",state="linked"} 1"#,
            r#"counterstack_redis_replicas{namespace="ns",app="other",state="linked"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }

        // The status changes: the gauges follow (no stale 1s).
        let healed =
            status_with(&[("Ready", "True"), ("Available", "True"), ("Degraded", "False")], &[true, true]);
        m.record_app("ns", "demo", &healed, true, 2);
        let text = m.encode().unwrap();
        assert!(
            text.contains(r#"counterstack_app_condition{namespace="ns",app="demo",type="Degraded"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"counterstack_redis_replicas{namespace="ns",app="demo",state="linked"} 2"#),
            "{text}"
        );

        m.forget_app("ns", "demo");
        let text = m.encode().unwrap();
        assert!(!text.contains(r#"app="demo""#), "series of a forgotten app remain:\n{text}");
        assert!(
            text.contains(r#"counterstack_redis_primary_available{namespace="ns",app="other"} 0"#),
            "{text}"
        );

        // An instance that stops leading reports no per-app series at all.
        m.set_role(Role::Standby);
        let text = m.encode().unwrap();
        assert!(!text.contains(r#"app="other""#), "a standby keeps per-app series:\n{text}");
    }
}
