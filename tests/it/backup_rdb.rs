//! Backups (issue 20), the snapshot half: `backup::rdb` streams an RDB snapshot from a
//! real replica over the replication protocol as the least-privilege `replication` user,
//! verifies it on the fly, and `backup::aof_seed` turns a snapshot into the AOF base of a
//! fresh data directory that a real `redis-server` (appendonly yes) loads and appends to.
//!
//! Faults are injected on the wire between a real node and the client (a byte flipped, the
//! stream cut, the stream stalled), never by a fake server.

use crate::common::redis_server::RedisServer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use counterstack::backup::aof_seed::{self, SeedError};
use counterstack::backup::rdb::{
    self, Corruption, PayloadFormat, RdbError, Snapshot, SnapshotSource, TlsTarget,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REPL_USER: &str = "replication";
const REPL_PASSWORD: &str = "repl-Q2w3E4r5T6y7U8i9O0pAsDfGhJk";
/// Exactly the stack's replication user's rules.
const REPL_RULES: [&str; 5] = ["-@all", "+psync", "+replconf", "+ping", "+role"];
const KEYS: usize = 10_000;
/// Large values too, so that a snapshot (~17 MB) cannot sit whole in socket buffers: the
/// source is still streaming when the client has read nothing yet.
const BIG_KEYS: usize = 16;
const BIG_VALUE: usize = 1024 * 1024;
const COUNTER: i64 = 4242;
/// Every key [`fill`] writes.
const ALL_KEYS: usize = KEYS + BIG_KEYS + 1;

/// `len` bytes that LZF (RDB string compression) cannot shrink, different per `seed`.
fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// `ACL SETUSER name reset on >password RULES...` on `server`.
fn add_user(server: &RedisServer, name: &str, password: &str, rules: &[&str]) {
    let pw = format!(">{password}");
    let mut args = vec!["ACL", "SETUSER", name, "reset", "on", pw.as_str()];
    args.extend_from_slice(rules);
    let _: () = server.cmd(&args).unwrap();
}

/// A primary and a replica linked to it; the replica runs with `replica_extra` (e.g.
/// `--repl-diskless-sync no`) and has the `replication` user.
fn pair(replica_extra: &[&str]) -> (RedisServer, RedisServer) {
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(None, replica_extra);
    replica.replicate(&primary);
    primary.wait_online_replicas(1, Duration::from_secs(10));
    add_user(&replica, REPL_USER, REPL_PASSWORD, &REPL_RULES);
    (primary, replica)
}

/// `KEYS` keys `key:N` = `value-N` (every tenth longer), [`BIG_KEYS`] keys `big:N` of
/// [`BIG_VALUE`] bytes and `counter:value` = [`COUNTER`] on the primary; waits until the
/// replica has them all.
fn fill(primary: &RedisServer, replica: &RedisServer) {
    let mut c = primary.conn().unwrap();
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        let value = if i % 10 == 0 { format!("value-{i}-{}", "x".repeat(100)) } else { format!("value-{i}") };
        pipe.cmd("SET").arg(format!("key:{i}")).arg(value).ignore();
    }
    pipe.cmd("SET").arg("counter:value").arg(COUNTER).ignore();
    let _: () = pipe.query(&mut c).unwrap();
    for i in 0..BIG_KEYS {
        let _: () = redis::cmd("SET")
            .arg(format!("big:{i}"))
            .arg(incompressible(BIG_VALUE, i as u64))
            .query(&mut c)
            .unwrap();
    }
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut c).unwrap();
    assert_eq!(acked, 1, "the replica never acknowledged the data");
    assert_eq!(replica.cmd::<usize>(&["DBSIZE"]).unwrap(), ALL_KEYS);
}

fn source(port: u16, password: &str) -> SnapshotSource<'_> {
    SnapshotSource {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        username: Some(REPL_USER),
        password: Some(password),
        tls: None,
        io_timeout: Duration::from_secs(10),
    }
}

