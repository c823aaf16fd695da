//! The plugin's one error type: each variant prints as one clear line.

use std::time::Duration;

/// What can go wrong in `kubectl counterstack`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("CounterApp {name:?} not found in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },
    #[error(
        "the CounterApp CRD (counterapps.counterstack.io) is not installed in this cluster; install it with `kubectl apply -f crds/counterapp.yaml` or the Helm chart"
    )]
    CrdMissing,
    #[error("no permission to {action}: {message}")]
    Forbidden { action: String, message: String },
    #[error("{action} failed: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("switchover {request} failed: {message}")]
    SwitchoverFailed { request: String, message: String },
    #[error(
        "no answer to switchover {request} after {}s ({last}): is the operator running, and does the installed CRD have status.redis.switchover (an older CRD prunes the answer)?",
        .after.as_secs()
    )]
    Timeout { request: String, after: Duration, last: String },
}

impl Error {
    /// Map a kube error of `action` on CounterApp `name` in `namespace` to a clear error.
    pub fn from_kube(action: &str, name: &str, namespace: &str, e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 404 => {
                // A missing object answers a Status naming it; a missing CRD answers a
                // bare 404 (no such API path) or a Status without that name.
                if s.details.as_ref().is_some_and(|d| d.name == name) {
                    Error::NotFound { name: name.to_string(), namespace: namespace.to_string() }
                } else {
                    Error::CrdMissing
                }
            }
            kube::Error::Api(s) if s.code == 403 || s.code == 401 => {
                Error::Forbidden { action: action.to_string(), message: s.message.clone() }
            }
            _ => Error::Api { action: action.to_string(), source: e },
        }
    }
}
