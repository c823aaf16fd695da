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
