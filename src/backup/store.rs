//! The object store backups live in: any S3-compatible service (AWS S3, MinIO, Ceph RGW,
//! ...) through Apache Arrow's `object_store` crate.
//!
//! - [`Store::upload`] streams a snapshot of unknown size as a multipart upload with
//!   [`PART_SIZE`] parts, holding at most two parts in memory (one on the wire, one
//!   filling). Whatever fails (the store, or an error item from the snapshot stream), the
//!   multipart upload is aborted: S3 only makes an object visible when the upload is
//!   completed, so no partial object ever appears under the key. A snapshot smaller than
//!   one part goes up in one PUT (atomic too).
//! - [`Store::download_to`] streams an object into a file in bounded ranged GETs (each one
//!   request with its own timeout, pinned to the object's ETag), through a temporary
//!   sibling file renamed into place: the target path never holds half an object.
//! - Every error is a [`StoreError`] whose [`StoreError::reason`] names the cause for
//!   Kubernetes conditions and Events, and whose message says it in words (never the
//!   secret key).
//! - Requests are bounded: connect [`CONNECT_TIMEOUT`], each request [`REQUEST_TIMEOUT`],
//!   and object_store's own retries are few and short (the operator retries whole backups
//!   with its own backoff): a black-holed endpoint fails in about 10 s.
//!
//! Keys: `backup::keys` names a backup `PREFIX/NAMESPACE/NAME/20261203T162200Z.rdb`, so
//! keys sort by time, and reads the time back, ignoring other objects.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, Certificate, ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectStore,
    PutPayload, RetryConfig,
};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

/// Size of each multipart part but the last (S3's minimum part size is 5 MiB; 10,000
/// parts of 5 MiB allow objects up to ~48 GiB).
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Size of each ranged GET of a download.
pub const DOWNLOAD_RANGE: u64 = 16 * 1024 * 1024;
/// How long a TCP (and TLS) connection may take to establish.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take, body included (a 5 MiB part or a 16 MiB range: the
/// link must carry at least ~0.6 MB/s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// object_store's own retries of one request (connect errors, 5xx, timeouts of safe
/// requests): few and short, the operator retries with its own backoff.
const MAX_RETRIES: usize = 2;
const RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// The region when none is given (what S3-compatible stores other than AWS accept).
const DEFAULT_REGION: &str = "us-east-1";

/// Where backups go: an S3-compatible bucket and the credentials to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Target {
    /// `https://minio.example:9000`; `None` is AWS S3 (the endpoint follows from `region`).
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Empty means `us-east-1`.
    pub region: String,
    /// Path-style requests (`ENDPOINT/BUCKET/KEY`, what MinIO and most self-hosted stores
    /// need) instead of virtual-hosted ones (`BUCKET.ENDPOINT/KEY`).
    pub force_path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Extra trusted CA certificates (PEM, one or more) for an endpoint with a private CA;
    /// the public web roots stay trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
}

impl fmt::Debug for S3Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub last_modified: jiff::Timestamp,
}

