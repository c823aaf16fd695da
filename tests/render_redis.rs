//! The rendered Redis ConfigMap runs for real: its start script and redis.conf start a
//! real `redis-server` as primary or replica, with the password, AOF and the
//! min-replicas setting that matches syncReplicas; the readiness probe command works.
//!
//! Paths, the port and the primary's host are rewritten to a temp dir and loopback
//! ports (no /etc/redis, /data or cluster DNS here); everything else runs as rendered.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::free_port;
use counterstack::api::{CounterApp, CounterAppSpec};
use counterstack::build::{self, Inputs};

const PASSWORD: &str = "Zx81mNq2rT5vW7yA9bC3dE6fG8hJ0kL4";

/// A redis-server started through the rendered start script. Killed on drop.
struct ScriptedRedis {
    port: u16,
    child: Child,
}

impl Drop for ScriptedRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScriptedRedis {
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
            assert!(start.elapsed() < Duration::from_secs(10), "port {}: {what} never happened", self.port);
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn info(&self, field: &str) -> Option<String> {
        let info: String = self.cmd(&["INFO", "replication"]).ok()?;
        info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
    }
}

/// Write the ConfigMap's files for one pod into `dir`, rewritten for loopback.
fn install(data: &std::collections::BTreeMap<String, String>, dir: &Path, port: u16, primary_port: u16) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let conf = data["redis.conf"]
        .replace("port 6379\n", &format!("port {port}\n"))
        .replace("bind * -::*\n", "bind 127.0.0.1\n")
        .replace("dir /data\n", &format!("dir {}\n", dir.join("data").display()));
    assert_ne!(conf, data["redis.conf"], "redis.conf no longer has the lines this test rewrites");
    let script = data["start.sh"]
        .replace("/etc/redis", &dir.display().to_string())
        .replace("\"$primary.$HEADLESS_SERVICE\" 6379", &format!("127.0.0.1 {primary_port}"));
    assert!(script.contains(&format!("127.0.0.1 {primary_port}")), "start.sh changed: {script}");
    std::fs::write(dir.join("redis.conf"), conf).unwrap();
    std::fs::write(dir.join("start.sh"), script).unwrap();
    std::fs::write(dir.join("primary"), &data["primary"]).unwrap();
}

fn start(dir: &Path, pod: &str, port: u16) -> ScriptedRedis {
    let child = Command::new("sh")
        .arg(dir.join("start.sh"))
        .env("POD_NAME", pod)
        .env("REDIS_PASSWORD", PASSWORD)
        .env("HEADLESS_SERVICE", "demo-redis-headless")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    let r = ScriptedRedis { port, child };
    r.wait_until("PONG", |r| r.cmd::<String>(&["PING"]).is_ok_and(|p| p == "PONG"));
    r
}

/// The readiness probe's command, pointed at `port`, run with `password`.
fn readiness(probe: &str, port: u16, password: &str) -> bool {
    let cmd = probe.replace("-p 6379", &format!("-p {port}"));
    Command::new("sh").args(["-c", &cmd]).env("REDIS_PASSWORD", password).status().unwrap().success()
}

#[test]
fn rendered_config_starts_a_replicated_password_protected_redis() {
    let mut spec = CounterAppSpec::default();
    spec.redis.replicas = 1;
    let cr = CounterApp::new("demo", spec);
    let inputs = Inputs {
        default_web_image: "unused".to_string(),
        redis_password: PASSWORD.to_string(),
        primary: Some("demo-redis-0".to_string()),
    };
    let children = build::all(&cr, &inputs).unwrap();
    let data = children.redis_config.data.unwrap();
    let sts = children.redis_statefulset.spec.unwrap();
    let container = &sts.template.spec.unwrap().containers[0];
    let probe = container.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.as_ref().unwrap()
        [2]
    .clone();

    let tmp = tempfile::tempdir().unwrap();
    let (p0, p1) = (free_port(), free_port());
    let dirs: Vec<PathBuf> = (0..2).map(|k| tmp.path().join(format!("pod-{k}"))).collect();
    install(&data, &dirs[0], p0, p0);
    install(&data, &dirs[1], p1, p0);

    let primary = start(&dirs[0], "demo-redis-0", p0);
    assert_eq!(primary.info("role").as_deref(), Some("master"));
    // The password is required.
    let anon = redis::Client::open(format!("redis://127.0.0.1:{p0}")).unwrap();
    let denied: redis::RedisResult<String> =
        redis::cmd("GET").arg("k").query(&mut anon.get_connection().unwrap());
    assert!(denied.is_err(), "unauthenticated access must fail");
    assert!(readiness(&probe, p0, PASSWORD), "readiness probe fails on a healthy primary");
    assert!(!readiness(&probe, p0, "wrong"), "readiness probe passes with a wrong password");
    for (key, want) in [("appendonly", "yes"), ("repl-diskless-sync", "yes"), ("min-replicas-to-write", "1")]
    {
        let got: Vec<String> = primary.cmd(&["CONFIG", "GET", key]).unwrap();
        assert_eq!(got.get(1).map(String::as_str), Some(want), "{key}");
    }
    // syncReplicas = 1: without a replica the primary refuses writes.
    let err = primary.cmd::<i64>(&["INCR", "counter"]).unwrap_err();
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");

    let replica = start(&dirs[1], "demo-redis-1", p1);
    replica.wait_until("link up", |r| r.info("master_link_status").as_deref() == Some("up"));
    assert_eq!(replica.info("role").as_deref(), Some("slave"));
    primary.wait_until("replica counted", |p| p.info("connected_slaves").as_deref() == Some("1"));
    primary.wait_until("write accepted", |p| p.cmd::<i64>(&["INCR", "counter"]).is_ok());
    let acked: i64 = primary.cmd(&["WAIT", "1", "2000"]).unwrap();
    assert_eq!(acked, 1);
    assert_eq!(replica.cmd::<String>(&["GET", "counter"]).unwrap(), "1");
    assert!(readiness(&probe, p1, PASSWORD));
    assert!(dirs[0].join("data/appendonlydir").is_dir(), "AOF is written to the data volume");
}
