//! Backups and restore on a real node (issue 20), against the S3-compatible server
//! `scripts/e2e-node.sh` runs on the host (moto; E2E_S3_* say where): a backup taken
//! under load pauses no write and loses none; a new CounterApp restored from a backup
//! reads exactly the value it stands for and counts on; retention keeps `keepLast`;
//! wrong credentials give an Event and a condition while the stack serves on; a corrupt
//! object is refused with a clear message and no Redis pod serves.
//!
//! Then the same stack backs up to a PersistentVolumeClaim (`spec.backup.volume`, a Job
//! per backup): a missing claim and a full one (a 1 MiB tmpfs on this machine, where the
//! node runs its pods) fail with their cause and store nothing; retention keeps one; a new
//! stack restored from the claim reads the value the backup stands for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use counterstack::api::CounterApp;
use counterstack::backup::store::{S3Target, Store};
use counterstack::names;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::faults::Faults;
use crate::harness::{
    Ctx, create_bound_hostpath_pv, create_static_class, eventually, fill_dir, mount_tmpfs, proxy, timeout,
    wait_ready_or_skip,
};
use crate::stack::{self, Stack, WEB_PORT};

const CREDENTIALS: &str = "backup-s3";

/// Where the test's object store is (E2E_S3_ENDPOINT as pods reach it, ..._HOST_ENDPOINT
/// as this process does, E2E_S3_BUCKET, E2E_S3_ACCESS_KEY_ID, E2E_S3_SECRET_ACCESS_KEY).
struct S3 {
    endpoint: String,
    host_endpoint: String,
    bucket: String,
    key_id: String,
    secret: String,
}

impl S3 {
    fn from_env() -> Option<S3> {
        let v = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        let endpoint = v("E2E_S3_ENDPOINT")?;
        Some(S3 {
            host_endpoint: v("E2E_S3_HOST_ENDPOINT").unwrap_or_else(|| endpoint.clone()),
            endpoint,
            bucket: v("E2E_S3_BUCKET")?,
            key_id: v("E2E_S3_ACCESS_KEY_ID")?,
            secret: v("E2E_S3_SECRET_ACCESS_KEY")?,
        })
    }

    fn destination(&self, prefix: &str) -> serde_json::Value {
        json!({
            "endpoint": self.endpoint, "bucket": self.bucket, "prefix": prefix,
            "credentials": {"secretName": CREDENTIALS},
        })
    }

    fn store(&self) -> Store {
        Store::new(&S3Target {
            endpoint: Some(self.host_endpoint.clone()),
            bucket: self.bucket.clone(),
            region: "us-east-1".into(),
            force_path_style: true,
            access_key_id: self.key_id.clone(),
            secret_access_key: self.secret.clone(),
            ca_pem: None,
            allow_http: true,
        })
        .expect("an object store client")
    }
}

