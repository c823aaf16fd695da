//! The operator restarts (a new process: no memory, no monitor clock; only the status)
//! while a hung primary is being counted down. It must continue the countdown from
//! `status.redis.primaryUnavailableSince`, not start it again: with a long
//! `afterSeconds` a restart would otherwise add the whole delay once more. Real
//! redis-server processes.

use crate::common;

use std::time::{Duration, Instant};

use common::failover_driver::{Stack, spec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Long enough that the first operator never reaches it during the test.
const AFTER_SECONDS: i32 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_operator_continues_the_failover_countdown_from_the_status() {
    let stack = Stack::start(spec(1, 0, AFTER_SECONDS));
    let first = stack.wait_healthy(1, Duration::from_secs(10)).await;
    assert!(stack.status().primary_unavailable_since.is_none(), "a healthy primary: nothing counted");
    let old = stack.ordinal_of(&first);
    stack.servers.lock().unwrap()[old].pause();

    // The status records when the outage began.
    let start = Instant::now();
    let since = loop {
        if let Some(t) = stack.status().primary_unavailable_since {
            break t;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no outage recorded: {:#?}", stack.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let age = Timestamp::now().duration_since(since.0);
    assert!(age < SignedDuration::from_secs(5), "the outage began just now, not {age:?} ago");
    assert_eq!(stack.primary().as_deref(), Some(first.as_str()), "30 s have not passed");

    // As if the leader before had been counting for 28 s already: a new one must fail
    // over within moments, not 30 s after its own first check.
    {
        let mut st = stack.state.lock().unwrap();
        let redis = st.app.as_mut().unwrap().status.as_mut().unwrap().redis.as_mut().unwrap();
        redis.primary_unavailable_since = Some(Time(since.0 - SignedDuration::from_secs(28)));
        st.restart_now = true;
    }
    let restarted = Instant::now();
    let new = stack.wait_primary_change(&first, Duration::from_secs(15)).await;
    let took = restarted.elapsed();
    println!(
        "restarted operator failed over to {new} {took:?} after its restart (afterSeconds {AFTER_SECONDS})"
    );
    let status = stack.status();
    assert!(status.primary_unavailable_since.is_none(), "a new primary: the countdown is over: {status:?}");

    stack.servers.lock().unwrap()[old].resume();
    let state = stack.stop().await;
    assert_eq!(state.crashes, 1, "the operator restarted once");
    let failed_over = state.events.iter().find(|e| e.reason == "FailedOver").expect("a FailedOver Event");
    // Measured from the start the status recorded, not from the new process's check.
    let seconds: f64 = failed_over
        .note
        .split(" s from the first failed check")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {:?}", failed_over.note));
    assert!(seconds >= f64::from(AFTER_SECONDS), "{}", failed_over.note);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_outage_ends_when_the_primary_answers_again() {
    let stack = Stack::start(spec(1, 0, AFTER_SECONDS));
    let first = stack.wait_healthy(1, Duration::from_secs(10)).await;
    let old = stack.ordinal_of(&first);
    stack.servers.lock().unwrap()[old].pause();
    let start = Instant::now();
    while stack.status().primary_unavailable_since.is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "no outage recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.servers.lock().unwrap()[old].resume();
    // A restart now must not resume a countdown the primary's answer ended.
    let start = Instant::now();
    while stack.status().primary_unavailable_since.is_some() {
        assert!(start.elapsed() < Duration::from_secs(10), "the outage never ended: {:#?}", stack.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.state.lock().unwrap().restart_now = true;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stack.primary().as_deref(), Some(first.as_str()));
    assert!(stack.status().primary_unavailable_since.is_none());
    let state = stack.stop().await;
    assert!(state.events.iter().all(|e| e.reason != "FailedOver"), "{:?}", state.events);
}
