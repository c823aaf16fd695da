//! `counterstack` command line: operator | web | render | crd | version | kubectl. Invoked
//! as `kubectl-counterstack` (argv[0]) it is the kubectl plugin ([`counterstack::plugin`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use counterstack::telemetry::{self, LogFormat};
use counterstack::{crd, operator, plugin, render, web};

#[derive(Parser, Debug)]
#[command(
    name = "counterstack",
    version,
    about = "Kubernetes operator and web service for the counter stack"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator against the current kubeconfig or in-cluster config.
    Operator(operator::OperatorArgs),
    /// Run the counter web service.
    Web(Box<web::WebArgs>),
    /// Print every object the operator would create for a CounterApp (offline).
    Render(render::RenderArgs),
    /// Print the CounterApp CustomResourceDefinition.
    Crd,
    /// Print the version.
    Version,
    /// Restore a backup into an empty Redis volume (the `restore` init container of a
    /// CounterApp with spec.bootstrap.fromBackup; configured by its environment).
    Restore(Box<counterstack::backup::restore::RestoreArgs>),
    /// Take one backup onto a mounted PersistentVolumeClaim (the Job of a CounterApp
    /// with spec.backup.volume; configured by its environment).
    BackupJob(Box<counterstack::backup::job::BackupJobArgs>),
    /// The kubectl plugin (`kubectl counterstack ...`): status, switchover, pause, resume.
    Kubectl(plugin::Args),
}

fn main() -> ExitCode {
    if plugin::invoked_as_plugin(std::env::args_os().next().as_deref()) {
        return plugin::main(plugin::PluginCli::parse().args);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Kubectl(args) => plugin::main(args),
        Command::Restore(args) => counterstack::backup::restore::main(*args),
        Command::BackupJob(args) => counterstack::backup::job::main(*args),
        Command::Crd => match crd::yaml() {
            Ok(y) => {
                print!("{y}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot serialize the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Version => {
            println!("counterstack {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Render(args) => match render::command(&args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Operator(args) => {
            telemetry::init(cli.log_format);
            run_async(operator::run(args))
        }
        Command::Web(args) => {
            telemetry::init(cli.log_format);
            // The web service picks its runtime flavour (WORKER_THREADS) itself.
            match web::runtime(&args) {
                Ok(rt) => block_on(rt, web::run(*args)),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_async<E: std::fmt::Display>(fut: impl std::future::Future<Output = Result<(), E>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    block_on(rt, fut)
}

fn block_on<E: std::fmt::Display>(
    rt: tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