/// Every chunk until `Ok(None)` (or the first error), with the chunk sizes.
async fn drain(s: &mut Snapshot) -> Result<(Vec<u8>, Vec<usize>), RdbError> {
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    while let Some(chunk) = s.next_chunk().await? {
        assert!(!chunk.is_empty(), "an empty chunk");
        sizes.push(chunk.len());
        all.extend_from_slice(&chunk);
    }
    Ok((all, sizes))
}

/// A whole snapshot of `server` as the replication user: its bytes and format.
fn take(server: &RedisServer) -> (Vec<u8>, PayloadFormat) {
    rt().block_on(async {
        let mut snap = Snapshot::open(&source(server.port, REPL_PASSWORD)).await.unwrap();
        let (bytes, _) = drain(&mut snap).await.unwrap();
        (bytes, snap.format())
    })
}

fn info(server: &RedisServer, section: &str, field: &str) -> Option<String> {
    let info: String = server.cmd(&["INFO", section]).ok()?;
    info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
}

fn info_u64(server: &RedisServer, section: &str, field: &str) -> u64 {
    info(server, section, field).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("INFO {field}"))
}

/// The server's own data directory (its log lives there).
fn dir_of(server: &RedisServer) -> PathBuf {
    server.log_path().parent().unwrap().to_path_buf()
}

