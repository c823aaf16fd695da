//! The integration tests: one binary (one link of kube, axum, redis-rs and reqwest)
//! with a module per area. Run one area with `cargo test --test it render::` or
//! `cargo nextest run --test it -E 'test(/^render::/)'`. The real-cluster suite is
//! its own binary, `tests/e2e`.

mod common;

mod backup_rdb;
mod backup_store;
mod backup_volume;
mod crd;
mod examples;
mod failover_crash;
mod failover_disk_full;
mod failover_frozen_replica;
mod failover_kill;
mod failover_restart;
mod failover_switchover;
mod failover_web_batch;
mod leader_fence;
mod observability;
mod packaging;
mod reconcile;
mod reconcile_process;
mod redis_config_live;
mod redis_harness;
mod redis_monitor;
mod redis_security;
mod render;
mod render_cli;
mod render_props;
mod render_redis;
mod replication_fencing;
mod versions;
mod web_api;
mod web_auth_tls;
mod web_coalesce;
mod web_resilience;
mod web_shutdown;

/// Cargo would build any `tests/NAME.rs` as one more test binary (autotests), each
/// linking the whole dependency tree again: integration tests go into a module here.
#[test]
fn the_integration_tests_stay_one_binary() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let stray: Vec<String> = std::fs::read_dir(&tests)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(stray.is_empty(), "move these into a module of tests/it: {stray:?}");
}
