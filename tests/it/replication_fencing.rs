//! Bootstrap from pods started the safe way (every node a replica of nobody), and a former
//! primary that comes back WITH its old (stale) data as a writable master: it is demoted
//! before it could be labelled primary, and its stale data never reaches anyone.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::failover_driver::{DatasetMonitor, KEY, Load, Stack, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_when_every_pod_starts_as_a_replica() {
    // The recommended start script never starts a master: here every node follows an
    // address nobody answers on.
    let stack = Stack::start_with(spec(2, 1, 1), &["--replicaof", "127.0.0.1", "1"]);
    let primary = stack.wait_healthy(2, Duration::from_secs(10)).await;
    assert_eq!(primary, "demo-redis-0");
    let status = stack.status();
    assert_eq!(status.epoch, 1);
    let load = Load::start(stack.primary_port.clone(), 2, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    assert!(!report.acks.is_empty(), "writes acknowledged with WAIT 1 after bootstrap");
    let min: Vec<String> =
        stack.servers.lock().unwrap()[0].cmd(&["CONFIG", "GET", "min-replicas-to-write"]).unwrap();
    assert_eq!(min[1], "1", "min-replicas-to-write follows syncReplicas");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn returning_primary_with_stale_data_is_demoted() {
    let stack = Stack::start(spec(2, 1, 1));
    let first = stack.wait_healthy(2, Duration::from_secs(10)).await;
    let load = Load::start(stack.primary_port.clone(), 4, 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let old = stack.ordinal_of(&first);
    stack.servers.lock().unwrap()[old].kill9();
    let new = stack.wait_primary_change(&first, Duration::from_secs(6)).await;
    stack.wait_healthy(1, Duration::from_secs(5)).await;
    // Let the new primary get well ahead of what the old one has on disk.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let monitor = DatasetMonitor::start(stack.ports.clone());
    monitor.mark_restart(old);
    let old_port = stack.ports[old];
    // Back with its AOF (stale: it misses every write since the kill), as a master.
    stack.servers.lock().unwrap()[old].restart();
    let restarted_at = Instant::now();
    let mut labelled_old = false;
    let new_port = stack.ports[stack.ordinal_of(&new)].to_string();
    loop {
        labelled_old |= stack.primary_port.load(Ordering::SeqCst) == old_port;
        let following = {
            let servers = stack.servers.lock().unwrap();
            servers[old].info_field("master_port").as_deref() == Some(new_port.as_str())
                && servers[old].info_field("master_link_status").as_deref() == Some("up")
        };
        if following {
            break;
        }
        assert!(restarted_at.elapsed() < Duration::from_secs(5), "stale old primary not demoted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;
    let shrinks = monitor.stop().await;
    let final_value: i64 = stack.servers.lock().unwrap()[stack.ordinal_of(&new)].cmd(&["GET", KEY]).unwrap();
    // Once demoted it follows the new primary: it must catch up with every acknowledged
    // write (polled, since on a loaded machine the stream can trail by a moment).
    let caught_up_by = Instant::now() + Duration::from_secs(5);
    let old_value: i64 = loop {
        let v: i64 = stack.servers.lock().unwrap()[old].cmd(&["GET", KEY]).unwrap();
        if v >= report.max_acked() || Instant::now() > caught_up_by {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let state = stack.stop().await;
    assert!(!labelled_old, "the returning old primary was labelled primary");
    assert_eq!(report.lost(final_value), 0);
    assert!(report.backwards.is_empty(), "{:?}", report.backwards);
    assert!(shrinks.is_empty(), "a dataset shrank: {shrinks:?}");
    assert!(
        old_value >= report.max_acked() - 100,
        "the demoted old primary did not catch up with the new one ({old_value})"
    );
    assert!(
        state.events.iter().any(|e| e.reason == "Demoted" && e.note.contains(&first)),
        "{:?}",
        state.events
    );
}
