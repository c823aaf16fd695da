//! Failover benchmark (run by bench/failover.sh): real redis-server processes, the
//! replication manager driving them, INCR + WAIT 1 load.
//!
//! 1. RUNS times: kill -9 the primary; measure the write-unavailability window (kill to
//!    first acknowledged write on the new primary) and acknowledged writes lost.
//! 2. RUNS times: planned rolling restart (replicas one by one, FAILOVER TO, old primary
//!    last); measure the write pause around the hand-over and over the whole rollout.
//!
//! Env: RUNS (default 20), AFTER_SECONDS (default 1), CLIENTS (default 4).

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code)] // the benchmark needs the failover driver only; the tests use the rest
mod common;

use std::time::{Duration, Instant};

use common::failover_driver::{KEY, Load, Stack, spec};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<44} n={:<3} p50={:>8.3}s p99={:>8.3}s max={:>8.3}s",
        v.len(),
        percentile(&v, 50.0),
        percentile(&v, 99.0),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

struct KillRun {
    window: Option<Duration>,
    lost: usize,
    acks: usize,
}

async fn kill_run(after: u64, clients: usize) -> KillRun {
    let stack = Stack::start(spec(2, 1, after as i32));
    let first = stack.wait_healthy(2, Duration::from_secs(10)).await;
    let load = Load::start(stack.primary_port.clone(), clients, 1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let old = stack.ordinal_of(&first);
    let stack_old_port = stack.ports[old];
    let killed_at = Instant::now();
    stack.servers.lock().unwrap()[old].kill9();
    let new = stack.wait_primary_change(&first, Duration::from_secs(after + 20)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while load.acks_after(killed_at, stack_old_port) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    let final_value: i64 =
        stack.servers.lock().unwrap()[stack.ordinal_of(&new)].cmd(&["GET", KEY]).unwrap_or(0);
    stack.stop().await;
    KillRun {
        window: report.first_ack_after(killed_at, stack_old_port),
        lost: report.lost(final_value) + report.backwards.len(),
        acks: report.acks.len(),
    }
}

struct PlannedRun {
    handover_pause: Duration,
    rollout_pause: Duration,
    lost: usize,
}

async fn planned_run(after: u64, clients: usize) -> PlannedRun {
    let stack = Stack::start(spec(2, 1, after as i32));
    stack.wait_healthy(2, Duration::from_secs(10)).await;
    let load = Load::start(stack.primary_port.clone(), clients, 1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let started = Instant::now();
    stack.state.lock().unwrap().outdated = vec![true; 3];
    while stack.state.lock().unwrap().outdated.iter().any(|o| *o) {
        assert!(started.elapsed() < Duration::from_secs(60), "rolling restart stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new = stack.wait_healthy(2, Duration::from_secs(10)).await;
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    let final_value: i64 =
        stack.servers.lock().unwrap()[stack.ordinal_of(&new)].cmd(&["GET", KEY]).unwrap_or(0);
    let state = stack.stop().await;
    // The hand-over happened during the pass that logged SwitchedOver (a pass is < 1 s
    // when every node answers): the longest gap in the second before and the half
    // second after it is the hand-over pause (or an over-estimate of it).
    let switched =
        state.event_log.iter().find(|(_, r)| r == "SwitchedOver").map(|(t, _)| *t).unwrap_or(finished);
    PlannedRun {
        handover_pause: report
            .longest_gap(switched - Duration::from_secs(1), switched + Duration::from_millis(500)),
        rollout_pause: report.longest_gap(started, finished),
        lost: report.lost(final_value) + report.backwards.len(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let runs = env("RUNS", 20);
    let after = env("AFTER_SECONDS", 1);
    let clients = env("CLIENTS", 4) as usize;
    println!(
        "failover bench: {runs} runs, failover.afterSeconds={after}, {clients} INCR+WAIT 1 clients, 1 primary + 2 replicas"
    );

    let mut windows = vec![];
    let (mut lost, mut acks, mut no_recovery) = (0, 0, 0);
    for i in 0..runs {
        let r = kill_run(after, clients).await;
        match r.window {
            Some(w) => windows.push(w.as_secs_f64()),
            None => no_recovery += 1,
        }
        lost += r.lost;
        acks += r.acks;
        println!("  kill -9 run {:>2}: unavailable {:?}, lost {}, acked {}", i + 1, r.window, r.lost, r.acks);
    }
    let mut planned = vec![];
    for i in 0..runs {
        let r = planned_run(after, clients).await;
        println!(
            "  planned run {:>2}: hand-over pause {:?}, longest pause over the rollout {:?}, lost {}",
            i + 1,
            r.handover_pause,
            r.rollout_pause,
            r.lost
        );
        planned.push(r);
    }
    println!();
    summary("kill -9: write-unavailability window", windows);
    println!(
        "kill -9: acknowledged writes lost             {lost} (of {acks} acknowledged; {no_recovery} runs without recovery)"
    );
    println!("kill -9: target p99 <= afterSeconds + 3 s = {} s", after + 3);
    summary(
        "planned: write pause at the FAILOVER TO hand-over",
        planned.iter().map(|r| r.handover_pause.as_secs_f64()).collect(),
    );
    summary(
        "planned: longest write pause over the rollout",
        planned.iter().map(|r| r.rollout_pause.as_secs_f64()).collect(),
    );
    println!(
        "planned: acknowledged writes lost             {}",
        planned.iter().map(|r| r.lost).sum::<usize>()
    );
    println!("planned: target p99 < 1 s");
}
