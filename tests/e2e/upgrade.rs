//! An operator upgrade on a real node (issue 21): stacks Ready, then the Helm release is
//! upgraded with another `operator.defaultWebImage` (what a new version with a new web
//! image does). Every stack's web pods must roll, never more than
//! `operator.maxConcurrentRollouts` stacks at a time, the Redis pods not at all (their
//! template did not change), and the stacks under load lose nothing.
//!
//! Stacks: E2E_UPGRADE_STACKS (default 8; 20 by hand), of which two run the suite's load
//! stack (two web pods, a primary and two replicas, syncReplicas 1) under load and the
//! rest are small (one web pod, a primary alone). K: E2E_UPGRADE_MAX (default 2, the
//! chart's default).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use counterstack::api::CounterApp;
use counterstack::labels::{self, Component};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

use crate::harness::{Ctx, eventually, ready_status, timeout, wait_ready_or_skip};
use crate::in_cluster;
use crate::stack::Stack;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The other tag of the web image: `build-images.sh` imports the binary under test as
/// both `ghcr.io/counterstack/counterstack:<version>` and `docker.io/library/counterstack:dev`,
/// so the new image runs the same code and only the reference (the pod template) changes.
fn other_web_image(current: &str) -> String {
    std::env::var("E2E_UPGRADE_WEB_IMAGE").unwrap_or_else(|_| {
        if current == "docker.io/library/counterstack:dev" {
            "ghcr.io/counterstack/counterstack:0.1.0".to_string()
        } else {
            "docker.io/library/counterstack:dev".to_string()
        }
    })
}

fn web_image(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers.iter().find(|c| c.name == "web")?.image.clone()
}

/// Every pod of the Deployment runs its latest template and no old one is left: the
/// operator's own test before it gives a rollout slot back (`Workload::rolled_out`).
fn rolled_out(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = d.status.as_ref() else { return false };
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= want
        && st.replicas.unwrap_or(0) == want
}

/// One look at every web Deployment of the namespace: (waiting, rolling, done) counts for
/// the `new` image, and the names of the rolling ones.
fn census(deployments: &[Deployment], new: &str) -> (usize, Vec<String>, usize) {
    let (mut waiting, mut rolling, mut done) = (0, Vec::new(), 0);
    for d in deployments {
        match (web_image(d).as_deref() == Some(new), rolled_out(d)) {
            (false, _) => waiting += 1,
            (true, false) => rolling.push(d.name_any()),
            (true, true) => done += 1,
        }
    }
    (waiting, rolling, done)
}

/// What the watcher saw while the upgrade rolled.
#[derive(Debug, Default)]
struct Census {
    looks: usize,
    most_rolling: usize,
    /// The looks at which most stacks rolled (time since the upgrade, names).
    peak: Vec<(Duration, Vec<String>)>,
    /// When each stack was first seen rolling, and first seen done.
    started: BTreeMap<String, Duration>,
    finished: BTreeMap<String, Duration>,
}

async fn web_deployments(ctx: &Ctx) -> Result<Vec<Deployment>, String> {
    let sel = format!("{}={}", labels::COMPONENT, Component::Web.as_str());
    ctx.api::<Deployment>()
        .list(&ListParams::default().labels(&sel))
        .await
        .map(|l| l.items)
        .map_err(|e| e.to_string())
}

async fn redis_pod_uids(ctx: &Ctx) -> BTreeMap<String, String> {
    let sel = format!("{}={}", labels::COMPONENT, Component::Redis.as_str());
    let pods = ctx.api::<Pod>().list(&ListParams::default().labels(&sel)).await.unwrap();
    pods.items.iter().map(|p| (p.name_any(), p.uid().unwrap_or_default())).collect()
}

