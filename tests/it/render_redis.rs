//! The rendered Redis ConfigMap runs for real: its start script and redis.conf start
//! real `redis-server` processes, with the users' ACL passwords from their Secret files,
//! AOF and the min-replicas setting that matches syncReplicas; the readiness probe
//! command works.
//!
//! The start script never starts a master: a pod follows the one peer that answers
//! `ROLE` as master, else `127.0.0.1:1` (nobody) until the operator promotes it. Here
//! the operator's promotions are done by hand, as the `operator` user (`REPLICAOF NO
//! ONE`, `REPLICAOF host port`); counter reads and writes go as the `web` user.
//!
//! Paths and the port are rewritten to a per-pod root dir and loopback ports (no
//! /etc/redis, /etc/redis-auth, /run/redis, /data or cluster DNS here), and peers are
//! given as `REDIS_PEERS` (the script's test-only override of discovery); everything
//! else runs as rendered (`common::redis_server::scripted`). ACL permissions, rotation
//! and TLS have their own tests in `redis_security.rs`.

use crate::common;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use common::redis_server::scripted::{ScriptedRedis, pods, render};

#[test]
fn configmap_names_no_primary_only_the_pod_count() {
    let r = render(2, false);
    assert_eq!(
        r.data.keys().collect::<Vec<_>>(),
        ["acl-rules", "pods", "prestop.sh", "redis.conf", "start.sh"]
    );
    assert_eq!(r.data["pods"], "3");
}

#[test]
fn fresh_stack_pods_start_as_replicas_until_the_operator_promotes_pod_0() {
    let r = render(1, false);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r, tmp.path(), 2, None);
    let (p0, p1) = (ports[0], ports[1]);

    // Pod 0 of a fresh stack: its peer is not up, so it follows nobody (127.0.0.1:1).
    let pod0 = ScriptedRedis::start(&dirs[0], "demo-redis-0", p0, Some(&[p1]));
    pod0.assert_replica_of(1);
    let err = pod0.web::<i64>(&["INCR", "counter:value"]).unwrap_err();
    assert!(
        err.to_string().contains("read only replica"),
        "a node that was never promoted takes no writes: {err}"
    );
    // A password is required; the probe passes on a replica waiting for its master, and
    // fails with a wrong monitor password.
    let denied: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("counter:value").query(&mut pod0.conn(None, None).unwrap());
    assert!(denied.is_err(), "unauthenticated access must fail");
    assert!(pod0.probe(&r.probe, None), "readiness probe fails on a healthy node");
    assert!(
        !pod0.probe(&r.probe, Some("REDISCLI_AUTH='wrong'\nexport REDISCLI_AUTH\nCLI_TLS=''\n")),
        "readiness probe passes with a wrong password"
    );
    for (key, want) in [("appendonly", "yes"), ("repl-diskless-sync", "yes"), ("min-replicas-to-write", "1")]
    {
        assert_eq!(pod0.config(key).as_deref(), Some(want), "{key}");
    }

    // The operator promotes pod 0. syncReplicas = 1: without a replica it refuses writes.
    pod0.promote();
    let err = pod0.web::<i64>(&["INCR", "counter:value"]).unwrap_err();
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");

    // Pod 1 starts after the promotion: it finds the master among its peers (asking
    // ROLE as the replication user) and links up with masteruser/masterauth.
    let pod1 = ScriptedRedis::start(&dirs[1], "demo-redis-1", p1, Some(&[p0]));
    pod1.assert_replica_of(p0);
    pod1.wait_linked();
    pod0.wait_until("replica counted", |p| p.info("connected_slaves").as_deref() == Some("1"));
    pod0.wait_until("write accepted", |p| p.web::<i64>(&["INCR", "counter:value"]).is_ok());
    let acked: i64 = pod0.web(&["WAIT", "1", "2000"]).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(pod1.counter(), Some(1));
    assert!(pod1.probe(&r.probe, None));
    assert!(dirs[0].join("data/appendonlydir").is_dir(), "AOF is written to the data volume");
}

