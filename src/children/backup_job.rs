//! The Job of one backup to a PersistentVolumeClaim (`spec.backup.volume`): the
//! operator cannot mount a user's claim, so a short-lived pod does (`counterstack
//! backup-job`, src/backup/job.rs). It runs the web image as the Redis user with the
//! Pod Security "restricted" profile, talks to the chosen Redis node as the
//! `replication` ACL user, and carries the `backup` component label, which the stack's
//! NetworkPolicy admits to the Redis port.
//!
//! Not a child the reconcile applies: the backup step creates one per backup, reads its
//! report and deletes it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta;
use super::statefulset::{REDIS_UID, tls_volume};
use crate::acl::RedisUser;
use crate::api::{CounterApp, RetentionSpec, VolumeDestination};
use crate::backup::keys;
use crate::labels::{self, Component};
use crate::names;

/// The container (the operator reads its termination message).
pub const CONTAINER: &str = "backup";
/// Where the claim is mounted.
pub const MOUNT_PATH: &str = "/backup";
const VOLUME: &str = "backup";
const TLS_MOUNT_PATH: &str = "/etc/backup-tls";
/// Bound on one backup Job (a multi-GiB snapshot onto a slow disk included).
pub const DEADLINE_SECONDS: i64 = 6 * 3600;
/// A finished Job the operator did not delete (it was down) goes after a day.
const TTL_AFTER_FINISHED_SECONDS: i32 = 86_400;

/// Environment variables `counterstack backup-job` reads (also its clap `env` names).
pub mod env {
    pub const SOURCE_HOST: &str = "BACKUP_SOURCE_HOST";
    pub const SOURCE_PORT: &str = "BACKUP_SOURCE_PORT";
    pub const SOURCE_POD: &str = "BACKUP_SOURCE_POD";
    pub const USER: &str = "BACKUP_USER";
    pub const PASSWORD: &str = "BACKUP_PASSWORD";
    pub const TLS_CA_FILE: &str = "BACKUP_TLS_CA_FILE";
    pub const TLS_SERVER_NAME: &str = "BACKUP_TLS_SERVER_NAME";
    pub const DIR: &str = "BACKUP_DIR";
    pub const FOLDER: &str = "BACKUP_FOLDER";
    pub const STARTED: &str = "BACKUP_STARTED";
    pub const KEEP_LAST: &str = "BACKUP_KEEP_LAST";
    pub const MAX_AGE: &str = "BACKUP_MAX_AGE";
}

/// The Redis node a backup streams from.
#[derive(Clone, Debug)]
pub struct JobSource<'a> {
    pub pod: &'a str,
    pub ordinal: u32,
    pub host: &'a str,
    pub port: u16,
}

/// `NAME-backup-20261203t110000z`: one Job per backup, named by its start.
pub fn name(app: &str, started: Timestamp) -> String {
    format!("{}-backup-{}", app, keys::name_at(started).to_ascii_lowercase())
}

/// The backup Job of `cr` onto `volume`, from `source`, named by `started`.
pub fn job(
    cr: &CounterApp,
    default_web_image: &str,
    volume: &VolumeDestination,
    retention: &RetentionSpec,
    source: &JobSource<'_>,
    started: Timestamp,
) -> Job {
    let app = meta::app_name(cr);
    let ns = cr.metadata.namespace.as_deref().unwrap_or("default");
    let tls = cr.spec.redis.tls.is_some();
    let mut env = vec![
        meta::env_var(env::SOURCE_HOST, source.host),
        meta::env_var(env::SOURCE_PORT, source.port.to_string()),
        meta::env_var(env::SOURCE_POD, source.pod),
        meta::env_var(env::USER, RedisUser::Replication.name()),
        meta::env_from_secret(
            env::PASSWORD,
            &names::redis_user_secret(app, RedisUser::Replication.name()),
            names::PASSWORD_KEY,
        ),
        meta::env_var(env::DIR, MOUNT_PATH),
        meta::env_var(env::FOLDER, keys::folder(&volume.prefix, ns, app)),
        meta::env_var(env::STARTED, started.to_string()),
        meta::env_var(env::KEEP_LAST, retention.keep_last.to_string()),
    ];
    if let Some(max_age) = &retention.max_age {
        env.push(meta::env_var(env::MAX_AGE, max_age.clone()));
    }
    let mut mounts = vec![VolumeMount {
        name: VOLUME.to_string(),
        mount_path: MOUNT_PATH.to_string(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: VOLUME.to_string(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: volume.claim_name.clone(),
            read_only: None,
        }),
        ..Volume::default()
    }];
    if tls && let Some(v) = tls_volume(cr, Some("ca.crt")) {
        env.push(meta::env_var(env::TLS_CA_FILE, format!("{TLS_MOUNT_PATH}/ca.crt")));
        env.push(meta::env_var(env::TLS_SERVER_NAME, names::redis_pod_host(app, source.ordinal)));
        mounts.push(VolumeMount {
            name: v.name.clone(),
            mount_path: TLS_MOUNT_PATH.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(v);
    }
    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(cr.spec.web_image(default_web_image).to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(vec!["backup-job".to_string()]),
        env: Some(env),
        // The snapshot streams through in chunks: memory stays small whatever its size.
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("50m".to_string())),
                ("memory".to_string(), Quantity("32Mi".to_string())),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), Quantity("256Mi".to_string()))])),
            claims: None,
        }),
        security_context: Some(meta::container_security_context(REDIS_UID)),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Container::default()
    };
    let mut pod_labels = labels::labels(app, Component::Backup);
    pod_labels.extend(labels::selector(app, Component::Backup));
    Job {
        metadata: meta::object_meta(cr, name(app, started), Component::Backup),
        spec: Some(JobSpec {
            // The operator retries with its own backoff and records every attempt.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(DEADLINE_SECONDS),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_string()),
                    containers: vec![container],
                    image_pull_secrets: meta::image_pull_secrets(cr),
                    // fsGroup: a fresh claim's root belongs to root; the group may write.
                    security_context: Some(meta::pod_security_context(REDIS_UID, Some(REDIS_UID))),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    // Where the Redis pods may run, the Job may too.
                    node_selector: Some(cr.spec.redis.pod.node_selector.clone()).filter(|s| !s.is_empty()),
                    tolerations: Some(cr.spec.redis.pod.tolerations.clone()).filter(|t| !t.is_empty()),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}
