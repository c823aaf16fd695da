//! The rendered Redis ConfigMap runs for real: its start script and redis.conf start
//! real `redis-server` processes, with the password, AOF and the min-replicas setting
//! that matches syncReplicas; the readiness probe command works.
//!
//! The start script never starts a master: a pod follows the one peer that answers
//! `ROLE` as master, else `127.0.0.1:1` (nobody) until the operator promotes it. Here
//! the operator's promotions are done by hand (`REPLICAOF NO ONE`, `REPLICAOF host port`).
//!
//! Paths and the port are rewritten to a temp dir and loopback ports (no /etc/redis,
//! /data or cluster DNS here), and peers are given as `REDIS_PEERS` (the script's
//! test-only override of discovery); everything else runs as rendered.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::{RedisServer, free_port};
use counterstack::api::{CounterApp, CounterAppSpec};
use counterstack::build::{self, Inputs};

const PASSWORD: &str = "Zx81mNq2rT5vW7yA9bC3dE6fG8hJ0kL4";

/// A redis-server started through the rendered start script. Killed on drop.
struct ScriptedRedis {
    pod: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// `REDIS_ANNOUNCE` (None: the script's own `POD_NAME.HEADLESS_SERVICE`).
    announce: Option<String>,
}

impl Drop for ScriptedRedis {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl ScriptedRedis {
    /// Run the installed start script in `dir` as pod `pod`, with `peers` as
    /// `REDIS_PEERS` (None: the script's own discovery), and wait for PONG.
    fn start(dir: &Path, pod: &str, port: u16, peers: Option<&[u16]>) -> Self {
        Self::start_announcing(dir, pod, port, peers, None)
    }

    /// [`ScriptedRedis::start`] with `REDIS_ANNOUNCE` (a name that resolves here).
    fn start_announcing(
        dir: &Path,
        pod: &str,
        port: u16,
        peers: Option<&[u16]>,
        announce: Option<&str>,
    ) -> Self {
        let mut r = ScriptedRedis {
            pod: pod.to_string(),
            port,
            dir: dir.to_path_buf(),
            child: None,
            announce: announce.map(str::to_string),
        };
        r.spawn(peers);
        r
    }

    fn spawn(&mut self, peers: Option<&[u16]>) {
        let log = File::create(self.log_path()).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg(self.dir.join("start.sh"))
            .env("POD_NAME", &self.pod)
            .env("REDIS_PASSWORD", PASSWORD)
            .env("HEADLESS_SERVICE", "demo-redis-headless")
            .env_remove("REDIS_PEERS")
            .env_remove("REDIS_ANNOUNCE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(peers) = peers {
            let list: Vec<String> = peers.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            cmd.env("REDIS_PEERS", list.join(" "));
        }
        if let Some(name) = &self.announce {
            cmd.env("REDIS_ANNOUNCE", name);
        }
        self.child = Some(cmd.spawn().expect("sh"));
        self.wait_until("PONG", |r| r.cmd::<String>(&["PING"]).is_ok_and(|p| p == "PONG"));
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("start.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap()
    }

    /// SIGKILL (the script exec'd redis-server, so the child is the server itself).
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restart as a pod restart does: same data dir (or an emptied one), same script.
    fn restart(&mut self, peers: &[u16], empty: bool) {
        self.kill9();
        if empty {
            std::fs::remove_dir_all(self.dir.join("data")).unwrap();
            std::fs::create_dir_all(self.dir.join("data")).unwrap();
        }
        self.spawn(Some(peers));
    }

    fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port);
        let mut c = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
    }

