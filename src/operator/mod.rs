//! `counterstack operator`: the reconcile loop. A Controller over CounterApps (owning
//! every child kind, watching Redis pods) runs read -> build -> apply -> status per
//! CounterApp; metrics and health are served on `--metrics-addr`.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::watch;

pub(crate) mod apply;
pub(crate) mod backoff;
pub mod backup;
pub(crate) mod backup_job;
pub mod cache;
pub mod context;
pub mod controller;
pub(crate) mod credentials;
mod error;
pub(crate) mod events;
pub(crate) mod expand;
pub mod fence;
pub(crate) mod image_pull;
pub mod leader;
pub mod metrics;
pub(crate) mod pods;
pub mod rbac;
pub(crate) mod reconcile;
pub mod restore;
pub(crate) mod rollouts;
pub(crate) mod status;
pub(crate) mod status_cache;
pub(crate) mod storage;
pub(crate) mod terminating;

pub use context::Context;
pub use error::Error;
pub use reconcile::{error_policy, reconcile};

/// `counterstack operator` arguments.
#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// Web image for CounterApps that set no `spec.web.image`.
    #[arg(long, env = "DEFAULT_WEB_IMAGE", default_value = crate::api::DEFAULT_WEB_IMAGE)]
    pub default_web_image: String,

    /// Address of the metrics and health server (`/metrics`, `/livez`, `/readyz`).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8081")]
    pub metrics_addr: SocketAddr,

    /// Watch only this namespace (then namespaced RBAC suffices); all namespaces when
    /// unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Leader election: of several replicas only the lease holder reconciles.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the Lease (default: the operator's own, `POD_NAMESPACE`, else the
    /// watched namespace, else `default`).
    #[arg(long, env = "LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "counterstack-operator")]
    pub lease_name: String,

    /// Seconds a lease is valid after its last renewal; a standby takes over within this
    /// when the leader dies.
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(6..=300))]
    pub lease_duration_seconds: u64,

    /// Namespace the operator runs in; the Redis NetworkPolicy of every CounterApp admits
    /// it (the operator checks Redis itself). Empty: none (an operator outside the
    /// cluster; then disable `spec.networkPolicy` where the CNI enforces it).
    #[arg(long, env = "POD_NAMESPACE")]
    pub operator_namespace: Option<String>,

    /// Reconciles running at once, at most.
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = context::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,

    /// Stacks whose pods may roll at once for a change the operator itself brings (a new
    /// version, another --default-web-image); the next starts once one is Ready again.
    /// Changes a user makes roll at once.
    #[arg(long, env = "MAX_CONCURRENT_ROLLOUTS", default_value_t = rollouts::DEFAULT_MAX as u16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_rollouts: u16,
}

/// This instance's name in the Lease. In a cluster the pod name, unchanged: pod names are
/// unique, and a container restarted in the same pod takes its own Lease back at once
/// instead of waiting for it to expire. Outside a cluster the host name (or a fixed
/// prefix) with a random suffix, since two processes on one host must never share one.
fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()) {
        return pod;
    }
    let base = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "counterstack".to_string());
    format!("{base}-{:08x}", rand::random::<u32>())
}

/// A kube client that counts every request it sends (`counterstack_api_requests_total`),
/// behind `fence`: it sends no write while this instance does not lead (the fence is the
/// outer layer, so a refused request is never counted as sent).
async fn client(metrics: &metrics::Metrics, fence: &fence::Fence) -> Result<kube::Client, Error> {
    let config = kube::Config::infer().await.map_err(|e| Error::ClientConfig(e.to_string()))?;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(Error::Config)?;
    Ok(builder
        .with_layer(&metrics::api_request_layer(metrics.api_requests.clone()))
        .with_layer(&fence.layer())
        .build())
}

