//! A full volume on the node, filled on purpose under load.
//!
//! Each Redis pod's volume is a small tmpfs the test mounts on this machine (the node's
//! containers run here: `Faults::Local`), given to the StatefulSet's claim by a static
//! PersistentVolume pre-bound to it (`claimRef`), of a StorageClass of the test's own.
//! The test fills the primary's with a file of its own, then deletes it: a full disk and
//! a user making room, as Redis sees them.

use std::time::{Duration, Instant};

use counterstack::labels;
use counterstack::names;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::faults::Faults;
use crate::harness::{
    Ctx, create_bound_hostpath_pv, create_static_class, eventually, fill_dir, mount_tmpfs, proxy, timeout,
};
use crate::stack::{Stack, pod_ready};

const APP: &str = "demo";
const ENOSPC: &str = "No space left on device";

/// Volumes of this test: the StorageClass, the PersistentVolumes and their tmpfs mounts
/// (`Volumes::delete` removes them).
struct Volumes {
    client: kube::Client,
    class: String,
    pvs: Vec<String>,
    host: tempfile::TempDir,
    mounts: Vec<std::path::PathBuf>,
}

impl Volumes {
    /// Mount one tmpfs per Redis pod, create the class and one PV per pod pre-bound to its
    /// claim; `None` (SKIP printed) when this machine cannot mount.
    async fn create(ctx: &Ctx, pods: u32) -> Option<Volumes> {
        let host = tempfile::Builder::new().prefix("counterstack-e2e-disk").tempdir().expect("a host dir");
        let class = format!("{}-disk", ctx.ns);
        let mut v =
            Volumes { client: ctx.client.clone(), class: class.clone(), pvs: vec![], host, mounts: vec![] };
        for k in 0..pods {
            let dir = v.host.path().join(format!("redis-{k}"));
            std::fs::create_dir(&dir).unwrap();
            if let Err(why) = mount_tmpfs(&dir, "8m") {
                eprintln!("e2e: SKIP the full volume: cannot mount a tmpfs: {why}");
                v.delete().await;
                return None;
            }
            v.mounts.push(dir);
        }
        create_static_class(ctx, &class).await;
        for (k, dir) in v.mounts.iter().enumerate() {
            let name = format!("{}-redis-{k}", ctx.ns);
            let claim = format!("data-{}-{k}", names::redis(APP));
            create_bound_hostpath_pv(ctx, &name, &class, dir, &claim).await;
            v.pvs.push(name);
        }
        Some(v)
    }

    /// Take every free byte of pod `k`'s volume with a file of the test's own.
    fn fill(&self, k: usize) {
        fill_dir(&self.mounts[k]);
    }

    fn free(&self, k: usize) {
        std::fs::remove_file(self.mounts[k].join("filler")).unwrap();
    }

