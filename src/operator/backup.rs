//! `spec.backup` in the reconcile: decide (src/backup/schedule.rs) whether a backup
//! starts, run it in the background (snapshot from an in-sync replica over the
//! replication protocol, verified while it streams into the object store, then
//! retention; for `spec.backup.volume` the same in a Job, src/operator/backup_job.rs),
//! and fold what finished into `status.backup`, Events and metrics.
//!
//! Backups run outside the reconcile (they can take minutes); at most one per
//! CounterApp. Everything about them lives in `status.backup`, written by the reconcile
//! only, so an operator that restarts or a standby that takes over continues from there
//! (an S3 backup that was running is started again; a running backup Job is adopted).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt};
use tracing::Instrument;

use super::Context;
use super::backup_job::VolumeWork;
use super::events::reason;
use crate::acl::RedisUser;
use crate::api::{
    BACKUP_ANNOTATION, BackupFailure, BackupSpec, BackupStatus, CounterApp, Destination as DestinationSpec,
    MAX_LISTED_BACKUPS, RedisStatus, S3Destination,
};
use crate::backup::destination::Destination;
use crate::backup::keys;
use crate::backup::rdb::{SnapshotSource, TlsTarget};
use crate::backup::schedule::{self, Schedule, Trigger};
use crate::backup::store::{S3Target, Store};
pub use crate::backup::take::{Done, Failed, Target, take};
use crate::backup::take::{SNAPSHOT_IO_TIMEOUT, resolve};
use crate::children::Passwords;
use crate::dial::TlsCa;
use crate::replication::AppKey;
use crate::replication::PodView;
use crate::replication::node::{Addressing, NodeAddr};

/// A replica further behind than this is not a backup source.
const MAX_SOURCE_LAG_BYTES: i64 = 1024 * 1024;

/// The backups running and finished but not yet in a status, per CounterApp.
#[derive(Default)]
pub struct Backups {
    running: Mutex<HashMap<AppKey, Trigger>>,
    finished: Mutex<HashMap<AppKey, Finished>>,
}

/// A backup that ended.
#[derive(Clone, Debug)]
pub struct Finished {
    pub trigger: Trigger,
    pub at: Timestamp,
    pub result: Result<Done, Failed>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Backups {
    pub fn forget(&self, key: &AppKey) {
        lock(&self.finished).remove(key);
    }
    fn is_running(&self, key: &AppKey) -> bool {
        lock(&self.running).contains_key(key)
    }
}

/// What the backup step gives the reconcile.
#[derive(Default)]
pub struct Step {
    /// New `status.backup` (None: keep the current one).
    pub status: Option<BackupStatus>,
    /// When the reconcile should look again (the next slot or retry).
    pub requeue: Option<Duration>,
}

/// What a backup reads of the stack: the replication manager's view and the secrets.
pub struct Stack<'a> {
    pub redis: &'a RedisStatus,
    pub pods: &'a [PodView],
    pub addressing: &'a dyn Addressing,
    pub passwords: &'a Passwords,
    pub tls: Option<&'a TlsCa>,
}

/// Fold finished backups into the status, and start one when due.
pub async fn step(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    spec: &BackupSpec,
    stack: &Stack<'_>,
) -> Step {
    let key = AppKey::new(ns, name);
    let current = app.status.as_ref().and_then(|s| s.backup.as_deref().cloned());
    let mut status = current.clone().unwrap_or_default();
    let finished = lock(&ctx.backups.finished).remove(&key);
    if let Some(f) = finished {
        fold(&mut status, &f);
        announce(app, ctx, &f).await;
    }
    let schedule = match spec.schedule.as_deref().map(Schedule::parse).transpose() {
        Ok(s) => s,
        Err(message) => {
            // The CRD's pattern lets some invalid expressions through (`0 25 * * *`).
            let failed = Failed::new("InvalidSchedule", message);
            record_failure(&mut status, &failed, Timestamp::now(), None);
            return Step { status: Some(status), requeue: None };
        }
    };
    let now = Timestamp::now();
    let anchor = app.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let token = app.annotations().get(BACKUP_ANNOTATION).map(String::as_str);
    let d = schedule::decide(spec, schedule.as_ref(), Some(&status), token, anchor, now);
    status.next_schedule_time = d.next_slot.map(Time);
    ctx.metrics.record_backup(ns, name, &status, schedule.as_ref().and_then(|s| s.interval_after(now)));
    let requeue = d
        .wake_at
        .and_then(|at| u64::try_from(at.as_second() - now.as_second()).ok())
        .map(|s| Duration::from_secs(s.max(1)));
    // Nothing to copy before a primary was chosen; a request waits for it.
    if let Some(trigger) = d.start
        && stack.redis.primary.is_some()
        && !ctx.backups.is_running(&key)
    {
        match prepare(app, ctx, ns, name, spec, stack).await {
            Ok(job) => {
                let last = status.last_successful.as_ref().and_then(|r| r.start_time.as_ref()).map(|t| t.0);
                spawn(ctx, key, trigger, job, last)
            }
            Err(failed) => {
                let f = Finished { trigger, at: now, result: Err(failed) };
                fold(&mut status, &f);
                announce(app, ctx, &f).await;
            }
        }
    }
    let changed = current.as_ref() != Some(&status);
    Step { status: changed.then_some(status), requeue }
}