#[test]
fn restarted_former_primary_comes_back_as_replica_of_the_new_primary() {
    let r = render(2, false);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r, tmp.path(), 3, None);
    let peers = |k: usize| -> Vec<u16> {
        ports.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, p)| *p).collect()
    };

    let mut pod0 = ScriptedRedis::start(&dirs[0], "demo-redis-0", ports[0], Some(&peers(0)));
    pod0.promote();
    let pod1 = ScriptedRedis::start(&dirs[1], "demo-redis-1", ports[1], Some(&peers(1)));
    let pod2 = ScriptedRedis::start(&dirs[2], "demo-redis-2", ports[2], Some(&peers(2)));
    for pod in [&pod1, &pod2] {
        pod.assert_replica_of(ports[0]);
        pod.wait_linked();
    }
    pod0.wait_until("write accepted", |p| p.web::<i64>(&["INCR", "counter:value"]).is_ok());
    assert_eq!(pod0.web::<i64>(&["WAIT", "2", "2000"]).unwrap(), 2);

    // The primary dies; the operator promotes pod 1 and repoints pod 2; writes go on.
    pod0.kill9();
    pod1.promote();
    pod2.follow(ports[1]);
    for _ in 0..4 {
        let _: i64 = pod1.web(&["INCR", "counter:value"]).unwrap();
    }
    assert_eq!(pod1.web::<i64>(&["WAIT", "1", "2000"]).unwrap(), 1);

    // Pod 0 restarts with its data: it follows the new primary, never becomes master.
    pod0.restart(&peers(0), false);
    pod0.assert_replica_of(ports[1]);
    pod0.wait_linked();
    pod0.wait_until("caught up", |r| r.counter() == Some(5));
    assert_eq!(pod1.counter(), Some(5));
    assert_eq!(pod1.info("role").as_deref(), Some("master"));
}

#[test]
fn primary_restarted_empty_before_the_failover_wipes_no_replica() {
    let r = render(1, false);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r, tmp.path(), 2, None);
    let (p0, p1) = (ports[0], ports[1]);

    let mut pod0 = ScriptedRedis::start(&dirs[0], "demo-redis-0", p0, Some(&[p1]));
    pod0.promote();
    let pod1 = ScriptedRedis::start(&dirs[1], "demo-redis-1", p1, Some(&[p0]));
    pod1.wait_linked();
    pod0.wait_until("write accepted", |p| p.web::<i64>(&["INCR", "counter:value"]).is_ok());
    for _ in 0..4 {
        let _: i64 = pod0.web(&["INCR", "counter:value"]).unwrap();
    }
    assert_eq!(pod0.web::<i64>(&["WAIT", "1", "2000"]).unwrap(), 1);
    assert_eq!(pod1.counter(), Some(5));

    // The primary comes back with an empty volume before any failover. Its replica
    // still follows it (same address) and keeps retrying; it must not copy the empty
    // dataset. Pod 0 has no master peer, so it waits as a replica of nobody, and Redis
    // refuses SYNC from a replica whose own master link is down.
    pod0.restart(&[p1], true);
    pod0.assert_replica_of(1);
    let keyspace: String = pod0.op(&["INFO", "keyspace"]).unwrap();
    assert!(!keyspace.contains("db0:"), "the restarted node is empty: {keyspace}");
    assert_eq!(pod0.counter(), None);
    // The replica retries its master about once a second: give it several attempts.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pod1.counter(), Some(5), "the replica copied the restarted node's empty dataset");
    assert_eq!(pod1.info("master_link_status").as_deref(), Some("down"));
    assert_eq!(pod0.info("role").as_deref(), Some("slave"));

    // The operator fails over to pod 1 and repoints pod 0, which gets the data back.
    pod1.promote();
    pod0.follow(p1);
    pod0.wait_until("caught up", |r| r.counter() == Some(5));
}

#[test]
fn two_master_peers_mean_wait_for_the_operator() {
    let r = render(2, false);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r, tmp.path(), 3, None);
    // Two writable masters (a stale primary not yet fenced, and the real one), both
    // started by the script and promoted.
    let a = ScriptedRedis::start(&dirs[0], "demo-redis-0", ports[0], Some(&[ports[1]]));
    let b = ScriptedRedis::start(&dirs[1], "demo-redis-1", ports[1], Some(&[ports[0]]));
    a.promote();
    b.promote();
    let mut pod = ScriptedRedis::start(&dirs[2], "demo-redis-2", ports[2], Some(&[ports[0], ports[1]]));
    pod.assert_replica_of(1);
    assert!(pod.log().contains("2 peers answer as master"), "{}", pod.log());
    // With one master and one replica among the peers it follows the master.
    a.follow(ports[1]);
    pod.restart(&[ports[0], ports[1]], false);
    pod.assert_replica_of(ports[1]);
    pod.wait_linked();
}

