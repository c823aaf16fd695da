//! CounterApps whose namespace is being deleted.
//!
//! When a namespace is deleted, the namespace controller removes its objects kind by kind,
//! often the children before the CounterApps. An operator that answered every child's
//! delete event by creating it again would be refused (the API server admits nothing new
//! into a terminating namespace) and try again, with an Event each time, until the
//! CounterApp itself goes. So a CounterApp in a terminating namespace is left alone:
//! no apply, no status, no Event.
//!
//! Two ways to know: the Namespace cache (`cache::Caches::namespace_terminating`, filled
//! when the operator watches every namespace), and, where it cannot watch Namespaces (a
//! namespace-scoped install, whose Role cannot grant them), the API server's refusal of
//! a write, remembered per CounterApp uid here so that it costs one request per
//! CounterApp, not one per wake-up.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::locked::lock;

/// The `StatusCause` type the API server's NamespaceLifecycle admission gives a write
/// refused because its namespace is terminating (`corev1.NamespaceTerminatingCause`).
pub const CAUSE: &str = "NamespaceTerminating";

/// Whether `e` is the API server refusing a write because the namespace is terminating.
pub fn is_refusal(e: &kube::Error) -> bool {
    let kube::Error::Api(status) = e else { return false };
    let by_cause = status.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == CAUSE));
    // Older API servers (and some proxies) drop the cause; the message stays.
    by_cause || (status.code == 403 && status.message.contains("because it is being terminated"))
}

/// CounterApps a write was refused for because their namespace is terminating, by
/// namespace and name, with the uid of the very CounterApp (one of the same name in a
/// namespace created again later is another). An entry goes with its CounterApp
/// (`Context::forget`).
#[derive(Debug, Default)]
pub struct Refused {
    apps: Mutex<HashMap<(String, String), String>>,
}

impl Refused {
    pub fn record(&self, namespace: &str, name: &str, uid: &str) {
        lock(&self.apps).insert((namespace.to_string(), name.to_string()), uid.to_string());
    }

    pub fn contains(&self, namespace: &str, name: &str, uid: &str) -> bool {
        lock(&self.apps).get(&(namespace.to_string(), name.to_string())).is_some_and(|u| u == uid)
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        lock(&self.apps).remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn len(&self) -> usize {
        lock(&self.apps).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;
    use kube::core::response::{StatusCause, StatusDetails};

    use super::*;

    fn refusal(cause: Option<&str>, message: &str) -> kube::Error {
        kube::Error::Api(
            Status {
                code: 403,
                reason: "Forbidden".into(),
                message: message.into(),
                details: cause.map(|c| StatusDetails {
                    name: "x".into(),
                    group: String::new(),
                    kind: "secrets".into(),
                    uid: String::new(),
                    causes: vec![StatusCause {
                        reason: c.into(),
                        message: String::new(),
                        field: "metadata.namespace".into(),
                    }],
                    retry_after_seconds: 0,
                }),
                ..Default::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn a_terminating_namespace_is_told_from_other_refusals() {
        let msg = "secrets \"x\" is forbidden: unable to create new content in namespace ns because it is being terminated";
        assert!(is_refusal(&refusal(Some(CAUSE), msg)));
        assert!(is_refusal(&refusal(None, msg)), "the message alone");
        assert!(!is_refusal(&refusal(None, "secrets is forbidden: User cannot create")), "RBAC");
        assert!(!is_refusal(&refusal(Some("FieldValueInvalid"), "invalid")));
    }

    #[test]
    fn refused_counterapps_are_remembered_until_forgotten() {
        let r = Refused::default();
        assert!(!r.contains("ns", "demo", "u1"));
        r.record("ns", "demo", "u1");
        assert!(r.contains("ns", "demo", "u1"));
        assert!(!r.contains("ns", "demo", "u2"), "a CounterApp of the same name created later");
        assert!(!r.contains("other", "demo", "u1"));
        r.forget("ns", "demo");
        assert!(r.is_empty());
    }
}
