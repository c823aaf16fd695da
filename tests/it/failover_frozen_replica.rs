//! A replica frozen with SIGSTOP while the primary dies: with syncReplicas 1 and 2
//! replicas the manager must inspect both before promoting (k + r > n), so it waits; once
//! the frozen replica is back, the live replica (higher offset) wins, never the frozen one.

use crate::common;

use std::time::{Duration, Instant};

use common::failover_driver::{DatasetMonitor, KEY, Load, Stack, spec};

const AFTER_SECONDS: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_replica_is_not_promoted_over_a_live_one() {
    let stack = Stack::start(spec(2, 1, AFTER_SECONDS as i32));
    let first = stack.wait_healthy(2, Duration::from_secs(10)).await;
    assert_eq!(first, "demo-redis-0");
    let load = Load::start(stack.primary_port.clone(), 4, 1);
    let monitor = DatasetMonitor::start(stack.ports.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Freeze replica 2; writes go on, acknowledged by replica 1 alone.
    stack.servers.lock().unwrap()[2].pause();
    let frozen_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(load.acks_after(frozen_at, 0) > 0, "writes still acknowledged while replica 2 is frozen");

    monitor.mark_restart(0);
    stack.servers.lock().unwrap()[0].kill9();
    let killed_at = Instant::now();

    // Only one of two replicas can be inspected: no promotion, however long we wait.
    tokio::time::sleep(Duration::from_secs(AFTER_SECONDS + 2)).await;
    assert_eq!(
        stack.primary().as_deref(),
        Some("demo-redis-0"),
        "promoted without inspecting enough replicas"
    );
    assert!(stack.events().iter().any(|e| e.reason == "FailoverBlocked"), "{:?}", stack.events());
    assert_eq!(
        load.acks_after(killed_at, stack.ports[0]),
        0,
        "nothing can be acknowledged without a primary"
    );

    stack.servers.lock().unwrap()[2].resume();
    let new = stack.wait_primary_change("demo-redis-0", Duration::from_secs(5)).await;
    assert_eq!(
        new, "demo-redis-1",
        "the live replica (highest offset) must win over the one that was frozen"
    );
    assert_eq!(stack.wait_healthy(1, Duration::from_secs(5)).await, new);
    // The formerly frozen replica follows the new primary.
    let p1 = stack.ports[1].to_string();
    let start = Instant::now();
    while stack.servers.lock().unwrap()[2].info_field("master_port").as_deref() != Some(p1.as_str())
        || stack.servers.lock().unwrap()[2].info_field("master_link_status").as_deref() != Some("up")
    {
        assert!(start.elapsed() < Duration::from_secs(5), "replica 2 never followed the new primary");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = load.stop().await;
    let shrinks = monitor.stop().await;
    let final_value: i64 = stack.servers.lock().unwrap()[1].cmd(&["GET", KEY]).unwrap();
    let replica_value: i64 = stack.servers.lock().unwrap()[2].cmd(&["GET", KEY]).unwrap();
    stack.stop().await;
    assert!(final_value >= report.max_acked());
    assert_eq!(report.lost(final_value), 0);
    assert!(report.backwards.is_empty(), "{:?}", report.backwards);
    assert!(shrinks.is_empty(), "a dataset shrank: {shrinks:?}");
    assert!(replica_value >= report.max_acked() - 50, "replica 2 caught up ({replica_value})");
}
