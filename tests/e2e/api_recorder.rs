//! An API server front that records what one operator process sends: a plain-HTTP
//! listener on loopback that forwards every request to the cluster (with the suite's
//! credentials) and streams the answer back (watches included). The process gets a
//! kubeconfig naming it. What it records is what the process sent, seen from outside the
//! process: the proof does not rest on the operator's own logs or metrics.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kube::Client;

/// One request received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
}

impl Seen {
    /// A request that changes something, other than the leader election's own Lease.
    pub fn is_write_outside_the_lease(&self) -> bool {
        matches!(self.method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
            && !self.uri.starts_with("/apis/coordination.k8s.io/")
    }
}

struct Shared {
    client: Client,
    seen: Mutex<Vec<Seen>>,
}

pub struct ApiRecorder {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    /// A kubeconfig naming this front (and `namespace`).
    pub kubeconfig: tempfile::NamedTempFile,
}

impl Drop for ApiRecorder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ApiRecorder {
    pub async fn start(client: Client, namespace: &str) -> Self {
        let shared = Arc::new(Shared { client, seen: Mutex::new(vec![]) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = tempfile::NamedTempFile::new().expect("a temporary kubeconfig");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: recorder\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: recorder\n  user: {{}}\ncontexts:\n- name: recorder\n  context:\n    cluster: recorder\n\
             \x20   user: recorder\n    namespace: {namespace}\ncurrent-context: recorder\n"
        );
        std::fs::write(kubeconfig.path(), yaml).expect("write the kubeconfig");
        ApiRecorder { shared, server, kubeconfig }
    }

    /// How many requests were received so far (a mark for [`Self::since`]).
    pub fn len(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// The requests received after `mark`.
    pub fn since(&self, mark: usize) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().get(mark..).map(<[Seen]>::to_vec).unwrap_or_default()
    }
}

/// Record the request (as soon as its head arrived), forward it, stream the answer back.
async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let uri = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
    shared.seen.lock().unwrap().push(Seen { method: parts.method.clone(), uri: uri.clone() });
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut out = axum::http::Request::builder().method(parts.method).uri(uri);
    for h in [header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&h) {
            out = out.header(h, v);
        }
    }
    let out = match out.body(kube::client::Body::from(bytes.to_vec())) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match shared.client.send(out).await {
        Ok(res) => res.map(Body::new),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
