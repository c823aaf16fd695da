//! Backups on a mounted PersistentVolumeClaim, for clusters without an object store: the
//! four operations of [`Store`](super::store::Store) (upload, list, delete, download) on
//! a directory, the claim's mount point in the backup Job (or the restore's init
//! container), with the same keys, the same [`StoredObject`]s and the same
//! [`StoreError`]s, so that callers treat both alike.
//!
//! - Writes are atomic, as S3 makes them: [`Volume::upload`] streams into a hidden sibling
//!   `.NAME.partial`, syncs it, renames it onto the key and syncs the directory. On any
//!   error (an error item of the stream, a full volume, ...) and when the future is
//!   dropped midway, the temporary file goes: nothing appears under the key, and a file
//!   already there stays as it was. A process killed midway leaves the temporary file,
//!   which listings skip and the next upload of the key replaces.
//! - Chunks go to disk as they come: the backup is never whole in memory.
//! - Keys use `/` as object keys do and are checked, so that nothing lands outside the
//!   root: relative, no empty segment, no segment starting with `.` (which keeps `.`,
//!   `..` and the temporary files' names out), no backslash or NUL.
//! - Errors name what a platform engineer can do: a full claim is
//!   [`StoreError::VolumeFull`], a mount the backup's user may not write
//!   [`StoreError::VolumeNotWritable`], a missing backup
//!   [`StoreError::BackupFileNotFound`] (reason `ObjectNotFound`, as in S3).
//! - A missing root is [`StoreError::InvalidConfig`]: the claim is not mounted where the
//!   settings say, and creating the directory would put backups on the container's own
//!   filesystem, gone with the pod.

use std::error::Error as StdError;
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::store::{StoreError, StoredObject};

/// Suffix of an upload's temporary file, `.NAME.partial` next to the key.
const PARTIAL_SUFFIX: &str = ".partial";
/// Suffix of a download's temporary file, `.NAME.download` next to the target (as
/// [`Store::download_to`](super::store::Store::download_to) names it).
const DOWNLOAD_SUFFIX: &str = ".download";
/// The directory mkfs.ext4 puts at the root of a filesystem (root only): not a backup.
const LOST_AND_FOUND: &str = "lost+found";
/// Read size of a download.
const COPY_BUFFER: usize = 1024 * 1024;

/// Backups in a directory: the mount point of a PersistentVolumeClaim. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Volume {
    root: PathBuf,
}

impl Volume {
    /// Backups under `root` (the claim's mount point); makes no I/O.
    pub fn new(root: impl Into<PathBuf>) -> Volume {
        Volume { root: root.into() }
    }

