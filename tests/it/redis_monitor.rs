//! The operator's own health checks against real `redis-server` processes: a frozen
//! primary wakes its CounterApp within a second and starts the failover clock at the
//! failed check; a good check stops it; connections are kept between checks.

use crate::common;

use std::time::{Duration, Instant};

use common::redis_server::cluster;
use counterstack::replication::monitor::{AppKey, Monitor, Target, TargetPod};
use counterstack::replication::node::NodeAddr;

const PASSWORD: &str = "s3cret";

fn pod(name: &str, port: u16) -> TargetPod {
    TargetPod { name: name.into(), dial: NodeAddr::new("127.0.0.1", port), ready: true, terminating: false }
}

/// The next wake-up within `limit`, and when it came.
async fn wake(rx: &mut tokio::sync::mpsc::UnboundedReceiver<AppKey>, limit: Duration) -> Option<Instant> {
    tokio::time::timeout(limit, rx.recv()).await.ok().flatten().map(|_| Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_wakes_its_app_and_starts_the_clock_within_a_second() {
    let (primary, replicas) = cluster(1, Some(PASSWORD));
    let replica = &replicas[0];
    let monitor = std::sync::Arc::new(Monitor::default());
    let mut rx = monitor.take_wakeups().unwrap();
    let key = AppKey::new("ns", "demo");
    monitor.watch(
        &key,
        Target {
            pods: vec![pod("demo-redis-0", primary.port), pod("demo-redis-1", replica.port)],
            primary: Some("demo-redis-0".into()),
            auth: counterstack::replication::node::NodeAuth::password(PASSWORD),
        },
    );
    let task = tokio::spawn({
        let m = monitor.clone();
        async move { m.run().await }
    });

    // The first answers are news; then a healthy stack stays silent.
    assert!(wake(&mut rx, Duration::from_secs(3)).await.is_some(), "no first wake-up");
    assert!(wake(&mut rx, Duration::from_millis(2500)).await.is_none(), "a healthy stack woke its app");
    assert_eq!(monitor.down_since(&key), None);
    let connections = |s: &common::redis_server::RedisServer| -> u64 {
        let info: String = s.cmd(&["INFO", "stats"]).unwrap();
        info.lines().find_map(|l| l.strip_prefix("total_connections_received:")?.trim().parse().ok()).unwrap()
    };
    let (p_before, r_before) = (connections(&primary), connections(replica));

    // SIGSTOP the primary: woken within a second (half-second primary checks + 500 ms
    // timeout), the clock started no earlier than the freeze.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frozen = Instant::now();
    primary.pause();
    // A loose bound (the figure is printed): it tells the monitor from waiting for pod
    // readiness (~10 s), without timing a shared machine tightly.
    let woke = wake(&mut rx, Duration::from_secs(3)).await.expect("no wake-up within 3 s of the freeze");
    let since = monitor.down_since(&key).expect("the failover clock did not start");
    primary.resume();
    println!(
        "woken {:?} after the freeze; clock started {:?} after it",
        woke - frozen,
        since.saturating_duration_since(frozen)
    );
    assert!(since + Duration::from_millis(50) >= frozen, "clock started before the freeze");

    // A good check stops the clock (and wakes the app again).
    assert!(wake(&mut rx, Duration::from_secs(3)).await.is_some(), "no wake-up on recovery");
    assert_eq!(monitor.down_since(&key), None, "a good check must stop the clock");

    // Connections are kept: a few reconnects at most (the frozen one), not one per check.
    let (p_new, r_new) = (connections(&primary) - p_before, connections(replica) - r_before);
    assert!(p_new <= 3 && r_new <= 1, "new connections: primary {p_new}, replica {r_new}");

    // A forgotten CounterApp is no longer checked and never woken.
    monitor.forget(&key);
    primary.pause();
    assert!(wake(&mut rx, Duration::from_secs(2)).await.is_none(), "a forgotten app was woken");
    primary.resume();
    task.abort();
}
