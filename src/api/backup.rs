//! `spec.backup`, `spec.bootstrap` and `status.backup`/`status.bootstrap`: snapshots of
//! Redis in an S3-compatible object store or on a PersistentVolumeClaim, and a new stack
//! started from one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// Annotation on a CounterApp requesting one backup now: any non-empty token
/// (`kubectl counterstack backup NAME` writes an RFC 3339 timestamp). The operator acts
/// on each token once and answers in `status.backup.request`; it never removes the
/// annotation (GitOps-safe).
pub const BACKUP_ANNOTATION: &str = "counterstack.io/backup";
/// Default `spec.backup.retention.keepLast`.
pub const DEFAULT_KEEP_LAST: i32 = 7;
/// Most backups `status.backup.backups` lists (the store may hold more when
/// `retention.maxAge` keeps them).
pub const MAX_LISTED_BACKUPS: usize = 30;

/// Scheduled and on-demand backups of the Redis data to an S3-compatible object store
/// (`s3`) or a PersistentVolumeClaim (`volume`): exactly one of them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.volume)").message("set exactly one destination: s3 (an object store) or volume (a PersistentVolumeClaim)"))]
pub struct BackupSpec {
    /// When to take backups: a cron expression of five fields (minute hour day-of-month
    /// month day-of-week), in UTC, for example `0 3 * * *` (daily at 03:00) or
    /// `*/30 * * * *`. Absent: only on demand (the `counterstack.io/backup` annotation,
    /// `kubectl counterstack backup NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 100))]
    #[x_kube(validation = Rule::new("self.matches('^\\\\S+( +\\\\S+){4}$')").message("must be a cron expression of five fields separated by spaces (minute hour day-of-month month day-of-week), for example '0 3 * * *'"))]
    pub schedule: Option<String>,

    /// Stop taking scheduled backups (on-demand requests are still served).
    #[serde(default)]
    pub suspend: bool,

    /// Which backups of this CounterApp to keep; older ones are deleted after each
    /// successful backup. The newest successful backup is never deleted.
    #[serde(default)]
    pub retention: RetentionSpec,

    /// An S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,

    /// A PersistentVolumeClaim (for clusters without object storage). Each backup runs
    /// as a Job that mounts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,
}

/// A PersistentVolumeClaim in the CounterApp's namespace that backups are written to as
/// files `PREFIX/NAMESPACE/NAME/YYYYMMDDTHHMMSSZ.rdb`. The operator never creates,
/// resizes or deletes it. For a restore, every Redis pod of the new stack mounts it
/// read-only: use ReadWriteMany or ReadOnlyMany access, or run on one node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDestination {
    /// Name of the PersistentVolumeClaim.
    #[schemars(length(min = 1, max = bounds::MAX_DNS_SUBDOMAIN_LEN))]
    pub claim_name: String,

    /// Directory inside the volume (default `counterstack`); the namespace and the
    /// CounterApp's name follow it. Its parts may not start with a dot.
    #[serde(default = "default_prefix")]
    #[schemars(
        length(max = 256),
        regex(pattern = r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*)?$")
    )]
    pub prefix: String,
}

/// Where backups go (or come from), whichever the spec names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Destination<'a> {
    S3(&'a S3Destination),
    Volume(&'a VolumeDestination),
}

impl<'a> Destination<'a> {
    /// The prefix the namespace and name follow.
    pub fn prefix(self) -> &'a str {
        match self {
            Destination::S3(s3) => &s3.prefix,
            Destination::Volume(v) => &v.prefix,
        }
    }

    /// `s3://BUCKET` or `pvc/CLAIM`, for messages.
    pub fn describe(self) -> String {
        match self {
            Destination::S3(s3) => format!("s3://{}", s3.bucket),
            Destination::Volume(v) => format!("pvc/{}", v.claim_name),
        }
    }
}

/// The destination of a spec with `s3` xor `volume` (the CRD's rule); `s3` wins should
/// both be set, `None` when neither is (an object the API server did not validate).
fn destination<'a>(
    s3: Option<&'a S3Destination>,
    volume: Option<&'a VolumeDestination>,
) -> Option<Destination<'a>> {
    s3.map(Destination::S3).or(volume.map(Destination::Volume))
}

impl BackupSpec {
    pub fn destination(&self) -> Option<Destination<'_>> {
        destination(self.s3.as_ref(), self.volume.as_ref())
    }
}

impl FromBackup {
    pub fn destination(&self) -> Option<Destination<'_>> {
        destination(self.s3.as_ref(), self.volume.as_ref())
    }
}

/// Which backups to keep.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Keep the newest N backups (1 to 1000).
    #[serde(default = "default_keep_last")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_last: i32,

    /// Also keep every backup younger than this, e.g. `72h` or `30d` (hours or days).
    /// A backup is deleted only when it is neither among the newest `keepLast` nor
    /// younger than `maxAge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10), regex(pattern = r"^[1-9][0-9]{0,5}(h|d)$"))]
    pub max_age: Option<String>,
}

fn default_keep_last() -> i32 {
    DEFAULT_KEEP_LAST
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self { keep_last: DEFAULT_KEEP_LAST, max_age: None }
    }
}

impl RetentionSpec {
    /// `maxAge` in seconds (None when absent or malformed; the schema refuses the latter).
    pub fn max_age_seconds(&self) -> Option<i64> {
        let s = self.max_age.as_deref()?;
        let (n, unit) = s.split_at(s.len().checked_sub(1)?);
        let n: i64 = n.parse().ok()?;
        match unit {
            "h" => Some(n * 3600),
            "d" => Some(n * 86_400),
            _ => None,
        }
    }
}

