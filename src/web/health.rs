//! `/livez` (the process serves) and `/readyz` (the primary was reached since start and
//! we are not draining).

use std::sync::atomic::Ordering;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::Error;

fn status_body(status: &'static str) -> Response {
    let body = match status {
        "ok" => "{\"status\":\"ok\"}\n",
        _ => "{\"status\":\"ready\"}\n",
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// Always 200 while the process serves HTTP: Redis trouble must not restart the pod.
pub fn livez() -> Response {
    status_body("ok")
}

/// 503 while draining, or until the primary was first reached (ROLE master). A later
/// Redis outage keeps the pod ready: the API answers 503 with Retry-After itself.
pub fn readyz(s: &AppState) -> Result<Response, Error> {
    if s.draining.load(Ordering::Relaxed) {
        return Err(Error::Draining);
    }
    if !s.store.primary_ready() {
        return Err(Error::Unavailable("primary"));
    }
    Ok(status_body("ready"))
}
