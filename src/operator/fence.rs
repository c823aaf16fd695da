//! The fence: no write leaves an instance that is not the leader right now. Checking the
//! leadership at the start of a reconcile is not enough: a process frozen (SIGSTOP, a
//! stalled node) in the middle of a reconcile wakes with work in flight and watch events
//! queued, after a standby took the lease over. So the check sits where the writes leave
//! the process, right before each one is sent:
//!
//! - the operator's kube client refuses every mutating request (POST, PUT, PATCH, DELETE)
//!   except those of the leader election itself (`coordination.k8s.io` Leases) with
//!   [`NotLeader`];
//! - the Redis client refuses every command that changes a node (REPLICAOF, FAILOVER,
//!   CONFIG SET, ACL SETUSER) through [`WriteGate`].
//!
//! Each refusal is logged (warn) and counted in `counterstack_leader_fenced_total{target}`.
//! What remains is the moment between the check and the bytes leaving the socket: a freeze
//! exactly there still sends that one request on waking.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{Method, Request};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tower::{BoxError, Layer, Service};

use super::leader::Leadership;
use crate::replication::node::{NodeAddr, WriteGate};

/// Labels of `counterstack_leader_fenced_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FenceLabels {
    /// `api` (a Kubernetes write) or `redis` (a command that changes a Redis node).
    pub target: String,
}

/// Where a refused write was going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Api,
    Redis,
}

impl Target {
    pub const ALL: [Target; 2] = [Target::Api, Target::Redis];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Api => "api",
            Target::Redis => "redis",
        }
    }
}

/// Lets a write out only while this instance leads.
#[derive(Clone, Debug)]
pub struct Fence {
    leadership: Leadership,
    refused: Family<FenceLabels, Counter>,
}

impl Fence {
    pub fn new(leadership: Leadership, refused: Family<FenceLabels, Counter>) -> Self {
        Self { leadership, refused }
    }

    /// Whether a write to `target` (`what`: method and path, or command and node) may go
    /// out now. A refusal is counted and logged.
    pub fn allows(&self, target: Target, what: &dyn fmt::Display) -> bool {
        if self.leadership.is_leader() {
            return true;
        }
        self.refused.get_or_create(&FenceLabels { target: target.as_str().to_string() }).inc();
        tracing::warn!(target = target.as_str(), write = %what, "not the leader: write refused");
        false
    }

    /// The tower layer of the operator's kube client.
    pub fn layer(&self) -> FenceLayer {
        FenceLayer(self.clone())
    }
}

impl WriteGate for Fence {
    fn allows(&self, command: &str, at: &NodeAddr) -> bool {
        Fence::allows(self, Target::Redis, &format_args!("{command} on {at}"))
    }
}

/// Whether a request to the API server changes something this instance may only change
/// as the leader: every mutating verb, except on Leases (the leader election's own
/// requests, which a standby and a leader that lost its lease must still send).
pub fn needs_leadership(method: &Method, path: &str) -> bool {
    let mutating = matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    mutating && !path.starts_with("/apis/coordination.k8s.io/")
}

/// The error of a refused API request (kube wraps it in `kube::Error::Service`).
#[derive(Debug, thiserror::Error)]
#[error("refused {method} {path}: this operator instance is not the leader (any more)")]
pub struct NotLeader {
    pub method: Method,
    pub path: String,
}

/// Whether the API refused nothing but the fence did (kube's error for a [`NotLeader`]).
pub fn is_refusal(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Service(inner) if inner.downcast_ref::<NotLeader>().is_some())
}

/// [`Fence`] as a tower layer.
#[derive(Clone, Debug)]
pub struct FenceLayer(Fence);

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced { inner, fence: self.0.clone() }
    }
}

/// A kube client's service behind the fence.
#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