/// An S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage, ...). Objects are
/// named `PREFIX/NAMESPACE/NAME/YYYYMMDDTHHMMSSZ.rdb` (UTC start time; they sort by time).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Endpoint URL, e.g. `https://minio.storage.svc:9000` or `http://10.0.0.5:9000`.
    /// Absent: AWS S3 in `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+/?$')").message("must be an http:// or https:// URL of the endpoint alone (host and optional port), for example https://minio.storage.svc:9000"))]
    pub endpoint: Option<String>,

    /// Bucket name (it must exist; the operator never creates or deletes buckets).
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,

    /// Key prefix inside the bucket (default `counterstack`); the namespace and the
    /// CounterApp's name follow it.
    #[serde(default = "default_prefix")]
    #[schemars(length(max = 256), regex(pattern = r"^([A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*)?$"))]
    pub prefix: String,

    /// Region (default `us-east-1`; most S3-compatible servers accept any).
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,

    /// Address buckets by path (`ENDPOINT/BUCKET/KEY`, default, what most S3-compatible
    /// servers need) instead of by host name (`BUCKET.ENDPOINT/KEY`, AWS' preference).
    #[serde(default = "super::defaults::yes")]
    pub force_path_style: bool,

    /// Secret (in the CounterApp's namespace) holding the access key.
    pub credentials: S3Credentials,

    /// CA certificate(s) (PEM) that sign an `https://` endpoint's certificate, when not
    /// a public CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<SecretKeyRef>,
}

fn default_prefix() -> String {
    "counterstack".to_string()
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// Keys of an access key in a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = bounds::MAX_DNS_SUBDOMAIN_LEN))]
    pub secret_name: String,

    /// Key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1, max = 253))]
    pub access_key_id_key: String,

    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".to_string()
}

fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_string()
}

/// One key of a Secret in the CounterApp's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = bounds::MAX_DNS_SUBDOMAIN_LEN))]
    pub secret_name: String,

    /// The key (default `ca.crt`).
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_string()
}

/// How a new CounterApp's Redis starts. Set at creation only; it cannot be added,
/// changed or removed later (restoring over a running stack is not offered).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Start the first primary from a backup (in an object store or on a
    /// PersistentVolumeClaim); the replicas then copy it from the primary and the web
    /// counts on from the restored value.
    pub from_backup: FromBackup,
}

/// The backup a new stack starts from: in an object store (`s3`) or on a
/// PersistentVolumeClaim (`volume`), exactly one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.volume)").message("set exactly one source: s3 (an object store) or volume (a PersistentVolumeClaim)"))]
pub struct FromBackup {
    /// The object store (the same fields as `spec.backup.s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,

    /// The PersistentVolumeClaim (the same fields as `spec.backup.volume`); every Redis
    /// pod of the new stack mounts it read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeDestination>,

    /// Name of the CounterApp whose backups to restore (usually a deleted one).
    #[schemars(length(min = 1, max = bounds::MAX_DNS_SUBDOMAIN_LEN))]
    pub counter_app: String,

    /// Its namespace (default: this CounterApp's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,

    /// `latest` (default) or a backup's name as `kubectl counterstack backups` lists it
    /// (`YYYYMMDDTHHMMSSZ`).
    #[serde(default = "default_backup_name")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^(latest|[0-9]{8}T[0-9]{6}Z)$"))]
    pub backup: String,
}

fn default_backup_name() -> String {
    "latest".to_string()
}

/// `status.backup`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The last backup that completed and was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful: Option<BackupRecord>,
    /// The last backup that failed (kept after later successes, for the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed: Option<BackupFailure>,
    /// The scheduled time of the last scheduled backup started (a slot is taken once,
    /// also across operator restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the next scheduled backup is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The last on-demand request (`counterstack.io/backup` token) answered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    /// Backups of this CounterApp in the store after the last retention pass, newest
    /// first (at most 30 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupRecord>,
}

/// One backup in the store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// Its name (`YYYYMMDDTHHMMSSZ`, the UTC time it started): what
    /// `spec.bootstrap.fromBackup.backup` takes.
    pub name: String,
    /// The object's key in the bucket.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Size in bytes.
    #[serde(default)]
    pub size_bytes: i64,
    /// How long it took, in seconds (snapshot + upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The Redis pod it was streamed from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_pod: String,
    /// The replication offset it stands for (every write the source had applied up
    /// to this offset of the primary's stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}

/// A failed backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupFailure {
    /// When it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// The cause, in one CamelCase word: AccessDenied, BucketNotFound,
    /// EndpointUnreachable, CredentialsNotFound, NoSource, SnapshotFailed, StoreError;
    /// for a volume also VolumeFull, VolumeNotWritable, ClaimNotFound, JobFailed.
    pub reason: String,
    /// What went wrong.
    pub message: String,
    /// Failures in a row (retried with backoff).
    #[serde(default)]
    pub attempts: i32,
}

/// `status.bootstrap`: what the first primary was started from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapStatus {
    /// `Restoring`, `Restored` or `Failed`.
    pub phase: String,
    /// The object restored (its key), once known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backup: String,
    /// What happened, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_reads_hours_and_days() {
        let r = |s: &str| RetentionSpec { keep_last: 1, max_age: Some(s.into()) }.max_age_seconds();
        assert_eq!(r("72h"), Some(72 * 3600));
        assert_eq!(r("30d"), Some(30 * 86_400));
        assert_eq!(r("5m"), None);
        assert_eq!(r(""), None);
    }
}
