//! One backup, wherever it runs (the operator for an object store, a Job for a volume):
//! snapshot a Redis node, store it under the name of its start time (verified while it
//! streams: a corrupt stream stores nothing), then apply retention.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use super::destination::Destination;
use super::keys;
use super::rdb::{RdbError, Snapshot, SnapshotSource};
use super::schedule::{self, Stored};
use super::store::StoreError;
use crate::api::{BackupRecord, RetentionSpec};
use crate::replication::node::NodeAddr;

/// Bound on every read from the source node (it sends keep-alives while it prepares).
pub const SNAPSHOT_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A backup stored and verified, and what the destination holds after retention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Done {
    pub record: BackupRecord,
    /// Newest first.
    pub stored: Vec<BackupRecord>,
    /// Retention could not list or delete (the backup itself is fine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_error: Option<String>,
}

/// Why a backup failed: a CamelCase cause and a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub reason: String,
    pub message: String,
}

impl Failed {
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self { reason: reason.to_string(), message: message.into() }
    }
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed::new(e.reason(), e.to_string())
    }
}

/// The source node's address (a pod IP, or a DNS name from a Job).
pub async fn resolve(addr: &NodeAddr) -> Result<SocketAddr, Failed> {
    let fail = |detail: String| Failed::new("SnapshotFailed", format!("cannot resolve {addr}: {detail}"));
    tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))
}

/// Where a backup goes and what retention keeps.
pub struct Target<'a> {
    pub store: &'a Destination,
    /// `PREFIX/NAMESPACE/NAME` (`backup::keys::folder`).
    pub folder: &'a str,
    pub retention: &'a RetentionSpec,
}

/// One backup: snapshot `src` (named `source_pod` in the record), store it under the
/// name of `started`, then apply retention.
pub async fn take(
    src: &SnapshotSource<'_>,
    source_pod: &str,
    target: &Target<'_>,
    started: Timestamp,
) -> Result<Done, Failed> {
    let clock = Instant::now();
    let snapshot = Snapshot::open(src).await.map_err(|e| Failed::new("SnapshotFailed", e.to_string()))?;
    let offset = i64::try_from(snapshot.offset()).ok();
    let name = keys::name_at(started);
    let key = keys::key(target.folder, &name);
    let size = target.store.upload(&key, chunks(snapshot)).await?;
    let record = BackupRecord {
        name,
        key: key.clone(),
        start_time: Some(Time(started)),
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        duration_seconds: Some((clock.elapsed().as_secs_f64() * 10.0).round() / 10.0),
        source_pod: source_pod.to_string(),
        offset,
    };
    let (stored, retention_error) = match retention(target, &key).await {
        Ok(stored) => (stored, None),
        Err(e) => (vec![record.clone()], Some(e.to_string())),
    };
    Ok(Done { record, stored, retention_error })
}

/// The snapshot's chunks as a stream (ends after verification passed).
fn chunks(snapshot: Snapshot) -> impl Stream<Item = Result<Bytes, RdbError>> {
    futures::stream::unfold(Some(snapshot), |state| async move {
        let mut s = state?;
        match s.next_chunk().await {
            Ok(Some(b)) => Some((Ok(b), Some(s))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Delete what retention says, then list what is left (newest first).
async fn retention(job: &Target<'_>, keep: &str) -> Result<Vec<BackupRecord>, StoreError> {
    let listed = job.store.list(&format!("{}/", job.folder)).await?;
    let parsed: Vec<(String, Timestamp, u64, String)> = listed
        .iter()
        .filter_map(|o| keys::parse(job.folder, &o.key).map(|(n, at)| (o.key.clone(), at, o.size, n)))
        .collect();
    let stored: Vec<Stored> = parsed.iter().map(|(k, at, ..)| Stored { key: k.clone(), at: *at }).collect();
    let delete = schedule::to_delete(&stored, job.retention, keep, Timestamp::now());
    for k in &delete {
        job.store.delete(k).await?;
    }
    let mut left: Vec<BackupRecord> = parsed
        .into_iter()
        .filter(|(k, ..)| !delete.contains(k))
        .map(|(key, at, size, name)| BackupRecord {
            name,
            key,
            start_time: Some(Time(at)),
            size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
            ..BackupRecord::default()
        })
        .collect();
    left.sort_by(|a, b| b.name.cmp(&a.name));
    Ok(left)
}