/// Why an operation on the object store failed. The message names the cause for a
/// platform engineer and never contains the secret key; [`StoreError::reason`] gives it
/// as a CamelCase word for conditions and Events.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// The settings cannot work (no bucket, a plain-HTTP endpoint not allowed, a CA bundle
    /// without a certificate, a key that is not a valid object name, ...).
    #[error("invalid object store settings: {0}")]
    InvalidConfig(String),
    #[error("bucket {bucket:?} does not exist at {endpoint}: create it, or correct the bucket name")]
    BucketNotFound { endpoint: String, bucket: String },
    /// Wrong or absent credentials (unknown access key id, signature mismatch, i.e. a
    /// wrong secret key), or a key without the permission.
    #[error("{endpoint} refused access to bucket {bucket:?} with access key id {access_key_id:?}: {detail}")]
    AccessDenied { endpoint: String, bucket: String, access_key_id: String, detail: String },
    /// Connection refused, DNS failure, timeout, TLS failure.
    #[error("cannot reach the object store at {endpoint}: {detail}")]
    EndpointUnreachable { endpoint: String, detail: String },
    #[error("object {key:?} does not exist in bucket {bucket:?} at {endpoint}")]
    ObjectNotFound { endpoint: String, bucket: String, key: String },
    /// The data stream given to [`Store::upload`] failed; the upload was aborted.
    #[error(
        "the backup data stream failed after {bytes} bytes, so the upload of {key:?} was aborted and nothing was stored: {source}"
    )]
    Source {
        key: String,
        bytes: u64,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Writing the downloaded object to a local file failed (a full volume, ...).
    #[error("cannot write {}: {source}", path.display())]
    LocalFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Anything else the store answered or did.
    #[error("object store at {endpoint}: {detail}")]
    Other { endpoint: String, detail: String },
    /// The backup volume (`backup::volume`, a mounted claim) ran out of space or quota
    /// while a backup was written; the partial file was removed.
    #[error(
        "the backup volume is full: writing {} failed after {bytes} bytes (no space left on the device, or over quota); nothing was stored: free space on the claim (fewer backups kept) or give the claim more storage",
        path.display()
    )]
    VolumeFull { path: PathBuf, bytes: u64 },
    /// The backup volume refused this process (permissions, a read-only mount).
    #[error(
        "the backup volume is not writable at {}: {source}: the claim's mount must be writable by the backup's user ({}): set the pod's securityContext.fsGroup (or the volume's owner and mode) so that this user may write there, and mount the claim read-write",
        path.display(),
        super::volume::process_user()
    )]
    VolumeNotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The backup file a restore asked for is not on the backup volume.
    #[error("backup file {} does not exist on the backup volume", path.display())]
    BackupFileNotFound { path: PathBuf },
}

impl StoreError {
    /// The cause as a CamelCase word for Kubernetes conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidConfig(_) => "InvalidConfig",
            Self::BucketNotFound { .. } => "BucketNotFound",
            Self::AccessDenied { .. } => "AccessDenied",
            Self::EndpointUnreachable { .. } => "EndpointUnreachable",
            Self::ObjectNotFound { .. } => "ObjectNotFound",
            Self::Source { .. } => "SourceFailed",
            Self::LocalFile { .. } => "LocalFileError",
            Self::Other { .. } => "StoreError",
            Self::VolumeFull { .. } => "VolumeFull",
            Self::VolumeNotWritable { .. } => "VolumeNotWritable",
            // The same word as a missing S3 object: a restore reports one cause.
            Self::BackupFileNotFound { .. } => "ObjectNotFound",
        }
    }
}

/// A handle on one bucket. Cheap to clone (the HTTP client and its connection pool are
/// shared).
#[derive(Clone)]
pub struct Store {
    s3: AmazonS3,
    inner: Arc<Inner>,
}

