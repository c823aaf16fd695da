//! Backups and restores (issue 20): snapshots streamed from an in-sync replica over the
//! replication protocol, verified, uploaded to an S3-compatible object store; restore
//! seeds a new stack's first primary from one.

pub mod aof_seed;
pub mod destination;
pub mod job;
pub mod keys;
pub mod rdb;
pub mod restore;
pub mod schedule;
pub mod store;
pub mod take;
pub mod volume;

/// Where the kubelet reads a container's termination message (the operator reports the
/// restore's and the backup Job's outcome from there; at most 4 KiB are kept).
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Leave `line` as the container's termination message. Absent outside Kubernetes
/// (tests): then what the caller printed is all there is.
fn leave_termination_message(line: &str) {
    let _ = std::fs::write(TERMINATION_LOG, format!("{line}\n"));
}