/// The server's `dump.rdb`: its modification time and size, if it has one.
fn saved(server: &RedisServer) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(dir_of(server).join("dump.rdb")).ok()?;
    Some((m.modified().unwrap(), m.len()))
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what} never happened");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// `redis-check-rdb FILE` accepts the file; its report.
fn check_rdb(path: &Path) -> String {
    let out = Command::new("redis-check-rdb").arg(path).output().expect("redis-check-rdb (redis-tools)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("RDB looks OK"), "redis-check-rdb refused it:\n{text}");
    text
}

/// Take a snapshot of the replica and check everything the issue asks of one: the
/// replication user suffices, the stream verifies, the bytes are a valid RDB with the
/// data, the primary neither forked nor saw anything, the replica's own link and role are
/// unchanged and its rdb-only client leaves. Returns the payload.
fn snapshot_and_check(primary: &RedisServer, replica: &RedisServer, want: PayloadFormat) -> Vec<u8> {
    let rt = rt();
    let primary_forks = info_u64(primary, "stats", "total_forks");
    let replica_forks = info_u64(replica, "stats", "total_forks");
    let primary_replid = info(primary, "replication", "master_replid").unwrap();

    let started = Instant::now();
    let mut snap = rt.block_on(Snapshot::open(&source(replica.port, REPL_PASSWORD))).unwrap();
    // While it streams, the rdb-only client is one of the replica's replicas.
    let during = info_u64(replica, "replication", "connected_slaves");
    let slave0 = info(replica, "replication", "slave0");
    let (bytes, sizes) = rt.block_on(drain(&mut snap)).unwrap();
    let took = started.elapsed();

    match (want, snap.format()) {
        (PayloadFormat::EofMarked, PayloadFormat::EofMarked) => {}
        (PayloadFormat::Sized { .. }, PayloadFormat::Sized { len }) => assert_eq!(len, bytes.len() as u64),
        (want, got) => panic!("expected a {want:?} transfer, got {got:?}"),
    }
    assert_eq!(snap.bytes_read(), bytes.len() as u64);
    assert!(sizes.iter().all(|&n| n <= 256 * 1024 + 40), "a chunk too big: {sizes:?}");
    assert!(sizes.len() > 1, "{} bytes came in one chunk: {sizes:?}", bytes.len());
    assert!(bytes.len() > BIG_KEYS * BIG_VALUE, "{} bytes is too small for the data", bytes.len());
    rdb::verify(&bytes).unwrap();
    assert!(bytes.starts_with(b"REDIS00"), "{:?}", String::from_utf8_lossy(&bytes[..9]));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("snapshot.rdb");
    std::fs::write(&file, &bytes).unwrap();
    let report = check_rdb(&file);
    assert!(report.contains(&format!("{ALL_KEYS} keys read")), "{report}");

    // The point in time: the primary's history, at an offset the primary has passed.
    assert_eq!(snap.replid(), primary_replid);
    let primary_offset = info_u64(primary, "replication", "master_repl_offset");
    assert!(snap.offset() > 0 && snap.offset() <= primary_offset, "{} vs {primary_offset}", snap.offset());

    // Taken from the replica: the primary did not fork and has only its replica.
    assert_eq!(info_u64(primary, "stats", "total_forks"), primary_forks, "the primary forked");
    assert_eq!(info_u64(primary, "replication", "connected_slaves"), 1);
    assert_eq!(info_u64(replica, "stats", "total_forks"), replica_forks + 1, "the replica forked once");
    // The rdb-only client shows up on the replica while it streams, then goes.
    assert_eq!(during, 1, "connected_slaves on the source while streaming");
    let slave0 = slave0.expect("slave0 on the source while streaming");
    let left = wait_for("the rdb-only client leaving the replica", Duration::from_secs(5), || {
        info_u64(replica, "replication", "connected_slaves") == 0
    });
    eprintln!(
        "{:?}: {} bytes in {} chunks, {took:?}; on the source while streaming: {slave0}; gone {left:?} after the end",
        snap.format(),
        bytes.len(),
        sizes.len()
    );
    // The replica's own link and role are unchanged.
    assert_eq!(info(replica, "replication", "role").as_deref(), Some("slave"));
    assert_eq!(info(replica, "replication", "master_link_status").as_deref(), Some("up"));
    assert_eq!(info(replica, "replication", "master_port"), Some(primary.port.to_string()));
    assert_eq!(info(replica, "replication", "master_replid").as_deref(), Some(primary_replid.as_str()));
    let _: () = primary.cmd(&["SET", "after", "1"]).unwrap();
    wait_for("a write after the snapshot reaching the replica", Duration::from_secs(5), || {
        replica.cmd::<Option<String>>(&["GET", "after"]).ok().flatten().as_deref() == Some("1")
    });
    bytes
}

#[test]
fn a_diskless_replica_streams_a_verified_snapshot_to_the_replication_user() {
    let (primary, replica) = pair(&[]);
    fill(&primary, &replica);
    // The replica's own full sync left a dump.rdb (`repl-diskless-load disabled`).
    let before = saved(&replica);
    snapshot_and_check(&primary, &replica, PayloadFormat::EofMarked);
    // Diskless: nothing written to the replica's disk (nor the primary's).
    assert_eq!(saved(&replica), before, "the replica wrote an RDB");
    assert_eq!(saved(&primary), None);
}

#[test]
fn a_disk_based_replica_sends_a_sized_snapshot() {
    let (primary, replica) = pair(&["--repl-diskless-sync", "no"]);
    fill(&primary, &replica);
    let before = saved(&replica);
    let bytes = snapshot_and_check(&primary, &replica, PayloadFormat::Sized { len: 0 });
    // Disk-based: the replica saved the RDB on its own disk first (never the primary).
    let after = saved(&replica).expect("the replica's dump.rdb");
    assert_ne!(Some(after), before, "the replica did not save a new RDB");
    assert_eq!(std::fs::read(dir_of(&replica).join("dump.rdb")).unwrap(), bytes);
    assert_eq!(saved(&primary), None);
}

/// `rdbchecksum no`: Redis stores 0 as the checksum; such a snapshot is accepted on its
/// magic and end-of-file opcode, and a truncated one is still refused.
#[test]
fn a_snapshot_without_a_checksum_is_accepted_but_not_truncated() {
    let (primary, replica) = pair(&["--rdbchecksum", "no"]);
    fill(&primary, &replica);
    let (bytes, format) = take(&replica);
    assert_eq!(format, PayloadFormat::EofMarked);
    assert_eq!(bytes[bytes.len() - 8..], [0u8; 8], "Redis stored a checksum");
    assert_eq!(bytes[bytes.len() - 9], 0xFF);
    rdb::verify(&bytes).unwrap();
    // Cut: the byte before the "checksum" is not the EOF opcode (or, 1 in 256, it is and
    // the 8 bytes after it are not 0 and not the checksum).
    let err = rdb::verify(&bytes[..bytes.len() - 1000]).unwrap_err();
    assert!(
        matches!(err, RdbError::Corrupt(Corruption::NoEofOpcode { .. } | Corruption::Checksum { .. })),
        "{err}"
    );
}

/// What the wire between the node and the client does to the node's bytes.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Flip the lowest bit of the byte at this offset of the node's stream.
    Flip(usize),
    /// Close both connections after this many bytes.
    Cut(usize),
    /// Forward this many bytes, then nothing (connections stay open).
    Stall(usize),
}