/// Apply a finished backup to the status.
pub fn fold(status: &mut BackupStatus, f: &Finished) {
    match &f.trigger {
        Trigger::Request(token) => status.request = token.clone(),
        Trigger::Scheduled(slot) => status.last_schedule_time = Some(Time(*slot)),
        Trigger::Retry => {}
    }
    match &f.result {
        Ok(done) => {
            status.last_successful = Some(done.record.clone());
            status.backups = done.stored.iter().take(MAX_LISTED_BACKUPS).cloned().collect();
            // The listing knows names and sizes; the run knows the rest of its own.
            if let Some(b) = status.backups.iter_mut().find(|b| b.name == done.record.name) {
                *b = done.record.clone();
            }
            if let Some(failed) = status.last_failed.as_mut() {
                failed.attempts = 0;
            }
        }
        Err(failed) => {
            let previous = schedule::failing(Some(status))
                .then(|| status.last_failed.as_ref().map_or(0, |f| f.attempts));
            record_failure(status, failed, f.at, previous);
        }
    }
}

fn record_failure(status: &mut BackupStatus, failed: &Failed, at: Timestamp, previous_attempts: Option<i32>) {
    let same =
        status.last_failed.as_ref().is_some_and(|f| f.reason == failed.reason && f.message == failed.message);
    if same && previous_attempts.is_none() && schedule::failing(Some(status)) {
        // Already recorded (an invalid schedule seen again): nothing moves.
        return;
    }
    status.last_failed = Some(BackupFailure {
        time: Some(Time(at)),
        reason: failed.reason.clone(),
        message: failed.message.clone(),
        attempts: previous_attempts.unwrap_or(0).saturating_add(1),
    });
}

async fn announce(app: &CounterApp, ctx: &Context, f: &Finished) {
    match &f.result {
        Ok(done) => {
            let r = &done.record;
            let mut note = format!(
                "backup {} stored: {} bytes from {} in {:.1}s",
                r.name,
                r.size_bytes,
                r.source_pod,
                r.duration_seconds.unwrap_or_default()
            );
            if let Some(e) = &done.retention_error {
                note.push_str(&format!("; retention could not run: {e}"));
            }
            ctx.events.normal(app, reason::BACKUP_SUCCEEDED, "Backup", note).await;
        }
        Err(failed) => {
            let note = format!("{}: {}", failed.reason, failed.message);
            ctx.events.warning(app, reason::BACKUP_FAILED, "Backup", note).await;
        }
    }
}

/// Everything a backup needs, read before it starts.
enum Work {
    /// Streamed by the operator into the object store.
    S3(Box<S3Work>),
    /// Taken by a Job that mounts the claim.
    Volume(Box<VolumeWork>),
}

struct S3Work {
    store: Destination,
    folder: String,
    retention: crate::api::RetentionSpec,
    source_pod: String,
    addr: NodeAddr,
    server_name: String,
    password: String,
    tls: Option<TlsCa>,
}

impl Work {
    fn source_pod(&self) -> &str {
        match self {
            Work::S3(w) => &w.source_pod,
            Work::Volume(w) => &w.source_pod,
        }
    }
}

