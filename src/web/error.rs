//! The web layer's one error type: start-up failures and request failures alike. Request
//! failures render as JSON `{"error": "..."}` with the status a client can act on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Errors of the web service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or malformed; names the setting (flag or environment variable).
    #[error("invalid setting {setting}: {reason}")]
    Config { setting: &'static str, reason: String },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// The HTTP server failed.
    #[error("http server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// No connection to the Redis node that must answer (connecting, or it is down).
    #[error("redis {0} is unavailable")]
    Unavailable(&'static str),
    /// Redis did not answer in time or the connection broke mid-command: the outcome of a
    /// write is unknown, so it is not retried.
    #[error("redis {node} failed: {source}")]
    Redis { node: &'static str, source: redis::RedisError },
    /// The node behind the primary URL is a replica (failover in progress).
    #[error("redis primary is read-only (failover in progress)")]
    ReadOnly,
    /// The primary refuses writes because it cannot persist them (`-MISCONF`: its volume
    /// is full, or an AOF write or RDB snapshot failed). Not applied; Redis takes writes
    /// again by itself once the volume has space. `detail` is Redis's own words.
    #[error("redis {node} refuses writes: it cannot persist to its volume ({detail})")]
    CannotPersist { node: &'static str, detail: String },
    /// The write was applied on the primary but fewer than the required replicas confirmed it.
    #[error("write not confirmed by {wanted} replica(s) within {timeout_ms} ms ({acked} confirmed)")]
    NotConfirmed { wanted: u32, acked: i64, timeout_ms: u64 },
    /// INCR/DECR would leave the 64-bit range.
    #[error("counter would overflow the 64-bit range")]
    Overflow,
    /// The stored counter is not an integer (someone wrote garbage into `counter:value`).
    #[error("counter value in redis is not an integer")]
    NotAnInteger,
    /// Malformed `Idempotency-Key` header.
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    BadIdempotencyKey,
    /// An `Idempotency-Key` reused for a different operation.
    #[error("Idempotency-Key was already used for {0}")]
    IdempotencyKeyReused(String),
    /// Unknown path.
    #[error("not found")]
    NotFound,
    /// Known path, wrong method; carries the `Allow` header value.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The service is shutting down.
    #[error("shutting down")]
    Draining,
}

impl Error {
    /// HTTP status for a request failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unavailable(_)
            | Error::Redis { .. }
            | Error::ReadOnly
            | Error::NotConfirmed { .. }
            | Error::CannotPersist { .. }
            | Error::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Error::Overflow | Error::NotAnInteger | Error::IdempotencyKeyReused(_) => StatusCode::CONFLICT,
            Error::BadIdempotencyKey => StatusCode::BAD_REQUEST,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Config { .. } | Error::Bind { .. } | Error::Serve(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config { .. } => "config",
            Error::Bind { .. } => "bind",
            Error::Serve(_) => "serve",
            Error::Unavailable(_) => "unavailable",
            Error::Redis { .. } => "redis",
            Error::ReadOnly => "readonly",
            Error::CannotPersist { .. } => "cannot_persist",
            Error::NotConfirmed { .. } => "not_confirmed",
            Error::Overflow => "overflow",
            Error::NotAnInteger => "not_an_integer",
            Error::BadIdempotencyKey => "bad_idempotency_key",
            Error::IdempotencyKeyReused(_) => "idempotency_key_reused",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::Draining => "draining",
        }
    }
}

/// `{"error": "..."}` with the message JSON-escaped.
pub fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "request refused");
        }
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            error_body(&self.to_string()),
        )
            .into_response();
        match self {
            Error::MethodNotAllowed(allow) => {
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            // A full volume is not freed within a second: clients need not hammer it.
            Error::CannotPersist { .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_client_actionable() {
        assert_eq!(Error::Overflow.status(), StatusCode::CONFLICT);
        assert_eq!(Error::ReadOnly.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            Error::NotConfirmed { wanted: 1, acked: 0, timeout_ms: 250 }.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(Error::BadIdempotencyKey.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_primary_that_cannot_persist_is_a_503_naming_the_cause() {
        let e = Error::CannotPersist {
            node: "primary",
            detail: "MISCONF Errors writing to the AOF file: No space left on device".into(),
        };
        assert_eq!(e.metric_label(), "cannot_persist");
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn error_body_escapes() {
        assert_eq!(error_body("a \"b\""), r#"{"error":"a \"b\""}"#);
    }

    #[test]
    fn unavailable_sets_retry_after_and_json() {
        let r = Error::Unavailable("primary").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = Error::MethodNotAllowed("POST").into_response();
        assert_eq!(r.headers()[header::ALLOW], "POST");
    }
}
