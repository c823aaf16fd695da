//! `kubectl counterstack`: the binary doubles as a kubectl plugin. Installed as
//! `kubectl-counterstack` (a symlink or a copy, see docs/plugin.md) it runs as the plugin
//! when argv[0]'s file name says so; `counterstack kubectl ...` does the same.
//!
//! - `status NAME`: one table of roles, offsets, lag, last failover and switchover, and
//!   conditions ([`table::render`], pure).
//! - `switchover NAME [--to POD] [--timeout 60s]`: a planned hand-over through the
//!   `counterstack.io/switchover` annotations; waits for `status.redis.switchover`.
//! - `backup NAME [--wait] [--timeout 10m]`: one backup now through the
//!   `counterstack.io/backup` annotation; with `--wait`, waits for `status.backup`.
//! - `backups NAME`: the backups `status.backup` records ([`backup::list`], pure).
//! - `pause NAME` / `resume NAME`: `spec.paused`.
//! - `hibernate NAME` / `wake NAME`: `spec.hibernate`.

pub mod backup;
pub mod cli;
pub mod error;
pub mod pause;
pub mod switchover;
pub mod table;

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub use cli::{Args, Command, PluginCli};
pub use error::Error;

use crate::api::CounterApp;
use crate::labels::{self, Component};

/// The file name kubectl looks for on PATH to run `kubectl counterstack`.
pub const PLUGIN_NAME: &str = "kubectl-counterstack";

/// Whether the binary was invoked under the plugin's name (argv[0], possibly a path or,
/// on Windows, with `.exe`).
pub fn invoked_as_plugin(argv0: Option<&OsStr>) -> bool {
    argv0
        .and_then(|a| Path::new(a).file_stem())
        .and_then(OsStr::to_str)
        .is_some_and(|stem| stem == PLUGIN_NAME)
}

/// Run the plugin; prints `error: ...` and exits non-zero on failure.
pub fn main(args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed: one of the plugin's common errors, or a backup's outcome.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Plugin(#[from] Error),
    #[error(transparent)]
    Backup(#[from] backup::BackupError),
}

/// Run one command; returns what to print.
pub async fn run(args: Args) -> Result<String, CommandError> {
    let (client, ns) = connect(&args).await?;
    let out = match &args.command {
        Command::Status { name } => status(&client, &ns, name).await,
        Command::Switchover { name, to, timeout } => {
            switchover::run(&client, &ns, name, to.as_deref(), *timeout).await
        }
        Command::Backup { name, wait, timeout } => {
            return backup::request(&client, &ns, name, *wait, *timeout).await;
        }
        Command::Backups { name } => return backup::backups(&client, &ns, name).await,
        Command::Pause { name } => pause::set(&client, &ns, name, true).await,
        Command::Resume { name } => pause::set(&client, &ns, name, false).await,
        Command::Hibernate { name } => pause::hibernate(&client, &ns, name, true).await,
        Command::Wake { name } => pause::hibernate(&client, &ns, name, false).await,
    };
    Ok(out?)
}

/// A client for `--kubeconfig` (else KUBECONFIG, else ~/.kube/config) and `--context`, and
/// the namespace: `-n`, else the context's, else `default`.
pub async fn connect(args: &Args) -> Result<(Client, String), Error> {
    let kubeconfig = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let options = KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let ns = args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok((client, ns))
}

/// GET the CounterApp, with clear errors (not found, CRD missing, no permission).
pub async fn get_app(client: &Client, ns: &str, name: &str) -> Result<CounterApp, Error> {
    let api: Api<CounterApp> = Api::namespaced(client.clone(), ns);
    api.get(name).await.map_err(|e| Error::from_kube("get counterapps", name, ns, e))
}

/// `status NAME`.
async fn status(client: &Client, ns: &str, name: &str) -> Result<String, Error> {
    let app = get_app(client, ns, name).await?;
    // Pod readiness is extra: without the right to list pods the table shows `?`.
    let selector =
        format!("{}={},{}={}", labels::INSTANCE, name, labels::COMPONENT, Component::Redis.as_str());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let ready = pods.list(&ListParams::default().labels(&selector)).await.ok().map(|list| {
        list.items.iter().filter_map(|p| Some((p.metadata.name.clone()?, pod_ready(p)))).collect()
    });
    Ok(table::render(&app, &ready, jiff::Timestamp::now()))
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_name_in_argv0_selects_the_plugin() {
        for argv0 in
            ["kubectl-counterstack", "/home/me/.local/bin/kubectl-counterstack", "kubectl-counterstack.exe"]
        {
            assert!(invoked_as_plugin(Some(OsStr::new(argv0))), "{argv0}");
        }
        for argv0 in ["counterstack", "/usr/bin/counterstack", "kubectl-counterstack-old"] {
            assert!(!invoked_as_plugin(Some(OsStr::new(argv0))), "{argv0}");
        }
        assert!(!invoked_as_plugin(None));
    }
}
