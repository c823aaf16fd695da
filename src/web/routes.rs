//! The HTTP API, byte-compatible with the original Flask app: `GET /api/counter` and
//! `POST /api/counter/{increment,decrement,reset}` answer `{"value":N}`; every error is
//! JSON `{"error": "..."}` (404, 405 with `Allow`, 503 with `Retry-After`, 409 overflow).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
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
const VARY: HeaderValue =
    HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers");
const ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");

/// The whole service: API, health, metrics; JSON 404/405; CORS; per-request span+metrics.
///
/// One `match` on the path instead of axum's `Router`, `from_fn` middleware and
/// tower-http's `CorsLayer`: those boxed a future per layer and cloned the CORS settings
/// on every request, which together cost more CPU per increment than the coalesced Redis
/// work (bench/web.sh, issue 22). The answers are the same but for header order (and a
/// preflight no longer carries the stray `Allow` the Router added).
#[derive(Clone)]
pub struct Service {
    state: Shared,
    cors: Arc<Cors>,
}

/// Which origins may read the answers (as the original's flask-cors: all by default).
enum Cors {
    Any,
    List(Vec<HeaderValue>),
}

impl Cors {
    fn new(origins: &CorsOrigins) -> Self {
        match origins {
            CorsOrigins::Any => Cors::Any,
            // Config validated every origin as a header value; skipping is unreachable.
            CorsOrigins::List(list) => {
                Cors::List(list.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect())
            }
        }
    }

    /// `Access-Control-Allow-Origin` for a request from `origin`, if it may read the answer.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Cors::Any => Some(ANY_ORIGIN),
            Cors::List(list) => origin.filter(|o| list.contains(o)).cloned(),
        }
    }

    /// Headers every answer carries: `Vary`, the allowed origin and, for a preflight,
    /// the methods and headers a cross-origin request may use.
    fn stamp(&self, origin: Option<&HeaderValue>, preflight: bool, headers: &mut HeaderMap) {
        headers.append(header::VARY, VARY);
        if let Some(allowed) = self.allow_origin(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        }
        if preflight {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET,POST"));
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ANY_ORIGIN);
        } else {
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("idempotent-replayed"),
            );
        }
    }
}

pub fn service(state: Shared, cors: &CorsOrigins) -> Service {
    Service { state, cors: Arc::new(Cors::new(cors)) }
}

impl tower::Service<Request> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let (state, cors) = (self.state.clone(), self.cors.clone());
        Box::pin(async move { Ok(handle(&state, &cors, req).await) })
    }
}

/// CORS around everything (a preflight is answered here: any `OPTIONS`, as tower-http's
/// `CorsLayer` did); the rest is observed and routed.
async fn handle(s: &AppState, cors: &Cors, req: Request) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    if req.method() == Method::OPTIONS {
        let mut resp = Response::default();
        cors.stamp(origin.as_ref(), true, resp.headers_mut());
        return resp;
    }
    let mut resp = observe(s, req).await;
    cors.stamp(origin.as_ref(), false, resp.headers_mut());
    resp
}

/// GET routes also answer HEAD (hyper sends no body for it).
fn is_get(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// Route by the path's metrics label (`route_label`, which observe already computed):
/// the known paths are their own labels, every other path is `unmatched`.
async fn dispatch(s: &AppState, route: &'static str, req: Request) -> Response {
    let method = req.method();
    let result = match route {
        "/api/counter" if is_get(method) => get_counter(s).await,
        "/api/counter/increment" if method == Method::POST => write(s, Op::Increment, req.headers()).await,
        "/api/counter/decrement" if method == Method::POST => write(s, Op::Decrement, req.headers()).await,
        "/api/counter/reset" if method == Method::POST => write(s, Op::Reset, req.headers()).await,
        "/livez" if is_get(method) => Ok(health::livez()),
        "/readyz" if is_get(method) => health::readyz(s),
        "/metrics" if is_get(method) => Ok(metrics(s)),
        "/api/counter" | "/livez" | "/readyz" | "/metrics" => Err(Error::MethodNotAllowed("GET, HEAD")),
        "/api/counter/increment" | "/api/counter/decrement" | "/api/counter/reset" => {
            Err(Error::MethodNotAllowed("POST"))
        }
        _ => Err(Error::NotFound),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `{"value":N}` (compact, newline-terminated: what Flask's `jsonify` sends).
fn value_response(value: i64) -> Response {
    ([(header::CONTENT_TYPE, JSON)], format!("{{\"value\":{value}}}\n")).into_response()
}

async fn get_counter(s: &AppState) -> Result<Response, Error> {
    Ok(value_response(s.store.read().await?))
}

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

fn metrics(s: &AppState) -> Response {
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

/// Decrements the in-flight gauge even when the client goes away mid-request.
struct InFlight<'a>(&'a AppState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// Per request: a tracing span, in-flight gauge, count and latency by route/method/status;
/// while draining, `Connection: close` so keep-alive clients move to another pod.
async fn observe(s: &AppState, req: Request) -> Response {
    let route = route_label(req.uri().path());
    let method = method_label(req.method());
    // DEBUG level, as tower-http's TraceLayer: an INFO span per request cost ~20% of the
    // service's CPU per request under load (bench/web.sh); RUST_LOG=debug turns it on.
    let span = tracing::debug_span!("request", method, route, status = tracing::field::Empty);
    s.metrics.in_flight.inc();
    let guard = InFlight(s);
    let start = Instant::now();
    let mut resp = dispatch(s, route, req).instrument(span.clone()).await;
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
