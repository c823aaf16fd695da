//! Where backups live: an S3-compatible bucket ([`Store`]) or a directory on a mounted
//! PersistentVolumeClaim ([`Volume`]). Both give the same four operations with the same
//! contract (atomic upload, sorted listing, idempotent delete, download through a
//! temporary file), so taking, retention and restore are written once.

use std::error::Error as StdError;
use std::path::Path;

use bytes::Bytes;
use futures::Stream;

use super::store::{Store, StoreError, StoredObject};
use super::volume::Volume;

#[derive(Clone, Debug)]
pub enum Destination {
    S3(Store),
    Volume(Volume),
}

impl Destination {
    /// Store `chunks` under `key` atomically; returns the bytes stored.
    pub async fn upload<S, E>(&self, key: &str, chunks: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        match self {
            Destination::S3(s) => s.upload(key, chunks).await,
            Destination::Volume(v) => v.upload(key, chunks).await,
        }
    }

    /// What lies under `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StoreError> {
        match self {
            Destination::S3(s) => s.list(prefix).await,
            Destination::Volume(v) => v.list(prefix).await,
        }
    }

    /// Delete `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Destination::S3(s) => s.delete(key).await,
            Destination::Volume(v) => v.delete(key).await,
        }
    }

    /// Copy `key` into `file`; returns its size.
    pub async fn download_to(&self, key: &str, file: &Path) -> Result<u64, StoreError> {
        match self {
            Destination::S3(s) => s.download_to(key, file).await,
            Destination::Volume(v) => v.download_to(key, file).await,
        }
    }

    /// For messages: `bucket "b"` or `the volume at /backup`.
    pub fn describe(&self) -> String {
        match self {
            Destination::S3(s) => format!("bucket {:?}", s.bucket()),
            Destination::Volume(v) => format!("the volume at {}", v.root().display()),
        }
    }
}