struct Inner {
    /// For messages: the endpoint URL, or "AWS S3 (REGION)".
    endpoint: String,
    bucket: String,
    access_key_id: String,
    /// Only to scrub it from messages, should a server ever echo it.
    secret_access_key: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("endpoint", &self.inner.endpoint)
            .field("bucket", &self.inner.bucket)
            .field("access_key_id", &self.inner.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store for `t`. Makes no request (see [`Store::check`]).
    pub fn new(t: &S3Target) -> Result<Store, StoreError> {
        let region = if t.region.trim().is_empty() { DEFAULT_REGION } else { t.region.trim() };
        let bucket = t.bucket.trim();
        if bucket.is_empty() || bucket.contains('/') {
            return Err(StoreError::InvalidConfig(format!("{:?} is not a bucket name", t.bucket)));
        }
        let endpoint =
            t.endpoint.as_deref().map(|e| e.trim().trim_end_matches('/')).filter(|e| !e.is_empty());
        let shown = match endpoint {
            Some(e) => e.to_string(),
            None => format!("AWS S3 ({region})"),
        };
        if t.access_key_id.trim().is_empty() || t.secret_access_key.is_empty() {
            return Err(StoreError::AccessDenied {
                endpoint: shown,
                bucket: bucket.to_string(),
                access_key_id: t.access_key_id.clone(),
                detail: "no credentials: the access key id or the secret access key is empty".into(),
            });
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region)
            .with_access_key_id(t.access_key_id.trim())
            .with_secret_access_key(&t.secret_access_key)
            .with_virtual_hosted_style_request(!t.force_path_style)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
            });
        if let Some(e) = endpoint {
            let (scheme, rest) = e.split_once("://").ok_or_else(|| {
                StoreError::InvalidConfig(format!("endpoint {e:?} is not a URL (https://HOST[:PORT])"))
            })?;
            match scheme {
                "https" => {}
                "http" if t.allow_http => {}
                "http" => {
                    return Err(StoreError::InvalidConfig(format!(
                        "endpoint {e} is plain HTTP (credentials and data unencrypted): use https, or allow HTTP explicitly"
                    )));
                }
                _ => {
                    return Err(StoreError::InvalidConfig(format!(
                        "endpoint {e:?} must start with https:// (or http://)"
                    )));
                }
            }
            // object_store takes a virtual-hosted endpoint as already naming the bucket.
            builder = builder.with_endpoint(if t.force_path_style {
                e.to_string()
            } else {
                format!("{scheme}://{bucket}.{rest}")
            });
        }
        let mut options = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_allow_http(t.allow_http);
        if let Some(pem) = &t.ca_pem {
            let certs = Certificate::from_pem_bundle(pem)
                .map_err(|e| StoreError::InvalidConfig(format!("the CA bundle is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(StoreError::InvalidConfig("the CA bundle holds no PEM certificate".into()));
            }
            for c in certs {
                options = options.with_root_certificate(c);
            }
        }
        let s3 = builder.with_client_options(options).build().map_err(|e| {
            StoreError::InvalidConfig(e.to_string().replace(&t.secret_access_key, "<redacted>"))
        })?;
        Ok(Store {
            s3,
            inner: Arc::new(Inner {
                endpoint: shown,
                bucket: bucket.to_string(),
                access_key_id: t.access_key_id.trim().to_string(),
                secret_access_key: t.secret_access_key.clone(),
            }),
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// Upload `chunks` (any sizes, total unknown up front) to `key`; returns the bytes
    /// stored. Multipart with [`PART_SIZE`] parts, at most one part on the wire while the
    /// next fills. On any error, including an error item of `chunks`, and when the
    /// returned future is dropped before it finishes, the multipart upload is aborted:
    /// nothing appears under `key` (an existing object there stays as it was).
    pub async fn upload<S, E>(&self, key: &str, chunks: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        let path = self.path(key)?;
        let mut chunks = std::pin::pin!(chunks);
        let mut part = Part::default();
        let mut total = 0u64;

        // Fill the first part: an object smaller than that is one PUT.
        while part.len < PART_SIZE {
            match chunks.next().await {
                None => {
                    self.s3.put(&path, part.take_all()).await.map_err(|e| self.error(e, Some(key)))?;
                    tracing::debug!(key, bytes = total, "uploaded in one request");
                    return Ok(total);
                }
                Some(Err(e)) => return Err(self.source_error(key, total, e)),
                Some(Ok(b)) => {
                    total += b.len() as u64;
                    part.push(b);
                }
            }
        }

        let upload = self.s3.put_multipart(&path).await.map_err(|e| self.error(e, Some(key)))?;
        let mut guard = AbortGuard { upload: Some(upload), in_flight: None };
        let result = self.upload_parts(key, &mut guard, part, &mut chunks, &mut total).await;
        // Invariant: `guard.upload` becomes None only once `complete()` succeeded, and
        // then this function has returned.
        let upload = guard.upload.as_mut().expect("the upload is still there");
        let result = match result {
            Ok(parts) => match upload.complete().await {
                Ok(_) => {
                    guard.upload = None;
                    tracing::debug!(key, bytes = total, parts, "multipart upload completed");
                    return Ok(total);
                }
                Err(e) => self.error(e, Some(key)),
            },
            Err(e) => e,
        };
        if let Some(task) = guard.in_flight.take() {
            task.abort();
            let _ = task.await;
        }
        // Invariant: `guard.upload` becomes None only once `complete()` succeeded, and
        // then this function has returned.
        let upload = guard.upload.as_mut().expect("the upload is still there");
        if let Err(e) = upload.abort().await {
            // Still no object under the key; the parts stay until a bucket lifecycle rule
            // (AbortIncompleteMultipartUpload) removes them.
            tracing::warn!(key, error = %self.error(e, Some(key)), "could not abort the multipart upload");
        }
        guard.upload = None;
        Err(result)
    }

    /// Send full parts as they fill, one on the wire at a time, then the rest; returns
    /// the number of parts.
    async fn upload_parts<S, E>(
        &self,
        key: &str,
        guard: &mut AbortGuard,
        mut part: Part,
        chunks: &mut std::pin::Pin<&mut S>,
        total: &mut u64,
    ) -> Result<usize, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        let mut parts = 0;
        loop {
            while part.len >= PART_SIZE {
                let payload = part.take(PART_SIZE);
                self.send_part(key, guard, payload).await?;
                parts += 1;
            }
            match chunks.next().await {
                None => break,
                Some(Err(e)) => return Err(self.source_error(key, *total, e)),
                Some(Ok(b)) => {
                    *total += b.len() as u64;
                    part.push(b);
                }
            }
        }
        if part.len > 0 {
            let payload = part.take_all();
            self.send_part(key, guard, payload).await?;
            parts += 1;
        }
        self.wait_part(key, guard).await?;
        Ok(parts)
    }

    /// Wait for the part on the wire, then put `payload` on it.
    async fn send_part(
        &self,
        key: &str,
        guard: &mut AbortGuard,
        payload: PutPayload,
    ) -> Result<(), StoreError> {
        self.wait_part(key, guard).await?;
        // Invariant: `guard.upload` becomes None only once `complete()` succeeded, and
        // then this function has returned.
        let upload = guard.upload.as_mut().expect("the upload is still there");
        guard.in_flight = Some(tokio::spawn(upload.put_part(payload)));
        Ok(())
    }

    async fn wait_part(&self, key: &str, guard: &mut AbortGuard) -> Result<(), StoreError> {
        let Some(task) = guard.in_flight.as_mut() else { return Ok(()) };
        let res = task.await;
        guard.in_flight = None;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(e, Some(key))),
            Err(e) => Err(self.other(format!("uploading a part of {key:?} failed: {e}"))),
        }
    }

    /// The objects under `prefix` (a directory: `a/b` lists `a/b/...`; empty lists the
    /// whole bucket), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StoreError> {
        let prefix = super::keys::normalize_prefix(prefix);
        let prefix = if prefix.is_empty() { None } else { Some(self.path(&prefix)?) };
        let mut out: Vec<StoredObject> = self
            .s3
            .list(prefix.as_ref())
            .map_ok(|m| StoredObject {
                key: m.location.to_string(),
                size: m.size,
                last_modified: jiff::Timestamp::new(
                    m.last_modified.timestamp(),
                    m.last_modified.timestamp_subsec_nanos() as i32,
                )
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            })
            .try_collect()
            .await
            .map_err(|e| self.error(e, None))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Delete `key`. Deleting a key that does not exist succeeds (S3 semantics).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        self.s3.delete(&path).await.map_err(|e| self.error(e, Some(key)))
    }

