//! `counterstack restore`: the `restore` init container of a CounterApp with
//! `spec.bootstrap.fromBackup` (src/children/restore.rs builds it). In pod 0, on a
//! volume without Redis data, it downloads the backup from the object store (or copies
//! it from the mounted backup claim), verifies it (RDB checksum) and writes it as the
//! AOF base Redis loads at start. Everywhere else it does nothing.
//!
//! It ends with one line in the termination message (`/dev/termination-log`), which the
//! operator reports in `status.bootstrap` and an Event: `restored KEY (N bytes, RDB
//! version V)`, or why it could not. A failure exits non-zero: the pod retries with the
//! kubelet's backoff and never starts Redis on data it could not verify.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::destination::Destination;
use super::store::{S3Target, Store, StoreError};
use super::volume::Volume;
use super::{aof_seed, keys};
use crate::children::restore::env;

/// The download, next to the data (a backup can be larger than /tmp).
const DOWNLOAD_NAME: &str = "counterstack-restore.rdb";

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Object store endpoint (absent: AWS S3).
    #[arg(long, env = env::ENDPOINT)]
    endpoint: Option<String>,
    #[arg(long, env = env::BUCKET, required_unless_present = "source_dir")]
    bucket: Option<String>,
    #[arg(long, env = env::REGION, default_value = "us-east-1")]
    region: String,
    #[arg(long, env = env::PATH_STYLE, default_value_t = true, action = clap::ArgAction::Set)]
    force_path_style: bool,
    #[arg(long, env = env::ACCESS_KEY_ID, hide_env_values = true, default_value = "")]
    access_key_id: String,
    #[arg(long, env = env::SECRET_ACCESS_KEY, hide_env_values = true, default_value = "")]
    secret_access_key: String,
    /// The mounted backup claim to restore from, instead of an object store.
    #[arg(long, env = env::SOURCE_DIR, conflicts_with = "bucket")]
    source_dir: Option<PathBuf>,
    /// PEM file of the CA that signs the endpoint's certificate.
    #[arg(long, env = env::CA_FILE)]
    ca_file: Option<PathBuf>,
    /// `PREFIX/NAMESPACE/NAME` of the CounterApp whose backups to restore.
    #[arg(long, env = env::FOLDER)]
    folder: String,
    /// `latest` or a backup's name (`YYYYMMDDTHHMMSSZ`).
    #[arg(long, env = env::BACKUP, default_value = "latest")]
    backup: String,
    /// Redis' data directory (the pod's volume).
    #[arg(long, env = env::DATA_DIR, default_value = "/data")]
    data_dir: PathBuf,
    /// The pod's name: only ordinal 0 restores.
    #[arg(long, env = env::POD_NAME)]
    pod_name: String,
}

impl RestoreArgs {
    /// The restore of pod 0 (`NAME-redis-0`) from `endpoint` (the init container gets
    /// these from its environment; benchmarks and tests build them here).
    pub fn new(
        endpoint: &str,
        bucket: &str,
        access_key_id: &str,
        secret_access_key: &str,
        folder: &str,
        backup: &str,
        data_dir: &Path,
    ) -> Self {
        Self {
            endpoint: Some(endpoint.to_string()),
            bucket: Some(bucket.to_string()),
            region: "us-east-1".to_string(),
            force_path_style: true,
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            ca_file: None,
            source_dir: None,
            folder: folder.to_string(),
            backup: backup.to_string(),
            data_dir: data_dir.to_path_buf(),
            pod_name: "restore-redis-0".to_string(),
        }
    }