async fn put_credentials(ctx: &Ctx, key_id: &str, secret: &str) {
    let s = Secret {
        metadata: ObjectMeta { name: Some(CREDENTIALS.into()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".to_string(), ByteString(key_id.as_bytes().to_vec())),
            ("AWS_SECRET_ACCESS_KEY".to_string(), ByteString(secret.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    };
    let pp = PatchParams::apply("e2e").force();
    ctx.api::<Secret>().patch(CREDENTIALS, &pp, &Patch::Apply(&s)).await.unwrap();
}

/// Request a backup and wait for its answer; (name, value) of the new last successful
/// one, or the failure's reason.
async fn backup(ctx: &Ctx, app: &str, token: &str) -> Result<counterstack::api::BackupRecord, String> {
    let patch = json!({"metadata": {"annotations": {"counterstack.io/backup": token}}});
    ctx.api::<CounterApp>().patch(app, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let status = eventually(&format!("backup {token} answered"), timeout(), || async {
        let cr = ctx.api::<CounterApp>().get(app).await.map_err(|e| e.to_string())?;
        let b = cr.status.and_then(|s| s.backup).unwrap_or_default();
        if b.request == token { Ok(b) } else { Err(format!("answered {:?}", b.request)) }
    })
    .await;
    if counterstack::backup::schedule::failing(Some(&status)) {
        let f = status.last_failed.unwrap_or_default();
        return Err(format!("{}: {}", f.reason, f.message));
    }
    Ok(status.last_successful.expect("a success has a record"))
}

async fn counter(ctx: &Ctx, app: &str, method: &str, path: &str) -> i64 {
    eventually(&format!("{method} {path} on {app}"), timeout(), || async {
        crate::harness::counter_value(&proxy(ctx, method, &names::web(app), WEB_PORT, path).await?)
    })
    .await
}

/// Writers of the load: at most this many increments can be applied and not yet
/// acknowledged when the backup's answer arrives.
fn load_clients() -> i64 {
    crate::load::clients() as i64
}

/// The RDB format version this machine's redis-server loads at most (Debian 12's 7.0).
const LOCAL_RDB_VERSION: u16 = 10;

/// `counter:value` in a backup object: downloaded, seeded into a fresh directory and
/// loaded by a local redis-server (Debian's, as the tests use everywhere). None when the
/// backup's RDB format is newer than that server reads (Valkey 8 and Redis 8 write 11
/// and 12): then only the bounds of the load check the value.
async fn value_in(store: &Store, key: &str) -> Option<i64> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.rdb");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    store.download_to(key, &file).await.unwrap();
    let report = counterstack::backup::aof_seed::seed(&data, &file).unwrap();
    if report.rdb_version.is_none_or(|v| v > LOCAL_RDB_VERSION) {
        eprintln!(
            "e2e: {key}: RDB version {:?}, newer than the local redis-server reads",
            report.rdb_version
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes", "--save", ""])
        .arg("--dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (Debian's redis-server package)");
    let value = eventually("the backup loaded by a local redis-server", Duration::from_secs(20), || async {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "GET", "counter:value"])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        text.parse::<i64>().map_err(|_| format!("GET counter:value: {text:?}"))
    })
    .await;
    let _ = server.kill();
    let _ = server.wait();
    Some(value)
}

fn with_backup(mut spec: serde_json::Value, dest: serde_json::Value, keep: i32) -> serde_json::Value {
    spec["backup"] = json!({"s3": dest, "retention": {"keepLast": keep}});
    spec
}

pub async fn backup_under_load_and_restore_into_a_new_stack(ctx: &Ctx) {
    let Some(s3) = S3::from_env() else {
        eprintln!(
            "e2e: SKIP backups: no object store (E2E_S3_ENDPOINT and friends; scripts/e2e-node.sh starts one)"
        );
        return;
    };
    put_credentials(ctx, &s3.key_id, &s3.secret).await;
    let prefix = ctx.ns.clone();
    let spec = with_backup(stack::spec(), s3.destination(&prefix), 2);
    let Some(stack) = Stack::deploy(ctx, "src", spec, "backups").await else { return };

    // 1. Under load: no write pauses 100 ms or more, none is lost.
    let load = stack.start_load();
    let began = Instant::now();
    stack.wait_writes(&load, began, 5000).await;
    let t0 = Instant::now();
    let first = backup(ctx, "src", "under-load").await.unwrap_or_else(|e| panic!("backup under load: {e}"));
    let t1 = Instant::now();
    stack.wait_writes(&load, t1, 500).await;
    let report = load.stop().await;
    let final_value = stack.counter().await;
    let lost = stack.lost(&report, final_value);
    let pause = report.longest_gap(t0, t1);
    let before = report.longest_gap(t0 - (t1 - t0), t0);
    eprintln!(
        "e2e: backup under load: {} bytes from {} in {:?}s (request to answer {:?}); {} acknowledged, longest write pause {:?} (the same span before it: {:?}), {} lost",
        first.size_bytes,
        first.source_pod,
        first.duration_seconds,
        t1 - t0,
        report.acks.len(),
        pause,
        before,
        lost
    );
    assert_eq!(lost, 0, "acknowledged increments lost");
    assert!(pause < Duration::from_millis(100), "a write paused {pause:?} during the backup");
    assert_ne!(first.source_pod, stack.primary().await.unwrap().pod, "the snapshot comes from a replica");

    // 2. A new CounterApp from the backup taken under load reads exactly the value that
    //    backup stands for (read from the object with a local redis-server where it can
    //    load the format), within what was acknowledged around it, and counts on.
    let in_object = value_in(&s3.store(), &first.key).await;
    let acked_before = report.acks.iter().filter(|a| a.at < t0).map(|a| a.value).max().unwrap_or(0);
    let acked_by_answer = report.acks.iter().filter(|a| a.at <= t1).map(|a| a.value).max().unwrap_or(0);
    let mut restored = stack::spec();
    restored["bootstrap"] =
        json!({"fromBackup": {"s3": s3.destination(&prefix), "counterApp": "src", "backup": first.name}});
    ctx.apply_app("copy", restored).await;
    assert!(wait_ready_or_skip(ctx, "copy", "restore").await, "the restored stack gets Ready");
    let restored_value = counter(ctx, "copy", "GET", "/api/counter").await;
    eprintln!(
        "e2e: the stack restored from the backup under load reads {restored_value} (in the object: {in_object:?}; acknowledged before the request: {acked_before}, by its answer: {acked_by_answer})"
    );
    if let Some(v) = in_object {
        assert_eq!(restored_value, v, "the restored stack reads the value in the backup");
    }
    assert!(restored_value >= acked_before, "every increment acknowledged before the backup is in it");
    assert!(restored_value <= acked_by_answer + load_clients(), "nothing from after the backup");
    assert_eq!(counter(ctx, "copy", "POST", "/api/counter/increment").await, restored_value + 1, "counts on");
    let cr = ctx.api::<CounterApp>().get("copy").await.unwrap();
    let boot = cr.status.unwrap().bootstrap.unwrap();
    assert_eq!(boot.phase, "Restored", "{boot:?}");
    assert!(boot.backup.ends_with(&format!("{}.rdb", first.name)), "{boot:?}");

    // 3. At rest: the backup stands for exactly the value read before it.
    let value = stack.counter().await;
    let second = backup(ctx, "src", "at-rest").await.unwrap_or_else(|e| panic!("backup at rest: {e}"));
    // A third one at once, through the kubectl plugin as users take one (the operator
    // starts it in a later second: names are start times); retention keeps two.
    let run = crate::plugin::kubectl_counterstack(ctx, &["backup", "src", "--wait", "--timeout", "3m"]).await;
    assert!(run.ok, "kubectl counterstack backup --wait: {}{}", run.stdout, run.stderr);
    let cr = ctx.api::<CounterApp>().get("src").await.unwrap();
    let third = cr.status.and_then(|s| s.backup).and_then(|b| b.last_successful).expect("the third backup");
    assert!(run.stdout.contains(&third.name), "the plugin names the backup it waited for: {}", run.stdout);
    assert_ne!(third.name, second.name, "a backup right after another gets a later name");
    let cr = ctx.api::<CounterApp>().get("src").await.unwrap();
    let listed: Vec<String> =
        cr.status.unwrap().backup.unwrap().backups.iter().map(|b| b.name.clone()).collect();
    assert_eq!(listed, vec![third.name.clone(), second.name.clone()], "retention keeps the newest two");
    let run = crate::plugin::kubectl_counterstack(ctx, &["backups", "src"]).await;
    assert!(
        run.ok && run.stdout.contains(&third.name) && run.stdout.contains(&second.name),
        "backups lists both"
    );
    assert!(!run.stdout.contains(&first.name), "the deleted one is not listed");
    let in_store = s3.store().list(&format!("{prefix}/{}/src/", ctx.ns)).await.unwrap();
    assert_eq!(in_store.len(), 2, "the store holds what status lists: {in_store:?}");

    if let Some(v) = value_in(&s3.store(), &second.key).await {
        assert_eq!(v, value, "the at-rest backup holds the value read before it");
    }

    // 4. Wrong credentials: an Event and the condition; the stack serves on.
    put_credentials(ctx, &s3.key_id, "wrong-secret-key-000000").await;
    let failed = backup(ctx, "src", "wrong-key").await.expect_err("a backup with a wrong key fails");
    assert!(failed.starts_with("AccessDenied"), "{failed}");
    let cr = ctx.api::<CounterApp>().get("src").await.unwrap();
    let cond =
        cr.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "LastBackupSucceeded").cloned();
    assert_eq!(
        cond.as_ref().map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("False", "AccessDenied"))
    );
    assert_eq!(crate::harness::ready_status(&cr).as_deref(), Some("True"), "the stack stays Ready");
    eventually("a BackupFailed Event", timeout(), || async {
        let evs = ctx.api::<Event>().list(&ListParams::default()).await.map_err(|e| e.to_string())?;
        evs.items
            .iter()
            .find(|e| e.reason.as_deref() == Some("BackupFailed"))
            .map(|_| ())
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    counter(ctx, "src", "POST", "/api/counter/increment").await;
    let left = s3.store().list(&format!("{prefix}/{}/src/", ctx.ns)).await.unwrap();
    assert_eq!(left.len(), 2, "a failed backup deletes nothing");

    // 5. A corrupt object: refused, said clearly, no Redis pod serves.
    put_credentials(ctx, &s3.key_id, &s3.secret).await;
    // A real backup with one byte flipped in the middle: only its checksum tells.
    let folder = format!("{prefix}/{}/broken", ctx.ns);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("third.rdb");
    s3.store().download_to(&third.key, &file).await.unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
    s3.store().upload(&format!("{folder}/20260101T000000Z.rdb"), chunks).await.unwrap();
    let mut bad = stack::spec();
    bad["bootstrap"] = json!({"fromBackup": {"s3": s3.destination(&prefix), "counterApp": "broken"}});
    ctx.apply_app("bad", bad).await;
    let message = eventually("the restore refused with a clear message", timeout(), || async {
        let cr = ctx.api::<CounterApp>().get("bad").await.map_err(|e| e.to_string())?;
        let s = cr.status.unwrap_or_default();
        let stalled = s.conditions.iter().find(|c| c.type_ == "Stalled" && c.reason == "RestoreFailed");
        match (s.bootstrap, stalled) {
            (Some(b), Some(c)) if b.phase == "Failed" => Ok(c.message.clone()),
            (b, _) => Err(format!("{b:?}")),
        }
    })
    .await;
    eprintln!("e2e: corrupt backup: {message}");
    assert!(message.contains("corrupt") || message.contains("checksum"), "{message}");
    let pod = ctx.api::<Pod>().get(&names::redis_pod("bad", 0)).await.unwrap();
    assert!(!stack::pod_ready(&pod), "no Redis pod serves a backup it could not verify");
    // 6. To a volume (the default image's run only: the same snapshot and seed code as
    //    above, through a Job).
    if crate::harness::redis_image().is_none() {
        to_a_volume(ctx).await;
    }
}

/// The claim of the volume tests: a 1 MiB tmpfs on this machine behind a static
/// PersistentVolume of a StorageClass of the test's own, pre-bound to it.
struct BackupVolume {
    client: kube::Client,
    class: String,
    pv: String,
    dir: tempfile::TempDir,
}

const CLAIM: &str = "backups";

impl BackupVolume {
    async fn create(ctx: &Ctx) -> Option<BackupVolume> {
        let dir = tempfile::Builder::new().prefix("counterstack-e2e-backups").tempdir().expect("a host dir");
        if let Err(why) = mount_tmpfs(dir.path(), "1m") {
            eprintln!("e2e: SKIP backups to a volume: cannot mount a tmpfs: {why}");
            return None;
        }
        let class = format!("{}-backups", ctx.ns);
        let v = BackupVolume { client: ctx.client.clone(), class: class.clone(), pv: class.clone(), dir };
        create_static_class(ctx, &class).await;
        create_bound_hostpath_pv(ctx, &v.pv, &class, v.dir.path(), CLAIM).await;
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": class,
                "resources": {"requests": {"storage": "1Mi"}},
            },
        }))
        .unwrap();
        ctx.api::<PersistentVolumeClaim>().create(&PostParams::default(), &pvc).await.unwrap();
        Some(v)
    }

    /// Every file under the mount (hidden ones included), relative to it.
    fn files(&self) -> Vec<String> {
        let mut out = vec![];
        let mut dirs = vec![self.dir.path().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    out.push(p.strip_prefix(self.dir.path()).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    fn fill(&self) {
        fill_dir(self.dir.path());
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("filler")).unwrap();
    }

    async fn delete(&self) {
        if let Err(e) =
            Api::<PersistentVolume>::all(self.client.clone()).delete(&self.pv, &DeleteParams::default()).await
        {
            eprintln!("e2e: delete PV {}: {e}", self.pv);
        }
        if let Err(e) =
            Api::<StorageClass>::all(self.client.clone()).delete(&self.class, &DeleteParams::default()).await
        {
            eprintln!("e2e: delete StorageClass {}: {e}", self.class);
        }
        // Lazily: the restored stack's pods may still hold it while the namespace goes.
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn volume_backup(claim: &str) -> serde_json::Value {
    let mut spec = stack::spec();
    spec["backup"] = json!({"volume": {"claimName": claim}, "retention": {"keepLast": 1}});
    spec
}

async fn to_a_volume(ctx: &Ctx) {
    if Faults::detect(&ctx.client).await != Faults::Local {
        eprintln!("e2e: SKIP backups to a volume: the test mounts a tmpfs where the node runs its pods");
        return;
    }
    let Some(volume) = BackupVolume::create(ctx).await else { return };
    let outcome =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(volume_steps(ctx, &volume))).await;
    ctx.api::<CounterApp>().delete("vcopy", &DeleteParams::default()).await.ok();
    volume.delete().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn volume_steps(ctx: &Ctx, volume: &BackupVolume) {
    // Room on the node for one more stack.
    for app in ["copy", "bad"] {
        ctx.api::<CounterApp>().delete(app, &DeleteParams::default()).await.ok();
    }
    // A claim that does not exist: said, no Job.
    ctx.apply_app("src", volume_backup("no-such-claim")).await;
    let failed = backup(ctx, "src", "vol-missing").await.expect_err("a backup to a missing claim fails");
    eprintln!("e2e: backup to a missing claim: {failed}");
    assert!(failed.starts_with("ClaimNotFound") && failed.contains("no-such-claim"), "{failed}");

    // A full claim: the Job says so; nothing half-written stays; the stack serves on.
    ctx.apply_app("src", volume_backup(CLAIM)).await;
    volume.fill();
    let failed = backup(ctx, "src", "vol-full").await.expect_err("a backup to a full claim fails");
    eprintln!("e2e: backup to a full claim: {failed}");
    assert!(failed.starts_with("VolumeFull"), "{failed}");
    assert_eq!(volume.files(), vec!["filler".to_string()], "a failed backup leaves nothing on the claim");
    let cr = ctx.api::<CounterApp>().get("src").await.unwrap();
    assert_eq!(crate::harness::ready_status(&cr).as_deref(), Some("True"), "the stack stays Ready");
    volume.free();

    // Two backups at rest; retention keeps the newest; the Jobs are gone.
    let value = counter(ctx, "src", "POST", "/api/counter/increment").await;
    let first = backup(ctx, "src", "vol-1").await.unwrap_or_else(|e| panic!("backup to the volume: {e}"));
    eprintln!(
        "e2e: backup to the volume: {} bytes from {} in {:?}s at value {value}",
        first.size_bytes, first.source_pod, first.duration_seconds
    );
    let folder = format!("counterstack/{}/src", ctx.ns);
    assert_eq!(volume.files(), vec![format!("{folder}/{}.rdb", first.name)]);
    let next = counter(ctx, "src", "POST", "/api/counter/increment").await;
    let second =
        backup(ctx, "src", "vol-2").await.unwrap_or_else(|e| panic!("second backup to the volume: {e}"));
    assert_eq!(volume.files(), vec![format!("{folder}/{}.rdb", second.name)], "retention keeps one");
    let cr = ctx.api::<CounterApp>().get("src").await.unwrap();
    let listed: Vec<String> =
        cr.status.unwrap().backup.unwrap().backups.iter().map(|b| b.name.clone()).collect();
    assert_eq!(listed, vec![second.name.clone()]);
    let jobs = ctx.api::<Job>().list(&ListParams::default()).await.unwrap();
    assert!(
        jobs.items.iter().all(|j| j.metadata.deletion_timestamp.is_some()),
        "finished backup Jobs are deleted: {:?}",
        jobs.items.iter().map(|j| j.metadata.name.clone()).collect::<Vec<_>>()
    );

    // A new stack from the claim reads the value of the backup and counts on.
    let mut restored = stack::spec();
    restored["bootstrap"] = json!({"fromBackup": {"volume": {"claimName": CLAIM}, "counterApp": "src"}});
    ctx.apply_app("vcopy", restored).await;
    assert!(
        wait_ready_or_skip(ctx, "vcopy", "restore from a volume").await,
        "the stack restored from the volume gets Ready"
    );
    let restored_value = counter(ctx, "vcopy", "GET", "/api/counter").await;
    eprintln!("e2e: the stack restored from the volume reads {restored_value} (backed up at {next})");
    assert_eq!(restored_value, next, "the restored stack reads the value in the backup");
    assert_eq!(counter(ctx, "vcopy", "POST", "/api/counter/increment").await, next + 1, "counts on");
}