    /// The claim's mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Write `chunks` to ROOT/KEY (`key` uses `/` separators, e.g.
    /// `counterstack/ns/demo/20261203T110000Z.rdb`), creating the directories; returns
    /// the bytes written. Through a temporary sibling that is synced, renamed onto the
    /// key, and removed on any error and when the future is dropped: nothing appears
    /// under `key` unless the whole stream was stored (an existing file there stays as
    /// it was).
    pub async fn upload<S, E>(&self, key: &str, chunks: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        let (dir, name) = self.locate(key)?;
        self.check_root().await?;
        let target = dir.join(&name);
        let created = !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir());
        if created {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| volume_error(&dir, 0, e))?;
        }
        let temp = TempFile::create(dir.join(format!(".{name}{PARTIAL_SUFFIX}")))
            .await
            .map_err(|e| volume_error(&target, 0, e))?;
        let mut file = tokio::fs::File::from_std(temp.file);
        let mut total = 0u64;
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| StoreError::Source {
                key: key.to_string(),
                bytes: total,
                source: e.into(),
            })?;
            file.write_all(&chunk).await.map_err(|e| write_error(&target, &temp.guard.path, total, e))?;
            total += chunk.len() as u64;
        }
        // flush() reports the last write's error, which sync_all() would swallow.
        file.flush().await.map_err(|e| write_error(&target, &temp.guard.path, total, e))?;
        file.sync_all().await.map_err(|e| write_error(&target, &temp.guard.path, total, e))?;
        drop(file);
        tokio::fs::rename(&temp.guard.path, &target).await.map_err(|e| volume_error(&target, total, e))?;
        temp.guard.disarm();

        // The rename (and any new directory) survives a power loss only once the
        // directories holding them are synced.
        let mut dirs = vec![dir.as_path()];
        if created {
            dirs.extend(dir.ancestors().skip(1).take_while(|d| d.starts_with(&self.root)));
        }
        for d in dirs {
            if let Err(e) = sync_dir(d).await {
                // Keep "an error means nothing was stored" (the key is a fresh time in
                // practice, never an older backup replaced).
                let _ = tokio::fs::remove_file(&target).await;
                return Err(volume_error(d, total, e));
            }
        }
        tracing::debug!(key, bytes = total, root = %self.root.display(), "backup written to the volume");
        Ok(total)
    }

    /// The files under ROOT/PREFIX (a directory, recursively; empty lists the whole
    /// volume), keys relative to ROOT with `/` separators, sorted by key. A prefix that
    /// does not exist is an empty list. Hidden files (the temporary ones), directories,
    /// symbolic links and names that are no valid key are skipped.
    pub async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StoreError> {
        let prefix = super::keys::normalize_prefix(prefix);
        if !prefix.is_empty() {
            check_key(&prefix)?;
        }
        self.check_root().await?;
        let root = self.root.clone();
        let walk = tokio::task::spawn_blocking(move || walk(&root, &prefix));
        let mut out = walk.await.map_err(|e| StoreError::LocalFile {
            path: self.root.clone(),
            source: io::Error::other(format!("listing the backup volume failed: {e}")),
        })??;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Remove ROOT/KEY. A key with no file (S3 semantics) is success.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (dir, name) = self.locate(key)?;
        self.check_root().await?;
        let target = dir.join(&name);
        match tokio::fs::remove_file(&target).await {
            Ok(()) => {}
            // No file by that name: nothing there, a parent that is a file, a directory.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(volume_error(&target, 0, e)),
        }
        sync_dir(&dir).await.map_err(|e| volume_error(&dir, 0, e))?;
        tracing::debug!(key, root = %self.root.display(), "backup deleted from the volume");
        Ok(())
    }

    /// Copy ROOT/KEY to `file` (created or replaced); returns its size. Through a
    /// temporary sibling of `file` that is synced and renamed to `file` at the end
    /// (removed on error and when the future is dropped): `file` never holds half a
    /// backup.
    pub async fn download_to(&self, key: &str, file: &Path) -> Result<u64, StoreError> {
        let (dir, name) = self.locate(key)?;
        self.check_root().await?;
        let source = dir.join(&name);
        let file_name = file.file_name().ok_or_else(|| StoreError::LocalFile {
            path: file.to_path_buf(),
            source: io::Error::new(ErrorKind::InvalidInput, "not a file path"),
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(DOWNLOAD_SUFFIX);
        let temp = file.with_file_name(temp_name);
        // All of it in one blocking task that owns the guard: a cancelled download's
        // temporary file goes when the task ends (tokio drops an unwanted output).
        let copy = tokio::task::spawn_blocking(move || copy_to_temp(&source, temp));
        let (n, guard) = copy.await.map_err(|e| StoreError::LocalFile {
            path: file.to_path_buf(),
            source: io::Error::other(format!("copying the backup failed: {e}")),
        })??;
        tokio::fs::rename(&guard.path, file)
            .await
            .map_err(|source| StoreError::LocalFile { path: file.to_path_buf(), source })?;
        guard.disarm();
        tracing::debug!(key, bytes = n, file = %file.display(), "backup copied from the volume");
        Ok(n)
    }

    /// The directory and file name of `key` (checked).
    fn locate(&self, key: &str) -> Result<(PathBuf, String), StoreError> {
        check_key(key)?;
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        let dir = dir.split('/').filter(|s| !s.is_empty()).fold(self.root.clone(), |p, s| p.join(s));
        Ok((dir, name.to_string()))
    }

    /// The root must be there: see the module's doc on why a missing one is not created.
    async fn check_root(&self) -> Result<(), StoreError> {
        match tokio::fs::metadata(&self.root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::InvalidConfig(format!(
                "the backup volume's mount point {} is not a directory",
                self.root.display()
            ))),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Err(StoreError::InvalidConfig(format!(
                    "the backup volume's mount point {} does not exist: the claim is not mounted there \
                     (backups never go to the container's own filesystem)",
                    self.root.display()
                )))
            }
            Err(e) => Err(volume_error(&self.root, 0, e)),
        }
    }
}