    /// Download `key` into `file` (created or replaced); returns its size. Streams in
    /// ranged GETs of [`DOWNLOAD_RANGE`] pinned to the object's ETag, into a temporary
    /// sibling file that is synced and renamed to `file` at the end (removed on error).
    pub async fn download_to(&self, key: &str, file: &Path) -> Result<u64, StoreError> {
        let path = self.path(key)?;
        let meta = match self.s3.head(&path).await {
            Ok(m) => m,
            Err(e) => {
                let err = self.error(e, Some(key));
                // A HEAD answer has no body, so no S3 error code: a 404 may be a missing
                // bucket, a 403 a wrong secret key. A listing of the key's directory says.
                if let StoreError::ObjectNotFound { .. } | StoreError::AccessDenied { .. } = err {
                    let dir = key.rsplit_once('/').map_or("", |(dir, _)| dir);
                    if let Err(e @ (StoreError::BucketNotFound { .. } | StoreError::AccessDenied { .. })) =
                        self.check(dir).await
                    {
                        return Err(e);
                    }
                }
                return Err(err);
            }
        };
        let name = file.file_name().ok_or_else(|| StoreError::LocalFile {
            path: file.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(".download");
        let tmp = file.with_file_name(tmp_name);
        let res = self.download_into(key, &path, &meta, &tmp).await;
        let res = match res {
            Ok(n) => tokio::fs::rename(&tmp, file)
                .await
                .map(|()| n)
                .map_err(|source| StoreError::LocalFile { path: file.to_path_buf(), source }),
            Err(e) => Err(e),
        };
        if res.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        res
    }

    async fn download_into(
        &self,
        key: &str,
        path: &ObjectPath,
        meta: &object_store::ObjectMeta,
        tmp: &Path,
    ) -> Result<u64, StoreError> {
        let local = |source| StoreError::LocalFile { path: tmp.to_path_buf(), source };
        let mut out = tokio::fs::File::create(tmp).await.map_err(local)?;
        let mut written = 0u64;
        while written < meta.size {
            let end = meta.size.min(written + DOWNLOAD_RANGE);
            let opts = GetOptions {
                range: Some(GetRange::Bounded(written..end)),
                if_match: meta.e_tag.clone(),
                ..Default::default()
            };
            let got = self.s3.get_opts(path, opts).await.map_err(|e| self.error(e, Some(key)))?;
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.error(e, Some(key)))?;
                out.write_all(&chunk).await.map_err(local)?;
                written += chunk.len() as u64;
            }
            if written != end {
                return Err(self.other(format!(
                    "downloading {key:?}: the store sent {written} bytes where {end} were expected"
                )));
            }
        }
        out.flush().await.map_err(local)?;
        out.sync_all().await.map_err(local)?;
        Ok(written)
    }

