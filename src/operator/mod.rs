//! `counterstack operator`: the reconcile loop. A Controller over CounterApps (owning
//! every child kind, watching Redis pods) runs read -> build -> apply -> status per
//! CounterApp; metrics and health are served on `--metrics-addr`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

pub mod apply;
pub mod backoff;
pub mod context;
pub mod controller;
mod error;
pub mod events;
pub mod metrics;
pub mod pods;
pub mod rbac;
pub mod reconcile;
pub mod status;
pub mod status_cache;

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
}

/// Run the operator until SIGTERM or SIGINT, then let in-flight reconciles finish.
pub async fn run(args: OperatorArgs) -> Result<(), Error> {
    let client = kube::Client::try_default().await.map_err(Error::Config)?;
    let namespace = args.namespace.filter(|n| !n.is_empty());
    controller::check_crd(&client, namespace.as_deref()).await?;

    let ctx = Arc::new(Context::new(client, args.default_web_image));
    let metrics = ctx.metrics.clone();

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = metrics::serve(args.metrics_addr, metrics.clone(), stopped(stop_rx.clone())).await?;
    let server = tokio::spawn(server);
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    tracing::info!(namespace = namespace.as_deref().unwrap_or("<all>"), "operator started");
    metrics.set_ready(true);
    let monitor = ctx.redis.monitor().clone();
    let checks = tokio::spawn(async move { monitor.run().await });
    controller::run(ctx, namespace, stopped(stop_rx)).await;
    checks.abort();
    metrics.set_ready(false);
    tracing::info!("controller stopped");

    // The controller only ends on a signal, but if it ever ends otherwise the health
    // server must not keep the process alive.
    signals.abort();
    server.abort();
    match server.await {
        Ok(result) => result,
        Err(_) => Ok(()), // aborted or already finished
    }
}

/// Resolves once `true` is sent (or the sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// SIGINT (Ctrl-C) or SIGTERM (Kubernetes stopping the pod).
async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the operator");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested; finishing in-flight reconciles");
}