    async fn delete(&self) {
        let pvs = Api::<PersistentVolume>::all(self.client.clone());
        for pv in &self.pvs {
            if let Err(e) = pvs.delete(pv, &DeleteParams::default()).await {
                eprintln!("e2e: delete PV {pv}: {e}");
            }
        }
        let classes = Api::<StorageClass>::all(self.client.clone());
        if let Err(e) = classes.delete(&self.class, &DeleteParams::default()).await {
            eprintln!("e2e: delete StorageClass {}: {e}", self.class);
        }
        // Lazily: the pods may still hold them while their namespace goes.
        for m in &self.mounts {
            let _ = std::process::Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn condition(stack_cr: &counterstack::api::CounterApp, type_: &str) -> Option<Condition> {
    stack_cr.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// Events of the CounterApp with `reason` (events.k8s.io), with their series counts.
async fn events(ctx: &Ctx, reason: &str) -> Vec<(String, i32)> {
    let list = ctx.api::<Event>().list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().is_some_and(|r| r.kind.as_deref() == Some("CounterApp")))
        .map(|e| (e.note.unwrap_or_default(), e.series.map_or(1, |s| s.count)))
        .collect()
}

pub async fn full_volume_under_load(ctx: &Ctx) {
    if Faults::detect(&ctx.client).await != Faults::Local {
        eprintln!("e2e: SKIP the full volume: the test mounts a tmpfs where the node runs its pods");
        return;
    }
    let Some(volumes) = Volumes::create(ctx, 3).await else { return };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run(ctx, &volumes))).await;
    // The namespace (and so the claims) goes after the test; the PVs are the test's own.
    ctx.api::<counterstack::api::CounterApp>().delete(APP, &DeleteParams::default()).await.ok();
    volumes.delete().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn run(ctx: &Ctx, volumes: &Volumes) {
    let mut spec = crate::stack::spec();
    spec["redis"]["storage"]["storageClassName"] = json!(volumes.class);
    let Some(stack) = Stack::deploy(ctx, APP, spec, "a full volume under load").await else { return };
    let before = stack.wait_healthy("a healthy stack before the volume fills").await;
    let ordinal = names::redis_ordinal(APP, &before.pod).expect("a Redis pod name") as usize;
    // Counted from here: a fresh stack may fail over once while its first primary's pod
    // turns Ready.
    let failovers = || async {
        let mut n = 0;
        for reason in ["FailedOver", "PrimaryUnavailable"] {
            n += events(ctx, reason).await.len();
        }
        n
    };
    let failovers_before = failovers().await;
    let load = stack.start_load();
    let clients = crate::load::clients();
    stack.wait_writes(&load, Instant::now(), 3 * clients).await;

    volumes.fill(ordinal);
    let filled = Instant::now();
    eprintln!("e2e: filled the volume of {}", before.pod);
    let web = names::web(APP);
    // A client that does not retry: kube's default one replays 503s (Retry-After).
    let once = Ctx { client: crate::harness::client_without_retries().await, ns: ctx.ns.clone() };
    let refused = eventually("a write refused with the cause", timeout(), || async {
        match proxy(&once, "POST", &web, 80, "/api/counter/increment").await {
            Err(e) if e.contains("HTTP 503") && e.contains("cannot persist to its volume") => Ok(e),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("e2e: after {:?}: {refused}", filled.elapsed());
    // The first refusals name the AOF write's ENOSPC; once an RDB snapshot failed too,
    // Redis names the snapshot instead (the condition keeps StorageFull).
    let (_, samples) = load.errors();
    assert!(
        refused.contains(ENOSPC) || samples.iter().any(|e| e.contains("HTTP 503") && e.contains(ENOSPC)),
        "no 503 named the full volume: {refused}; load errors {samples:?}"
    );
    let cr = eventually("Degraded=True StorageFull, Ready=False", timeout(), || async {
        let cr = stack.cr().await?;
        let degraded = condition(&cr, "Degraded").ok_or("no Degraded")?;
        let ready = condition(&cr, "Ready").ok_or("no Ready")?;
        if degraded.status == "True" && degraded.reason == "StorageFull" && ready.status == "False" {
            Ok(cr)
        } else {
            Err(format!(
                "Degraded {} {}, Ready {} {}",
                degraded.status, degraded.reason, ready.status, ready.reason
            ))
        }
    })
    .await;
    let degraded = condition(&cr, "Degraded").unwrap();
    eprintln!("e2e: after {:?}: Degraded {}: {}", filled.elapsed(), degraded.reason, degraded.message);
    assert!(
        degraded.message.contains(&format!("{} (the primary) refuses writes", before.pod)),
        "{degraded:?}"
    );
    let warned = eventually("a StorageFull Event", timeout(), || async {
        let e = events(ctx, "StorageFull").await;
        if e.is_empty() { Err("none yet".to_string()) } else { Ok(e) }
    })
    .await;
    eprintln!("e2e: StorageFull Event after {:?}: {warned:?}", filled.elapsed());

    // No failover, however long it lasts: watch well past failover.afterSeconds and two
    // readiness periods. The primary stays the primary, its pod Ready (reads go on).
    let hold = Duration::from_secs(stack.after_seconds + 10);
    let until = Instant::now() + hold;
    let pods = ctx.api::<Pod>();
    while Instant::now() < until {
        assert_eq!(stack.primary().await.unwrap(), before, "failed over for a full volume");
        let p = pods.get(&before.pod).await.unwrap();
        assert!(pod_ready(&p), "{} turned unready while it refuses writes", before.pod);
        assert_eq!(p.labels().get(labels::ROLE).map(String::as_str), Some(labels::ROLE_PRIMARY));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let read = proxy(ctx, "GET", &web, 80, "/api/counter").await;
    assert!(read.is_ok(), "reads must go on while writes are refused: {read:?}");

    volumes.free(ordinal);
    let freed = Instant::now();
    eprintln!("e2e: freed the volume");
    stack.wait_writes(&load, freed, 3 * clients).await;
    let resumed = freed.elapsed();
    eventually("Degraded no longer StorageFull and a StorageRecovered Event", timeout(), || async {
        let cr = stack.cr().await?;
        let degraded = condition(&cr, "Degraded").ok_or("no Degraded")?;
        let recovered = events(ctx, "StorageRecovered").await;
        if degraded.reason != "StorageFull" && !recovered.is_empty() {
            Ok(())
        } else {
            Err(format!("Degraded {} {}, StorageRecovered {recovered:?}", degraded.status, degraded.reason))
        }
    })
    .await;
    let after = stack.wait_healthy("a healthy stack after the volume has room again").await;
    assert_eq!(after, before, "the primary changed");
    let report = load.stop().await;
    let final_value = stack.counter().await;
    let lost = stack.lost(&report, final_value);
    eprintln!(
        "e2e: full volume: acked {}, errors {}, writes resumed {} ms after the space returned, lost {lost}; errors seen: {:?}",
        report.acks.len(),
        report.errors,
        resumed.as_millis(),
        report.error_samples
    );
    assert_eq!(lost, 0, "acknowledged increments were lost");
    assert!(report.backwards.is_empty(), "the counter went backwards for a reader: {:?}", report.backwards);
    assert_eq!(events(ctx, "StorageFull").await.iter().map(|e| e.1).sum::<i32>(), 1, "one Event per episode");
    assert_eq!(failovers().await, failovers_before, "FailedOver or PrimaryUnavailable for a full volume");
}
