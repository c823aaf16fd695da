//! Command-line arguments of `kubectl counterstack` (also `counterstack kubectl ...`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The plugin's own parser, for when the binary runs as `kubectl-counterstack`.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-counterstack",
    bin_name = "kubectl counterstack",
    version,
    about = "Inspect and operate CounterApps: status, switchover, backup, backups, pause, resume, hibernate, wake"
)]
pub struct PluginCli {
    #[command(flatten)]
    pub args: Args,
}

/// Flags and subcommand of the plugin.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Namespace of the CounterApp (default: the kubeconfig context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Roles, offsets, lag, last failover and switchover, and conditions, in one table.
    Status { name: String },
    /// Hand the Redis primary over (planned, FAILOVER TO) and wait for the result.
    Switchover {
        name: String,
        /// Redis pod to hand over to (default: the most advanced replica in sync).
        #[arg(long)]
        to: Option<String>,
        /// How long to wait for the operator's answer, e.g. `60s`, `2m`, `1500ms`.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Take a backup now (to spec.backup's object store); prints the request token.
    Backup {
        name: String,
        /// Wait for the operator's answer; exit non-zero when the backup failed or no
        /// answer came within --timeout.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. `10m`, `90s`.
        #[arg(long, default_value = "10m", value_parser = parse_duration, requires = "wait")]
        timeout: Duration,
    },
    /// The backups in the object store (status.backup), the last failure, the next scheduled one.
    Backups { name: String },
    /// Set spec.paused: the operator applies no changes and performs no failover.
    Pause { name: String },
    /// Clear spec.paused.
    Resume { name: String },
    /// Set spec.hibernate: every web and Redis pod stops, the Redis volumes are kept.
    Hibernate { name: String },
    /// Clear spec.hibernate: the stack starts again from its volumes.
    Wake { name: String },
}

/// `500ms`, `30s`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 60s, 2m, 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn parses_the_plugin_command_line() {
        let cli = PluginCli::try_parse_from([
            "kubectl-counterstack",
            "switchover",
            "demo",
            "--to",
            "demo-redis-2",
            "-n",
            "shop",
            "--timeout",
            "30s",
        ])
        .unwrap();
        assert_eq!(cli.args.namespace.as_deref(), Some("shop"));
        assert_eq!(
            cli.args.command,
            Command::Switchover {
                name: "demo".into(),
                to: Some("demo-redis-2".into()),
                timeout: Duration::from_secs(30)
            }
        );
        let cli = PluginCli::try_parse_from(["kubectl-counterstack", "--context", "kind", "pause", "demo"])
            .unwrap();
        assert_eq!(cli.args.context.as_deref(), Some("kind"));
        assert_eq!(cli.args.command, Command::Pause { name: "demo".into() });
        for (word, want) in [
            ("hibernate", Command::Hibernate { name: "demo".into() }),
            ("wake", Command::Wake { name: "demo".into() }),
            ("backups", Command::Backups { name: "demo".into() }),
            (
                "backup",
                Command::Backup { name: "demo".into(), wait: false, timeout: Duration::from_secs(600) },
            ),
        ] {
            let cli = PluginCli::try_parse_from(["kubectl-counterstack", word, "demo"]).unwrap();
            assert_eq!(cli.args.command, want);
        }
    }

    #[test]
    fn backup_waits_only_when_asked() {
        let parse = |args: &[&str]| {
            PluginCli::try_parse_from([&["kubectl-counterstack", "backup", "demo"], args].concat())
                .map(|c| c.args.command)
        };
        assert_eq!(
            parse(&["--wait"]).unwrap(),
            Command::Backup { name: "demo".into(), wait: true, timeout: Duration::from_secs(600) }
        );
        assert_eq!(
            parse(&["--wait", "--timeout", "90s"]).unwrap(),
            Command::Backup { name: "demo".into(), wait: true, timeout: Duration::from_secs(90) }
        );
        // A timeout without --wait would silently not wait: refused.
        let err = parse(&["--timeout", "90s"]).unwrap_err();
        assert!(err.to_string().contains("--wait"), "{err}");
    }
}
