//! The counter web service (`counterstack web`): the original Flask app's HTTP API on
//! Redis, with synchronous replication (`WAIT`), idempotent retries, failover-aware
//! reconnects, health endpoints, Prometheus metrics and a graceful drain on SIGTERM.

mod batch;
mod config;
mod counter;
mod error;
mod health;
// Public so that tests can send exactly what the service sends (`command`, `SCRIPT`).
pub mod idempotency;
mod metrics;
mod routes;
mod store;
mod upstream;
mod writer;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use config::{Config, CorsOrigins, ReadFrom, RedisClientKind, RedisSecrets, WebArgs};
pub use counter::{COUNTER_KEY, Op, Written};
pub use error::Error;

use metrics::Metrics;
use store::Store;

/// What every handler shares.
pub struct AppState {
    store: Store,
    metrics: Arc<Metrics>,
    /// Set on SIGTERM: readyz answers 503 and responses carry `Connection: close`.
    draining: AtomicBool,
}

/// The async runtime `counterstack web` runs on: `WORKER_THREADS=0` (default) is a
/// current_thread runtime, N > 0 a multi_thread one with N workers.
pub fn runtime(args: &WebArgs) -> Result<tokio::runtime::Runtime, Error> {
    let cfg = Config::from_args(args)?;
    let mut builder = match cfg.worker_threads {
        0 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder.enable_all().build().map_err(Error::Serve)
}

/// Serve until SIGTERM (or SIGINT), then drain and return.
pub async fn run(args: WebArgs) -> Result<(), Error> {
    let cfg = Config::from_args(&args)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| Error::Bind { addr: cfg.listen.to_string(), source })?;
    serve(cfg, listener, crate::signals::shutdown_signal()).await
}

/// Serve on `listener` until `shutdown` resolves. Then: readyz turns 503 and responses
/// carry `Connection: close` for `drain_delay` (load balancers stop sending, keep-alive
/// clients reconnect elsewhere); then the listener closes and in-flight requests get
/// `drain` to finish. Tests call this directly with their own shutdown future.
pub async fn serve(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let store = Store::start(&cfg, metrics.clone())?;
    let state = Arc::new(AppState { store, metrics, draining: AtomicBool::new(false) });
    let app = tower::make::Shared::new(routes::service(state.clone(), &cfg.cors));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            %addr,
            sync_replicas = cfg.sync_replicas,
            coalesce_writes = cfg.coalesce_writes,
            read_from = ?cfg.read_from,
            redis_tls = cfg.secrets.tls_ca_file.is_some(),
            redis_user = cfg.primary.redis_settings().username().unwrap_or("default"),
            "listening"
        );
    }

    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_delay = cfg.drain_delay;
    let draining = state.clone();
    let graceful = async move {
        shutdown.await;
        draining.draining.store(true, Ordering::Relaxed);
        tracing::info!(delay_ms = drain_delay.as_millis() as u64, "draining: readyz 503, still serving");
        tokio::time::sleep(drain_delay).await;
        tracing::info!("listener closed; finishing in-flight requests");
        let _ = closed_tx.send(());
    };
    // Small responses on keep-alive connections: Nagle would add 40 ms delays.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful).into_future();
    let drain = cfg.drain;
    let deadline = async move {
        match closed_rx.await {
            Ok(()) => tokio::time::sleep(drain).await,
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        r = server => {
            tracing::info!("drained; exiting");
            r.map_err(Error::Serve)
        }
        _ = deadline => {
            tracing::warn!(in_flight = state.metrics.in_flight.get(), "DRAIN_SECONDS elapsed; exiting with requests in flight");
            Ok(())
        }
    }
}
