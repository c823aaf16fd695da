//! Backup and restore benchmark (run by bench/backup.sh): real redis-server processes
//! (a primary and a replica, as a stack runs them) and moto's S3 server.
//!
//! 1. KEYS keys (default 1,000,000) on the primary, replicated.
//! 2. A backup as the operator takes it (`operator::backup::take`: snapshot from the
//!    replica as the `replication` user, verified while it streams into a multipart
//!    upload), while a client INCRs on the primary: time, size, the primary's longest
//!    INCR round trip during the backup against the same client's before it.
//!    Reference in the same run: `redis-cli --rdb` from the same replica to a local file.
//! 3. A restore as the init container does it (`backup::restore::run`: download, verify,
//!    AOF seed) and Redis loading the seeded directory: time until it serves, the key
//!    count checked. Reference: the same Redis loading the RDB as a plain `dump.rdb`.
//!
//! Env: KEYS (default 1000000), VALUE_SIZE (bytes per value, default 32).

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code)] // the benchmark needs the Redis and S3 servers only
mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::s3_server::S3Server;
use counterstack::api::RetentionSpec;
use counterstack::backup::destination::Destination;
use counterstack::backup::rdb::SnapshotSource;
use counterstack::backup::store::Store;
use counterstack::backup::volume::Volume;
use counterstack::operator::backup::{Target, take};

const USER: &str = "replication";
const PASSWORD: &str = "bench-replication-password-0123456789";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A client INCRing on the primary in a loop; the longest round trip while `window` is on.
struct Writer {
    stop: Arc<AtomicBool>,
    window: Arc<AtomicBool>,
    longest_us: Arc<AtomicU64>,
    longest_before_us: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<u64>,
}

impl Writer {
    fn start(primary: &RedisServer) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let window = Arc::new(AtomicBool::new(false));
        let longest_us = Arc::new(AtomicU64::new(0));
        let longest_before_us = Arc::new(AtomicU64::new(0));
        let mut conn = primary.conn().expect("a connection to the primary");
        let (s, w, l, lb) = (stop.clone(), window.clone(), longest_us.clone(), longest_before_us.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _: i64 = redis::cmd("INCR").arg("counter:value").query(&mut conn).expect("INCR");
                let us = t.elapsed().as_micros() as u64;
                if w.load(Ordering::Relaxed) { &l } else { &lb }.fetch_max(us, Ordering::Relaxed);
                n += 1;
            }
            n
        });
        Writer { stop, window, longest_us, longest_before_us, thread }
    }
}