/// A one-connection loopback proxy to `target` that applies `fault` to what the node
/// sends. Must run inside tokio.
async fn faulty_wire(target: SocketAddr, fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (inbound, _) = listener.accept().await.unwrap();
        let outbound = TcpStream::connect(target).await.unwrap();
        let (mut in_r, mut in_w) = inbound.into_split();
        let (mut out_r, mut out_w) = outbound.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut in_r, &mut out_w).await;
        });
        let mut seen = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match out_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &mut buf[..n];
            match fault {
                Fault::Flip(at) if (seen..seen + n).contains(&at) => chunk[at - seen] ^= 0x01,
                Fault::Cut(at) | Fault::Stall(at) if seen + n > at => {
                    let _ = in_w.write_all(&chunk[..at - seen]).await;
                    if matches!(fault, Fault::Stall(_)) {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    return;
                }
                _ => {}
            }
            if in_w.write_all(chunk).await.is_err() {
                return;
            }
            seen += n;
        }
    });
    addr
}

/// Take a snapshot of `replica` through a wire with `fault`: the error `next_chunk`
/// returned (it must fail, never end with `Ok(None)`), and the bytes it handed out.
fn snapshot_through(replica: &RedisServer, fault: Fault, io_timeout: Duration) -> (RdbError, u64) {
    let rt = rt();
    rt.block_on(async {
        let addr = faulty_wire(SocketAddr::from(([127, 0, 0, 1], replica.port)), fault).await;
        let src = SnapshotSource { addr, io_timeout, ..source(replica.port, REPL_PASSWORD) };
        let mut snap = Snapshot::open(&src).await.unwrap();
        let err = match drain(&mut snap).await {
            Ok((bytes, _)) => panic!("{fault:?}: the stream ended Ok after {} bytes", bytes.len()),
            Err(e) => e,
        };
        // Failed for good: no later call reports a complete snapshot.
        assert!(matches!(snap.next_chunk().await, Err(RdbError::Failed)), "{fault:?}");
        (err, snap.bytes_read())
    })
}

#[test]
fn a_corrupted_cut_or_stalled_stream_is_never_reported_complete() {
    for extra in [&[][..], &["--repl-diskless-sync", "no"][..]] {
        let (primary, replica) = pair(extra);
        fill(&primary, &replica);
        let at = 150_000;
        let (err, _) = snapshot_through(&replica, Fault::Flip(at), Duration::from_secs(10));
        assert!(matches!(err, RdbError::Corrupt(Corruption::Checksum { .. })), "{extra:?}: {err}");
        assert!(
            err.to_string().starts_with("the snapshot is corrupt: checksum mismatch (stored 0x"),
            "{err}"
        );

        let (err, read) = snapshot_through(&replica, Fault::Cut(at), Duration::from_secs(10));
        assert!(matches!(err, RdbError::Closed { .. }), "{extra:?}: {err}");
        assert!(err.to_string().starts_with("the node closed the connection while streaming"), "{err}");
        assert!(read < at as u64, "{read}");

        let started = Instant::now();
        let (err, _) = snapshot_through(&replica, Fault::Stall(at), Duration::from_millis(1500));
        assert!(matches!(err, RdbError::Timeout { .. }), "{extra:?}: {err}");
        assert_eq!(err.to_string(), "the node sent no data for 1.5s while streaming the snapshot");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

        // The replica serves a good snapshot afterwards.
        let (bytes, _) = take(&replica);
        rdb::verify(&bytes).unwrap();
    }
}

