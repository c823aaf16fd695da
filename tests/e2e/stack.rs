//! A CounterApp under load tests: what "healthy" means and the waits between faults.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use counterstack::api::CounterApp;
use counterstack::labels;
use counterstack::names;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;

use crate::faults::Faults;
use crate::harness::{
    Ctx, client_without_retries, eventually, eventually_every, proxy, ready_status, timeout,
    wait_ready_or_skip,
};
use crate::load::{self, Load, LoadReport};

/// Two Redis replicas (three pods), two web pods; CRD defaults otherwise (syncReplicas 1,
/// failover.afterSeconds 5).
pub fn spec() -> serde_json::Value {
    crate::harness::with_redis_image(json!({
        "web": {"replicas": 2},
        "redis": {"replicas": 2, "storage": {"size": "64Mi"}}
    }))
}

/// The default of spec.web.service.port, which the specs of this suite keep.
pub const WEB_PORT: i32 = 80;

/// The primary as status reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Primary {
    pub pod: String,
    pub epoch: i64,
}

pub struct Stack {
    pub ctx: Ctx,
    /// The same namespace through a client that does not retry: the load's.
    load_ctx: Ctx,
    pub app: String,
    pub faults: Faults,
    pub after_seconds: u64,
    /// Every value acknowledged so far: a later run that gets one again lost a write.
    acked: Mutex<BTreeSet<i64>>,
}

impl Stack {
    /// Apply `spec` and wait for Ready=True; None (reason printed) when pods cannot run.
    pub async fn deploy(ctx: &Ctx, app: &str, spec: serde_json::Value, step: &str) -> Option<Stack> {
        let cr = ctx.apply_app(app, spec).await;
        if !wait_ready_or_skip(ctx, app, step).await {
            return None;
        }
        let faults = Faults::detect(&ctx.client).await;
        eprintln!("e2e: faults through {faults:?}");
        let load_ctx = Ctx { client: client_without_retries().await, ns: ctx.ns.clone() };
        let stack = Stack {
            ctx: ctx.clone(),
            load_ctx,
            app: app.to_string(),
            faults,
            after_seconds: cr.spec.redis.failover.after_seconds as u64,
            acked: Mutex::default(),
        };
        stack.wait_healthy("every Redis pod up with one primary").await;
        Some(stack)
    }

    pub async fn cr(&self) -> Result<CounterApp, String> {
        self.ctx.api::<CounterApp>().get(&self.app).await.map_err(|e| e.to_string())
    }

    pub async fn primary(&self) -> Result<Primary, String> {
        let cr = self.cr().await?;
        let redis = cr.status.and_then(|s| s.redis).ok_or("no status.redis")?;
        Ok(Primary { pod: redis.primary.ok_or("no status.redis.primary")?, epoch: redis.epoch })
    }

    async fn redis_pods(&self) -> Result<Vec<Pod>, String> {
        let sel = labels::selector_string(&labels::selector(&self.app, labels::Component::Redis));
        let pods = self.ctx.api::<Pod>().list(&ListParams::default().labels(&sel)).await;
        Ok(pods.map_err(|e| e.to_string())?.items)
    }

    /// The StatefulSet's `status.updateRevision`, once it describes its current spec.
    pub async fn update_revision(&self) -> Result<String, String> {
        let sts =
            self.ctx.api::<StatefulSet>().get(&names::redis(&self.app)).await.map_err(|e| e.to_string())?;
        let status = sts.status.ok_or("no StatefulSet status")?;
        if status.observed_generation != sts.metadata.generation {
            return Err(format!("StatefulSet generation {:?} not observed yet", sts.metadata.generation));
        }
        status.update_revision.ok_or("no updateRevision".to_string())
    }