    /// The restore of pod 0 from backups on a volume mounted at `source_dir`.
    pub fn from_dir(source_dir: &Path, folder: &str, backup: &str, data_dir: &Path) -> Self {
        Self {
            endpoint: None,
            bucket: None,
            region: "us-east-1".to_string(),
            force_path_style: true,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            ca_file: None,
            source_dir: Some(source_dir.to_path_buf()),
            folder: folder.to_string(),
            backup: backup.to_string(),
            data_dir: data_dir.to_path_buf(),
            pod_name: "restore-redis-0".to_string(),
        }
    }
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read the CA bundle {}: {source}", path.display())]
    Ca { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "no backup in {folder:?} ({place}): check spec.bootstrap.fromBackup (counterApp, namespace, prefix)"
    )]
    NoBackup { folder: String, place: String },
    #[error("backup {key:?} is refused: {source}")]
    Seed { key: String, source: aof_seed::SeedError },
}

pub fn main(args: RestoreArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return finish(Err(format!("cannot start: {e}"))),
    };
    let result = runtime.block_on(run(&args)).map_err(|e| format!("cannot restore: {e}"));
    finish(result)
}

/// Print the outcome and leave it as the termination message.
fn finish(result: Result<String, String>) -> ExitCode {
    let (line, code) = match result {
        Ok(line) => (line, ExitCode::SUCCESS),
        Err(line) => (line, ExitCode::FAILURE),
    };
    eprintln!("{line}");
    super::leave_termination_message(&line);
    code
}

/// What the restore did, as one line.
pub async fn run(args: &RestoreArgs) -> Result<String, RestoreError> {
    if !args.pod_name.ends_with("-0") {
        return Ok(format!("{}: only pod 0 restores; its replicas copy the data from it", args.pod_name));
    }
    if !aof_seed::is_fresh(&args.data_dir) {
        return Ok("the volume already holds Redis data: nothing restored".to_string());
    }
    let store = destination(args)?;
    let key = resolve(&store, &args.folder, &args.backup).await?;
    let download = args.data_dir.join(DOWNLOAD_NAME);
    let result = fetch_and_seed(&store, &key, &download, &args.data_dir).await;
    // Whatever happened, the download is not data Redis reads.
    let _ = std::fs::remove_file(&download);
    result
}

/// The object store, or the mounted claim.
fn destination(args: &RestoreArgs) -> Result<Destination, RestoreError> {
    if let Some(dir) = &args.source_dir {
        return Ok(Destination::Volume(Volume::new(dir)));
    }
    let ca_pem = match &args.ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|source| RestoreError::Ca { path: p.clone(), source })?),
        None => None,
    };
    Ok(Destination::S3(Store::new(&S3Target {
        endpoint: args.endpoint.clone(),
        bucket: args.bucket.clone().unwrap_or_default(),
        region: args.region.clone(),
        force_path_style: args.force_path_style,
        access_key_id: args.access_key_id.trim().to_string(),
        secret_access_key: args.secret_access_key.trim().to_string(),
        ca_pem,
        allow_http: args.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")),
    })?))
}

async fn fetch_and_seed(
    store: &Destination,
    key: &str,
    download: &Path,
    data_dir: &Path,
) -> Result<String, RestoreError> {
    let bytes = store.download_to(key, download).await?;
    let report = aof_seed::seed(data_dir, download)
        .map_err(|source| RestoreError::Seed { key: key.to_string(), source })?;
    Ok(format!(
        "restored {key} ({bytes} bytes, RDB version {})",
        report.rdb_version.map_or_else(|| "?".to_string(), |v| v.to_string())
    ))
}

/// The key of `backup` (`latest`: the newest backup in the folder).
async fn resolve(store: &Destination, folder: &str, backup: &str) -> Result<String, RestoreError> {
    if backup != "latest" {
        return Ok(keys::key(folder, backup));
    }
    let listed = store.list(&format!("{folder}/")).await?;
    listed
        .iter()
        .filter_map(|o| keys::parse(folder, &o.key).map(|(_, at)| (at, o.key.clone())))
        .max()
        .map(|(_, k)| k)
        .ok_or_else(|| RestoreError::NoBackup { folder: folder.to_string(), place: store.describe() })
}