/// Pick the source and read what the destination needs.
async fn prepare(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
    name: &str,
    spec: &BackupSpec,
    stack: &Stack<'_>,
) -> Result<Work, Failed> {
    let pod = source(app, stack.redis, stack.pods).ok_or_else(|| {
        Failed::new(
            "NoSource",
            "no Redis replica is in sync with the primary to take the snapshot from (backups never fork the primary while it has replicas); retrying",
        )
    })?;
    let addr = stack
        .addressing
        .dial(pod)
        .ok_or_else(|| Failed::new("NoSource", format!("{} has no address yet; retrying", pod.name)))?;
    match spec.destination() {
        Some(DestinationSpec::S3(s3)) => {
            let target = s3_target(ctx, ns, s3).await?;
            Ok(Work::S3(Box::new(S3Work {
                store: Destination::S3(Store::new(&target)?),
                folder: keys::folder(&s3.prefix, ns, name),
                retention: spec.retention.clone(),
                source_pod: pod.name.clone(),
                addr,
                server_name: crate::names::redis_pod_host(name, pod.ordinal),
                password: stack.passwords.replication.password.clone(),
                tls: stack.tls.cloned(),
            })))
        }
        Some(DestinationSpec::Volume(volume)) => {
            let endpoint = stack.addressing.replication_endpoint(pod);
            VolumeWork::prepare(ctx, app, volume, &spec.retention, pod, endpoint)
                .await
                .map(|w| Work::Volume(Box::new(w)))
        }
        None => Err(Failed::new("InvalidSpec", "spec.backup names no destination (s3 or volume)")),
    }
}

/// The backup source: the in-sync replica with the highest offset; the primary only
/// when the stack has no replicas (then its fork is the snapshot: a pause of
/// milliseconds per GiB of memory, docs/backup.md).
fn source<'a>(app: &CounterApp, redis: &RedisStatus, pods: &'a [PodView]) -> Option<&'a PodView> {
    let usable = |n: &str| pods.iter().find(|p| p.name == n && p.ip.is_some() && !p.terminating);
    if app.spec.redis.replicas == 0 {
        return redis.primary.as_deref().and_then(usable);
    }
    redis
        .nodes
        .iter()
        .filter(|n| n.role == "replica" && n.link_up && n.lag_bytes <= MAX_SOURCE_LAG_BYTES)
        .filter(|n| pods.iter().any(|p| p.name == n.pod && p.ready))
        .max_by_key(|n| n.offset)
        .and_then(|n| usable(&n.pod))
}

/// The object store's settings with the credentials read from their Secret (live: a
/// user's Secret is not in the operator's caches).
async fn s3_target(ctx: &Context, ns: &str, s3: &S3Destination) -> Result<S3Target, Failed> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let read = |secret: Option<Secret>, secret_name: &str, key: &str| -> Result<Vec<u8>, Failed> {
        let secret = secret.ok_or_else(|| {
            Failed::new("CredentialsNotFound", format!("Secret {ns}/{secret_name} does not exist"))
        })?;
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                Failed::new("CredentialsNotFound", format!("Secret {ns}/{secret_name} has no key {key:?}"))
            })
    };
    let get = |n: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(&n)
                .await
                .map_err(|e| Failed::new("CredentialsNotFound", format!("cannot read Secret {ns}/{n}: {e}")))
        }
    };
    let c = &s3.credentials;
    let creds = get(c.secret_name.clone()).await?;
    let id = read(creds.clone(), &c.secret_name, &c.access_key_id_key)?;
    let key = read(creds, &c.secret_name, &c.secret_access_key_key)?;
    let ca_pem = match &s3.ca_bundle {
        Some(ca) => Some(read(get(ca.secret_name.clone()).await?, &ca.secret_name, &ca.key)?),
        None => None,
    };
    let text = |b: Vec<u8>, what: &str| {
        String::from_utf8(b).map(|s| s.trim().to_string()).map_err(|_| {
            Failed::new(
                "CredentialsNotFound",
                format!("the {what} in Secret {ns}/{} is not text", c.secret_name),
            )
        })
    };
    Ok(S3Target {
        endpoint: s3.endpoint.clone(),
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        force_path_style: s3.force_path_style,
        access_key_id: text(id, "access key id")?,
        secret_access_key: text(key, "secret access key")?,
        ca_pem,
        allow_http: s3.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")),
    })
}

/// Start the backup in the background. `last` is the start of the last successful
/// backup: names are start times to the second, so a new one starts in a later second
/// (it would otherwise replace that backup's object).
fn spawn(ctx: &Context, key: AppKey, trigger: Trigger, job: Work, last: Option<Timestamp>) {
    lock(&ctx.backups.running).insert(key.clone(), trigger.clone());
    let backups = ctx.backups.clone();
    let monitor = ctx.replication.monitor().clone();
    let metrics = ctx.metrics.clone();
    let span = tracing::info_span!("backup", namespace = %key.namespace, name = %key.name, source = %job.source_pod());
    tokio::spawn(
        async move {
            let mut started = Timestamp::now();
            while last.is_some_and(|l| started.as_second() <= l.as_second()) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                started = Timestamp::now();
            }
            let result = run(job, started).await;
            match &result {
                Ok(done) => {
                    tracing::info!(size = done.record.size_bytes, backup = %done.record.name, "backup stored")
                }
                Err(f) => tracing::warn!(reason = %f.reason, message = %f.message, "backup failed"),
            }
            metrics.backup_finished(&key.namespace, &key.name, result.is_ok());
            lock(&backups.running).remove(&key);
            lock(&backups.finished).insert(key.clone(), Finished { trigger, at: Timestamp::now(), result });
            monitor.wake(key);
        }
        .instrument(span),
    );
}