#[test]
fn a_real_snapshot_with_a_flipped_byte_a_cut_or_a_wrong_magic_fails_verification() {
    let (primary, replica) = pair(&[]);
    fill(&primary, &replica);
    let (good, _) = take(&replica);
    rdb::verify(&good).unwrap();
    for at in [20, good.len() / 2, good.len() - 12] {
        let mut bad = good.clone();
        bad[at] ^= 0x80;
        let err = rdb::verify(&bad).unwrap_err();
        assert!(matches!(err, RdbError::Corrupt(Corruption::Checksum { .. })), "byte {at}: {err}");
    }
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x01; // the stored checksum itself
    assert!(matches!(rdb::verify(&bad), Err(RdbError::Corrupt(Corruption::Checksum { .. }))));
    for len in [0, 5, 9, 1000, good.len() - 9, good.len() - 1] {
        assert!(rdb::verify(&good[..len]).is_err(), "truncated to {len}");
    }
    let mut bad = good.clone();
    bad[..5].copy_from_slice(b"REDIZ");
    assert!(matches!(rdb::verify(&bad), Err(RdbError::Corrupt(Corruption::BadMagic { .. }))));
    // The streaming verifier agrees with the whole-file one in any chunking.
    for chunk in [1usize, 7, 4096, 65_536] {
        let mut v = rdb::Verifier::new();
        for c in good.chunks(chunk) {
            v.update(c).unwrap();
        }
        assert_eq!(v.finish(), Ok(good.len() as u64));
    }
}