/// A key of the volume: relative, `/`-separated, and unable to leave the root or to name
/// a temporary file.
fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = |why: String| {
        Err(StoreError::InvalidConfig(format!("{key:?} is not a valid backup key on a volume: {why}")))
    };
    if key.is_empty() {
        return bad("it is empty".into());
    }
    if key.starts_with('/') {
        return bad("it is absolute (keys are relative to the volume's mount point)".into());
    }
    if key.contains('\0') {
        return bad("it contains a NUL byte".into());
    }
    if key.contains('\\') {
        return bad("it contains a backslash (segments are separated by '/')".into());
    }
    for (i, segment) in key.split('/').enumerate() {
        if segment.is_empty() {
            return bad("it has an empty segment (a double or trailing '/')".into());
        }
        if segment.starts_with('.') {
            return bad(format!(
                "the segment {segment:?} starts with '.' (reserved: '.' and '..' would leave the volume, \
                 other such names are temporary files)"
            ));
        }
        if i == 0 && segment == LOST_AND_FOUND {
            return bad(format!("{LOST_AND_FOUND} is the filesystem's own directory"));
        }
    }
    Ok(())
}

/// The files under ROOT/PREFIX, unsorted (blocking).
fn walk(root: &Path, prefix: &str) -> Result<Vec<StoredObject>, StoreError> {
    let start = prefix.split('/').filter(|s| !s.is_empty()).fold(root.to_path_buf(), |p, s| p.join(s));
    let mut out = Vec::new();
    let mut dirs = vec![(start, prefix.to_string())];
    while let Some((dir, dir_key)) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // No backup under the prefix yet, a prefix that is a file (no key under it),
            // or a directory that went while it was walked (another job's retention).
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => continue,
            Err(e) => return Err(volume_error(&dir, 0, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| volume_error(&dir, 0, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let key = if dir_key.is_empty() { name.to_string() } else { format!("{dir_key}/{name}") };
            // Temporary files, lost+found, and names no key can have.
            if check_key(&key).is_err() {
                continue;
            }
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(volume_error(&entry.path(), 0, e)),
            };
            if kind.is_dir() {
                dirs.push((entry.path(), key));
            } else if kind.is_file() {
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(volume_error(&entry.path(), 0, e)),
                };
                let last_modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                out.push(StoredObject { key, size: meta.len(), last_modified });
            }
            // Symbolic links (which could lead out of the root) and devices are no backups.
        }
    }
    Ok(out)
}

/// Copy `source` into a new `temp`, synced (blocking); the guard removes `temp` unless
/// disarmed.
fn copy_to_temp(source: &Path, temp: PathBuf) -> Result<(u64, TempGuard), StoreError> {
    let not_found = || StoreError::BackupFileNotFound { path: source.to_path_buf() };
    let mut src = match std::fs::File::open(source) {
        Ok(f) => f,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Err(not_found());
        }
        Err(e) => return Err(volume_error(source, 0, e)),
    };
    if !src.metadata().map_err(|e| volume_error(source, 0, e))?.is_file() {
        return Err(not_found());
    }
    let local = |source| StoreError::LocalFile { path: temp.clone(), source };
    let guard = TempGuard::new(temp.clone());
    let mut out = std::fs::File::create(&temp).map_err(local)?;
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut n = 0u64;
    loop {
        let got = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(volume_error(source, n, e)),
        };
        out.write_all(&buf[..got]).map_err(local)?;
        n += got as u64;
    }
    out.sync_all().map_err(local)?;
    Ok((n, guard))
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

/// An I/O error on the volume at `path`, after `bytes` bytes of a write.
fn volume_error(path: &Path, bytes: u64, e: io::Error) -> StoreError {
    let path = path.to_path_buf();
    if is_full(&e) {
        StoreError::VolumeFull { path, bytes }
    } else if is_not_writable(&e) {
        StoreError::VolumeNotWritable { path, source: e }
    } else {
        StoreError::LocalFile { path, source: e }
    }
}

/// A failed write of the temporary file `temp` of `target`, `total` bytes handed to it.
/// tokio writes behind and reports a failure at the next write or the flush: what
/// reached the file is its size.
fn write_error(target: &Path, temp: &Path, total: u64, e: io::Error) -> StoreError {
    let bytes = std::fs::metadata(temp).map_or(total, |m| m.len().min(total));
    volume_error(target, bytes, e)
}

/// No space left (ENOSPC), or the user's quota is exhausted (EDQUOT).
fn is_full(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Permission denied (EACCES, EPERM), or a read-only mount (EROFS).
fn is_not_writable(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem)
        || matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS))
}

/// This process's user and group, for [`StoreError::VolumeNotWritable`]'s message.
pub(crate) fn process_user() -> String {
    // SAFETY: geteuid(2) and getegid(2) always succeed and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    format!("uid {uid}, gid {gid}")
}