    /// A cheap probe that the credentials work and the bucket exists: one listing of at
    /// most one key under `prefix` (so that a key allowed to list only its prefix passes).
    /// It does not prove the key may write or delete.
    pub async fn check(&self, prefix: &str) -> Result<(), StoreError> {
        let mut prefix = super::keys::normalize_prefix(prefix);
        if !prefix.is_empty() {
            prefix.push('/');
        }
        let opts = PaginatedListOptions { max_keys: Some(1), ..Default::default() };
        let prefix = (!prefix.is_empty()).then_some(prefix.as_str());
        self.s3.list_paginated(prefix, opts).await.map(|_| ()).map_err(|e| self.error(e, None))
    }

    fn path(&self, key: &str) -> Result<ObjectPath, StoreError> {
        ObjectPath::parse(key)
            .map_err(|e| StoreError::InvalidConfig(format!("{key:?} is not a valid object key: {e}")))
    }

    fn source_error<E: Into<Box<dyn StdError + Send + Sync>>>(
        &self,
        key: &str,
        bytes: u64,
        e: E,
    ) -> StoreError {
        StoreError::Source { key: key.to_string(), bytes, source: e.into() }
    }

    fn other(&self, detail: String) -> StoreError {
        StoreError::Other { endpoint: self.inner.endpoint.clone(), detail: self.scrub(detail) }
    }

    fn scrub(&self, s: String) -> String {
        let secret = &self.inner.secret_access_key;
        if secret.len() >= 4 && s.contains(secret.as_str()) {
            s.replace(secret.as_str(), "<redacted>")
        } else {
            s
        }
    }

