//! The backup object store client (`counterstack::backup::store`) against a real
//! S3-compatible server: moto's server mode with authentication on
//! (tests/it/common/s3_server.rs), never a fake. Uploads are multipart with 5 MiB parts
//! and aborted on any failure; errors carry the reasons conditions and Events show.

use std::time::{Duration, Instant};

use bytes::Bytes;
use counterstack::backup::keys;
use counterstack::backup::store::{PART_SIZE, S3Target, Store};
use futures::stream;

use crate::common::payload::{data, ok_stream, reason, sha256, uneven_chunks};
use crate::common::s3_server::S3Server;

fn at(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_12_mib_snapshot_goes_up_in_3_parts_and_comes_back_identical() {
    let Some(s3) = S3Server::start().await else { return };
    let store = Store::new(&s3.target()).unwrap();
    store.check("backups").await.unwrap();

    let body = data(12 * 1024 * 1024 + 12_345, 7);
    let key =
        keys::key(&keys::folder("backups", "prod", "counter"), &keys::name_at(at("2026-12-03T16:22:00Z")));
    let n = store.upload(&key, ok_stream(uneven_chunks(&body))).await.unwrap();
    assert_eq!(n, body.len() as u64);
    assert!(s3.etag(&key).await.ends_with("-3\""), "3 parts of {PART_SIZE} bytes at most");
    assert!(s3.open_multipart_uploads().await.is_empty());

    let listed = store.list(&keys::folder("backups", "prod", "counter")).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, key);
    assert_eq!(listed[0].size, body.len() as u64);
    let age = jiff::Timestamp::now().duration_since(listed[0].last_modified);
    assert!(age.abs() < jiff::SignedDuration::from_secs(60), "last_modified {}", listed[0].last_modified);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.rdb");
    let got = store.download_to(&key, &file).await.unwrap();
    assert_eq!(got, body.len() as u64);
    assert_eq!(sha256(&std::fs::read(&file).unwrap()), sha256(&body));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["dump.rdb"], "no temporary file is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_empty_snapshots_go_up_in_one_request() {
    let Some(s3) = S3Server::start().await else { return };
    let store = Store::new(&s3.target()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (key, len) in [("small.rdb", 1000), ("exact.rdb", PART_SIZE - 1), ("empty.rdb", 0)] {
        let body = data(len, 3);
        assert_eq!(store.upload(key, ok_stream(uneven_chunks(&body))).await.unwrap(), len as u64);
        assert!(!s3.etag(key).await.contains('-'), "{key}: a single PUT, not multipart");
        let file = dir.path().join(key);
        assert_eq!(store.download_to(key, &file).await.unwrap(), len as u64);
        assert_eq!(sha256(&std::fs::read(&file).unwrap()), sha256(&body), "{key}");
    }
    // One byte more than a part: multipart with a 1-byte last part.
    let body = data(PART_SIZE + 1, 4);
    store.upload("plus-one.rdb", ok_stream(uneven_chunks(&body))).await.unwrap();
    assert!(s3.etag("plus-one.rdb").await.ends_with("-2\""));
    let file = dir.path().join("plus-one.rdb");
    store.download_to("plus-one.rdb", &file).await.unwrap();
    assert_eq!(sha256(&std::fs::read(&file).unwrap()), sha256(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_midway_leaves_no_object_and_no_open_upload() {
    let Some(s3) = S3Server::start().await else { return };
    let store = Store::new(&s3.target()).unwrap();

    // A good backup already under the key must survive a failed re-upload.
    let old = data(2000, 9);
    store.upload("prod/app/kept.rdb", ok_stream(vec![Bytes::from(old.clone())])).await.unwrap();

    for (key, good_bytes) in [
        ("prod/app/failed-after-2-parts.rdb", 11 * 1024 * 1024),
        ("prod/app/failed-in-first-part.rdb", 1024 * 1024),
        ("prod/app/kept.rdb", 6 * 1024 * 1024),
    ] {
        let mut items: Vec<Result<Bytes, std::io::Error>> =
            uneven_chunks(&data(good_bytes, 5)).into_iter().map(Ok).collect();
        items.push(Err(std::io::Error::other("replica closed the replication stream")));
        items.push(Ok(Bytes::from_static(b"never read")));
        let (why, msg) = reason(store.upload(key, stream::iter(items)).await);
        assert_eq!(why, "SourceFailed", "{msg}");
        assert!(msg.contains("replica closed the replication stream"), "{msg}");
        assert!(msg.contains(&format!("after {good_bytes} bytes")), "{msg}");
    }
    let keys: Vec<String> = store.list("prod").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["prod/app/kept.rdb"], "no partial object appeared");
    assert_eq!(s3.open_multipart_uploads().await, Vec::<String>::new(), "every multipart upload was aborted");
    let dir = tempfile::tempdir().unwrap();
    store.download_to("prod/app/kept.rdb", &dir.path().join("kept")).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("kept")).unwrap(), old, "the old backup is intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_is_aborted() {
    let Some(s3) = S3Server::start().await else { return };
    let store = Store::new(&s3.target()).unwrap();
    // 6 MiB (one part on the wire), then a stream that never ends: the caller gives up.
    let first = stream::iter(uneven_chunks(&data(6 * 1024 * 1024, 2)).into_iter().map(Ok));
    let chunks = futures::StreamExt::chain(first, stream::pending::<Result<Bytes, std::io::Error>>());
    let task = tokio::spawn(async move { store.upload("cancelled.rdb", chunks).await });
    wait_for_open_uploads(&s3, &["cancelled.rdb"]).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for_open_uploads(&s3, &[]).await;
    let store = Store::new(&s3.target()).unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}

async fn wait_for_open_uploads(s3: &S3Server, want: &[&str]) {
    let start = Instant::now();
    loop {
        let open = s3.open_multipart_uploads().await;
        if open == want {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "open multipart uploads {open:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_is_sorted_scoped_and_delete_removes_one_object() {
    let Some(s3) = S3Server::start().await else { return };
    let store = Store::new(&s3.target()).unwrap();
    let times =
        ["2026-12-03T16:22:00Z", "2025-01-31T23:59:59Z", "2026-12-03T16:21:59Z", "2026-02-01T00:00:00Z"];
    for (i, t) in times.iter().enumerate() {
        let key = keys::key(&keys::folder("cs", "prod", "counter"), &keys::name_at(at(t)));
        store.upload(&key, ok_stream(vec![Bytes::from(vec![b'x'; i + 1])])).await.unwrap();
    }
    // Other stacks' backups and a foreign object in the same directory.
    for key in ["cs/prod/counter2/20261203T162200Z.rdb", "cs/dev/counter/20261203T162200Z.rdb"] {
        store.upload(key, ok_stream(vec![Bytes::from_static(b"other")])).await.unwrap();
    }
    store.upload("cs/prod/counter/notes.txt", ok_stream(vec![Bytes::from_static(b"hi")])).await.unwrap();

    let listed = store.list("/cs/prod/counter/").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "cs/prod/counter/20250131T235959Z.rdb",
            "cs/prod/counter/20260201T000000Z.rdb",
            "cs/prod/counter/20261203T162159Z.rdb",
            "cs/prod/counter/20261203T162200Z.rdb",
            "cs/prod/counter/notes.txt",
        ]
    );
    assert_eq!(listed[0].size, 2);
    let backups: Vec<jiff::Timestamp> = listed
        .iter()
        .filter_map(|o| keys::parse(&keys::folder("cs", "prod", "counter"), &o.key).map(|(_, t)| t))
        .collect();
    let mut want: Vec<jiff::Timestamp> = times.iter().map(|t| at(t)).collect();
    want.sort();
    assert_eq!(backups, want, "the foreign object is ignored");
    assert_eq!(store.list("").await.unwrap().len(), 7);

    store.delete("cs/prod/counter/20250131T235959Z.rdb").await.unwrap();
    store.delete("cs/prod/counter/does-not-exist.rdb").await.unwrap();
    let keys: Vec<String> = store.list("cs/prod/counter").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys.len(), 4);
    assert!(!keys.iter().any(|k| k.contains("20250131")), "{keys:?}");
    assert_eq!(store.list("cs").await.unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_access_denied_without_showing_the_secret() {
    let Some(s3) = S3Server::start().await else { return };
    let good = Store::new(&s3.target()).unwrap();
    good.upload("prod/a.rdb", ok_stream(vec![Bytes::from_static(b"data")])).await.unwrap();

    let wrong_secret = "WrongSecretKeyMaterial0123456789abcdefgh";
    let cases = [
        (
            S3Target { secret_access_key: wrong_secret.into(), ..s3.target() },
            "secret access key does not match",
        ),
        (
            S3Target { access_key_id: "AKIAUNKNOWNKEY000000".into(), ..s3.target() },
            "does not know this access key id",
        ),
    ];
    for (target, words) in cases {
        let store = Store::new(&target).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let results = [
            ("check", reason(store.check("prod").await)),
            ("list", reason(store.list("prod").await)),
            ("upload", reason(store.upload("prod/b.rdb", ok_stream(vec![Bytes::from_static(b"x")])).await)),
            ("download", reason(store.download_to("prod/a.rdb", &dir.path().join("a")).await)),
            ("delete", reason(store.delete("prod/a.rdb").await)),
        ];
        for (op, (why, msg)) in results {
            assert_eq!(why, "AccessDenied", "{op}: {msg}");
            assert!(!msg.contains(&s3.secret_access_key) && !msg.contains(wrong_secret), "{op}: {msg}");
            assert!(msg.contains(&target.access_key_id), "{op}: the message names the key id: {msg}");
            assert!(msg.contains(words), "{op}: {msg}");
        }
        assert!(!dir.path().join("a").exists());
    }
    assert_eq!(good.list("").await.unwrap().len(), 1, "nothing was written or deleted");

    let e = Store::new(&S3Target { secret_access_key: String::new(), ..s3.target() }).unwrap_err();
    assert_eq!(e.reason(), "AccessDenied", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_or_object_is_named() {
    let Some(s3) = S3Server::start().await else { return };
    let store = Store::new(&S3Target { bucket: "no-such-bucket".into(), ..s3.target() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results = [
        ("check", reason(store.check("").await)),
        ("list", reason(store.list("prod").await)),
        ("upload small", reason(store.upload("a.rdb", ok_stream(vec![Bytes::from_static(b"x")])).await)),
        (
            "upload multipart",
            reason(store.upload("a.rdb", ok_stream(uneven_chunks(&data(PART_SIZE + 9, 1)))).await),
        ),
        ("download", reason(store.download_to("a.rdb", &dir.path().join("a")).await)),
    ];
    for (op, (why, msg)) in results {
        assert_eq!(why, "BucketNotFound", "{op}: {msg}");
        assert!(msg.contains("no-such-bucket") && msg.contains(&s3.endpoint), "{op}: {msg}");
    }

    let store = Store::new(&s3.target()).unwrap();
    let (why, msg) = reason(store.download_to("prod/missing.rdb", &dir.path().join("m")).await);
    assert_eq!(why, "ObjectNotFound", "{msg}");
    assert!(msg.contains("prod/missing.rdb"), "{msg}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_endpoint_unreachable_quickly() {
    let port = crate::common::redis_server::free_port();
    let store = Store::new(&S3Target {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        bucket: "backups".into(),
        region: String::new(),
        force_path_style: true,
        access_key_id: "AKIAEXAMPLE".into(),
        secret_access_key: "secret-secret-secret".into(),
        ca_pem: None,
        allow_http: true,
    })
    .unwrap();
    let start = Instant::now();
    let (why, msg) = reason(store.check("").await);
    assert_eq!(why, "EndpointUnreachable", "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("refused"), "{msg}");
    let (why, msg) = reason(store.upload("a.rdb", ok_stream(vec![Bytes::from_static(b"x")])).await);
    assert_eq!(why, "EndpointUnreachable", "{msg}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

/// A listener whose accept queue is full drops new SYNs, as a firewall that black-holes
/// the endpoint does: the connect timeout and the few retries bound the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_endpoint_fails_in_bounded_time() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(c);
        }
    }
    let store = Store::new(&S3Target {
        endpoint: Some(format!("http://{addr}")),
        bucket: "backups".into(),
        region: String::new(),
        force_path_style: true,
        access_key_id: "AKIAEXAMPLE".into(),
        secret_access_key: "secret-secret-secret".into(),
        ca_pem: None,
        allow_http: true,
    })
    .unwrap();
    let start = Instant::now();
    let (why, msg) = reason(store.check("").await);
    let took = start.elapsed();
    assert_eq!(why, "EndpointUnreachable", "{msg}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {msg}");
    eprintln!("black-holed endpoint failed after {took:?}: {msg}");
    drop((listener, fillers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca() {
    let Some(s3) = S3Server::start_tls().await else { return };
    let store = Store::new(&s3.target()).unwrap();
    store.check("").await.unwrap();
    let body = data(PART_SIZE + 100, 11);
    store.upload("tls/a.rdb", ok_stream(uneven_chunks(&body))).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    store.download_to("tls/a.rdb", &dir.path().join("a")).await.unwrap();
    assert_eq!(sha256(&std::fs::read(dir.path().join("a")).unwrap()), sha256(&body));

    // Without the CA the server's certificate is not trusted.
    let store = Store::new(&S3Target { ca_pem: None, ..s3.target() }).unwrap();
    let (why, msg) = reason(store.check("").await);
    assert_eq!(why, "EndpointUnreachable", "{msg}");
    assert!(msg.contains("TLS"), "{msg}");
    // Plain HTTP to the HTTPS port is refused by the settings, not sent.
    let e = Store::new(&S3Target { endpoint: Some(s3.endpoint.replace("https", "http")), ..s3.target() })
        .unwrap_err();
    assert_eq!(e.reason(), "InvalidConfig", "{e}");
}