pub async fn an_operator_upgrade_rolls_a_few_stacks_at_a_time(ctx: Ctx) {
    if crate::harness::operator_mode() != crate::harness::OperatorMode::Helm {
        eprintln!("e2e: SKIP operator upgrade: it upgrades the Helm release (E2E_OPERATOR=helm)");
        return;
    }
    let n = env_usize("E2E_UPGRADE_STACKS", 8).max(3);
    let k = env_usize("E2E_UPGRADE_MAX", 2).max(1);
    let measured = ["load-0", "load-1"];
    let small: Vec<String> = (0..n - measured.len()).map(|i| format!("small-{i:02}")).collect();
    let small_spec = crate::harness::with_redis_image(json!({
        "web": {"replicas": 1},
        "redis": {"replicas": 0, "storage": {"size": "64Mi"}}
    }));
    for app in &small {
        ctx.apply_app(app, small_spec.clone()).await;
    }
    let mut stacks = Vec::new();
    for app in measured {
        match Stack::deploy(&ctx, app, crate::stack::spec(), "operator upgrade").await {
            Some(s) => stacks.push(s),
            None => return,
        }
    }
    for app in &small {
        if !wait_ready_or_skip(&ctx, app, "operator upgrade").await {
            return;
        }
    }
    let before = web_deployments(&ctx).await.unwrap();
    assert_eq!(before.len(), n, "one web Deployment per stack");
    let old = web_image(&before[0]).unwrap();
    let new = other_web_image(&old);
    let redis_before = redis_pod_uids(&ctx).await;
    eprintln!("e2e: {n} stacks Ready on {old}; upgrading the operator to defaultWebImage {new}, K = {k}");

    in_cluster::restoring_release(&ctx.client.clone(), async {
        let loads: Vec<_> = stacks.iter().map(|s| s.start_load()).collect();
        let t0 = Instant::now();
        for (s, load) in stacks.iter().zip(&loads) {
            s.wait_writes(load, t0, 20).await;
        }

        // Watch every web Deployment from before the upgrade until all rolled.
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (ctx, new, stop) = (ctx.clone(), new.clone(), stop.clone());
            tokio::spawn(async move {
                let mut c = Census::default();
                let start = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(ds) = web_deployments(&ctx).await {
                        let (_, rolling, _) = census(&ds, &new);
                        let at = start.elapsed();
                        c.looks += 1;
                        if rolling.len() > c.most_rolling {
                            c.most_rolling = rolling.len();
                            c.peak.clear();
                        }
                        if rolling.len() == c.most_rolling && c.peak.len() < 5 {
                            c.peak.push((at, rolling.clone()));
                        }
                        for d in &ds {
                            let name = d.name_any();
                            if web_image(d).as_deref() == Some(new.as_str()) {
                                c.started.entry(name.clone()).or_insert(at);
                                if rolled_out(d) {
                                    c.finished.entry(name).or_insert(at);
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                c
            })
        };

        let upgrade_at = Instant::now();
        let leader =
            in_cluster::upgrade(&ctx.client, &json!({"defaultWebImage": new, "maxConcurrentRollouts": k}))
                .await;
        eprintln!("e2e: operator upgraded in {:?}, leader {leader}", upgrade_at.elapsed());
        let limit = timeout() + Duration::from_secs(60) * (n as u32).div_ceil(k as u32);
        eventually("every stack rolled to the new web image and Ready", limit, || async {
            let ds = web_deployments(&ctx).await?;
            let (waiting, rolling, done) = census(&ds, &new);
            let apps =
                ctx.api::<CounterApp>().list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let ready = apps.items.iter().filter(|a| ready_status(a).as_deref() == Some("True")).count();
            if done == n && ready == n {
                Ok(())
            } else {
                Err(format!(
                    "{waiting} waiting, {} rolling {rolling:?}, {done} done, {ready}/{n} Ready",
                    rolling.len()
                ))
            }
        })
        .await;
        let rolled_in = upgrade_at.elapsed();
        stop.store(true, Ordering::SeqCst);
        let census = watcher.await.unwrap();

        let mut lost = 0;
        for (s, load) in stacks.iter().zip(loads) {
            let report = load.stop().await;
            let value = s.counter().await;
            let l = s.lost(&report, value);
            eprintln!(
                "e2e: {}: {} acknowledged, {} errors {:?}, longest write gap during the upgrade {:?}, \
                 {} reads went backwards, final {value}, lost {l}",
                s.app,
                report.acks.len(),
                report.errors,
                report.error_samples.iter().take(3).collect::<Vec<_>>(),
                report.longest_gap(upgrade_at, upgrade_at + rolled_in),
                report.backwards.len(),
            );
            assert!(report.backwards.is_empty(), "{}: reads went backwards: {:?}", s.app, report.backwards);
            lost += l;
        }
        let order: Vec<String> = {
            let mut v: Vec<(&Duration, &String)> = census.started.iter().map(|(k, v)| (v, k)).collect();
            v.sort();
            v.iter().map(|(t, name)| format!("{name}@{:.1}s", t.as_secs_f64())).collect()
        };
        eprintln!(
            "e2e: {n} stacks rolled in {rolled_in:?} after the upgrade; most rolling at once {} (K = {k}) \
             in {} looks; peak {:?}; rollouts began {order:?}",
            census.most_rolling, census.looks, census.peak
        );
        assert_eq!(lost, 0, "acknowledged increments lost during the upgrade");
        assert!(census.most_rolling >= 1, "the watcher never saw a stack rolling: {census:?}");
        assert!(
            census.most_rolling <= k,
            "{} stacks rolled at once, more than K = {k}: {:?}",
            census.most_rolling,
            census.peak
        );
        assert_eq!(census.started.len(), n, "every stack rolled: {census:?}");
        // The web image is in no Redis pod's template: none restarted.
        assert_eq!(redis_pod_uids(&ctx).await, redis_before, "Redis pods restarted for a web image change");

        // The stacks go before the release is restored: its old image would roll them back.
        let dp = DeleteParams::default();
        for app in small.iter().map(String::as_str).chain(measured) {
            let _ = ctx.api::<CounterApp>().delete(app, &dp).await;
        }
        eventually("every CounterApp gone", timeout(), || async {
            let left =
                ctx.api::<CounterApp>().list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            if left.items.is_empty() { Ok(()) } else { Err(format!("{} left", left.items.len())) }
        })
        .await;
    })
    .await;
}
