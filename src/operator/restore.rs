//! `spec.bootstrap.fromBackup` as the reconcile sees it: what pod 0's `restore` init
//! container reported (its termination message) becomes `status.bootstrap`, an Event,
//! and, when it failed, the Stalled condition (no pod serves until the cause is fixed).

use k8s_openapi::api::core::v1::Pod;

use crate::api::{BootstrapStatus, CounterApp};
use crate::children::restore::CONTAINER;
use crate::names;

pub const RESTORING: &str = "Restoring";
pub const RESTORED: &str = "Restored";
pub const FAILED: &str = "Failed";

/// The new `status.bootstrap` (None: keep the current one). PURE.
pub fn status(app: &CounterApp, pods: &[Pod]) -> Option<BootstrapStatus> {
    app.spec.bootstrap.as_ref()?;
    let current = app.status.as_ref().and_then(|s| s.bootstrap.as_deref());
    if current.is_some_and(|b| b.phase == RESTORED) {
        // Done once; a later restart of pod 0 restores nothing (its volume holds data).
        return None;
    }
    let first = names::redis_pod(app.metadata.name.as_deref()?, 0);
    let outcome = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(first.as_str()))
        .and_then(|p| {
            p.status.as_ref()?.init_container_statuses.as_ref()?.iter().find(|c| c.name == CONTAINER).cloned()
        })
        .and_then(|c| c.state?.terminated);
    let next = match outcome {
        Some(t) if t.exit_code == 0 => BootstrapStatus {
            phase: RESTORED.to_string(),
            backup: t.message.as_deref().and_then(restored_key).unwrap_or_default(),
            message: t.message.unwrap_or_default().trim().to_string(),
        },
        Some(t) => BootstrapStatus {
            phase: FAILED.to_string(),
            backup: String::new(),
            message: t.message.unwrap_or_else(|| "the restore failed".into()).trim().to_string(),
        },
        None => BootstrapStatus {
            phase: RESTORING.to_string(),
            backup: String::new(),
            message: format!("waiting for {first} to restore the backup"),
        },
    };
    (current != Some(&next)).then_some(next)
}

/// The key in a success message: `restored KEY (...)`.
fn restored_key(message: &str) -> Option<String> {
    message.trim().strip_prefix("restored ")?.split_whitespace().next().map(str::to_string)
}

/// The Stalled message while the restore fails.
pub fn failure(app: &CounterApp, new: Option<&BootstrapStatus>) -> Option<String> {
    let b = new.or_else(|| app.status.as_ref()?.bootstrap.as_deref())?;
    (b.phase == FAILED).then(|| {
        format!(
            "the restore from spec.bootstrap.fromBackup failed, so no Redis pod serves: {} (fix the cause; pod 0 retries on its own)",
            b.message
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_the_success_message() {
        assert_eq!(
            restored_key("restored counterstack/ns/a/20261203T162200Z.rdb (123 bytes, ...)").as_deref(),
            Some("counterstack/ns/a/20261203T162200Z.rdb")
        );
        assert_eq!(restored_key("nothing to restore"), None);
    }
}