/// Run the operator until SIGTERM or SIGINT, then let in-flight reconciles finish. With
/// leader election, wait for the lease first, and stop (an error: restart as a standby)
/// when it is lost.
pub async fn run(args: OperatorArgs) -> Result<(), Error> {
    let namespace = args.namespace.filter(|n| !n.is_empty());
    let lease = args.leader_election.then(|| leader::LeaseConfig {
        namespace: args
            .lease_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| namespace.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        name: args.lease_name,
        identity: identity(),
        duration: args.lease_duration_seconds,
        grace: (args.lease_duration_seconds * 2 / 5).max(4),
    });
    // With leader election, nothing but the Lease is written until the lease is ours.
    let leadership = match &lease {
        Some(cfg) => leader::Leadership::until_renewed(cfg.renew_deadline()),
        None => leader::Leadership::always(),
    };
    let metrics = metrics::Metrics::default();
    let client = client(&metrics, &fence::Fence::new(leadership.clone(), metrics.fenced.clone())).await?;

    let mut ctx = Context::with_metrics(client.clone(), args.default_web_image, metrics);
    ctx.leadership = leadership.clone();
    ctx.max_concurrent_reconciles = args.max_concurrent_reconciles;
    ctx.max_concurrent_rollouts = usize::from(args.max_concurrent_rollouts);
    ctx.operator_namespace = args.operator_namespace.clone().filter(|n| !n.is_empty());
    let metrics = ctx.metrics.clone();

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = metrics::serve(args.metrics_addr, metrics.clone(), stopped(stop_rx.clone())).await?;
    let server = tokio::spawn(server);
    let signals = tokio::spawn(async move {
        crate::signals::shutdown_signal().await;
        tracing::info!("shutdown requested; finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });

    let outcome = async {
        metrics.set_role(metrics::Role::WaitingForCrd);
        // `helm install` and GitOps syncs apply the CRD and this Deployment together:
        // wait for the CRD (not ready meanwhile) instead of exiting into a crash loop.
        tokio::select! {
            waited = wait_for_crd(&client, namespace.as_deref()) => waited?,
            _ = stopped(stop_rx.clone()) => return Ok(()),
        }
        let lost = if let Some(cfg) = lease {
            metrics.set_role(metrics::Role::Standby);
            let lost = tokio::select! {
                a = leader::acquire(client.clone(), cfg, leadership) => a?,
                _ = stopped(stop_rx.clone()) => return Ok(()),
            };
            lost.left_future()
        } else {
            futures::future::pending().right_future()
        };
        metrics.set_role(metrics::Role::Leader);
        let ctx = Arc::new(ctx);
        tracing::info!(namespace = namespace.as_deref().unwrap_or("<all>"), "operator started");
        let sizes = tokio::spawn(report_cache_sizes(ctx.clone()));
        let (lost_tx, lost_rx) = watch::channel(false);
        let stop = {
            let stop_rx = stop_rx.clone();
            let lost_rx = lost_rx.clone();
            async move {
                tokio::select! {
                    _ = stopped(stop_rx) => {}
                    _ = stopped(lost_rx) => {}
                }
            }
        };
        let watch_lease = tokio::spawn(async move {
            let why = lost.await;
            let _ = lost_tx.send(true);
            why
        });
        // A graceful stop is bounded: should in-flight work never finish (seen once, on a
        // starved machine, in tests/it/reconcile_process.rs), exit before the kubelet's
        // 30 s grace period ends in a SIGKILL, saying so.
        let deadline = {
            let stop_rx = stop_rx.clone();
            async move {
                stopped(stop_rx).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            }
        };
        tokio::select! {
            () = controller::run(ctx, namespace, stop) => {}
            () = deadline => tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "in-flight reconciles did not finish within the shutdown grace period; exiting anyway"
            ),
        }
        sizes.abort();
        metrics.set_role(metrics::Role::Starting);
        tracing::info!("controller stopped");
        if *lost_rx.borrow() {
            let why = watch_lease.await.unwrap_or_default();
            return Err(Error::Lease(format!("lost the lease ({why}); exiting to restart as a standby")));
        }
        watch_lease.abort();
        Ok(())
    }
    .await;

    // The controller only ends on a signal (or a lost lease), but if it ever ends
    // otherwise the health server must not keep the process alive.
    signals.abort();
    server.abort();
    outcome?;
    match server.await {
        Ok(result) => result,
        Err(_) => Ok(()), // aborted or already finished
    }
}

/// How long a stop waits for in-flight reconciles (the Deployment's
/// terminationGracePeriodSeconds is 30).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// The CRD this operator serves, as `kubectl get crd` names it.
const CRD_NAME: &str = "counterapps.counterstack.io";

/// Time between two looks for the CRD while it is missing: a CRD applied with the
/// operator is Established within a second or two, so the wait stays short, and one list
/// request per 2 s is no load.
const CRD_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Return once CounterApps can be listed. While the CRD is missing, say so once at warn
/// (and again every minute at info), keep `/readyz` at 503, and look again every
/// [`CRD_POLL`]. Other errors (RBAC, an unreachable API server) end the wait: they need a
/// human, and a restart shows them in the pod's status.
async fn wait_for_crd(client: &kube::Client, namespace: Option<&str>) -> Result<(), Error> {
    let mut waited = std::time::Duration::ZERO;
    loop {
        match controller::check_crd(client, namespace).await {
            Ok(()) => {
                if !waited.is_zero() {
                    tracing::info!(waited_s = waited.as_secs(), "the CounterApp CRD is installed; starting");
                }
                return Ok(());
            }
            Err(Error::CrdNotInstalled) if waited.is_zero() => tracing::warn!(
                crd = CRD_NAME,
                "the CounterApp CRD is not installed (yet); waiting for it (`kubectl apply -f crds/` or the Helm chart installs it)"
            ),
            Err(Error::CrdNotInstalled) if waited.as_secs() % 60 < CRD_POLL.as_secs() => {
                tracing::info!(
                    crd = CRD_NAME,
                    waited_s = waited.as_secs(),
                    "still waiting for the CounterApp CRD"
                )
            }
            Err(Error::CrdNotInstalled) => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(CRD_POLL).await;
        waited += CRD_POLL;
    }
}

/// Keep `counterstack_cache_objects` current (every 10 s: it is a size, not an event).
async fn report_cache_sizes(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        for (kind, n) in ctx.caches.sizes() {
            ctx.metrics.cache_size(kind, n);
        }
    }
}

/// Resolves once `true` is sent (or the sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
