//! Seed a fresh Redis data directory from a snapshot (restore, issue 20).
//!
//! The stack's Redis runs with `appendonly yes`, so on start it loads the AOF and ignores
//! a `dump.rdb`. Redis 7.0+ keeps its AOF as a directory (`appenddirname`, default
//! `appendonlydir`) holding a base file, incremental files and a manifest listing them;
//! a base file may be an RDB (what Redis writes itself with `aof-use-rdb-preamble yes`,
//! the default). Seeding writes exactly what `redis-server` 7.0 writes on a fresh start,
//! with the snapshot as the base:
//!
//! ```text
//! appendonlydir/appendonly.aof.1.base.rdb   the snapshot (verified first)
//! appendonlydir/appendonly.aof.1.incr.aof   empty: Redis appends the writes that follow
//! appendonlydir/appendonly.aof.manifest     file appendonly.aof.1.base.rdb seq 1 type b
//!                                           file appendonly.aof.1.incr.aof seq 1 type i
//! ```
//!
//! The names assume the defaults `appendfilename appendonly.aof` and `appenddirname
//! appendonlydir`, which the stack's redis.conf keeps. The directory is built under a
//! temporary name inside the data directory, fsynced, then renamed into place, so a crash
//! leaves either no `appendonlydir` (the seed can run again) or a complete one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::rdb::{Corruption, Verifier};

/// `appenddirname` (Redis' default).
pub const AOF_DIR: &str = "appendonlydir";
/// The base file: `<appendfilename>.<seq>.base.rdb`.
pub const BASE_FILE: &str = "appendonly.aof.1.base.rdb";
/// The first incremental file: `<appendfilename>.<seq>.incr.aof`.
pub const INCR_FILE: &str = "appendonly.aof.1.incr.aof";
/// The manifest: `<appendfilename>.manifest`.
pub const MANIFEST_FILE: &str = "appendonly.aof.manifest";
/// What the manifest says (byte for byte what redis-server 7.0 writes on a fresh start).
pub const MANIFEST: &str =
    "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n";
/// Where the directory is built before it is renamed to [`AOF_DIR`].
const TEMP_DIR: &str = ".appendonlydir.seeding";
/// Files that mean the directory already holds data Redis would load (or upgrade, for
/// the single-file AOF of Redis before 7.0).
const EXISTING_DATA: [&str; 3] = [AOF_DIR, "dump.rdb", "appendonly.aof"];
const COPY_BUF: usize = 1024 * 1024;

/// Why seeding failed. Nothing was left in the data directory (but a temporary
/// directory a crash may leave, which the next seed replaces).
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("the data directory {} is not empty of Redis data ({found} exists): restoring over existing data is refused", dir.display())]
    NotFresh { dir: PathBuf, found: &'static str },
    #[error("the backup is corrupt, nothing was restored: {0}")]
    Corrupt(#[from] Corruption),
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

impl SeedError {
    /// A short, stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SeedError::NotFresh { .. } => "not_fresh",
            SeedError::Corrupt(_) => "corrupt",
            SeedError::Io { .. } => "io",
        }
    }
}

/// What [`seed`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// The new `appendonlydir`.
    pub aof_dir: PathBuf,
    /// Size of the base RDB (the snapshot's size).
    pub base_bytes: u64,
    /// The snapshot's RDB format version (`REDIS0010` is 10).
    pub rdb_version: Option<u16>,
}

/// `data_dir` holds no Redis data that seeding would hide or overwrite: no
/// `appendonlydir`, no `dump.rdb`, no single-file `appendonly.aof`.
pub fn is_fresh(data_dir: &Path) -> bool {
    existing_data(data_dir).is_none()
}

fn existing_data(data_dir: &Path) -> Option<&'static str> {
    // symlink_metadata: a dangling symlink counts as existing too.
    EXISTING_DATA.into_iter().find(|name| fs::symlink_metadata(data_dir.join(name)).is_ok())
}

/// Verify `rdb_file` (streaming, constant memory) and make it the base of a new AOF in
/// `data_dir`, which must be fresh ([`is_fresh`]). On any error nothing is left in
/// `data_dir`: a corrupt file or a non-fresh directory writes nothing.
pub fn seed(data_dir: &Path, rdb_file: &Path) -> Result<SeedReport, SeedError> {
    if let Some(found) = existing_data(data_dir) {
        return Err(SeedError::NotFresh { dir: data_dir.to_path_buf(), found });
    }
    let temp = data_dir.join(TEMP_DIR);
    // A leftover of a seed that crashed: ours, never Redis' data.
    if fs::symlink_metadata(&temp).is_ok() {
        fs::remove_dir_all(&temp).map_err(io("remove the leftover", &temp))?;
    }
    fs::create_dir(&temp).map_err(io("create", &temp))?;
    match build(&temp, rdb_file) {
        Ok((base_bytes, rdb_version)) => {
            let aof_dir = data_dir.join(AOF_DIR);
            // Checked again right before the rename: Redis may have been started meanwhile.
            if let Some(found) = existing_data(data_dir) {
                let _ = fs::remove_dir_all(&temp);
                return Err(SeedError::NotFresh { dir: data_dir.to_path_buf(), found });
            }
            if let Err(e) = fs::rename(&temp, &aof_dir) {
                let _ = fs::remove_dir_all(&temp);
                return Err(io("rename the seeded AOF directory to", &aof_dir)(e));
            }
            sync_dir(data_dir)?;
            tracing::info!(dir = %aof_dir.display(), base_bytes, ?rdb_version, "data directory seeded from a snapshot");
            Ok(SeedReport { aof_dir, base_bytes, rdb_version })
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&temp);
            Err(e)
        }
    }
}

/// Write the three files into `dir` and fsync them and `dir`: the base's size and RDB
/// version.
fn build(dir: &Path, rdb_file: &Path) -> Result<(u64, Option<u16>), SeedError> {
    let mut input = File::open(rdb_file).map_err(io("open the backup file", rdb_file))?;
    let base_path = dir.join(BASE_FILE);
    let mut base = File::create(&base_path).map_err(io("create", &base_path))?;
    let mut verifier = Verifier::new();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("read the backup file", rdb_file)(e)),
        };
        verifier.update(&buf[..n])?;
        base.write_all(&buf[..n]).map_err(io("write", &base_path))?;
    }
    let rdb_version = verifier.rdb_version();
    let size = verifier.finish()?;
    base.sync_all().map_err(io("fsync", &base_path))?;
    drop(base);

    let incr_path = dir.join(INCR_FILE);
    File::create(&incr_path).and_then(|f| f.sync_all()).map_err(io("create", &incr_path))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    File::create(&manifest_path)
        .and_then(|mut f| {
            f.write_all(MANIFEST.as_bytes())?;
            f.sync_all()
        })
        .map_err(io("write", &manifest_path))?;
    sync_dir(dir)?;
    Ok((size, rdb_version))
}

fn sync_dir(dir: &Path) -> Result<(), SeedError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync the directory", dir))
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SeedError {
    let path = path.to_path_buf();
    move |source| SeedError::Io { what, path, source }
}
