//! The `restore` init container of the Redis pods of a CounterApp with
//! `spec.bootstrap.fromBackup`: in pod 0 on a fresh volume it downloads (or, from a
//! PersistentVolumeClaim every Redis pod mounts read-only, copies) the backup,
//! verifies it and writes it as the AOF base Redis loads at start
//! (`counterstack restore`, src/backup/restore.rs); in every other case it exits at
//! once. It runs the web image (the counterstack binary) as the Redis user, so the files
//! it writes belong to Redis.

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaimVolumeSource,
    SecretVolumeSource, Volume, VolumeMount,
};

use super::{Inputs, configmap, meta};
use crate::api::{CounterApp, Destination, FromBackup, S3Destination, VolumeDestination};
use crate::backup::keys;

/// Name of the init container (the operator reads its termination message).
pub const CONTAINER: &str = "restore";
/// Volume and mount of `caBundle`'s Secret.
const CA_VOLUME: &str = "restore-ca";
const CA_PATH: &str = "/etc/restore-ca";
/// Volume and mount of `volume`'s claim (read-only).
const SOURCE_VOLUME: &str = "restore-source";
const SOURCE_PATH: &str = "/restore-source";

/// Environment variables `counterstack restore` reads (also its clap `env` names).
pub mod env {
    pub const ENDPOINT: &str = "RESTORE_S3_ENDPOINT";
    pub const BUCKET: &str = "RESTORE_S3_BUCKET";
    pub const REGION: &str = "RESTORE_S3_REGION";
    pub const PATH_STYLE: &str = "RESTORE_S3_FORCE_PATH_STYLE";
    pub const ACCESS_KEY_ID: &str = "RESTORE_S3_ACCESS_KEY_ID";
    pub const SECRET_ACCESS_KEY: &str = "RESTORE_S3_SECRET_ACCESS_KEY";
    pub const CA_FILE: &str = "RESTORE_S3_CA_FILE";
    pub const FOLDER: &str = "RESTORE_FOLDER";
    pub const BACKUP: &str = "RESTORE_BACKUP";
    pub const DATA_DIR: &str = "RESTORE_DATA_DIR";
    /// Where the backup volume is mounted (instead of the S3 settings).
    pub const SOURCE_DIR: &str = "RESTORE_SOURCE_DIR";
    pub const POD_NAME: &str = "POD_NAME";
}

/// The folder (`PREFIX/NAMESPACE/NAME`) the backups of the source CounterApp live in.
pub fn source_folder(cr: &CounterApp, from: &FromBackup) -> String {
    let ns =
        from.namespace.clone().or_else(|| cr.metadata.namespace.clone()).unwrap_or_else(|| "default".into());
    let prefix = from.destination().map_or("counterstack", |d| d.prefix());
    keys::folder(prefix, &ns, &from.counter_app)
}

/// The init container and the volumes it needs beside the pod's (the CA bundle, or the
/// backup claim), when the CounterApp restores from a backup.
pub fn init_container(cr: &CounterApp, inputs: &Inputs, uid: i64) -> Option<(Container, Vec<Volume>)> {
    let from = &cr.spec.bootstrap.as_ref()?.from_backup;
    let mut env = vec![
        EnvVar {
            name: env::POD_NAME.to_string(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_string(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        meta::env_var(env::FOLDER, source_folder(cr, from)),
        meta::env_var(env::BACKUP, from.backup.clone()),
        meta::env_var(env::DATA_DIR, configmap::DATA_PATH),
    ];
    let (tmp_volume, tmp_mount) = meta::tmp_volume();
    let _ = tmp_volume; // the pod already has it
    let mut mounts = vec![
        VolumeMount {
            name: super::statefulset::DATA_VOLUME.to_string(),
            mount_path: configmap::DATA_PATH.to_string(),
            ..VolumeMount::default()
        },
        tmp_mount,
    ];
    let volumes = match from.destination()? {
        Destination::S3(s3) => s3_source(s3, &mut env, &mut mounts),
        Destination::Volume(v) => volume_source(v, &mut env, &mut mounts),
    };
    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(cr.spec.web_image(&inputs.default_web_image).to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(vec!["restore".to_string()]),
        env: Some(env),
        security_context: Some(meta::container_security_context(uid)),
        volume_mounts: Some(mounts),
        // The message the operator reports (status.bootstrap, Events): what was
        // restored, or why not.
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Container::default()
    };
    Some((container, volumes))
}

/// The object store's settings and credentials; the CA bundle's volume.
fn s3_source(s3: &S3Destination, env: &mut Vec<EnvVar>, mounts: &mut Vec<VolumeMount>) -> Vec<Volume> {
    env.extend([
        meta::env_var(env::BUCKET, s3.bucket.clone()),
        meta::env_var(env::REGION, s3.region.clone()),
        meta::env_var(env::PATH_STYLE, s3.force_path_style.to_string()),
        meta::env_from_secret(
            env::ACCESS_KEY_ID,
            &s3.credentials.secret_name,
            &s3.credentials.access_key_id_key,
        ),
        meta::env_from_secret(
            env::SECRET_ACCESS_KEY,
            &s3.credentials.secret_name,
            &s3.credentials.secret_access_key_key,
        ),
    ]);
    if let Some(endpoint) = &s3.endpoint {
        env.push(meta::env_var(env::ENDPOINT, endpoint.clone()));
    }
    let Some(ca) = &s3.ca_bundle else { return Vec::new() };
    env.push(meta::env_var(env::CA_FILE, format!("{CA_PATH}/ca.crt")));
    mounts.push(VolumeMount {
        name: CA_VOLUME.to_string(),
        mount_path: CA_PATH.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    vec![Volume {
        name: CA_VOLUME.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(ca.secret_name.clone()),
            items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                key: ca.key.clone(),
                path: "ca.crt".to_string(),
                mode: None,
            }]),
            default_mode: Some(0o444),
            optional: Some(false),
        }),
        ..Volume::default()
    }]
}

/// The backup claim, read-only. Every pod of the StatefulSet mounts it (one template):
/// the claim must be attachable wherever the Redis pods run (docs/backup.md).
fn volume_source(v: &VolumeDestination, env: &mut Vec<EnvVar>, mounts: &mut Vec<VolumeMount>) -> Vec<Volume> {
    env.push(meta::env_var(env::SOURCE_DIR, SOURCE_PATH));
    mounts.push(VolumeMount {
        name: SOURCE_VOLUME.to_string(),
        mount_path: SOURCE_PATH.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    vec![Volume {
        name: SOURCE_VOLUME.to_string(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: v.claim_name.clone(),
            read_only: Some(true),
        }),
        ..Volume::default()
    }]
}
