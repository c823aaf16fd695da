//! kill -9 of the primary under INCR + WAIT 1 load, then the old primary comes back with
//! an empty data directory. Real redis-server processes driven by the replication manager.

use crate::common;

use std::time::{Duration, Instant};

use common::failover_driver::{DatasetMonitor, KEY, Load, Stack, spec};

const AFTER_SECONDS: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_primary_then_it_returns_empty() {
    let stack = Stack::start(spec(2, 1, AFTER_SECONDS as i32));
    let first = stack.wait_healthy(2, Duration::from_secs(10)).await;
    assert_eq!(first, "demo-redis-0", "a fresh stack makes pod 0 primary");
    assert_eq!(stack.status().epoch, 1);
    let load = Load::start(stack.primary_port.clone(), 4, 1);
    let monitor = DatasetMonitor::start(stack.ports.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(load.max_acked() > 0, "load is running");

    // kill -9 the primary.
    let old = stack.ordinal_of(&first);
    monitor.mark_restart(old);
    let stack_old_port = stack.ports[old];
    let killed_at = Instant::now();
    stack.servers.lock().unwrap()[old].kill9();
    let acked_before_kill = load.max_acked();
    let new = stack.wait_primary_change(&first, Duration::from_secs(AFTER_SECONDS + 5)).await;
    // The new primary accepts (acknowledged) writes within afterSeconds + 3 s.
    let deadline = killed_at + Duration::from_secs(AFTER_SECONDS + 3);
    while load.acks_after(killed_at, stack_old_port) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        load.acks_after(killed_at, stack_old_port) > 0,
        "no acknowledged write within afterSeconds + 3 s of the kill"
    );
    let status = stack.status();
    assert_eq!(status.epoch, 2, "epoch +1 per primary change");
    assert!(status.last_failover_time.is_some());
    assert!(status.holds_data);
    assert_eq!(stack.wait_healthy(1, Duration::from_secs(5)).await, new);
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The old primary restarts with an EMPTY data directory as a standalone (writable)
    // master — the worst a start script could do. It must be demoted to a replica of the
    // new primary, and no node's dataset may shrink.
    stack.servers.lock().unwrap()[old].restart_empty();
    let restarted_at = Instant::now();
    let new_port = stack.ports[stack.ordinal_of(&new)];
    loop {
        let following = {
            let servers = stack.servers.lock().unwrap();
            let s = &servers[old];
            s.info_field("master_port").is_some_and(|p| p == new_port.to_string())
                && s.info_field("master_link_status").as_deref() == Some("up")
        };
        if following {
            break;
        }
        assert!(
            restarted_at.elapsed() < Duration::from_secs(5),
            "empty old primary not demoted: {:#?}",
            stack.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stack.primary().as_deref(), Some(new.as_str()), "the empty node never became primary");

    let report = load.stop().await;
    let shrinks = monitor.stop().await;
    let final_value: i64 = stack.servers.lock().unwrap()[stack.ordinal_of(&new)].cmd(&["GET", KEY]).unwrap();
    let old_value: i64 = stack.servers.lock().unwrap()[old].cmd(&["GET", KEY]).unwrap_or(0);
    let state = stack.stop().await;
    println!(
        "acked {} writes, max {}, final {final_value}, unavailable for {:?}, acked before kill {acked_before_kill}",
        report.acks.len(),
        report.max_acked(),
        report.first_ack_after(killed_at, stack_old_port)
    );
    assert!(final_value >= report.max_acked(), "final counter below an acknowledged value");
    assert_eq!(report.lost(final_value), 0, "acknowledged writes lost");
    assert!(report.backwards.is_empty(), "counter went below an acknowledged value: {:?}", report.backwards);
    assert!(shrinks.is_empty(), "a dataset shrank: {shrinks:?}");
    assert!(old_value >= acked_before_kill, "the returning node synced from the new primary");
    let reasons: Vec<&str> = state.events.iter().map(|e| e.reason.as_str()).collect();
    for r in ["PrimaryElected", "PrimaryUnavailable", "FailedOver", "Demoted"] {
        assert!(reasons.contains(&r), "missing {r} event in {reasons:?}");
    }
}