    /// Classify an object_store error (`key`: the object the request was about).
    fn error(&self, e: object_store::Error, key: Option<&str>) -> StoreError {
        let endpoint = self.inner.endpoint.clone();
        let bucket = self.inner.bucket.clone();
        let f = Failure::of(&e);
        let detail = self.scrub(f.detail());
        match f.cause() {
            Cause::BucketNotFound => StoreError::BucketNotFound { endpoint, bucket },
            Cause::ObjectNotFound => match key {
                Some(key) => StoreError::ObjectNotFound { endpoint, bucket, key: key.to_string() },
                None => StoreError::Other { endpoint, detail },
            },
            Cause::AccessDenied => StoreError::AccessDenied {
                endpoint,
                bucket,
                access_key_id: self.inner.access_key_id.clone(),
                detail,
            },
            Cause::Unreachable => StoreError::EndpointUnreachable { endpoint, detail },
            Cause::Other => StoreError::Other { endpoint, detail },
        }
    }
}

/// The multipart upload and its part on the wire; aborted in the background when dropped
/// armed (the upload future was cancelled).
struct AbortGuard {
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: Option<JoinHandle<object_store::Result<()>>>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
        if let Some(mut upload) = self.upload.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(error = %e, "could not abort a cancelled multipart upload");
                }
            });
        }
    }
}

