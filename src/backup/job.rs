//! `counterstack backup-job`: one backup to a PersistentVolumeClaim, run as a Job the
//! operator creates (src/children/backup_job.rs builds it; the operator cannot mount a
//! user's claim itself). It streams the snapshot from the Redis node the operator chose,
//! writes it onto the mounted claim (atomically: a temporary file renamed into place),
//! applies retention, and ends with one JSON line, a [`Report`], in its termination
//! message, which the operator folds into `status.backup` as it does its own backups.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::destination::Destination;
use super::rdb::{SnapshotSource, TlsTarget};
use super::take::{Done, Failed, SNAPSHOT_IO_TIMEOUT, Target, resolve, take};
use super::volume::Volume;
use crate::api::{BackupRecord, MAX_LISTED_BACKUPS, RetentionSpec};
use crate::children::backup_job::env;
use crate::replication::node::NodeAddr;

#[derive(Args, Debug)]
pub struct BackupJobArgs {
    /// Host of the Redis node to snapshot (an address or a DNS name).
    #[arg(long, env = env::SOURCE_HOST)]
    source_host: String,
    #[arg(long, env = env::SOURCE_PORT, default_value_t = crate::api::REDIS_PORT as u16)]
    source_port: u16,
    /// The source's pod name, recorded with the backup.
    #[arg(long, env = env::SOURCE_POD)]
    source_pod: String,
    /// ACL user and password (the stack's `replication` user).
    #[arg(long, env = env::USER)]
    user: String,
    #[arg(long, env = env::PASSWORD, hide_env_values = true)]
    password: String,
    /// CA certificate (PEM) of a Redis with TLS, and the name its certificate carries.
    #[arg(long, env = env::TLS_CA_FILE)]
    tls_ca_file: Option<PathBuf>,
    #[arg(long, env = env::TLS_SERVER_NAME, default_value = "")]
    tls_server_name: String,
    /// The claim's mount point.
    #[arg(long, env = env::DIR, default_value = "/backup")]
    dir: PathBuf,
    /// `PREFIX/NAMESPACE/NAME` inside it.
    #[arg(long, env = env::FOLDER)]
    folder: String,
    /// The backup's start time (RFC 3339), which names it.
    #[arg(long, env = env::STARTED)]
    started: Timestamp,
    #[arg(long, env = env::KEEP_LAST, default_value_t = crate::api::DEFAULT_KEEP_LAST)]
    keep_last: i32,
    #[arg(long, env = env::MAX_AGE)]
    max_age: Option<String>,
}

/// What the Job reports: exactly one of `done` and `failed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<Done>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
}

impl Report {
    pub fn new(result: Result<Done, Failed>) -> Self {
        match result {
            Ok(mut done) => {
                // The termination message keeps 4 KiB: the listing carries names,
                // times and sizes only, as many as the status lists (the operator puts
                // the folder back into the keys).
                done.stored.truncate(MAX_LISTED_BACKUPS);
                for r in &mut done.stored {
                    *r = BackupRecord {
                        name: std::mem::take(&mut r.name),
                        start_time: r.start_time.take(),
                        size_bytes: r.size_bytes,
                        ..BackupRecord::default()
                    };
                }
                Report { done: Some(done), failed: None }
            }
            Err(f) => Report { done: None, failed: Some(f) },
        }
    }

    /// The report as the operator reads it back; `Err` for a message that is not one
    /// (the pod died before writing it: then the message is the log's tail).
    pub fn parse(message: &str) -> Result<Result<Done, Failed>, String> {
        let line = message.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_default();
        match serde_json::from_str::<Report>(line) {
            Ok(Report { done: Some(d), .. }) => Ok(Ok(d)),
            Ok(Report { failed: Some(f), .. }) => Ok(Err(f)),
            _ => Err(message.trim().chars().take(1000).collect()),
        }
    }
}

pub fn main(args: BackupJobArgs) -> ExitCode {
    let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run(&args)),
        Err(e) => Err(Failed::new("JobFailed", format!("cannot start: {e}"))),
    };
    let code = if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    let line = serde_json::to_string(&Report::new(result)).unwrap_or_else(|e| {
        format!(r#"{{"failed":{{"reason":"JobFailed","message":"cannot encode the report: {e}"}}}}"#)
    });
    println!("{line}");
    super::leave_termination_message(&line);
    code
}

/// Take the backup onto the volume.
pub async fn run(args: &BackupJobArgs) -> Result<Done, Failed> {
    let ca_pem = match &args.tls_ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|e| {
            Failed::new("SnapshotFailed", format!("cannot read Redis' CA certificate {}: {e}", p.display()))
        })?),
        None => None,
    };
    let addr = resolve(&NodeAddr::new(args.source_host.clone(), args.source_port)).await?;
    let src = SnapshotSource {
        addr,
        username: Some(&args.user),
        password: Some(&args.password),
        tls: ca_pem.as_deref().map(|ca_pem| TlsTarget { ca_pem, server_name: &args.tls_server_name }),
        io_timeout: SNAPSHOT_IO_TIMEOUT,
    };
    let store = Destination::Volume(Volume::new(&args.dir));
    let retention = RetentionSpec { keep_last: args.keep_last, max_age: args.max_age.clone() };
    let target = Target { store: &store, folder: &args.folder, retention: &retention };
    take(&src, &args.source_pod, &target, args.started).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn record(name: &str) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            key: format!("counterstack/shop/demo/{name}.rdb"),
            size_bytes: 123_456_789,
            source_pod: "demo-redis-1".into(),
            duration_seconds: Some(12.5),
            offset: Some(1 << 40),
            start_time: Some(Time("2026-12-03T23:59:59Z".parse().unwrap())),
        }
    }

    #[test]
    fn a_report_round_trips_and_fits_a_termination_message_with_a_full_listing() {
        let stored: Vec<_> = (0..200).map(|i| record(&format!("20261203T{:06}Z", i))).collect();
        let done =
            Done { record: record("20261203T235959Z"), stored, retention_error: Some("x".repeat(300)) };
        let line = serde_json::to_string(&Report::new(Ok(done.clone()))).unwrap();
        assert!(line.len() < 4096, "{} bytes", line.len());
        let back = Report::parse(&format!("some log\n{line}\n")).unwrap().unwrap();
        assert_eq!(back.record, done.record);
        assert_eq!(back.stored.len(), MAX_LISTED_BACKUPS);
        assert_eq!(back.stored[0].name, done.stored[0].name);
        let failed = Failed::new("VolumeFull", "the backup volume is full");
        let line = serde_json::to_string(&Report::new(Err(failed.clone()))).unwrap();
        assert_eq!(Report::parse(&line).unwrap(), Err(failed));
    }

    #[test]
    fn a_message_that_is_no_report_is_returned_as_text() {
        assert_eq!(Report::parse("exec format error\n"), Err("exec format error".to_string()));
        assert_eq!(Report::parse("{\"other\":1}"), Err("{\"other\":1}".to_string()));
    }
}