    fn wait_until(&self, what: &str, mut ok: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(start.elapsed() < Duration::from_secs(10), "{}: {what} never happened", self.pod);
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn info(&self, field: &str) -> Option<String> {
        let info: String = self.cmd(&["INFO", "replication"]).ok()?;
        info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
    }

    /// Assert this node is a replica of `127.0.0.1:port`.
    fn assert_replica_of(&self, port: u16) {
        assert_eq!(self.info("role").as_deref(), Some("slave"), "{} must be a replica", self.pod);
        assert_eq!(self.info("master_host").as_deref(), Some("127.0.0.1"), "{}", self.pod);
        assert_eq!(self.info("master_port"), Some(port.to_string()), "{}: {}", self.pod, self.log());
    }

    /// What the operator does to promote a node.
    fn promote(&self) {
        let _: () = self.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap();
        assert_eq!(self.info("role").as_deref(), Some("master"));
    }

    /// What the operator does to repoint a node.
    fn follow(&self, port: u16) {
        let _: () = self.cmd(&["REPLICAOF", "127.0.0.1", &port.to_string()]).unwrap();
        self.wait_until("link up", |r| r.info("master_link_status").as_deref() == Some("up"));
    }

    fn counter(&self) -> Option<i64> {
        self.cmd::<Option<i64>>(&["GET", "counter"]).unwrap()
    }
}

/// What a test needs from the rendered children.
struct Rendered {
    data: BTreeMap<String, String>,
    probe: String,
}

/// Render a CounterApp `demo` with `replicas` Redis replicas (syncReplicas defaults to 1).
fn render(replicas: i32) -> Rendered {
    let mut spec = CounterAppSpec::default();
    spec.redis.replicas = replicas;
    let cr = CounterApp::new("demo", spec);
    let inputs = Inputs {
        default_web_image: "unused".to_string(),
        passwords: build::Passwords::same(PASSWORD),
        tls: None,
        primary: None,
        operator_namespace: Some("counterstack-system".to_string()),
    };
    let children = build::all(&cr, &inputs).unwrap();
    let data = children.redis_config.data.unwrap();
    let sts = children.redis_statefulset.spec.unwrap();
    let container = &sts.template.spec.unwrap().containers[0];
    let probe = container.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.as_ref().unwrap()
        [2]
    .clone();
    Rendered { data, probe }
}

/// Write the ConfigMap's files for one pod into `dir`, rewritten for loopback.
fn install(data: &BTreeMap<String, String>, dir: &Path, port: u16) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let conf = data["redis.conf"]
        .replace("port 6379\n", &format!("port {port}\n"))
        .replace("bind * -::*\n", "bind 127.0.0.1\n")
        .replace("dir /data\n", &format!("dir {}\n", dir.join("data").display()));
    assert_ne!(conf, data["redis.conf"], "redis.conf no longer has the lines this test rewrites");
    let script = data["start.sh"].replace("/etc/redis", &dir.display().to_string());
    assert_ne!(script, data["start.sh"], "start.sh no longer reads /etc/redis");
    let prestop = data["prestop.sh"].replace("-p 6379", &format!("-p {port}"));
    assert_ne!(prestop, data["prestop.sh"], "prestop.sh no longer dials -p 6379");
    std::fs::write(dir.join("redis.conf"), conf).unwrap();
    std::fs::write(dir.join("start.sh"), script).unwrap();
    std::fs::write(dir.join("prestop.sh"), prestop).unwrap();
    std::fs::write(dir.join("pods"), &data["pods"]).unwrap();
}

/// `n` pod directories with the rendered files installed, and their ports.
fn pods(data: &BTreeMap<String, String>, tmp: &Path, n: usize) -> (Vec<PathBuf>, Vec<u16>) {
    let dirs: Vec<PathBuf> = (0..n).map(|k| tmp.join(format!("pod-{k}"))).collect();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    for (dir, port) in dirs.iter().zip(&ports) {
        install(data, dir, *port);
    }
    (dirs, ports)
}

/// The readiness probe's command, pointed at `port`, run with `password`.
fn readiness(probe: &str, port: u16, password: &str) -> bool {
    let cmd = probe.replace("-p 6379", &format!("-p {port}"));
    Command::new("sh").args(["-c", &cmd]).env("REDIS_PASSWORD", password).status().unwrap().success()
}

#[test]
fn configmap_names_no_primary_only_the_pod_count() {
    let r = render(2);
    assert_eq!(r.data.keys().collect::<Vec<_>>(), ["pods", "prestop.sh", "redis.conf", "start.sh"]);
    assert_eq!(r.data["pods"], "3");
}