/// The bytes of the part being filled.
#[derive(Default)]
struct Part {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Part {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push(b);
        }
    }

    /// The first `n` bytes (`n <= len`), without copying.
    fn take(&mut self, n: usize) -> PutPayload {
        let mut out = Vec::new();
        let mut need = n;
        let mut rest = std::mem::take(&mut self.chunks).into_iter();
        for mut b in rest.by_ref() {
            if b.len() <= need {
                need -= b.len();
                out.push(b);
            } else {
                out.push(b.split_to(need));
                need = 0;
                self.chunks.push(b);
            }
            if need == 0 {
                break;
            }
        }
        self.chunks.extend(rest);
        self.len -= n - need;
        out.into_iter().collect()
    }

    fn take_all(&mut self) -> PutPayload {
        self.len = 0;
        std::mem::take(&mut self.chunks).into_iter().collect()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Cause {
    BucketNotFound,
    ObjectNotFound,
    AccessDenied,
    Unreachable,
    Other,
}

/// What an object_store error says, read from its chain. object_store keeps its retry
/// error private and words a transport failure as a transparent wrapper, so the HTTP
/// status and the S3 error document are read from the messages, and a transport failure
/// from the `HTTP error: ...` node and the I/O error at the bottom of the chain.
#[derive(Debug, Default)]
struct Failure {
    /// HTTP status of the store's answer.
    status: Option<u16>,
    /// S3 error `Code` and `Message`.
    code: Option<String>,
    message: Option<String>,
    /// No answer: the request failed on the way (connect, TLS, DNS, timeout, reset).
    transport: bool,
    /// ... while connecting (TCP, TLS), not after the request went out.
    connect: bool,
    /// ... because a deadline passed.
    timed_out: bool,
    /// ... because the connection was refused.
    refused: bool,
    /// ... decoding the answer failed (the server answered, but not with HTTP/S3).
    decode: bool,
    /// The innermost cause (e.g. `Connection refused (os error 111)`).
    root: Option<String>,
    /// The whole error as object_store words it.
    text: String,
}

impl Failure {
    fn of(e: &object_store::Error) -> Failure {
        let mut f = Failure { text: e.to_string(), ..Default::default() };
        f.status = match e {
            object_store::Error::NotFound { .. } => Some(404),
            object_store::Error::PermissionDenied { .. } => Some(403),
            object_store::Error::Unauthenticated { .. } => Some(401),
            object_store::Error::Precondition { .. } => Some(412),
            _ => None,
        };
        let mut source: Option<&(dyn StdError + 'static)> = Some(e);
        while let Some(s) = source {
            let msg = s.to_string();
            if f.status.is_none() {
                f.status = status_in(&msg);
            }
            if f.code.is_none() {
                f.code = xml_field(&msg, "Code");
                f.message = xml_field(&msg, "Message");
            }
            if msg.starts_with("HTTP error: ") || s.downcast_ref::<HttpError>().is_some() {
                f.transport = true;
            }
            if let Some(h) = s.downcast_ref::<HttpError>() {
                f.timed_out |= h.kind() == HttpErrorKind::Timeout;
                f.connect |= h.kind() == HttpErrorKind::Connect;
                f.decode |= h.kind() == HttpErrorKind::Decode;
            }
            if f.transport {
                let lower = msg.to_lowercase();
                f.connect |= lower.contains("(connect)") || lower.contains("connect error");
                f.timed_out |= lower.contains("timed out") || lower.contains("deadline has elapsed");
                f.refused |= lower.contains("connection refused");
                f.decode |= lower.contains("decoding");
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    f.timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
                    f.refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
                }
                f.root = Some(msg);
            }
            source = s.source();
        }
        f
    }

    fn cause(&self) -> Cause {
        match self.code.as_deref() {
            Some("NoSuchBucket") => return Cause::BucketNotFound,
            Some("NoSuchKey") => return Cause::ObjectNotFound,
            Some(
                "AccessDenied"
                | "SignatureDoesNotMatch"
                | "InvalidAccessKeyId"
                | "InvalidToken"
                | "ExpiredToken"
                | "TokenRefreshRequired"
                | "AllAccessDisabled"
                | "AccountProblem"
                | "InvalidSecurity"
                | "MissingSecurityHeader",
            ) => return Cause::AccessDenied,
            _ => {}
        }
        match self.status {
            Some(401 | 403) => Cause::AccessDenied,
            Some(404) if self.code.is_none() => Cause::ObjectNotFound,
            None if self.transport && !self.decode => Cause::Unreachable,
            _ => Cause::Other,
        }
    }

    /// The cause in words.
    fn detail(&self) -> String {
        let code = self.code.as_deref().unwrap_or_default();
        let message = self.message.as_deref().unwrap_or_default();
        let hint = match code {
            "SignatureDoesNotMatch" => {
                "the secret access key does not match the access key id (check the credentials Secret)"
            }
            "InvalidAccessKeyId" => {
                "the store does not know this access key id (check the credentials Secret)"
            }
            "AccessDenied" => "the credentials lack permission for this request (check the key's policy)",
            "InvalidToken" | "ExpiredToken" | "TokenRefreshRequired" => {
                "the session token is invalid or expired"
            }
            "AuthorizationHeaderMalformed" | "PermanentRedirect" | "IllegalLocationConstraintException" => {
                "the bucket is in another region than the one configured"
            }
            "RequestTimeTooSkewed" => "this machine's clock is too far from the store's",
            "PreconditionFailed" => "the object changed while it was read",
            _ => "",
        };
        if !code.is_empty() {
            let mut s = code.to_string();
            if !message.is_empty() {
                s.push_str(": ");
                s.push_str(message);
            }
            if let Some(st) = self.status {
                s.push_str(&format!(" (HTTP {st})"));
            }
            if !hint.is_empty() {
                s.push_str(" - ");
                s.push_str(hint);
            }
            return s;
        }
        if self.transport {
            let root = self.root.as_deref().unwrap_or("no detail");
            let lower = root.to_lowercase();
            return if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
                format!(
                    "TLS handshake failed: {root} (the server's certificate is not trusted for this name: \
                     for a private CA, give its CA bundle)"
                )
            } else if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
                format!("DNS lookup failed: {root}")
            } else if self.refused {
                format!("connection refused: nothing listens there, or a firewall rejects it ({root})")
            } else if self.timed_out && self.connect {
                format!(
                    "no connection within {} s: the host drops the packets (a firewall, a wrong address, \
                     or the store is down)",
                    CONNECT_TIMEOUT.as_secs()
                )
            } else if self.timed_out {
                format!("no complete answer within {} s", REQUEST_TIMEOUT.as_secs())
            } else if self.decode {
                format!("the answer could not be read: {root}")
            } else {
                format!("the connection failed: {root}")
            };
        }
        match self.status {
            Some(412) => "the object changed while it was read (HTTP 412)".to_string(),
            Some(st @ (401 | 403)) => format!("HTTP {st}: the credentials were refused or lack permission"),
            Some(404) => "HTTP 404: not found".to_string(),
            _ => self.text.clone(),
        }
    }
}

/// `NNN` of "status code: NNN".
fn status_in(msg: &str) -> Option<u16> {
    let i = msg.find("status code: ")? + "status code: ".len();
    msg.get(i..i + 3)?.parse().ok()
}

