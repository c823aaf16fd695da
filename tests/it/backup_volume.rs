//! The backup volume (`counterstack::backup::volume`): backups as files on a mounted
//! PersistentVolumeClaim, on the real filesystem (a temporary directory; a small tmpfs of
//! its own for a full or a read-only volume, tests/it/common/small_disk.rs). Writes are
//! atomic as S3 makes them (a failed or cancelled upload leaves nothing, not even its
//! temporary file), keys cannot leave the root, and errors carry the reasons conditions
//! and Events show.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use counterstack::backup::keys;
use counterstack::backup::store::StoreError;
use counterstack::backup::volume::Volume;
use futures::{StreamExt, stream};

use crate::common::payload::{data, ok_stream, reason, sha256, uneven_chunks};
use crate::common::small_disk::SmallDisk;

const MIB: usize = 1024 * 1024;

/// Every file and directory under `dir`, hidden ones included: paths relative to `dir`,
/// sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = e.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn backup_key(namespace: &str, name: &str, at: &str) -> String {
    keys::key(&keys::folder("counterstack", namespace, name), &keys::name_at(at.parse().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_goes_to_the_volume_is_listed_comes_back_identical_and_is_deleted() {
    let root = tempfile::tempdir().unwrap();
    let vol = Volume::new(root.path());
    assert_eq!(vol.root(), root.path());

    let body = data(3 * MIB + 12_345, 7);
    let key = backup_key("ns", "demo", "2026-12-03T11:00:00Z");
    assert_eq!(key, "counterstack/ns/demo/20261203T110000Z.rdb");
    let n = vol.upload(&key, ok_stream(uneven_chunks(&body))).await.unwrap();
    assert_eq!(n, body.len() as u64);
    assert_eq!(
        tree(root.path()),
        ["counterstack", "counterstack/ns", "counterstack/ns/demo", key.as_str()],
        "the file under its key, no temporary file left"
    );
    assert_eq!(sha256(&std::fs::read(root.path().join(&key)).unwrap()), sha256(&body));

    // Another stack's backup, an empty one, a killed job's temporary file, an empty
    // directory: the listing shows files only, hidden ones never.
    let other = backup_key("ns", "other", "2026-12-01T00:00:00Z");
    vol.upload(&other, ok_stream(vec![Bytes::from_static(b"other")])).await.unwrap();
    let empty = backup_key("ns", "demo", "2026-12-02T00:00:00Z");
    assert_eq!(vol.upload(&empty, ok_stream(vec![])).await.unwrap(), 0);
    std::fs::write(root.path().join("counterstack/ns/demo/.20261203T120000Z.rdb.partial"), b"half").unwrap();
    std::fs::create_dir_all(root.path().join("counterstack/ns/demo/sub/empty")).unwrap();

    let listed = vol.list("counterstack/ns/demo").await.unwrap();
    let got: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(got, [(empty.as_str(), 0), (key.as_str(), body.len() as u64)], "sorted by key");
    for o in &listed {
        let age = jiff::Timestamp::now().duration_since(o.last_modified);
        assert!(
            age.abs() < jiff::SignedDuration::from_secs(60),
            "{}: last_modified {}",
            o.key,
            o.last_modified
        );
    }
    let all: Vec<String> = vol.list("").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(all, [empty.clone(), key.clone(), other.clone()]);
    let all2: Vec<String> = vol.list("/counterstack/ns/").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(all2, all, "the prefix is normalized as the object store's");
    assert_eq!(vol.list("counterstack/nothing/here").await.unwrap(), [], "a missing prefix is empty");
    assert_eq!(vol.list(&key).await.unwrap(), [], "a file is no prefix");

    // Download into a new file, then over an existing one.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("dump.rdb");
    assert_eq!(vol.download_to(&key, &file).await.unwrap(), body.len() as u64);
    assert_eq!(sha256(&std::fs::read(&file).unwrap()), sha256(&body));
    std::fs::write(&file, b"an older dump").unwrap();
    assert_eq!(vol.download_to(&key, &file).await.unwrap(), body.len() as u64);
    assert_eq!(sha256(&std::fs::read(&file).unwrap()), sha256(&body), "replaced");
    assert_eq!(tree(out.path()), ["dump.rdb"], "no temporary file is left behind");

    vol.delete(&key).await.unwrap();
    assert!(!root.path().join(&key).exists());
    let left: Vec<String> =
        vol.list("counterstack/ns/demo").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(left, [empty.as_str()]);
    vol.delete(&key).await.unwrap();
    vol.delete("counterstack/ns/never/was.rdb").await.unwrap();
    vol.delete(&empty).await.unwrap();
    assert_eq!(vol.list("counterstack/ns/demo").await.unwrap(), []);
    // A directory is no object: nothing to delete, and it stays.
    vol.delete("counterstack/ns/demo/sub").await.unwrap();
    assert!(root.path().join("counterstack/ns/demo/sub/empty").is_dir());
    assert_eq!(vol.list("").await.unwrap().into_iter().map(|o| o.key).collect::<Vec<_>>(), [other]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_midway_stores_nothing_and_keeps_the_old_file() {
    let root = tempfile::tempdir().unwrap();
    let vol = Volume::new(root.path());
    let old = data(2000, 9);
    vol.upload("prod/app/kept.rdb", ok_stream(vec![Bytes::from(old.clone())])).await.unwrap();

    for (key, good_bytes) in
        [("prod/app/kept.rdb", 3 * MIB), ("prod/app/new.rdb", MIB), ("prod/fresh/dir.rdb", 0)]
    {
        let mut items: Vec<Result<Bytes, std::io::Error>> =
            uneven_chunks(&data(good_bytes, 5)).into_iter().map(Ok).collect();
        items.push(Err(std::io::Error::other("replica closed the replication stream")));
        items.push(Ok(Bytes::from_static(b"never read")));
        let r = vol.upload(key, stream::iter(items)).await;
        assert!(matches!(&r, Err(StoreError::Source { key: k, .. }) if k == key), "{r:?}");
        let (why, msg) = reason(r);
        assert_eq!(why, "SourceFailed", "{msg}");
        assert!(msg.contains("replica closed the replication stream"), "{msg}");
        assert!(msg.contains(&format!("after {good_bytes} bytes")), "{msg}");
        assert!(msg.contains("nothing was stored"), "{msg}");
    }
    assert_eq!(
        tree(root.path()),
        ["prod", "prod/app", "prod/app/kept.rdb", "prod/fresh"],
        "no partial file, no temporary file"
    );
    assert_eq!(
        std::fs::read(root.path().join("prod/app/kept.rdb")).unwrap(),
        old,
        "the old backup is intact"
    );
    let keys: Vec<String> = vol.list("prod").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["prod/app/kept.rdb"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_leaves_no_temporary_file() {
    let root = tempfile::tempdir().unwrap();
    let vol = Volume::new(root.path());
    let key = backup_key("ns", "demo", "2026-12-03T11:00:00Z");
    let old = data(1000, 3);
    vol.upload(&key, ok_stream(vec![Bytes::from(old.clone())])).await.unwrap();

    // 2 MiB, then a stream that never ends: the caller gives up.
    let first = stream::iter(uneven_chunks(&data(2 * MIB, 2)).into_iter().map(Ok));
    let chunks = first.chain(stream::pending::<Result<Bytes, std::io::Error>>());
    let mut upload = Box::pin(vol.upload(&key, chunks));
    let r = tokio::time::timeout(Duration::from_millis(500), &mut upload).await;
    assert!(r.is_err(), "the upload waits for more data: {r:?}");
    let partial = "counterstack/ns/demo/.20261203T110000Z.rdb.partial";
    assert!(
        tree(root.path()).iter().any(|p| p == partial),
        "it writes a temporary file: {:?}",
        tree(root.path())
    );

    drop(upload);
    assert_eq!(
        tree(root.path()),
        ["counterstack", "counterstack/ns", "counterstack/ns/demo", key.as_str()],
        "the temporary file went with the future"
    );
    assert_eq!(std::fs::read(root.path().join(&key)).unwrap(), old, "the old file is intact");

    // Cancelled by aborting its task, with nothing under the key before.
    let other = backup_key("ns", "demo", "2026-12-03T12:00:00Z");
    let first = stream::iter(uneven_chunks(&data(MIB, 4)).into_iter().map(Ok));
    let chunks = first.chain(stream::pending::<Result<Bytes, std::io::Error>>());
    let v = vol.clone();
    let k = other.clone();
    let task = tokio::spawn(async move { v.upload(&k, chunks).await });
    let partial = root.path().join("counterstack/ns/demo/.20261203T120000Z.rdb.partial");
    let start = std::time::Instant::now();
    while !partial.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "no temporary file appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(!partial.exists() && !root.path().join(&other).exists(), "{:?}", tree(root.path()));
    let keys: Vec<String> = vol.list("").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, [key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_is_volume_full_keeps_earlier_backups_and_frees_the_space() {
    let test = "backup_volume::a_full_volume_is_volume_full_keeps_earlier_backups_and_frees_the_space";
    let Some(disk) = SmallDisk::mount("1m", test) else { return };
    let vol = Volume::new(disk.path());

    let earlier = backup_key("ns", "demo", "2026-12-01T00:00:00Z");
    let small = data(100 * 1024, 1);
    vol.upload(&earlier, ok_stream(uneven_chunks(&small))).await.unwrap();

    let key = backup_key("ns", "demo", "2026-12-03T11:00:00Z");
    let r = vol.upload(&key, ok_stream(uneven_chunks(&data(4 * MIB, 2)))).await;
    let target = disk.path().join(&key);
    match &r {
        Err(StoreError::VolumeFull { path, bytes }) => {
            assert_eq!(path, &target);
            assert!(*bytes > 0 && *bytes < MIB as u64, "what reached the 1 MiB volume: {bytes}");
        }
        other => panic!("expected VolumeFull, got {other:?}"),
    }
    let (why, msg) = reason(r);
    assert_eq!(why, "VolumeFull");
    assert!(msg.contains(&target.display().to_string()), "{msg}");
    assert!(msg.contains("full") && msg.contains("more storage"), "{msg}");

    assert_eq!(
        tree(disk.path()),
        ["counterstack", "counterstack/ns", "counterstack/ns/demo", earlier.as_str()],
        "no partial or temporary file"
    );
    assert_eq!(sha256(&std::fs::read(disk.path().join(&earlier)).unwrap()), sha256(&small));

    // The failed upload's space is back: 700 KiB more fits only if its ~900 KiB went.
    let next = data(700 * 1024, 3);
    vol.upload(&key, ok_stream(uneven_chunks(&next))).await.unwrap();
    assert_eq!(sha256(&std::fs::read(&target).unwrap()), sha256(&next));
    let keys: Vec<String> = vol.list("").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, [earlier, key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_would_leave_the_root_are_refused_and_a_missing_root_is_not_created() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("vol");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(parent.path().join("secret"), b"keep").unwrap();
    let vol = Volume::new(&root);
    let out = parent.path().join("out");

    for key in
        ["", "../secret", "../x", "/abs", "/tmp/x", "a//b", "a/", "a/../../secret", "./x", "a\\b", "a\0b"]
    {
        let chunks = ok_stream(vec![Bytes::from_static(b"data")]);
        let (why, msg) = reason(vol.upload(key, chunks).await);
        assert_eq!(why, "InvalidConfig", "upload {key:?}: {msg}");
        assert!(msg.contains("not a valid backup key"), "{msg}");
        let (why, msg) = reason(vol.delete(key).await);
        assert_eq!(why, "InvalidConfig", "delete {key:?}: {msg}");
        let (why, msg) = reason(vol.download_to(key, &out).await);
        assert_eq!(why, "InvalidConfig", "download {key:?}: {msg}");
    }
    for prefix in ["..", "../", "a/../..", ".hidden"] {
        let (why, msg) = reason(vol.list(prefix).await);
        assert_eq!(why, "InvalidConfig", "list {prefix:?}: {msg}");
    }
    assert_eq!(tree(parent.path()), ["secret", "vol"], "nothing written, nothing removed");
    assert_eq!(std::fs::read(parent.path().join("secret")).unwrap(), b"keep");

    // The claim is not mounted: an error, never a directory on the container's own disk.
    let unmounted = parent.path().join("not-mounted");
    let vol = Volume::new(&unmounted);
    let (why, msg) = reason(vol.upload("a/b.rdb", ok_stream(vec![Bytes::from_static(b"x")])).await);
    assert_eq!(why, "InvalidConfig", "{msg}");
    assert!(msg.contains("not-mounted") && msg.contains("not mounted"), "{msg}");
    let (why, _) = reason(vol.list("").await);
    assert_eq!(why, "InvalidConfig");
    let (why, _) = reason(vol.download_to("a/b.rdb", &out).await);
    assert_eq!(why, "InvalidConfig");
    assert!(!unmounted.exists());
    assert_eq!(tree(parent.path()), ["secret", "vol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_backup_is_object_not_found() {
    let root = tempfile::tempdir().unwrap();
    let vol = Volume::new(root.path());
    vol.upload("cs/ns/demo/there.rdb", ok_stream(vec![Bytes::from_static(b"x")])).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("dump.rdb");
    for key in ["cs/ns/demo/missing.rdb", "cs/nowhere/missing.rdb", "cs/ns/demo", "cs/ns/demo/there.rdb/x"] {
        let r = vol.download_to(key, &file).await;
        let want: PathBuf = root.path().join(key);
        assert!(matches!(&r, Err(StoreError::BackupFileNotFound { path }) if *path == want), "{key}: {r:?}");
        let (why, msg) = reason(r);
        assert_eq!(why, "ObjectNotFound", "{key}: {msg}");
        assert!(msg.contains(&want.display().to_string()), "{msg}");
    }
    assert_eq!(tree(out.path()), Vec::<String>::new(), "no file, no temporary file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_volume_is_volume_not_writable() {
    let test = "backup_volume::a_read_only_volume_is_volume_not_writable";
    let Some(disk) = SmallDisk::mount("1m", test) else { return };
    let vol = Volume::new(disk.path());
    let earlier = backup_key("ns", "demo", "2026-12-01T00:00:00Z");
    vol.upload(&earlier, ok_stream(vec![Bytes::from_static(b"earlier")])).await.unwrap();
    if let Err(e) = disk.remount_read_only() {
        eprintln!("SKIP {test}: cannot remount the tmpfs read-only: {e}");
        return;
    }

    // Into an existing directory (the temporary file fails) and a new one (mkdir fails).
    for key in
        [backup_key("ns", "demo", "2026-12-03T11:00:00Z"), backup_key("ns", "new", "2026-12-03T11:00:00Z")]
    {
        let r = vol.upload(&key, ok_stream(vec![Bytes::from_static(b"data")])).await;
        assert!(matches!(&r, Err(StoreError::VolumeNotWritable { .. })), "{key}: {r:?}");
        let (why, msg) = reason(r);
        assert_eq!(why, "VolumeNotWritable", "{msg}");
        assert!(msg.contains(&disk.path_str()), "{msg}");
        assert!(msg.contains("uid ") && msg.contains("fsGroup"), "{msg}");
    }
    let (why, msg) = reason(vol.delete(&earlier).await);
    assert_eq!(why, "VolumeNotWritable", "{msg}");

    // Reading still works: a restore from a read-only claim.
    let keys: Vec<String> = vol.list("").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, [earlier.as_str()]);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("dump.rdb");
    assert_eq!(vol.download_to(&earlier, &file).await.unwrap(), 7);
    assert_eq!(std::fs::read(&file).unwrap(), b"earlier");
    assert_eq!(
        tree(disk.path()),
        ["counterstack", "counterstack/ns", "counterstack/ns/demo", earlier.as_str()]
    );
}
