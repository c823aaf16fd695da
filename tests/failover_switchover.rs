//! Planned change under load: every pod runs an outdated revision. The manager restarts
//! the replicas one at a time (each back in sync before the next), hands the primary over
//! with FAILOVER TO, and only then restarts the old primary. No acknowledged write is
//! lost; the write pause is measured (bench/failover.sh reports it), not asserted tightly.
//!
//! As in a cluster, the address the manager dials (127.0.0.1) is not the name nodes
//! follow each other by (`localhost`), and a primary lists its replicas by neither or the
//! other: by the IP they connect from (no announce), or by the name they announce. FAILOVER
//! TO must name the replica as the primary lists it, in both cases.

mod common;

use std::time::{Duration, Instant};

use common::failover_driver::{DatasetMonitor, KEY, Load, Stack, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_with_switchover_loses_nothing() {
    // Nodes follow `localhost`; the primary lists replicas by the IP they come from.
    rolling_restart(Stack::start_full(spec(2, 1, 2), &[], Some("localhost"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_hands_over_to_a_replica_listed_by_its_announced_name() {
    // As the pod start script does: replicas announce the name the others follow.
    let announce = ["--replica-announce-ip", "localhost"];
    rolling_restart(Stack::start_full(spec(2, 1, 2), &announce, Some("localhost"))).await;
}

async fn rolling_restart(stack: Stack) {
    let first = stack.wait_healthy(2, Duration::from_secs(10)).await;
    assert_eq!(first, "demo-redis-0");
    let load = Load::start(stack.primary_port.clone(), 4, 1);
    let monitor = DatasetMonitor::start(stack.ports.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let started = Instant::now();
    for i in 0..3 {
        monitor.mark_restart(i);
    }
    stack.state.lock().unwrap().outdated = vec![true; 3];
    loop {
        let done = {
            let st = stack.state.lock().unwrap();
            st.outdated.iter().all(|o| !o)
        };
        if done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "rolling restart stuck: {:#?}", stack.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = stack.wait_healthy(2, Duration::from_secs(10)).await;
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = load.stop().await;
    let shrinks = monitor.stop().await;
    let final_value: i64 = stack.servers.lock().unwrap()[stack.ordinal_of(&new)].cmd(&["GET", KEY]).unwrap();
    let status = stack.status();
    let state = stack.stop().await;
    let pause = report.longest_gap(started, finished);
    let switched_at =
        state.event_log.iter().find(|(_, r)| r == "SwitchedOver").map(|(t, _)| *t).expect("SwitchedOver");
    println!(
        "rolling restart took {:?}; longest write pause {pause:?}; switchover pause {:?}; {} acks",
        finished - started,
        report.gap_around(switched_at),
        report.acks.len()
    );
    if let Some((gap_at, gap)) = report.longest_gap_at(started, finished) {
        for (t, reason) in &state.event_log {
            let rel = t.saturating_duration_since(gap_at).as_secs_f64()
                - gap_at.saturating_duration_since(*t).as_secs_f64();
            println!("  event {reason} at {rel:+.3}s from the start of the longest pause ({gap:?})");
        }
    }

    assert_ne!(new, first, "the primary was handed over");
    assert_eq!(status.epoch, 2, "exactly one change of primary");
    assert_eq!(
        state.deleted,
        vec!["demo-redis-2", "demo-redis-1", "demo-redis-0"],
        "replicas first, primary last"
    );
    assert!(state.events.iter().any(|e| e.reason == "SwitchedOver"), "{:?}", state.events);
    assert!(final_value >= report.max_acked());
    assert_eq!(report.lost(final_value), 0);
    assert!(report.backwards.is_empty(), "{:?}", report.backwards);
    assert!(shrinks.is_empty(), "a dataset shrank: {shrinks:?}");
    assert!(report.acks.iter().any(|a| a.at > finished - Duration::from_millis(400)), "writes resumed");
}