/// A temporary file's path, removed when dropped armed (a failed or cancelled copy).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    fn new(path: PathBuf) -> TempGuard {
        TempGuard { path, armed: true }
    }

    /// The file was renamed into place: keep it.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        // One unlink, also when an async caller is cancelled: no await possible here.
        if self.armed
            && let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a temporary backup file");
        }
    }
}

/// A new temporary file and its guard.
struct TempFile {
    file: std::fs::File,
    guard: TempGuard,
}

impl TempFile {
    /// Create (or truncate) `path` in a blocking task that owns the guard: when the caller
    /// is dropped while the file is being created, tokio drops the task's output, guard
    /// included, and the file goes.
    async fn create(path: PathBuf) -> io::Result<TempFile> {
        let task = tokio::task::spawn_blocking(move || {
            let guard = TempGuard::new(path);
            let file = std::fs::File::create(&guard.path)?;
            Ok(TempFile { file, guard })
        });
        task.await.map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_root() {
        let v = Volume::new("/backups");
        let (dir, name) = v.locate("counterstack/ns/demo/20261203T110000Z.rdb").unwrap();
        assert_eq!(dir, Path::new("/backups/counterstack/ns/demo"));
        assert_eq!(name, "20261203T110000Z.rdb");
        let (dir, name) = v.locate("x.rdb").unwrap();
        assert_eq!((dir.as_path(), name.as_str()), (Path::new("/backups"), "x.rdb"));
        assert!(v.locate("a/b.c..d/e..rdb").is_ok(), "dots inside a segment are fine");
        for key in [
            "",
            "/abs",
            "/",
            "../x",
            "..",
            ".",
            "a/../../etc/passwd",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "a\0b",
            "a/.b.partial",
            ".hidden/x",
            "lost+found/x",
        ] {
            let e = v.locate(key).unwrap_err();
            assert_eq!(e.reason(), "InvalidConfig", "{key:?}: {e}");
            assert!(e.to_string().contains("not a valid backup key"), "{key:?}: {e}");
        }
        assert!(v.locate("a/lost+found/x").is_ok(), "only the root's lost+found is the filesystem's");
    }

    #[test]
    fn io_errors_name_the_cause() {
        let p = Path::new("/backups/a/x.rdb");
        for raw in [libc::ENOSPC, libc::EDQUOT] {
            let e = volume_error(p, 1234, io::Error::from_raw_os_error(raw));
            assert_eq!(e.reason(), "VolumeFull", "{raw}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("/backups/a/x.rdb") && msg.contains("1234 bytes"), "{msg}");
            assert!(msg.contains("nothing was stored") && msg.contains("more storage"), "{msg}");
            assert!(matches!(e, StoreError::VolumeFull { bytes: 1234, .. }));
        }
        let e = volume_error(p, 0, io::Error::from(ErrorKind::StorageFull));
        assert_eq!(e.reason(), "VolumeFull", "{e}");

        for raw in [libc::EACCES, libc::EPERM, libc::EROFS] {
            let e = volume_error(p, 0, io::Error::from_raw_os_error(raw));
            assert_eq!(e.reason(), "VolumeNotWritable", "{raw}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("/backups/a/x.rdb") && msg.contains("fsGroup"), "{msg}");
            assert!(msg.contains(&process_user()) && process_user().starts_with("uid "), "{msg}");
            assert!(e.source().is_some());
        }

        let e = volume_error(p, 0, io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.reason(), "LocalFileError", "{e}");
        assert!(e.to_string().contains("/backups/a/x.rdb"), "{e}");

        let e = StoreError::BackupFileNotFound { path: p.to_path_buf() };
        assert_eq!(e.reason(), "ObjectNotFound");
        assert!(e.to_string().contains("/backups/a/x.rdb"), "{e}");
    }

    #[test]
    fn a_guard_removes_its_file_unless_disarmed() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept");
        let gone = dir.path().join("gone");
        std::fs::write(&kept, b"x").unwrap();
        std::fs::write(&gone, b"x").unwrap();
        TempGuard::new(kept.clone()).disarm();
        drop(TempGuard::new(gone.clone()));
        drop(TempGuard::new(dir.path().join("never-created")));
        assert!(kept.exists());
        assert!(!gone.exists());
    }

    #[test]
    fn volume_futures_can_be_spawned() {
        fn send<T: Send + 'static>(_: &T) {}
        let v = Volume::new("/backups");
        let chunks = futures::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"x"))]);
        let w = v.clone();
        send(&async move { w.upload("k", chunks).await });
        let w = v.clone();
        send(&async move { w.download_to("k", Path::new("/tmp/x")).await });
        let w = v.clone();
        send(&async move { w.delete("k").await });
        send(&async move { v.list("p").await });
    }
}
