//! Planned change under load: every pod runs an outdated revision. The manager restarts
//! the replicas one at a time (each back in sync before the next), hands the primary over
//! with FAILOVER TO, and only then restarts the old primary. No acknowledged write is
//! lost; the write pause is measured (bench/failover.sh reports it), not asserted tightly.
//!
//! As in a cluster, the address the manager dials (127.0.0.1) is not the name nodes
//! follow each other by (`localhost`), and a primary lists its replicas by neither or the
//! other: by the IP they connect from (no announce), or by the name they announce. FAILOVER
//! TO must name the replica as the primary lists it, in both cases.

use crate::common;

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

/// Set the switchover annotations on the driver's CounterApp (what `kubectl counterstack
/// switchover` does with a merge patch).
fn request_switchover(stack: &Stack, token: &str, to: &str) {
    let mut st = stack.state.lock().unwrap();
    let annotations = st.app.as_mut().unwrap().metadata.annotations.get_or_insert_default();
    annotations.insert(counterstack::api::SWITCHOVER_ANNOTATION.into(), token.into());
    annotations.insert(counterstack::api::SWITCHOVER_TO_ANNOTATION.into(), to.into());
}

/// Wait until status.redis.switchover answers `token` with a final phase.
async fn wait_answer(stack: &Stack, token: &str) -> counterstack::api::SwitchoverStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = stack
            .status()
            .switchover
            .filter(|s| s.request == token && s.phase != counterstack::api::SwitchoverPhase::InProgress)
        {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no answer to {token}: {:#?}", stack.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requested_switchover_hands_over_once_under_load_and_a_bad_target_is_refused() {
    use counterstack::api::SwitchoverPhase;
    let announce = ["--replica-announce-ip", "localhost"];
    let stack = Stack::start_full(spec(2, 1, 2), &announce, Some("localhost"));
    let first = stack.wait_healthy(2, Duration::from_secs(10)).await;
    let load = Load::start(stack.primary_port.clone(), 4, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    request_switchover(&stack, "t1", "demo-redis-2");
    let answer = wait_answer(&stack, "t1").await;
    assert_eq!(
        (answer.phase, answer.to.as_str()),
        (SwitchoverPhase::Succeeded, "demo-redis-2"),
        "{answer:?}"
    );
    let pause = answer.pause_seconds.expect("pauseSeconds");
    assert!(answer.completed_time.is_some());
    let new = stack.wait_healthy(2, Duration::from_secs(10)).await;
    assert_eq!(new, "demo-redis-2");
    assert_ne!(new, first);
    let epoch = stack.status().epoch;

    // Acted on once: more passes with the same token change nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!((stack.primary().as_deref(), stack.status().epoch), (Some("demo-redis-2"), epoch));

    // A target that is no pod of this app: Failed with the reason, a Warning Event, no change.
    request_switchover(&stack, "t2", "demo-redis-9");
    let refused = wait_answer(&stack, "t2").await;
    assert_eq!(refused.phase, SwitchoverPhase::Failed);
    assert!(refused.message.contains("not a Redis pod"), "{}", refused.message);
    assert_eq!(stack.status().epoch, epoch);
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = load.stop().await;
    let final_value: i64 = stack.servers.lock().unwrap()[stack.ordinal_of(&new)].cmd(&["GET", KEY]).unwrap();
    let state = stack.stop().await;
    let switched = state.events.iter().filter(|e| e.reason == "SwitchedOver").collect::<Vec<_>>();
    println!(
        "requested switchover: pause {:.1} ms (status), longest write gap {:?}, {} acks; events {:?}",
        pause * 1000.0,
        report.longest_gap(started, finished),
        report.acks.len(),
        state.events.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    assert_eq!(switched.len(), 1, "one hand-over: {:?}", state.events);
    assert!(switched[0].note.contains("switchover t1"), "the Event names the request: {}", switched[0].note);
    assert!(
        state.events.iter().any(|e| e.warning && e.reason == "SwitchoverFailed" && e.note.contains("t2"))
    );
    assert_eq!(report.lost(final_value), 0);
    assert!(report.backwards.is_empty(), "{:?}", report.backwards);
}