#[test]
fn wrong_credentials_and_missing_permissions_are_named() {
    let (primary, replica) = pair(&[]);
    let rt = rt();
    let err = rt.block_on(Snapshot::open(&source(replica.port, "not-the-password"))).unwrap_err();
    assert!(matches!(err, RdbError::Auth(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("the node refused the replication user: WRONGPASS"), "{msg}");
    assert!(!msg.contains("not-the-password") && !format!("{err:?}").contains("not-the-password"));

    // Without +psync: Redis names the command.
    add_user(&replica, "nopsync", REPL_PASSWORD, &["-@all", "+replconf", "+ping", "+role"]);
    let src = SnapshotSource { username: Some("nopsync"), ..source(replica.port, REPL_PASSWORD) };
    let err = rt.block_on(Snapshot::open(&src)).unwrap_err();
    assert!(matches!(err, RdbError::NoPermission { command: "PSYNC", .. }), "{err}");
    assert!(err.to_string().contains("may not run PSYNC") && err.to_string().contains("'psync'"), "{err}");

    // Without +replconf.
    add_user(&replica, "noreplconf", REPL_PASSWORD, &["-@all", "+psync", "+ping", "+role"]);
    let src = SnapshotSource { username: Some("noreplconf"), ..source(replica.port, REPL_PASSWORD) };
    let err = rt.block_on(Snapshot::open(&src)).unwrap_err();
    assert!(matches!(err, RdbError::NoPermission { command: "REPLCONF", .. }), "{err}");
    assert!(err.to_string().contains("'replconf'"), "{err}");

    // No AUTH at all against a node whose default user is off.
    let _: () = replica.cmd(&["ACL", "SETUSER", "admin", "on", ">admin-pw", "+@all", "~*"]).unwrap();
    let mut admin = redis::Client::open(format!("redis://admin:admin-pw@127.0.0.1:{}", replica.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("ACL").arg(&["SETUSER", "default", "off"][..]).query(&mut admin).unwrap();
    let src = SnapshotSource { username: None, password: None, ..source(replica.port, REPL_PASSWORD) };
    let err = rt.block_on(Snapshot::open(&src)).unwrap_err();
    assert!(matches!(err, RdbError::Auth(_)) && err.to_string().contains("NOAUTH"), "{err}");
    drop(primary);
}

#[test]
fn an_unlinked_replica_a_frozen_node_and_a_closed_port_fail_clearly() {
    let rt = rt();
    // A replica whose primary is gone refuses to serve a snapshot.
    let orphan = RedisServer::start();
    add_user(&orphan, REPL_USER, REPL_PASSWORD, &REPL_RULES);
    let gone = crate::common::redis_server::free_port();
    let _: () = orphan.cmd(&["REPLICAOF", "127.0.0.1", &gone.to_string()]).unwrap();
    let err = rt.block_on(Snapshot::open(&source(orphan.port, REPL_PASSWORD))).unwrap_err();
    assert!(matches!(err, RdbError::Refused { command: "PSYNC", .. }), "{err}");
    assert!(err.to_string().contains("NOMASTERLINK") && err.to_string().contains("not linked"), "{err}");

    // A frozen node (SIGSTOP): the kernel accepts the connection, nothing answers.
    let _: () = orphan.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap();
    orphan.pause();
    let src = SnapshotSource { io_timeout: Duration::from_millis(500), ..source(orphan.port, REPL_PASSWORD) };
    let started = Instant::now();
    let err = rt.block_on(Snapshot::open(&src)).unwrap_err();
    orphan.resume();
    assert_eq!(err.to_string(), "the node sent no data for 0.5s while authenticating");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Nobody listening.
    let err = rt.block_on(Snapshot::open(&source(gone, REPL_PASSWORD))).unwrap_err();
    assert!(matches!(err, RdbError::Connect { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("could not connect to 127.0.0.1:{gone}")), "{err}");
}

#[test]
fn snapshots_over_tls_verify_the_chain_and_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    crate::common::pki::make_ca(&pki, "ca");
    crate::common::pki::make_server(&pki, "tls", "ca", "DNS:localhost,IP:127.0.0.1");
    crate::common::pki::make_ca(&pki, "other");
    let tls_port = crate::common::redis_server::free_port();
    let (cert, key, ca) = (pki.join("tls.crt"), pki.join("tls.key"), pki.join("ca.crt"));
    let tls_port_s = tls_port.to_string();
    let args = [
        "--tls-port",
        tls_port_s.as_str(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ];
    let (primary, replica) = pair(&args);
    fill(&primary, &replica);
    let ca_pem = std::fs::read(&ca).unwrap();
    let other_pem = std::fs::read(pki.join("other.crt")).unwrap();
    let rt = rt();
    let over_tls = |ca_pem: &[u8], server_name: &str| {
        let src = SnapshotSource {
            tls: Some(TlsTarget { ca_pem, server_name }),
            ..source(tls_port, REPL_PASSWORD)
        };
        rt.block_on(async {
            let mut snap = Snapshot::open(&src).await?;
            drain(&mut snap).await
        })
    };
    for name in ["localhost", "127.0.0.1"] {
        let (bytes, _) = over_tls(&ca_pem, name).unwrap();
        rdb::verify(&bytes).unwrap();
    }
    let err = over_tls(&ca_pem, "demo-redis-0.demo-redis-headless").unwrap_err();
    assert!(matches!(err, RdbError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("demo-redis-0.demo-redis-headless"), "{err}");
    let err = over_tls(&other_pem, "localhost").unwrap_err();
    assert!(matches!(err, RdbError::Tls { .. }), "{err}");
    let err = over_tls(b"not a PEM", "localhost").unwrap_err();
    assert!(matches!(err, RdbError::InvalidCa(_)), "{err}");
}

/// Snapshot the replica into `dir/snapshot.rdb`: the file and the snapshot's offset.
fn snapshot_to_file(replica: &RedisServer, dir: &Path) -> (PathBuf, u64) {
    let rt = rt();
    let path = dir.join("snapshot.rdb");
    let offset = rt.block_on(async {
        let mut snap = Snapshot::open(&source(replica.port, REPL_PASSWORD)).await.unwrap();
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        while let Some(chunk) = snap.next_chunk().await.unwrap() {
            file.write_all(&chunk).await.unwrap();
        }
        file.sync_all().await.unwrap();
        snap.offset()
    });
    (path, offset)
}

/// A redis-server with `appendonly yes` on `data_dir` (the stack's persistence).
fn serve(data_dir: &Path) -> RedisServer {
    RedisServer::start_with(None, &["--dir", data_dir.to_str().unwrap()])
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir).into_iter().map(|p| p.display().to_string()).collect();
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn a_seeded_data_directory_is_loaded_by_redis_and_its_aof_continues() {
    let (primary, replica) = pair(&[]);
    fill(&primary, &replica);
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = snapshot_to_file(&replica, tmp.path());
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    assert!(aof_seed::is_fresh(&data));

    let report = aof_seed::seed(&data, &file).unwrap();
    assert_eq!(report.aof_dir, data.join("appendonlydir"));
    assert_eq!(report.base_bytes, std::fs::metadata(&file).unwrap().len());
    assert_eq!(
        report.rdb_version,
        Some(10).filter(|_| std::fs::read(&file).unwrap().starts_with(b"REDIS0010"))
    );
    assert!(!aof_seed::is_fresh(&data));
    assert_eq!(
        std::fs::read_to_string(data.join("appendonlydir/appendonly.aof.manifest")).unwrap(),
        "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n"
    );
    assert_eq!(
        std::fs::read(data.join("appendonlydir/appendonly.aof.1.base.rdb")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    assert_eq!(std::fs::metadata(data.join("appendonlydir/appendonly.aof.1.incr.aof")).unwrap().len(), 0);
    assert_eq!(
        listing(&data),
        [
            "appendonlydir",
            "appendonlydir/appendonly.aof.1.base.rdb",
            "appendonlydir/appendonly.aof.1.incr.aof",
            "appendonlydir/appendonly.aof.manifest"
        ]
        .map(|n| data.join(n).display().to_string())
    );

    let mut restored = serve(&data);
    let log = std::fs::read_to_string(restored.log_path()).unwrap();
    assert!(log.contains("appendonly.aof.1.base.rdb"), "Redis did not load the base file:\n{log}");
    assert_eq!(info(&restored, "persistence", "aof_enabled").as_deref(), Some("1"));
    assert_eq!(restored.cmd::<usize>(&["DBSIZE"]).unwrap(), ALL_KEYS);
    assert_eq!(restored.cmd::<i64>(&["GET", "counter:value"]).unwrap(), COUNTER);
    assert_eq!(restored.cmd::<String>(&["GET", "key:7"]).unwrap(), "value-7");
    assert_eq!(
        restored.cmd::<String>(&["GET", "key:9990"]).unwrap(),
        format!("value-9990-{}", "x".repeat(100))
    );

    // The web service counts on; the AOF records it and a restart replays it.
    assert_eq!(restored.cmd::<i64>(&["INCR", "counter:value"]).unwrap(), COUNTER + 1);
    assert!(std::fs::metadata(data.join("appendonlydir/appendonly.aof.1.incr.aof")).unwrap().len() > 0);
    restored.restart_gracefully_with(&[]);
    assert_eq!(restored.cmd::<i64>(&["GET", "counter:value"]).unwrap(), COUNTER + 1);
    assert_eq!(restored.cmd::<usize>(&["DBSIZE"]).unwrap(), ALL_KEYS);
    assert_eq!(restored.cmd::<i64>(&["INCR", "counter:value"]).unwrap(), COUNTER + 2);
    // And after a SIGKILL (what a node failure does), the acknowledged increments stay.
    restored.restart();
    assert_eq!(restored.cmd::<i64>(&["GET", "counter:value"]).unwrap(), COUNTER + 2);
}

#[test]
fn seeding_refuses_a_directory_with_data_and_a_corrupt_file_writing_nothing() {
    let (primary, replica) = pair(&[]);
    fill(&primary, &replica);
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = snapshot_to_file(&replica, tmp.path());
    let good = std::fs::read(&file).unwrap();

    // Existing data of any kind.
    for existing in ["appendonlydir", "dump.rdb", "appendonly.aof"] {
        let data = tmp.path().join(format!("data-{existing}"));
        std::fs::create_dir(&data).unwrap();
        if existing == "appendonlydir" {
            std::fs::create_dir(data.join(existing)).unwrap();
        } else {
            std::fs::write(data.join(existing), b"old data").unwrap();
        }
        let before = listing(&data);
        assert!(!aof_seed::is_fresh(&data), "{existing}");
        let err = aof_seed::seed(&data, &file).unwrap_err();
        assert!(matches!(err, SeedError::NotFresh { .. }), "{existing}: {err}");
        assert!(err.to_string().contains(existing) && err.to_string().contains("refused"), "{err}");
        assert_eq!(listing(&data), before, "{existing}: something was written");
    }

    // A corrupt or truncated backup: nothing written, the directory stays fresh.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 3] ^= 0x04;
    for (what, bytes) in [
        ("a flipped byte", flipped),
        ("truncated", good[..good.len() - 100].to_vec()),
        ("not an RDB", b"<Error><Code>NoSuchKey</Code></Error>".to_vec()),
        ("empty", Vec::new()),
    ] {
        let bad = tmp.path().join("bad.rdb");
        std::fs::write(&bad, &bytes).unwrap();
        let err = aof_seed::seed(&data, &bad).unwrap_err();
        assert!(matches!(err, SeedError::Corrupt(_)), "{what}: {err}");
        assert!(err.to_string().starts_with("the backup is corrupt, nothing was restored"), "{err}");
        assert!(listing(&data).is_empty(), "{what}: {:?}", listing(&data));
        assert!(aof_seed::is_fresh(&data));
    }
    // A missing file: an I/O error naming it, nothing written.
    let err = aof_seed::seed(&data, &tmp.path().join("missing.rdb")).unwrap_err();
    assert!(matches!(err, SeedError::Io { .. }) && err.to_string().contains("missing.rdb"), "{err}");
    assert!(listing(&data).is_empty());
    // The good file still seeds the same directory.
    aof_seed::seed(&data, &file).unwrap();
}

/// While a client keeps incrementing on the primary (each increment acknowledged only
/// after `WAIT 1` counted the replica), a snapshot from the replica holds a value the
/// counter really held: at least the last one acknowledged before the snapshot began, at
/// most the last one written.
#[test]
fn a_snapshot_under_writes_holds_a_value_the_counter_had() {
    let (primary, replica) = pair(&[]);
    fill(&primary, &replica);
    let _: () = primary.cmd(&["SET", "counter:value", "0"]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicI64::new(0));
    let written = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, acked, written) = (stop.clone(), acked.clone(), written.clone());
        let mut c = primary.conn().unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let v: i64 = redis::cmd("INCR").arg("counter:value").query(&mut c).unwrap();
                written.store(v, Ordering::SeqCst);
                let n: i64 = redis::cmd("WAIT").arg(1).arg(1000).query(&mut c).unwrap();
                if n >= 1 {
                    acked.store(v, Ordering::SeqCst);
                }
            }
        })
    };
    wait_for("100 acknowledged increments", Duration::from_secs(10), || acked.load(Ordering::SeqCst) >= 100);
    let tmp = tempfile::tempdir().unwrap();
    let before = acked.load(Ordering::SeqCst);
    let (file, offset) = snapshot_to_file(&replica, tmp.path());
    let after_snapshot = written.load(Ordering::SeqCst);
    // Let the writer go on a little: later writes must not be in the snapshot.
    wait_for("more increments", Duration::from_secs(10), || {
        written.load(Ordering::SeqCst) > after_snapshot + 50
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let last = written.load(Ordering::SeqCst);

    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    aof_seed::seed(&data, &file).unwrap();
    let restored = serve(&data);
    let v: i64 = restored.cmd(&["GET", "counter:value"]).unwrap();
    eprintln!(
        "acked before the snapshot {before}, restored {v}, written by its end {after_snapshot}, last {last}"
    );
    assert!(
        before <= v && v <= after_snapshot,
        "restored {v}, acknowledged before {before}, written by the end {after_snapshot}"
    );
    assert!(offset <= info_u64(&primary, "replication", "master_repl_offset"));
    assert_eq!(restored.cmd::<usize>(&["DBSIZE"]).unwrap(), ALL_KEYS);
}
