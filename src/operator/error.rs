//! The operator's one error type. `metric_label()` names each variant in the
//! `counterstack_reconcile_errors_total{error=...}` metric.

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CounterApp CRD is missing from the cluster (startup check).
    #[error("the CounterApp CRD is not installed; run `kubectl apply -f crds/`")]
    CrdNotInstalled,

    /// No kubeconfig or in-cluster configuration could be loaded.
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(#[source] kube::Error),

    /// A Kubernetes API call failed. `action` says which one, for the log and the Event.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The pure builders rejected the CounterApp.
    #[error("cannot build the stack's objects: {0}")]
    Build(#[from] crate::children::Error),

    /// The replication manager failed.
    #[error("redis replication: {0}")]
    Redis(#[from] crate::replication::Error),

    /// The CounterApp lacks something every stored object has (name, namespace, uid).
    #[error("invalid CounterApp: {0}")]
    InvalidObject(String),

    /// The auth Secret exists but holds no usable password. It is never regenerated
    /// (Redis already uses whatever it held), so a human has to repair it.
    #[error("Secret {name}: its `password` {problem}; set a valid one (the operator then rotates to it)")]
    BadSecret { name: String, problem: String },

    /// A user Secret existed when the operator tried to create it and was gone when it
    /// read it: deleted meanwhile. The next reconcile creates it.
    #[error("Secret {0} was deleted while the operator read it; trying again")]
    SecretVanished(String),

    /// A child of the same name exists and is controlled by another object.
    #[error(
        "{kind} {name} already exists and is controlled by another object; delete it or rename the CounterApp"
    )]
    NotOwned { kind: String, name: String },

    /// A desired object could not be serialized (for its hash).
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// Leader election failed, or this instance lost the lease.
    #[error("leader election: {0}")]
    Lease(String),

    /// The kubeconfig or in-cluster configuration is unusable.
    #[error("cannot configure the Kubernetes client: {0}")]
    ClientConfig(String),

    /// The metrics/health server failed.
    #[error("metrics server on {addr}: {source}")]
    MetricsServer {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::CrdNotInstalled => "crd_not_installed",
            Error::Config(_) => "config",
            Error::Kube { .. } => "kube_api",
            Error::Build(_) => "build",
            Error::Redis(_) => "redis",
            Error::InvalidObject(_) => "invalid_object",
            Error::BadSecret { .. } => "bad_secret",
            Error::SecretVanished(_) => "secret_vanished",
            Error::NotOwned { .. } => "not_owned",
            Error::Serialize { .. } => "serialize",
            Error::MetricsServer { .. } => "metrics_server",
            Error::Lease(_) => "lease",
            Error::ClientConfig(_) => "config",
        }
    }

    /// The API server refused a write because the namespace is terminating (the
    /// CounterApp is then left alone, see `operator::terminating`).
    pub fn namespace_terminating(&self) -> bool {
        matches!(self, Error::Kube { source, .. } if super::terminating::is_refusal(source))
    }

    /// The leadership fence refused a write (an API request or a Redis command): this
    /// instance no longer leads. Not a failure of the CounterApp: nothing to report, no
    /// retry (the new leader carries on; this process steps down).
    pub fn not_leader(&self) -> bool {
        match self {
            Error::Kube { source, .. } => super::fence::is_refusal(source),
            Error::Redis(crate::replication::Error::Redis { source, .. }) => {
                crate::replication::node::is_fenced(source)
            }
            _ => false,
        }
    }

    /// The API server refused a write as invalid (422): for an apply, a field that
    /// cannot change in place.
    pub fn invalid(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(e), .. } if e.code == 422)
    }

    /// Wrap a kube error with what the operator was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { action: action.into(), source }
    }
}
