//! Kubernetes Events (events.k8s.io/v1) on the CounterApp: children created or updated,
//! reconcile failures, and what the replication manager reports (e.g. `FailedOver`).
//! Publishing is best effort: a failed Event is logged and never fails a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::api::CounterApp;

/// Event reasons (PascalCase, stable: users filter on them).
pub mod reason {
    /// A child object was created.
    pub const CREATED: &str = "Created";
    /// A child object was changed to match the CounterApp again.
    pub const UPDATED: &str = "Updated";
    /// A reconcile failed; the message says why, the operator retries with backoff.
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
    /// A Redis pod's `counterstack.io/role` label moved.
    pub const ROLE_CHANGED: &str = "RoleChanged";
    /// The spec is refused by the builders (Warning; once per new refusal).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A Redis user's password rotation started (annotation `counterstack.io/rotate`).
    pub const PASSWORD_ROTATION_STARTED: &str = "PasswordRotationStarted";
    /// A Redis user's rotation ended: every client uses the new password.
    pub const PASSWORD_ROTATED: &str = "PasswordRotated";
    /// `spec.redis.storage.size` grew: the claims were resized and the StatefulSet is
    /// being replaced (its pods keep running).
    pub const EXPANDING_VOLUMES: &str = "ExpandingVolumes";
    /// Every Redis volume has reached the size the spec asks.
    pub const VOLUMES_EXPANDED: &str = "VolumesExpanded";
    /// `spec.hibernate`: every pod of the stack stopped, the volumes are kept.
    pub const HIBERNATED: &str = "Hibernated";
    /// `spec.hibernate` back to false: the stack starts from its volumes.
    pub const WAKING: &str = "Waking";
    /// A backup was stored and verified (`spec.backup`).
    pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
    /// A backup failed (Warning); the message names the cause, it is retried with backoff.
    pub const BACKUP_FAILED: &str = "BackupFailed";
    /// The first primary was started from a backup (`spec.bootstrap.fromBackup`).
    pub const RESTORED: &str = "Restored";
    /// The restore refused the backup or could not fetch it (Warning); no pod serves.
    pub const RESTORE_FAILED: &str = "RestoreFailed";
}

/// Longest note the Events API accepts (1 kB).
const MAX_NOTE: usize = 1000;

/// Name of the controller in every Event's `reportingController`.
pub const REPORTER: &str = "counterstack-operator";

/// Publishes Events about CounterApps.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    reporter: Reporter,
}

impl Events {
    /// `instance` identifies this operator pod (`POD_NAME`); `None` falls back to the
    /// controller name.
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        Self { client, reporter: Reporter { controller: REPORTER.into(), instance } }
    }

    pub async fn normal(&self, app: &CounterApp, reason: &str, action: &str, note: String) {
        self.publish(app, EventType::Normal, reason, action, note, None).await;
    }

    pub async fn warning(&self, app: &CounterApp, reason: &str, action: &str, note: String) {
        self.publish(app, EventType::Warning, reason, action, note, None).await;
    }

    /// An Event about `app` that concerns a child (`related`), e.g. Created Deployment.
    pub async fn about_child(
        &self,
        app: &CounterApp,
        reason: &str,
        action: &str,
        note: String,
        related: ObjectReference,
    ) {
        self.publish(app, EventType::Normal, reason, action, note, Some(related)).await;
    }

    async fn publish(
        &self,
        app: &CounterApp,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(note, MAX_NOTE)),
            action: action.to_string(),
            secondary: related,
        };
        // A fresh Recorder per Event: a shared one folds Events with the same reason into
        // a series that keeps the first note, which would show a stale message (e.g.
        // the first of two different failures). Events here are rare enough.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        match recorder.publish(&ev, &app.object_ref(&())).await {
            Ok(()) => {}
            // Not the leader (any more): the fence said so already.
            Err(e) if super::fence::is_refusal(&e) => {
                tracing::debug!(error = %e, reason, "Event not published")
            }
            // Usually RBAC: the operator needs `create` and `patch` on events.k8s.io events.
            Err(e) => {
                tracing::warn!(error = %e, reason, "cannot publish Event (check RBAC: create/patch events.k8s.io events)")
            }
        }
    }
}

/// Cut `s` to at most `max` bytes on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("abc".into(), 10), "abc");
        assert_eq!(truncate("abcdef".into(), 3), "abc");
        // 'é' is two bytes: cutting at 2 would split it.
        assert_eq!(truncate("aé".into(), 2), "a");
    }
}
