//! The shutdown signal both long-running commands (`counterstack operator` and
//! `counterstack web`) stop on.

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (Kubernetes stopping the pod) and logs which
/// one arrived. When SIGTERM cannot be listened for, that is logged as a warning and only
/// SIGINT ends the wait. Callers log what they do next (drain, finish reconciles).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT (Ctrl-C) stops this process");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
