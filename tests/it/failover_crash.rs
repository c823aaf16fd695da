//! The operator dies in the middle of a failover or a hand-over; the next one (a fresh
//! replication manager with no memory, reading the status the dead one left) finishes
//! what Redis shows was started, without a human and without losing an acknowledged
//! write. Real redis-server processes under INCR + WAIT 1 load.

use crate::common;

use std::time::Duration;

use common::failover_driver::{KEY, Load, Stack, spec};

/// Kill the primary under load with the operator set to die at `point`; the next one
/// must end with one primary (a former replica), every node following it, nothing lost.
async fn failover_with_a_crash_at(point: &'static str) {
    let stack = Stack::start(spec(2, 1, 1));
    let first = stack.wait_healthy(2, Duration::from_secs(10)).await;
    let load = Load::start(stack.primary_port.clone(), 4, 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    match point {
        "after-promote" => counterstack::failpoint::arm_error(point),
        _ => stack.state.lock().unwrap().crash_at = Some(point),
    }
    let old = stack.ordinal_of(&first);
    stack.servers.lock().unwrap()[old].kill9();
    let new = stack.wait_primary_change(&first, Duration::from_secs(15)).await;
    // The killed node comes back (as a pod's start script brings it: a replica of nobody).
    stack.servers.lock().unwrap()[old].restart_with(false, &["--replicaof", "127.0.0.1", "1"]);
    assert_eq!(stack.wait_healthy(2, Duration::from_secs(15)).await, new);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = load.stop().await;
    let final_value: i64 = stack.servers.lock().unwrap()[stack.ordinal_of(&new)].cmd(&["GET", KEY]).unwrap();
    let masters = stack
        .servers
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.info_field("role").as_deref() == Some("master"))
        .count();
    let status = stack.status();
    let state = stack.stop().await;
    println!(
        "{point}: crashes {}, primary {new} at epoch {}, {} acks",
        state.crashes,
        status.epoch,
        report.acks.len()
    );
    assert_eq!(state.crashes, 1, "the operator did not die at {point}");
    assert_eq!(masters, 1, "exactly one master");
    assert!(status.epoch >= 2, "{status:?}");
    assert!(final_value >= report.max_acked());
    assert_eq!(report.lost(final_value), 0, "acknowledged writes lost");
    assert!(report.backwards.is_empty(), "{:?}", report.backwards);
    assert!(
        state.events.iter().all(|e| e.reason != "FailoverBlocked"),
        "waited for a human: {:?}",
        state.events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dying_after_the_promotion_is_finished_by_the_next_operator() {
    failover_with_a_crash_at("after-promote").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dying_before_the_label_move_is_finished_by_the_next_operator() {
    failover_with_a_crash_at("before-labels").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dying_before_the_status_write_is_finished_by_the_next_operator() {
    failover_with_a_crash_at("before-status").await;
}

/// A planned hand-over (only the primary outdated) with the operator dying at `point`.
async fn handover_with_a_crash_at(point: &'static str) {
    let stack = Stack::start_full(spec(2, 1, 2), &["--replica-announce-ip", "localhost"], Some("localhost"));
    let first = stack.wait_healthy(2, Duration::from_secs(10)).await;
    let load = Load::start(stack.primary_port.clone(), 4, 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    match point {
        "after-handover" => counterstack::failpoint::arm_error(point),
        _ => stack.state.lock().unwrap().crash_at = Some(point),
    }
    let old = stack.ordinal_of(&first);
    stack.state.lock().unwrap().outdated[old] = true;
    let new = stack.wait_primary_change(&first, Duration::from_secs(20)).await;
    // The old primary is then restarted as an outdated replica; all settle on `new`.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stack.state.lock().unwrap().outdated[old] {
        assert!(std::time::Instant::now() < deadline, "old primary never restarted: {:?}", stack.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.wait_healthy(2, Duration::from_secs(15)).await, new);
    let report = load.stop().await;
    let final_value: i64 = stack.servers.lock().unwrap()[stack.ordinal_of(&new)].cmd(&["GET", KEY]).unwrap();
    let status = stack.status();
    let state = stack.stop().await;
    println!("{point}: crashes {}, primary {new} at epoch {}", state.crashes, status.epoch);
    assert_eq!(state.crashes, 1, "the operator did not die at {point}");
    assert_eq!(status.epoch, 2, "one change of primary: the hand-over, adopted, not a failover on top");
    assert_eq!(report.lost(final_value), 0, "acknowledged writes lost");
    assert!(state.events.iter().all(|e| e.reason != "FailedOver"), "{:?}", state.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dying_after_the_hand_over_is_recorded_by_the_next_operator() {
    handover_with_a_crash_at("after-handover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dying_before_the_status_write_of_a_hand_over_is_recorded_by_the_next_operator() {
    handover_with_a_crash_at("before-status").await;
}