#[test]
fn without_override_peers_are_the_other_ordinals_of_the_headless_service() {
    let r = render(2, false);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r, tmp.path(), 1, None);
    // No cluster DNS here: the names do not resolve, so no peer is master.
    let pod = ScriptedRedis::start(&dirs[0], "demo-redis-1", ports[0], None);
    pod.assert_replica_of(1);
    let log = pod.log();
    assert!(
        log.contains(
            "start.sh: asking demo-redis-0.demo-redis-headless:6379 demo-redis-2.demo-redis-headless:6379\n"
        ),
        "{log}"
    );
}

/// Wait for `child` to exit within `limit`; how long it took.
fn exits_within(child: &mut Child, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Pod 0 promoted, pod 1 its replica (both started by the rendered script, announcing
/// `announce` when given), once pod 0 lists pod 1.
struct PrimaryAndReplica {
    ports: Vec<u16>,
    pod0: ScriptedRedis,
    pod1: ScriptedRedis,
    _dirs: Vec<PathBuf>,
    _tmp: tempfile::TempDir,
}

fn primary_and_replica(announce: Option<&str>) -> PrimaryAndReplica {
    let r = render(1, false);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r, tmp.path(), 2, None);
    let pod0 =
        ScriptedRedis::start_announcing(&dirs[0], "demo-redis-0", ports[0], Some(&[ports[1]]), announce);
    pod0.promote();
    let pod1 =
        ScriptedRedis::start_announcing(&dirs[1], "demo-redis-1", ports[1], Some(&[ports[0]]), announce);
    pod0.wait_until("the replica listed", |p| p.info("slave0").is_some());
    PrimaryAndReplica { ports, pod0, pod1, _dirs: dirs, _tmp: tmp }
}

#[test]
fn replicas_announce_their_stable_name_and_the_primary_lists_them_by_it() {
    let PrimaryAndReplica { ports, pod0, pod1: _pod1, _tmp, .. } = primary_and_replica(None);
    let listed = pod0.info("slave0").unwrap();
    assert!(
        listed.starts_with(&format!("ip=demo-redis-1.demo-redis-headless,port={},", ports[1])),
        "listed by its stable name: {listed}"
    );
}

#[test]
fn the_prestop_hook_holds_a_primary_until_it_is_handed_over() {
    let PrimaryAndReplica { ports, pod0, pod1, _tmp, .. } = primary_and_replica(Some("localhost"));
    pod1.wait_linked();
    pod0.wait_until("the replica online", |p| p.info("slave0").is_some_and(|l| l.contains("state=online")));

    // A replica's hook returns at once.
    let mut hook = pod1.prestop(10);
    assert!(exits_within(&mut hook, Duration::from_secs(3)).is_some(), "a replica's preStop must not wait");

    // The primary's hook waits while it is the primary with a replica...
    let mut hook = pod0.prestop(10);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(hook.try_wait().unwrap().is_none(), "the primary's preStop returned before any hand-over");
    // ... and returns within a moment of the hand-over (named as the primary lists it).
    let _: () = pod0.op(&["FAILOVER", "TO", "localhost", &ports[1].to_string(), "TIMEOUT", "5000"]).unwrap();
    let took =
        exits_within(&mut hook, Duration::from_secs(5)).expect("preStop still waiting after the hand-over");
    assert!(took < Duration::from_secs(3), "{took:?}");
    pod1.wait_until("pod 1 is the primary", |p| p.info("role").as_deref() == Some("master"));

    // A primary without replicas (the last one, or a deleted stack) stops at once.
    drop(pod0);
    pod1.wait_until("no replica left", |p| p.info("connected_slaves").as_deref() == Some("0"));
    let mut hook = pod1.prestop(10);
    assert!(
        exits_within(&mut hook, Duration::from_secs(3)).is_some(),
        "a lone primary's preStop must not wait"
    );
}

#[test]
fn the_prestop_hook_gives_up_after_prestop_wait() {
    let PrimaryAndReplica { pod0, pod1: _pod1, _tmp, .. } = primary_and_replica(None);
    // Whole seconds of `date +%s`: a 2 s budget waits between 1 and 2 s.
    let mut hook = pod0.prestop(2);
    let took = exits_within(&mut hook, Duration::from_secs(5)).expect("preStop never gave up");
    assert!(took >= Duration::from_millis(900), "gave up too early: {took:?}");
}