impl<S, B> Service<Request<B>> for Fenced<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if needs_leadership(req.method(), req.uri().path()) {
            // A test freezes the process here (COUNTERSTACK_FAILPOINT_MODE=stop): a write
            // about to leave when the process stops, checked only once it wakes.
            if let Err(point) = crate::failpoint::hit("before-write") {
                return Box::pin(std::future::ready(Err(format!("failpoint {point}").into())));
            }
            let what = format!("{} {}", req.method(), req.uri().path());
            if !self.fence.allows(Target::Api, &what) {
                let refused = NotLeader { method: req.method().clone(), path: req.uri().path().to_string() };
                return Box::pin(std::future::ready(Err(refused.into())));
            }
        }
        let sent = self.inner.call(req);
        Box::pin(async move { sent.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
    use kube::{Api, Client};

    use super::*;

    #[test]
    fn every_mutating_verb_needs_the_leadership_except_on_leases() {
        let cm = "/api/v1/namespaces/ns/configmaps/demo-redis";
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(needs_leadership(&m, cm), "{m}");
            assert!(needs_leadership(&m, "/apis/events.k8s.io/v1/namespaces/ns/events"), "{m}");
            assert!(!needs_leadership(&m, "/apis/coordination.k8s.io/v1/namespaces/ns/leases/op"), "{m}");
        }
        assert!(!needs_leadership(&Method::GET, cm));
        assert!(!needs_leadership(&Method::GET, "/api/v1/pods"));
    }

    /// A kube client over a mock API server (tower_test) behind the fence, and what the
    /// server received: each request is answered 200 with an empty object.
    fn fenced_client(fence: &Fence) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, axum::http::Response<kube::client::Body>>();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                log.lock().unwrap().push(format!("{} {}", req.method(), req.uri().path()));
                let list = req.method() == Method::GET && req.uri().path().ends_with("/configmaps");
                let body = if list {
                    r#"{"apiVersion":"v1","kind":"ConfigMapList","metadata":{},"items":[]}"#
                } else if req.uri().path().contains("/leases/") {
                    r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"op"}}"#
                } else {
                    r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"}}"#
                };
                send.send_response(axum::http::Response::new(kube::client::Body::from(
                    body.as_bytes().to_vec(),
                )));
            }
        });
        let client = kube::client::ClientBuilder::new(service, "ns").with_layer(&fence.layer()).build();
        (client, seen)
    }

    #[tokio::test]
    async fn a_client_whose_leadership_lapsed_sends_no_write_and_reads_still_pass() {
        let refused = Family::<FenceLabels, Counter>::default();
        let term = Duration::from_secs(13);
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some("cm".into()), ..Default::default() },
            ..Default::default()
        };

        // A leader's writes go out.
        let leading = Leadership::until_renewed(term);
        leading.renewed(Instant::now());
        let (client, seen) = fenced_client(&Fence::new(leading, refused.clone()));
        let cms: Api<ConfigMap> = Api::namespaced(client, "ns");
        cms.create(&PostParams::default(), &cm).await.expect("a leader's create");
        assert_eq!(seen.lock().unwrap().clone(), vec!["POST /api/v1/namespaces/ns/configmaps"]);

        // The last renewal seen is older than the term (the process was frozen): reads
        // pass, no write reaches the server, the Lease's requests still do.
        let lapsed = Leadership::until_renewed(term);
        lapsed.renewed(Instant::now() - Duration::from_secs(60));
        let (client, seen) = fenced_client(&Fence::new(lapsed, refused.clone()));
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
        cms.get("cm").await.expect("a read");
        cms.list(&Default::default()).await.expect("a list");
        let params = PatchParams::apply("counterstack-operator").force();
        let writes = [
            cms.create(&PostParams::default(), &cm).await.map(|_| ()),
            cms.replace("cm", &PostParams::default(), &cm).await.map(|_| ()),
            cms.patch("cm", &params, &Patch::Apply(&cm)).await.map(|_| ()),
            cms.delete("cm", &DeleteParams::default()).await.map(|_| ()),
        ];
        for w in writes {
            let e = w.expect_err("a write without the leadership");
            assert!(is_refusal(&e), "not the fence's refusal: {e}");
            assert!(e.to_string().contains("not the leader"), "{e}");
        }
        let leases: Api<Lease> = Api::namespaced(client, "ns");
        let lease = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"});
        leases.patch("op", &PatchParams::default(), &Patch::Merge(&lease)).await.expect("a lease patch");
        assert_eq!(
            seen.lock().unwrap().clone(),
            vec![
                "GET /api/v1/namespaces/ns/configmaps/cm",
                "GET /api/v1/namespaces/ns/configmaps",
                "PATCH /apis/coordination.k8s.io/v1/namespaces/ns/leases/op",
            ]
        );
        let api = refused.get_or_create(&FenceLabels { target: "api".into() }).get();
        assert_eq!(api, 4, "refusals counted");
    }
}