#[test]
fn fresh_stack_pods_start_as_replicas_until_the_operator_promotes_pod_0() {
    let r = render(1);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r.data, tmp.path(), 2);
    let (p0, p1) = (ports[0], ports[1]);

    // Pod 0 of a fresh stack: its peer is not up, so it follows nobody (127.0.0.1:1).
    let pod0 = ScriptedRedis::start(&dirs[0], "demo-redis-0", p0, Some(&[p1]));
    pod0.assert_replica_of(1);
    let err = pod0.cmd::<i64>(&["INCR", "counter"]).unwrap_err();
    assert!(
        err.to_string().contains("read only replica"),
        "a node that was never promoted takes no writes: {err}"
    );
    // The password is required; the probe passes on a replica waiting for its master.
    let anon = redis::Client::open(format!("redis://127.0.0.1:{p0}")).unwrap();
    let denied: redis::RedisResult<String> =
        redis::cmd("GET").arg("k").query(&mut anon.get_connection().unwrap());
    assert!(denied.is_err(), "unauthenticated access must fail");
    assert!(readiness(&r.probe, p0, PASSWORD), "readiness probe fails on a healthy node");
    assert!(!readiness(&r.probe, p0, "wrong"), "readiness probe passes with a wrong password");
    for (key, want) in [("appendonly", "yes"), ("repl-diskless-sync", "yes"), ("min-replicas-to-write", "1")]
    {
        let got: Vec<String> = pod0.cmd(&["CONFIG", "GET", key]).unwrap();
        assert_eq!(got.get(1).map(String::as_str), Some(want), "{key}");
    }

    // The operator promotes pod 0. syncReplicas = 1: without a replica it refuses writes.
    pod0.promote();
    let err = pod0.cmd::<i64>(&["INCR", "counter"]).unwrap_err();
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");

    // Pod 1 starts after the promotion: it finds the master among its peers.
    let pod1 = ScriptedRedis::start(&dirs[1], "demo-redis-1", p1, Some(&[p0]));
    pod1.assert_replica_of(p0);
    pod1.wait_until("link up", |r| r.info("master_link_status").as_deref() == Some("up"));
    pod0.wait_until("replica counted", |p| p.info("connected_slaves").as_deref() == Some("1"));
    pod0.wait_until("write accepted", |p| p.cmd::<i64>(&["INCR", "counter"]).is_ok());
    let acked: i64 = pod0.cmd(&["WAIT", "1", "2000"]).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(pod1.counter(), Some(1));
    assert!(readiness(&r.probe, p1, PASSWORD));
    assert!(dirs[0].join("data/appendonlydir").is_dir(), "AOF is written to the data volume");
}

#[test]
fn restarted_former_primary_comes_back_as_replica_of_the_new_primary() {
    let r = render(2);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r.data, tmp.path(), 3);
    let peers = |k: usize| -> Vec<u16> {
        ports.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, p)| *p).collect()
    };

    let mut pod0 = ScriptedRedis::start(&dirs[0], "demo-redis-0", ports[0], Some(&peers(0)));
    pod0.promote();
    let pod1 = ScriptedRedis::start(&dirs[1], "demo-redis-1", ports[1], Some(&peers(1)));
    let pod2 = ScriptedRedis::start(&dirs[2], "demo-redis-2", ports[2], Some(&peers(2)));
    for pod in [&pod1, &pod2] {
        pod.assert_replica_of(ports[0]);
        pod.wait_until("link up", |r| r.info("master_link_status").as_deref() == Some("up"));
    }
    pod0.wait_until("write accepted", |p| p.cmd::<i64>(&["INCR", "counter"]).is_ok());
    assert_eq!(pod0.cmd::<i64>(&["WAIT", "2", "2000"]).unwrap(), 2);

    // The primary dies; the operator promotes pod 1 and repoints pod 2; writes go on.
    pod0.kill9();
    pod1.promote();
    pod2.follow(ports[1]);
    for _ in 0..4 {
        let _: i64 = pod1.cmd(&["INCR", "counter"]).unwrap();
    }
    assert_eq!(pod1.cmd::<i64>(&["WAIT", "1", "2000"]).unwrap(), 1);

    // Pod 0 restarts with its data: it follows the new primary, never becomes master.
    pod0.restart(&peers(0), false);
    pod0.assert_replica_of(ports[1]);
    pod0.wait_until("link up", |r| r.info("master_link_status").as_deref() == Some("up"));
    pod0.wait_until("caught up", |r| r.counter() == Some(5));
    assert_eq!(pod1.counter(), Some(5));
    assert_eq!(pod1.info("role").as_deref(), Some("master"));
}

#[test]
fn primary_restarted_empty_before_the_failover_wipes_no_replica() {
    let r = render(1);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r.data, tmp.path(), 2);
    let (p0, p1) = (ports[0], ports[1]);

    let mut pod0 = ScriptedRedis::start(&dirs[0], "demo-redis-0", p0, Some(&[p1]));
    pod0.promote();
    let pod1 = ScriptedRedis::start(&dirs[1], "demo-redis-1", p1, Some(&[p0]));
    pod1.wait_until("link up", |r| r.info("master_link_status").as_deref() == Some("up"));
    pod0.wait_until("write accepted", |p| p.cmd::<i64>(&["INCR", "counter"]).is_ok());
    for _ in 0..4 {
        let _: i64 = pod0.cmd(&["INCR", "counter"]).unwrap();
    }
    assert_eq!(pod0.cmd::<i64>(&["WAIT", "1", "2000"]).unwrap(), 1);
    assert_eq!(pod1.counter(), Some(5));

    // The primary comes back with an empty volume before any failover. Its replica
    // still follows it (same address) and keeps retrying; it must not copy the empty
    // dataset. Pod 0 has no master peer, so it waits as a replica of nobody, and Redis
    // refuses SYNC from a replica whose own master link is down.
    pod0.restart(&[p1], true);
    pod0.assert_replica_of(1);
    assert_eq!(pod0.cmd::<i64>(&["DBSIZE"]).unwrap(), 0);
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
    let r = render(2);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r.data, tmp.path(), 1);
    // Two writable masters (a stale primary not yet fenced, and the real one).
    let a = RedisServer::start_with(Some(PASSWORD), &[]);
    let b = RedisServer::start_with(Some(PASSWORD), &[]);
    let pod = ScriptedRedis::start(&dirs[0], "demo-redis-2", ports[0], Some(&[a.port, b.port]));
    pod.assert_replica_of(1);
    assert!(pod.log().contains("2 peers answer as master"), "{}", pod.log());
    // With one master and one replica among the peers it follows the master.
    let _: () = a.cmd(&["REPLICAOF", "127.0.0.1", &b.port.to_string()]).unwrap();
    let mut pod = pod;
    pod.restart(&[a.port, b.port], false);
    pod.assert_replica_of(b.port);
}

