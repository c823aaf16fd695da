//! A small in-memory Kubernetes API server behind kube's `Client`, over a `tower_test`
//! mock service (the ApiServerVerifier idea of kube-rs/controller-rs). It records
//! every request so tests can assert the exact requests of a scenario, and answers
//! them like the API server would for what the operator uses: GET, LIST with a label
//! selector, server-side apply (objects and the status subresource), JSON merge patch,
//! POST of Events, and WATCH (newline-delimited events of later changes), so a real
//! kube-runtime Controller can run against it. Server-side apply of a StatefulSet with
//! volumeClaimTemplates bumps its resourceVersion every time, like the real API server
//! (kubernetes#119304).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body as ResponseBody;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One request the operator sent.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }

    pub fn is_event(&self) -> bool {
        self.path.starts_with("/apis/events.k8s.io/")
    }

    /// The object a write is about: the path, or for a create (POST to a collection) the
    /// path of the object it names.
    pub fn target(&self) -> String {
        match (&self.method, self.body.as_ref().and_then(|b| b["metadata"]["name"].as_str())) {
            (&Method::POST, Some(name)) => format!("{}/{name}", self.path),
            _ => self.path.clone(),
        }
    }

    /// `METHOD path` for readable assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

struct Failure {
    method: Method,
    path: String,
    status: u16,
    remaining: usize,
}

/// An open WATCH: changes of objects directly under `prefix` matching `selector`.
struct Watch {
    prefix: String,
    selector: Vec<(String, String)>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    log: Vec<Recorded>,
    failures: Vec<Failure>,
    watches: Vec<Watch>,
    /// Path fragments of terminating namespaces: creates there are refused.
    terminating: Vec<String>,
    /// PVCs may grow (their StorageClass has `allowVolumeExpansion: true`).
    expandable: bool,
    rv: u64,
    uid: u64,
}

impl State {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// Remove the object at `path` and tell the open watches about it.
    fn remove(&mut self, path: &str) -> Option<Value> {
        let obj = self.objects.remove(path)?;
        let mut line = serde_json::to_vec(&json!({ "type": "DELETED", "object": obj })).expect("json");
        line.push(b'\n');
        self.watches.retain(|w| {
            let under = path.strip_prefix(&w.prefix).is_some_and(|rest| !rest.contains('/'));
            !under || !matches(&w.selector, &obj) || w.tx.send(line.clone()).is_ok()
        });
        Some(obj)
    }

    /// Store `obj` at `path` and tell the open watches about it.
    fn store(&mut self, path: &str, obj: Value) {
        let type_ = if self.objects.contains_key(path) { "MODIFIED" } else { "ADDED" };
        let mut line = serde_json::to_vec(&json!({ "type": type_, "object": obj })).expect("json");
        line.push(b'\n');
        self.watches.retain(|w| {
            let under = path.strip_prefix(&w.prefix).is_some_and(|rest| !rest.contains('/'));
            !under || !matches(&w.selector, &obj) || w.tx.send(line.clone()).is_ok()
        });
        self.objects.insert(path.to_string(), obj);
    }
}

fn matches(selector: &[(String, String)], obj: &Value) -> bool {
    selector.iter().all(|(k, v)| obj["metadata"]["labels"][k].as_str() == Some(v))
}