/// The text of the first `<TAG>...</TAG>` in `msg`.
fn xml_field(msg: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = msg.find(&open)? + open.len();
    let end = start + msg[start..].find(&close)?;
    let v = msg[start..end].trim();
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_chunks_without_losing_bytes() {
        let mut part = Part::default();
        let data: Vec<u8> = (0..100u8).collect();
        for c in data.chunks(7) {
            part.push(Bytes::copy_from_slice(c));
        }
        let mut got = Vec::new();
        while part.len >= 30 {
            let p = part.take(30);
            assert_eq!(p.content_length(), 30);
            got.extend(p.iter().flat_map(|b| b.to_vec()));
        }
        assert_eq!(part.len, 10);
        got.extend(part.take_all().iter().flat_map(|b| b.to_vec()));
        assert_eq!(got, data);
        assert_eq!(part.len, 0);
    }

    #[test]
    fn s3_error_documents_are_read() {
        let msg = "Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?>\
                   <Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated \
                   does not match</Message></Error>";
        assert_eq!(status_in(msg), Some(403));
        assert_eq!(xml_field(msg, "Code").as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(
            xml_field(msg, "Message").as_deref(),
            Some("The request signature we calculated does not match")
        );
        assert_eq!(xml_field("<Code></Code>", "Code"), None);
        let f = Failure { status: Some(403), code: xml_field(msg, "Code"), ..Default::default() };
        assert_eq!(f.cause(), Cause::AccessDenied);
        let f = Failure { status: Some(404), code: Some("NoSuchBucket".into()), ..Default::default() };
        assert_eq!(f.cause(), Cause::BucketNotFound);
        let f = Failure { status: Some(404), ..Default::default() };
        assert_eq!(f.cause(), Cause::ObjectNotFound);
        let f = Failure { transport: true, connect: true, refused: true, ..Default::default() };
        assert_eq!(f.cause(), Cause::Unreachable);
        let f = Failure { status: Some(500), code: Some("InternalError".into()), ..Default::default() };
        assert_eq!(f.cause(), Cause::Other);
    }

    #[test]
    fn store_futures_can_be_spawned() {
        fn send<T: Send + 'static>(_: &T) {}
        let store = Store::new(&S3Target {
            endpoint: Some("http://127.0.0.1:9".into()),
            bucket: "b".into(),
            region: String::new(),
            force_path_style: true,
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "secret-key".into(),
            ca_pem: None,
            allow_http: true,
        })
        .unwrap();
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
        let s = store.clone();
        send(&async move { s.upload("k", chunks).await });
        let s = store.clone();
        send(&async move { s.download_to("k", Path::new("/tmp/x")).await });
        send(&async move { store.list("p").await });
    }

    #[test]
    fn settings_are_checked_and_the_secret_never_shows() {
        let t = S3Target {
            endpoint: Some("http://127.0.0.1:9000".into()),
            bucket: "b".into(),
            region: String::new(),
            force_path_style: true,
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "very-secret-key-material".into(),
            ca_pem: None,
            allow_http: false,
        };
        let e = Store::new(&t).unwrap_err();
        assert_eq!(e.reason(), "InvalidConfig", "{e}");
        assert!(!format!("{t:?}").contains("very-secret"));
        let ok = Store::new(&S3Target { allow_http: true, ..t.clone() }).unwrap();
        assert!(!format!("{ok:?}").contains("very-secret"));
        let e = Store::new(&S3Target { secret_access_key: String::new(), allow_http: true, ..t.clone() })
            .unwrap_err();
        assert_eq!(e.reason(), "AccessDenied", "{e}");
        let e = Store::new(&S3Target { ca_pem: Some(b"not pem".to_vec()), allow_http: true, ..t.clone() })
            .unwrap_err();
        assert_eq!(e.reason(), "InvalidConfig", "{e}");
        let e = Store::new(&S3Target { bucket: " ".into(), allow_http: true, ..t }).unwrap_err();
        assert_eq!(e.reason(), "InvalidConfig", "{e}");
    }
}
