//! `spec.redis.config` on a real control plane: a change of a live setting reaches
//! `CONFIG GET` on every Redis pod through the operator's CONFIG SET, with no pod
//! restarted (same pod uids, same restart counts, same StatefulSet update revision).

use std::collections::BTreeMap;
use std::time::Duration;

use counterstack::labels;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;

use crate::faults::{Faults, connect_local, redis_cli};
use crate::harness::{Ctx, eventually_every, timeout, with_namespace};
use crate::stack::{self, Stack};

const APP: &str = "demo";

/// `CONFIG GET key` on the pod: over its IP on the local control plane (pod IPs are
/// reachable from this machine), through exec and redis-cli elsewhere.
async fn config_get(ctx: &Ctx, faults: Faults, pod: &str, key: &str) -> Result<String, String> {
    match faults {
        Faults::Local => {
            let mut c = connect_local(ctx, pod).await?;
            let reply: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(key)
                .query_async(&mut c)
                .await
                .map_err(|e| format!("CONFIG GET on {pod}: {e}"))?;
            reply.get(1).cloned().ok_or(format!("CONFIG GET {key} on {pod}: {reply:?}"))
        }
        Faults::Exec => {
            let out = redis_cli(ctx, pod, &format!("CONFIG GET {key}")).await?;
            out.lines()
                .nth(1)
                .map(|l| l.trim().to_string())
                .ok_or(format!("CONFIG GET {key} on {pod}: {out}"))
        }
    }
}

/// Every Redis pod: name -> (uid, restart count of its containers).
async fn redis_pods(ctx: &Ctx) -> BTreeMap<String, (String, i32)> {
    let sel = labels::selector_string(&labels::selector(APP, labels::Component::Redis));
    let pods = ctx.api::<Pod>().list(&ListParams::default().labels(&sel)).await.unwrap();
    pods.items
        .iter()
        .map(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum());
            (p.name_any(), (p.uid().unwrap_or_default(), restarts))
        })
        .collect()
}

#[test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG)"]
fn redis_config_change_reaches_every_pod_without_restart() {
    with_namespace("redis-config", |ctx| async move {
        let Some(stack) = Stack::deploy(&ctx, APP, stack::spec(), "a live Redis setting").await else {
            return;
        };
        let pods_before = redis_pods(&ctx).await;
        let revision_before = stack.update_revision().await.unwrap();
        assert_eq!(pods_before.len(), 3, "{pods_before:?}");
        for pod in pods_before.keys() {
            let policy = config_get(&ctx, stack.faults, pod, "maxmemory-policy").await.unwrap();
            assert_eq!(policy, "noeviction", "{pod} starts with Redis' default");
        }

        let mut spec = stack::spec();
        // dynamic-hz: a setting Valkey 8.1 reads from its config file but refuses to
        // CONFIG SET; its pods already run this value, so nothing may be reported.
        spec["redis"]["config"] =
            json!({"maxmemory-policy": "allkeys-lru", "maxmemory": "32mb", "dynamic-hz": "yes"});
        ctx.apply_app(APP, spec).await;
        let faults = stack.faults;
        let pods = pods_before.keys().cloned().collect::<Vec<_>>();
        eventually_every(
            "maxmemory-policy allkeys-lru and maxmemory 32mb on every Redis pod",
            timeout(),
            Duration::from_millis(500),
            || {
                let (ctx, pods) = (&ctx, &pods);
                async move {
                    let mut wrong = vec![];
                    for pod in pods {
                        let policy = config_get(ctx, faults, pod, "maxmemory-policy").await?;
                        let maxmemory = config_get(ctx, faults, pod, "maxmemory").await?;
                        if policy != "allkeys-lru" || maxmemory != (32 * 1024 * 1024).to_string() {
                            wrong.push(format!("{pod}: {policy} {maxmemory}"));
                        }
                    }
                    if wrong.is_empty() { Ok(()) } else { Err(wrong.join(", ")) }
                }
            },
        )
        .await;

        // The ConfigMap carries the settings for the next start; the pods did not restart.
        let cm = ctx
            .api::<k8s_openapi::api::core::v1::ConfigMap>()
            .get(&counterstack::names::redis(APP))
            .await
            .unwrap();
        let conf = cm.data.unwrap_or_default().remove("redis.conf").unwrap_or_default();
        assert!(conf.contains("maxmemory-policy \"allkeys-lru\"\n"), "{conf}");
        assert_eq!(redis_pods(&ctx).await, pods_before, "same pods, same restart counts");
        assert_eq!(
            stack.update_revision().await.unwrap(),
            revision_before,
            "the pod template did not change"
        );
        stack.wait_healthy("still healthy after the change").await;
        let events =
            ctx.api::<k8s_openapi::api::core::v1::Event>().list(&ListParams::default()).await.unwrap();
        let rejected: Vec<String> = events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("ConfigRejected"))
            .map(|e| e.message.clone().unwrap_or_default())
            .collect();
        assert!(rejected.is_empty(), "dynamic-hz was reported as rejected: {rejected:?}");
        // A server that takes it only at start (Valkey 8.1) says so once, as a Normal Event.
        let pending: Vec<(String, i32)> = events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("ConfigPendingRestart"))
            .map(|e| (e.message.clone().unwrap_or_default(), e.count.unwrap_or(1)))
            .collect();
        eprintln!("e2e: ConfigPendingRestart events: {pending:?}");
        assert!(
            pending.len() <= 1 && pending.iter().all(|(_, n)| *n == 1),
            "said more than once: {pending:?}"
        );
        let cr = stack.cr().await.unwrap();
        let degraded = cr.status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == "Degraded");
        assert!(
            degraded.as_ref().is_none_or(|c| c.reason != "ConfigRejected"),
            "Degraded for a setting the pods already run: {degraded:?}"
        );
    });
}
