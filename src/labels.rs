//! Labels of design.md. The CR's own labels and annotations are never copied (GitOps
//! tools' tracking labels on children make Argo CD prune them).

use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Role of a Redis pod; the primary and replicas Services select on it.
pub const ROLE: &str = "counterstack.io/role";
pub const ROLE_PRIMARY: &str = "primary";
pub const ROLE_REPLICA: &str = "replica";
pub const APP_NAME: &str = "counterstack";
pub const MANAGER: &str = "counterstack-operator";

/// Component of the stack a child belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Web,
    Redis,
    /// The Job of a backup to a PersistentVolumeClaim.
    Backup,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Web => "web",
            Component::Redis => "redis",
            Component::Backup => "backup",
        }
    }
}

/// Selector labels of a component's pods (stable: selectors are immutable).
pub fn selector(app: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), APP_NAME.to_string()),
        (INSTANCE.to_string(), app.to_string()),
        (COMPONENT.to_string(), component.as_str().to_string()),
    ])
}

/// All labels of a child object of a component.
pub fn labels(app: &str, component: Component) -> BTreeMap<String, String> {
    let mut l = selector(app, component);
    l.insert(MANAGED_BY.to_string(), MANAGER.to_string());
    l
}

/// `key=value,...` form of a selector (status.web.selector, label selectors in lists).
pub fn selector_string(sel: &BTreeMap<String, String>) -> String {
    sel.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}