#[test]
fn without_override_peers_are_the_other_ordinals_of_the_headless_service() {
    let r = render(2);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r.data, tmp.path(), 1);
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

/// The preStop hook of `dir`'s pod, started in the background (`PRESTOP_WAIT` seconds).
fn prestop(dir: &Path, wait_secs: u32) -> Child {
    Command::new("sh")
        .arg(dir.join("prestop.sh"))
        .env("REDIS_PASSWORD", PASSWORD)
        .env("PRESTOP_WAIT", wait_secs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
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
    dirs: Vec<PathBuf>,
    ports: Vec<u16>,
    pod0: ScriptedRedis,
    pod1: ScriptedRedis,
    _tmp: tempfile::TempDir,
}

fn primary_and_replica(announce: Option<&str>) -> PrimaryAndReplica {
    let r = render(1);
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, ports) = pods(&r.data, tmp.path(), 2);
    let pod0 =
        ScriptedRedis::start_announcing(&dirs[0], "demo-redis-0", ports[0], Some(&[ports[1]]), announce);
    pod0.promote();
    let pod1 =
        ScriptedRedis::start_announcing(&dirs[1], "demo-redis-1", ports[1], Some(&[ports[0]]), announce);
    pod0.wait_until("the replica listed", |p| p.info("slave0").is_some());
    PrimaryAndReplica { dirs, ports, pod0, pod1, _tmp: tmp }
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
    let PrimaryAndReplica { dirs, ports, pod0, pod1, _tmp } = primary_and_replica(Some("localhost"));
    pod1.wait_until("linked", |p| p.info("master_link_status").as_deref() == Some("up"));
    pod0.wait_until("the replica online", |p| p.info("slave0").is_some_and(|l| l.contains("state=online")));

    // A replica's hook returns at once.
    let mut hook = prestop(&dirs[1], 10);
    assert!(exits_within(&mut hook, Duration::from_secs(3)).is_some(), "a replica's preStop must not wait");

    // The primary's hook waits while it is the primary with a replica...
    let mut hook = prestop(&dirs[0], 10);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(hook.try_wait().unwrap().is_none(), "the primary's preStop returned before any hand-over");
    // ... and returns within a moment of the hand-over (named as the primary lists it).
    let _: () = pod0.cmd(&["FAILOVER", "TO", "localhost", &ports[1].to_string(), "TIMEOUT", "5000"]).unwrap();
    let took =
        exits_within(&mut hook, Duration::from_secs(5)).expect("preStop still waiting after the hand-over");
    assert!(took < Duration::from_secs(3), "{took:?}");
    pod1.wait_until("pod 1 is the primary", |p| p.info("role").as_deref() == Some("master"));

    // A primary without replicas (the last one, or a deleted stack) stops at once.
    drop(pod0);
    pod1.wait_until("no replica left", |p| p.info("connected_slaves").as_deref() == Some("0"));
    let mut hook = prestop(&dirs[1], 10);
    assert!(
        exits_within(&mut hook, Duration::from_secs(3)).is_some(),
        "a lone primary's preStop must not wait"
    );
}

#[test]
fn the_prestop_hook_gives_up_after_prestop_wait() {
    let PrimaryAndReplica { dirs, pod0: _pod0, pod1: _pod1, _tmp, .. } = primary_and_replica(None);
    // Whole seconds of `date +%s`: a 2 s budget waits between 1 and 2 s.
    let mut hook = prestop(&dirs[0], 2);
    let took = exits_within(&mut hook, Duration::from_secs(5)).expect("preStop never gave up");
    assert!(took >= Duration::from_millis(900), "gave up too early: {took:?}");
}
