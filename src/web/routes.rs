//! The HTTP API, byte-compatible with the original Flask app: `GET /api/counter` and
//! `POST /api/counter/{increment,decrement,reset}` answer `{"value":N}`; every error is
//! JSON `{"error": "..."}` (404, 405 with `Allow`, 503 with `Retry-After`, 409 overflow).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tracing::Instrument;

use super::AppState;
use super::config::CorsOrigins;
use super::counter::{Op, Written};
use super::error::Error;
use super::health;
use super::idempotency;
use super::metrics::{RequestLabels, method_label, route_label};

type Shared = Arc<AppState>;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The whole service: API, health, metrics; JSON 404/405; CORS; per-request span+metrics.
pub fn router(state: Shared, cors: &CorsOrigins) -> Router {
    Router::new()
        .route("/api/counter", only_get(get(get_counter)))
        .route("/api/counter/increment", only_post(post(increment)))
        .route("/api/counter/decrement", only_post(post(decrement)))
        .route("/api/counter/reset", only_post(post(reset)))
        .route("/livez", only_get(get(health::livez)))
        .route("/readyz", only_get(get(health::readyz)))
        .route("/metrics", only_get(get(metrics)))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(cors_layer(cors))
        .with_state(state)
}

fn only_get(r: MethodRouter<Shared>) -> MethodRouter<Shared> {
    r.fallback(|| async { Error::MethodNotAllowed("GET, HEAD") })
}

fn only_post(r: MethodRouter<Shared>) -> MethodRouter<Shared> {
    r.fallback(|| async { Error::MethodNotAllowed("POST") })
}

/// Open to every origin by default (as the original's flask-cors), or a fixed list.
fn cors_layer(cors: &CorsOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(Any)
        .expose_headers([REPLAYED.clone()]);
    match cors {
        CorsOrigins::Any => layer.allow_origin(Any),
        CorsOrigins::List(origins) => {
            // Config validated every origin as a header value; skipping is unreachable.
            let values = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok());
            layer.allow_origin(AllowOrigin::list(values))
        }
    }
}

/// `{"value":N}` (compact, newline-terminated: what Flask's `jsonify` sends).
fn value_response(value: i64) -> Response {
    ([(header::CONTENT_TYPE, JSON)], format!("{{\"value\":{value}}}\n")).into_response()
}

async fn get_counter(State(s): State<Shared>) -> Result<Response, Error> {
    Ok(value_response(s.store.read().await?))
}

async fn increment(State(s): State<Shared>, req: Request) -> Result<Response, Error> {
    write(&s, Op::Increment, req.headers()).await
}

async fn decrement(State(s): State<Shared>, req: Request) -> Result<Response, Error> {
    write(&s, Op::Decrement, req.headers()).await
}

async fn reset(State(s): State<Shared>, req: Request) -> Result<Response, Error> {
    write(&s, Op::Reset, req.headers()).await
}

/// Handlers pass `req.headers()`: a `HeaderMap` extractor would clone every header.
async fn write(s: &AppState, op: Op, headers: &HeaderMap) -> Result<Response, Error> {
    let key = match headers.get(&IDEMPOTENCY_KEY) {
        Some(v) => Some(idempotency::validate_key(v.as_bytes())?),
        None => None,
    };
    let Written { value, replayed } = s.store.write(op, key).await?;
    let mut resp = value_response(value);
    if key.is_some() {
        let flag = HeaderValue::from_static(if replayed { "true" } else { "false" });
        resp.headers_mut().insert(REPLAYED.clone(), flag);
    }
    Ok(resp)
}

async fn metrics(State(s): State<Shared>) -> Response {
    match s.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        // Encoding into a String only fails if a metric's Display fails: report, don't panic.
        Err(_) => Error::Unavailable("metrics").into_response(),
    }
}

async fn not_found() -> Error {
    Error::NotFound
}

/// Decrements the in-flight gauge even when the client goes away mid-request.
struct InFlight<'a>(&'a AppState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// Per request: a tracing span, in-flight gauge, count and latency by route/method/status;
/// while draining, `Connection: close` so keep-alive clients move to another pod.
async fn observe(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = route_label(req.uri().path());
    let method = method_label(req.method());
    // DEBUG level, as tower-http's TraceLayer: an INFO span per request cost ~20% of the
    // service's CPU per request under load (bench/web.sh); RUST_LOG=debug turns it on.
    let span = tracing::debug_span!("request", method, route, status = tracing::field::Empty);
    s.metrics.in_flight.inc();
    let guard = InFlight(&s);
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    drop(guard);
    let status = resp.status().as_u16();
    span.record("status", status);
    s.metrics.observe(&RequestLabels { route, method, status }, elapsed.as_secs_f64());
    if s.draining.load(Ordering::Relaxed) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