    /// One look: Ready=True for the current generation; every Redis pod ready, on the
    /// StatefulSet's update revision and labelled; exactly one labelled primary, the one
    /// status names; Redis itself agrees on every role.
    pub async fn healthy(&self) -> Result<Primary, String> {
        let cr = self.cr().await?;
        let observed = cr.status.as_ref().and_then(|s| s.observed_generation);
        if observed != cr.metadata.generation || ready_status(&cr).as_deref() != Some("True") {
            return Err(format!("Ready {:?} at observedGeneration {observed:?}", ready_status(&cr)));
        }
        let primary = self.primary().await?;
        let revision = self.update_revision().await?;
        let pods = self.redis_pods().await?;
        let want = 1 + cr.spec.redis.replicas as usize;
        if pods.len() != want {
            return Err(format!("{} Redis pods, want {want}", pods.len()));
        }
        let mut primaries = Vec::new();
        for p in &pods {
            let name = p.name_any();
            if p.metadata.deletion_timestamp.is_some() || !pod_ready(p) {
                return Err(format!("{name} is not ready"));
            }
            let l = p.labels();
            if l.get("controller-revision-hash") != Some(&revision) {
                return Err(format!("{name} is at {:?}, not {revision}", l.get("controller-revision-hash")));
            }
            let (label, want_role) = match l.get(labels::ROLE).map(String::as_str) {
                Some(labels::ROLE_PRIMARY) => {
                    primaries.push(name.clone());
                    ("primary", "master")
                }
                Some(labels::ROLE_REPLICA) => ("replica", "slave"),
                other => return Err(format!("{name} has role label {other:?}")),
            };
            let role = self.faults.role(&self.ctx, &name).await?;
            if role != want_role {
                return Err(format!("{name} is labelled {label} but Redis says {role}"));
            }
        }
        if primaries != [primary.pod.clone()] {
            return Err(format!("labelled primary {primaries:?}, status.redis.primary {}", primary.pod));
        }
        Ok(primary)
    }

    pub async fn wait_healthy(&self, what: &str) -> Primary {
        eventually(what, timeout(), || self.healthy()).await
    }

    /// Wait until status names a primary other than `old` with a higher epoch (polled
    /// every 100 ms: the figures report when).
    pub async fn wait_new_primary(&self, old: &Primary) -> Primary {
        let what = format!("a primary other than {} after epoch {}", old.pod, old.epoch);
        eventually_every(&what, timeout(), Duration::from_millis(100), || async {
            let p = self.primary().await?;
            if p.pod != old.pod && p.epoch > old.epoch { Ok(p) } else { Err(format!("{p:?}")) }
        })
        .await
    }

    /// Wait until `pod` (a new pod when `not_uid` names the old one) is a ready replica:
    /// labelled replica and Redis reports ROLE slave.
    pub async fn wait_replica(&self, pod: &str, not_uid: Option<&str>) {
        eventually(&format!("{pod} back as a replica"), timeout(), || async {
            let p = self.ctx.api::<Pod>().get(pod).await.map_err(|e| e.to_string())?;
            if not_uid.is_some() && p.uid().as_deref() == not_uid {
                return Err(format!("{pod} is still the old pod"));
            }
            if !pod_ready(&p) {
                return Err(format!("{pod} not ready"));
            }
            let label = p.labels().get(labels::ROLE).cloned();
            let role = self.faults.role(&self.ctx, pod).await?;
            if label.as_deref() == Some(labels::ROLE_REPLICA) && role == "slave" {
                Ok(())
            } else {
                Err(format!("{pod}: label {label:?}, ROLE {role}"))
            }
        })
        .await
    }

    pub async fn pod_uid(&self, pod: &str) -> String {
        self.ctx.api::<Pod>().get(pod).await.unwrap_or_else(|e| panic!("{pod}: {e}")).uid().unwrap()
    }

    pub fn start_load(&self) -> Load {
        Load::start(&self.load_ctx, &names::web(&self.app), WEB_PORT, load::clients())
    }

    /// Wait until `min` writes were acknowledged after `since`.
    pub async fn wait_writes(&self, load: &Load, since: Instant, min: usize) {
        eventually(&format!("{min} acknowledged writes"), timeout(), || async {
            let n = load.acked_after(since);
            let (errors, samples) = load.errors();
            if n >= min { Ok(()) } else { Err(format!("{n} acknowledged, {errors} errors: {samples:?}")) }
        })
        .await
    }

    /// The counter, read through the web Service.
    pub async fn counter(&self) -> i64 {
        eventually("GET /api/counter", timeout(), || async {
            crate::harness::counter_value(
                &proxy(&self.ctx, "GET", &names::web(&self.app), WEB_PORT, "/api/counter").await?,
            )
        })
        .await
    }

    /// Acknowledged writes of `report` that are gone by `final_value`, including values
    /// earlier runs on this stack were already given.
    pub fn lost(&self, report: &LoadReport, final_value: i64) -> u64 {
        let mut acked = self.acked.lock().unwrap();
        let repeats = report.acks.iter().filter(|a| acked.contains(&a.value)).count() as u64;
        acked.extend(report.acks.iter().map(|a| a.value));
        load::lost(report.acks.iter().map(|a| a.value), final_value) + repeats
    }
}

pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