/// Take the backup: here for an object store, in a Job for a volume.
async fn run(work: Work, started: Timestamp) -> Result<Done, Failed> {
    match work {
        Work::S3(job) => run_s3(*job, started).await,
        Work::Volume(job) => job.run(started).await,
    }
}

/// Take the snapshot, stream it into the store (verified on the way: a corrupt stream
/// aborts the upload), then apply retention.
async fn run_s3(job: S3Work, started: Timestamp) -> Result<Done, Failed> {
    let addr = resolve(&job.addr).await?;
    let src = SnapshotSource {
        addr,
        username: Some(RedisUser::Replication.name()),
        password: Some(&job.password),
        tls: job.tls.as_ref().map(|ca| TlsTarget { ca_pem: ca.pem(), server_name: &job.server_name }),
        io_timeout: SNAPSHOT_IO_TIMEOUT,
    };
    let target = Target { store: &job.store, folder: &job.folder, retention: &job.retention };
    take(&src, &job.source_pod, &target, started).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupRecord;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn record(name: &str, start: &str, size: i64) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            key: format!("p/ns/demo/{name}.rdb"),
            start_time: Some(Time(at(start))),
            size_bytes: size,
            ..BackupRecord::default()
        }
    }

    #[test]
    fn a_success_answers_its_request_lists_the_store_and_ends_the_failures() {
        let mut status = BackupStatus {
            last_failed: Some(BackupFailure {
                time: Some(Time(at("2026-12-03T10:00:00Z"))),
                reason: "AccessDenied".into(),
                message: "m".into(),
                attempts: 3,
            }),
            ..BackupStatus::default()
        };
        let mut own = record("20261203T110000Z", "2026-12-03T11:00:00Z", 200);
        own.source_pod = "demo-redis-1".into();
        own.duration_seconds = Some(1.5);
        let stored = vec![
            record("20261203T110000Z", "2026-12-03T11:00:00Z", 200),
            record("20261203T100000Z", "2026-12-03T10:00:00Z", 100),
        ];
        let f = Finished {
            trigger: Trigger::Request("t1".into()),
            at: at("2026-12-03T11:00:02Z"),
            result: Ok(Done { record: own.clone(), stored, retention_error: None }),
        };
        fold(&mut status, &f);
        assert_eq!(status.request, "t1");
        assert_eq!(status.last_successful.as_ref(), Some(&own));
        assert_eq!(status.backups[0], own, "the listing's entry of this backup carries its details");
        assert_eq!(status.backups.len(), 2);
        assert!(!schedule::failing(Some(&status)));
        assert_eq!(status.last_failed.as_ref().map(|f| f.attempts), Some(0));
    }

    #[test]
    fn failures_in_a_row_count_up_and_a_scheduled_slot_is_taken_either_way() {
        let mut status = BackupStatus::default();
        let fail = |t: &str, trigger: Trigger| Finished {
            trigger,
            at: at(t),
            result: Err(Failed::new("BucketNotFound", "bucket \"b\" does not exist")),
        };
        fold(&mut status, &fail("2026-12-03T03:00:01Z", Trigger::Scheduled(at("2026-12-03T03:00:00Z"))));
        assert_eq!(status.last_schedule_time, Some(Time(at("2026-12-03T03:00:00Z"))));
        assert_eq!(status.last_failed.as_ref().map(|f| f.attempts), Some(1));
        fold(&mut status, &fail("2026-12-03T03:00:31Z", Trigger::Retry));
        fold(&mut status, &fail("2026-12-03T03:01:31Z", Trigger::Retry));
        let f = status.last_failed.as_ref().unwrap();
        assert_eq!((f.attempts, f.reason.as_str()), (3, "BucketNotFound"));
        assert_eq!(f.time, Some(Time(at("2026-12-03T03:01:31Z"))));
        assert!(status.last_successful.is_none() && status.backups.is_empty(), "a failure lists nothing");
    }
}