fn parse_selector(query: &BTreeMap<String, String>) -> Vec<(String, String)> {
    query
        .get("labelSelector")
        .map(|s| {
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Kinds whose `metadata.generation` the API server maintains.
const GENERATION_KINDS: &[&str] = &["Deployment", "StatefulSet", "PodDisruptionBudget", "CounterApp"];

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// A client talking to a new, empty fake API server.
    pub fn start() -> (kube::Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<ResponseBody>>();
        let fake = FakeApi::default();
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                send.send_response(server.handle(&parts, &bytes));
            }
        });
        (kube::Client::new(service, "default"), fake)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake api state")
    }

    /// Store an object at `path` as if it existed (gets uid/resourceVersion if missing).
    pub fn insert(&self, path: &str, mut obj: Value) {
        let mut st = self.lock();
        if obj["metadata"]["resourceVersion"].is_null() {
            obj["metadata"]["resourceVersion"] = json!(st.next_rv());
        }
        if obj["metadata"]["uid"].is_null() {
            st.uid += 1;
            obj["metadata"]["uid"] = json!(format!("uid-{}", st.uid));
        }
        st.store(path, obj);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Every stored object whose path is `prefix` + a name (one collection).
    pub fn collection(&self, prefix: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|(p, _)| {
                p.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            })
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Every stored object's path and resourceVersion.
    pub fn resource_versions(&self) -> BTreeMap<String, String> {
        self.lock()
            .objects
            .iter()
            .filter(|(p, _)| !p.starts_with("/apis/events.k8s.io/"))
            .map(|(p, o)| (p.clone(), o["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    /// Change an object as another actor would (a controller updating status, a user
    /// editing the spec): `f` edits it; resourceVersion (and generation when `spec`
    /// changed) move.
    pub fn mutate(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut st = self.lock();
        let mut obj = st.objects.get(path).cloned().unwrap_or_else(|| panic!("no object at {path}"));
        let before = obj.clone();
        f(&mut obj);
        if obj["spec"] != before["spec"]
            && let Some(g) = obj["metadata"]["generation"].as_i64()
        {
            obj["metadata"]["generation"] = json!(g + 1);
        }
        obj["metadata"]["resourceVersion"] = json!(st.next_rv());
        st.store(path, obj);
    }

    /// Delete the object at `path` as another actor would (the namespace controller).
    pub fn delete(&self, path: &str) {
        self.lock().remove(path);
    }

    /// Answer the next `times` requests `method path` with `status`.
    pub fn fail(&self, method: Method, path: &str, status: u16, times: usize) {
        self.lock().failures.push(Failure { method, path: path.to_string(), status, remaining: times });
    }

    /// Refuse every write to the namespace of `path` from now on, as the API server's
    /// NamespaceLifecycle admission does once the namespace is terminating: 403 with the
    /// cause `NamespaceTerminating`.
    pub fn terminate_namespace(&self, namespace: &str) {
        self.lock().terminating.push(format!("/namespaces/{namespace}/"));
    }

    /// Let PVC requests grow from now on, as a StorageClass with `allowVolumeExpansion`
    /// does; without it a larger request is refused as the API server's
    /// PersistentVolumeClaimResize admission refuses it.
    pub fn allow_volume_expansion(&self) {
        self.lock().expandable = true;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    fn handle(&self, parts: &http::request::Parts, bytes: &[u8]) -> Response<ResponseBody> {
        let path = parts.uri.path().to_string();
        let query = parse_query(parts.uri.query().unwrap_or(""));
        let content_type =
            parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body: Option<Value> = if bytes.is_empty() { None } else { serde_json::from_slice(bytes).ok() };
        let mut st = self.lock();
        st.log.push(Recorded {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        if let Some(f) =
            st.failures.iter_mut().find(|f| f.remaining > 0 && f.method == parts.method && f.path == path)
        {
            f.remaining -= 1;
            let code = f.status;
            let reason = match code {
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                422 => "Invalid",
                _ => "InternalError",
            };
            return status(code, reason, &format!("injected failure {code}"));
        }
        // A terminating namespace admits no new object (an apply of a missing one, a
        // POST of an Event); changes to existing objects still go through.
        let creates = parts.method == Method::POST
            || (parts.method == Method::PATCH
                && !st.objects.contains_key(&path)
                && !path.ends_with("/status"));
        if creates && st.terminating.iter().any(|t| path.contains(t.as_str())) {
            let message = "unable to create new content in namespace because it is being terminated";
            let mut refusal = status_body(403, "Forbidden", message);
            refusal["details"] = json!({ "causes": [{
                "reason": "NamespaceTerminating",
                "message": "namespace is being terminated",
                "field": "metadata.namespace",
            }] });
            return respond(StatusCode::FORBIDDEN, &refusal);
        }
        let route = Route::parse(&path);
        if parts.method == Method::GET && query.get("watch").map(String::as_str) == Some("true") {
            return watch(&mut st, &path, &query);
        }
        match parts.method {
            Method::GET => match st.objects.get(&path) {
                Some(obj) => respond(StatusCode::OK, obj),
                None if route.as_ref().is_some_and(|r| r.name.is_none()) => list(&st, &path, &query),
                None => status(404, "NotFound", &format!("{path} not found")),
            },
            Method::PATCH => {
                let Some(body) = body else { return status(400, "BadRequest", "no body") };
                match content_type.as_deref() {
                    Some("application/apply-patch+yaml") => apply(&mut st, &path, route.as_ref(), body),
                    Some("application/merge-patch+json") => {
                        if let Some(refusal) = refuse_pvc_resize(&st, &path, &body) {
                            return refusal;
                        }
                        merge(&mut st, &path, body)
                    }
                    other => status(415, "UnsupportedMediaType", &format!("{other:?}")),
                }
            }
            Method::POST => {
                let Some(mut body) = body else { return status(400, "BadRequest", "no body") };
                let name = body["metadata"]["name"].as_str().unwrap_or("unnamed").to_string();
                // As the API server: a create never replaces what exists.
                if st.objects.contains_key(&format!("{path}/{name}")) {
                    return status(409, "AlreadyExists", &format!("{name} already exists"));
                }
                body["metadata"]["resourceVersion"] = json!(st.next_rv());
                st.store(&format!("{path}/{name}"), body.clone());
                respond(StatusCode::CREATED, &body)
            }
            Method::DELETE => match st.remove(&path) {
                Some(obj) => respond(StatusCode::OK, &obj),
                None => status(404, "NotFound", &format!("{path} not found")),
            },
            _ => status(405, "MethodNotAllowed", "not supported by the fake"),
        }
    }
}

/// `/api/v1/namespaces/NS/PLURAL[/NAME[/SUB]]` or `/apis/G/V/...`.
struct Route {
    name: Option<String>,
    sub: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest = match *segs.first()? {
            "api" => segs.get(2..)?,
            "apis" => segs.get(3..)?,
            _ => return None,
        };
        let rest = if rest.first() == Some(&"namespaces") { rest.get(2..)? } else { rest };
        // rest = [plural, name?, sub?]
        Some(Route { name: rest.get(1).map(|s| s.to_string()), sub: rest.get(2).map(|s| s.to_string()) })
    }
}

fn apply(st: &mut State, path: &str, route: Option<&Route>, body: Value) -> Response<ResponseBody> {
    if route.and_then(|r| r.sub.as_deref()) == Some("status") {
        let obj_path = path.trim_end_matches("/status").to_string();
        let Some(mut obj) = st.objects.get(&obj_path).cloned() else {
            return status(404, "NotFound", &format!("{obj_path} not found"));
        };
        let mut applied = body["status"].clone();
        if obj["kind"] == "CounterApp" {
            as_the_api_server_stores_it(&obj["status"], &mut applied);
        }
        if obj["status"] != applied {
            obj["status"] = applied;
            obj["metadata"]["resourceVersion"] = json!(st.next_rv());
            st.store(&obj_path, obj.clone());
        }
        return respond(StatusCode::OK, &obj);
    }
    let kind = body["kind"].as_str().unwrap_or_default().to_string();
    let has_generation = GENERATION_KINDS.contains(&kind.as_str());
    match st.objects.get(path).cloned() {
        None => {
            let mut obj = body;
            st.uid += 1;
            obj["metadata"]["uid"] = json!(format!("uid-{}", st.uid));
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            obj["metadata"]["resourceVersion"] = json!(st.next_rv());
            if has_generation {
                obj["metadata"]["generation"] = json!(1);
            }
            st.store(path, obj.clone());
            respond(StatusCode::CREATED, &obj)
        }
        Some(live) => {
            // The applier owns everything it sends; system metadata and status stay.
            let mut obj = body;
            for key in ["uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp"] {
                if !live["metadata"][key].is_null() {
                    obj["metadata"][key] = live["metadata"][key].clone();
                }
            }
            if !live["status"].is_null() {
                obj["status"] = live["status"].clone();
            }
            let spec_changed = obj["spec"] != live["spec"];
            if let Some(message) = immutable_field_changed(&kind, &obj, &live) {
                return status(422, "Invalid", &message);
            }
            let vct_bug = kind == "StatefulSet" && !obj["spec"]["volumeClaimTemplates"].is_null();
            if obj != live || vct_bug {
                if has_generation && spec_changed {
                    let g = live["metadata"]["generation"].as_i64().unwrap_or(1);
                    obj["metadata"]["generation"] = json!(g + 1);
                }
                obj["metadata"]["resourceVersion"] = json!(st.next_rv());
                st.store(path, obj.clone());
            }
            respond(StatusCode::OK, &obj)
        }
    }
}

/// A merge patch that raises a PVC's storage request, refused unless expansion is
/// allowed ([`FakeApi::allow_volume_expansion`]), with the API server's words.
fn refuse_pvc_resize(st: &State, path: &str, patch: &Value) -> Option<Response<ResponseBody>> {
    if st.expandable || !path.contains("/persistentvolumeclaims/") {
        return None;
    }
    let wanted = &patch["spec"]["resources"]["requests"]["storage"];
    let live = &st.objects.get(path)?["spec"]["resources"]["requests"]["storage"];
    if wanted.is_null() || wanted == live {
        return None;
    }
    let name = path.rsplit('/').next().unwrap_or_default();
    Some(status(
        403,
        "Forbidden",
        &format!(
            "persistentvolumeclaims \"{name}\" is forbidden: only dynamically provisioned pvc can be resized and \
             the storageclass that provisions the pvc must support resize"
        ),
    ))
}

/// What the API server does to an applied CounterApp status before it stores it (and
/// then returns it, on every read and watch): the structural schema of the CRD prunes
/// unknown fields and nulls of fields that are not nullable and fills in defaults, and
/// server-side apply keeps the items of an associative list (`conditions`,
/// `x-kubernetes-list-type: map`) it had in their order, new ones after them.
fn as_the_api_server_stores_it(live: &Value, applied: &mut Value) {
    let schema = serde_json::to_value(counterstack::crd::open_api_schema()).expect("CRD schema");
    structural(&schema["properties"]["status"], applied);
    if let (Some(live), Some(new)) = (live["conditions"].as_array(), applied["conditions"].as_array_mut()) {
        // Stable: new items keep their order among themselves, after the known ones.
        new.sort_by_key(|c| live.iter().position(|l| l["type"] == c["type"]).unwrap_or(usize::MAX));
    }
}

/// Pruning and defaulting of one value against its structural schema.
fn structural(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            let Some(props) = schema["properties"].as_object() else { return };
            if schema["x-kubernetes-preserve-unknown-fields"] == json!(true) {
                return;
            }
            map.retain(|k, val| props.get(k).is_some_and(|p| !val.is_null() || p["nullable"] == json!(true)));
            for (k, p) in props {
                if let (None, Some(d)) = (map.get(k), p.get("default")) {
                    map.insert(k.clone(), d.clone());
                }
                if let Some(val) = map.get_mut(k) {
                    structural(p, val);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                structural(&schema["items"], item);
            }
        }
        _ => {}
    }
}

fn merge(st: &mut State, path: &str, patch: Value) -> Response<ResponseBody> {
    let Some(live) = st.objects.get(path).cloned() else {
        return status(404, "NotFound", &format!("{path} not found"));
    };
    let mut obj = live.clone();
    merge_patch(&mut obj, &patch);
    if obj != live {
        obj["metadata"]["resourceVersion"] = json!(st.next_rv());
        st.store(path, obj.clone());
    }
    respond(StatusCode::OK, &obj)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Open a WATCH on the collection `path`: later changes stream as JSON lines.
fn watch(st: &mut State, path: &str, query: &BTreeMap<String, String>) -> Response<ResponseBody> {
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    st.watches.push(Watch { prefix: format!("{path}/"), selector: parse_selector(query), tx });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(ResponseBody::from_stream(stream))
        .expect("response")
}

fn list(st: &State, path: &str, query: &BTreeMap<String, String>) -> Response<ResponseBody> {
    let selector = parse_selector(query);
    let prefix = format!("{path}/");
    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|(p, _)| p.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('/')))
        .filter(|(_, o)| matches(&selector, o))
        .map(|(_, o)| o.clone())
        .collect();
    let kind = items.first().and_then(|i| i["kind"].as_str()).unwrap_or("Object").to_string();
    respond(
        StatusCode::OK,
        &json!({
            "apiVersion": "v1",
            "kind": format!("{kind}List"),
            "metadata": { "resourceVersion": st.rv.to_string() },
            "items": items,
        }),
    )
}

fn respond(code: StatusCode, body: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(ResponseBody::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn status(code: u16, reason: &str, message: &str) -> Response<ResponseBody> {
    respond(StatusCode::from_u16(code).expect("status code"), &status_body(code, reason, message))
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The API server's refusal of an update that changes an immutable field, as its
/// validation words it: a StatefulSet's claim templates, a Service's set ClusterIP.
fn immutable_field_changed(kind: &str, obj: &Value, live: &Value) -> Option<String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    match kind {
        "StatefulSet" if obj["spec"]["volumeClaimTemplates"] != live["spec"]["volumeClaimTemplates"] => {
            Some(format!(
                "StatefulSet.apps \"{name}\" is invalid: spec: Forbidden: updates to statefulset spec \
                 for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', \
                 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
            ))
        }
        "Service"
            if live["spec"]["clusterIP"].is_string()
                && live["spec"]["clusterIP"] != "None"
                && obj["spec"]["clusterIP"].is_string()
                && obj["spec"]["clusterIP"] != live["spec"]["clusterIP"] =>
        {
            Some(format!(
                "Service \"{name}\" is invalid: spec.clusterIPs[0]: Invalid value: []string{{{:?}}}: \
                 may not change once set",
                obj["spec"]["clusterIP"].as_str().unwrap_or_default()
            ))
        }
        _ => None,
    }
}