fn main() {
    let keys = env("KEYS", 1_000_000);
    let value_size = env("VALUE_SIZE", 32);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // 1. The data.
    let primary = RedisServer::start_with(None, &["--enable-debug-command", "yes", "--appendonly", "yes"]);
    let replica = RedisServer::start_with(
        None,
        &["--appendonly", "yes", "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"],
    );
    let pw = format!(">{PASSWORD}");
    let _: () = replica
        .cmd(&["ACL", "SETUSER", USER, "reset", "on", &pw, "-@all", "+psync", "+replconf", "+ping", "+role"])
        .expect("ACL SETUSER");
    let t = Instant::now();
    let _: () = primary
        .cmd(&["DEBUG", "POPULATE", &keys.to_string(), "key", &value_size.to_string()])
        .expect("DEBUG POPULATE");
    let _: () = primary.cmd(&["SET", "counter:value", "0"]).unwrap();
    // DEBUG POPULATE is not replicated: the replica gets the data by its full sync.
    replica.replicate(&primary);
    primary.wait_online_replicas(1, Duration::from_secs(120));
    let _: i64 = primary.cmd(&["WAIT", "1", "60000"]).unwrap();
    let replica_keys: u64 = replica.cmd(&["DBSIZE"]).unwrap();
    assert_eq!(replica_keys, keys + 1, "the replica holds every key");
    let memory: String = primary.cmd(&["INFO", "memory"]).unwrap();
    let used = memory
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    println!(
        "data: {keys} keys of {value_size}-byte values on the primary, replicated in {:.1} s (used_memory {:.0} MiB)",
        t.elapsed().as_secs_f64(),
        mib(used.parse().unwrap_or(0))
    );

    let s3 = rt.block_on(S3Server::start()).expect("moto_server in the venv (scripts/setup.sh)");
    let store = Destination::S3(Store::new(&s3.target()).expect("a store"));
    let retention = RetentionSpec::default();
    let folder = "bench/ns/demo";

    // 2. The backup, under writes.
    let writer = Writer::start(&primary);
    std::thread::sleep(Duration::from_secs(2));
    writer.window.store(true, Ordering::Relaxed);
    let src = SnapshotSource {
        addr: ([127, 0, 0, 1], replica.port).into(),
        username: Some(USER),
        password: Some(PASSWORD),
        tls: None,
        io_timeout: Duration::from_secs(30),
    };
    let target = Target { store: &store, folder, retention: &retention };
    let t = Instant::now();
    let done = rt
        .block_on(take(&src, "replica", &target, jiff::Timestamp::now()))
        .unwrap_or_else(|f| panic!("backup failed: {}: {}", f.reason, f.message));
    let backup_s = t.elapsed().as_secs_f64();
    writer.window.store(false, Ordering::Relaxed);
    writer.stop.store(true, Ordering::Relaxed);
    let writes = writer.thread.join().unwrap();
    let size = done.record.size_bytes as u64;
    println!(
        "backup (snapshot from the replica -> verified multipart upload to S3): {:.2} s, {:.1} MiB ({:.0} MiB/s), offset {:?}",
        backup_s,
        mib(size),
        mib(size) / backup_s,
        done.record.offset
    );
    println!(
        "  primary INCR round trip, longest: {:.2} ms during the backup, {:.2} ms in the 2 s before ({writes} INCRs)",
        writer.longest_us.load(Ordering::Relaxed) as f64 / 1000.0,
        writer.longest_before_us.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    let work = tempfile::tempdir().unwrap();
    let reference = work.path().join("redis-cli.rdb");
    let t = Instant::now();
    let out = Command::new("redis-cli")
        .args(["-p", &replica.port.to_string(), "--rdb"])
        .arg(&reference)
        .output()
        .expect("redis-cli");
    let cli_s = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "redis-cli --rdb: {}", String::from_utf8_lossy(&out.stderr));
    let cli_size = std::fs::metadata(&reference).map(|m| m.len()).unwrap_or(0);
    println!(
        "  reference, redis-cli --rdb from the same replica to a local file: {:.2} s, {:.1} MiB; backup / reference time {:.2}",
        cli_s,
        mib(cli_size),
        backup_s / cli_s
    );

    let t = Instant::now();
    let drained = rt.block_on(async {
        let mut snap = counterstack::backup::rdb::Snapshot::open(&src).await.expect("snapshot");
        let mut n = 0u64;
        while let Some(chunk) = snap.next_chunk().await.expect("a verified snapshot") {
            n += chunk.len() as u64;
        }
        n
    });
    let snap_s = t.elapsed().as_secs_f64();
    println!(
        "  the snapshot alone (streamed and verified, not stored): {snap_s:.2} s, {:.1} MiB; snapshot / reference time {:.2}; the rest of the backup is the upload to moto ({:.2} s)",
        mib(drained),
        snap_s / cli_s,
        (backup_s - snap_s).max(0.0)
    );

    // 3. The restore.
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let args = counterstack::backup::restore::RestoreArgs::new(
        &s3.endpoint,
        &s3.bucket,
        &s3.access_key_id,
        &s3.secret_access_key,
        folder,
        "latest",
        &data,
    );
    let t = Instant::now();
    let line = rt.block_on(counterstack::backup::restore::run(&args)).expect("restore");
    let fetch_s = t.elapsed().as_secs_f64();
    println!("restore (download + verify + AOF seed): {fetch_s:.2} s: {line}");
    let load = |dir: &std::path::Path, extra: &[&str]| {
        let t = Instant::now();
        let mut args = vec!["--dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let server = RedisServer::start_with(None, &args);
        loop {
            if let Ok(n) = server.cmd::<u64>(&["DBSIZE"])
                && server.info_field("loading").as_deref() != Some("1")
            {
                return (t.elapsed().as_secs_f64(), n, server);
            }
            assert!(t.elapsed() < Duration::from_secs(300), "Redis did not load the data");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (load_s, n, restored) = load(&data, &["--appendonly", "yes"]);
    assert_eq!(n, keys + 1, "the restored Redis holds every key");
    let value: String = restored.cmd(&["GET", "counter:value"]).unwrap();
    println!("  Redis serves the restored data after {load_s:.2} s ({n} keys, counter:value {value})");
    let plain = work.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::copy(&reference, plain.join("dump.rdb")).unwrap();
    let (plain_s, n2, _plain) = load(&plain, &["--appendonly", "no"]);
    println!(
        "  reference, the same Redis loading the RDB as dump.rdb: {plain_s:.2} s ({n2} keys); restore load / reference {:.2}",
        load_s / plain_s
    );
    println!("total restore (fetch + load): {:.2} s for {:.1} MiB", fetch_s + load_s, mib(size));

    // 4. The same to a volume (spec.backup.volume: what the backup Job runs), a local
    //    directory here.
    let volume_dir = work.path().join("volume");
    std::fs::create_dir(&volume_dir).unwrap(); // the claim's mount point
    let volume = Destination::Volume(Volume::new(&volume_dir));
    let target = Target { store: &volume, folder, retention: &retention };
    let t = Instant::now();
    let done = rt
        .block_on(take(&src, "replica", &target, jiff::Timestamp::now()))
        .unwrap_or_else(|f| panic!("backup to the volume failed: {}: {}", f.reason, f.message));
    let vol_s = t.elapsed().as_secs_f64();
    println!(
        "backup to a volume (snapshot from the replica -> verified, fsynced file): {vol_s:.2} s, {:.1} MiB; backup / reference time {:.2}",
        mib(done.record.size_bytes as u64),
        vol_s / cli_s
    );
    let data = work.path().join("data-from-volume");
    std::fs::create_dir(&data).unwrap();
    let args = counterstack::backup::restore::RestoreArgs::from_dir(&volume_dir, folder, "latest", &data);
    let t = Instant::now();
    let line = rt.block_on(counterstack::backup::restore::run(&args)).expect("restore from the volume");
    println!(
        "restore from the volume (copy + verify + AOF seed): {:.2} s: {line}",
        t.elapsed().as_secs_f64()
    );
    let (load_s, n, _restored) = load(&data, &["--appendonly", "yes"]);
    assert_eq!(n, keys + 1, "the Redis restored from the volume holds every key");
    println!("  Redis serves it after {load_s:.2} s ({n} keys)");
}
