//! Real `redis-server` processes on loopback ports the tests allocate (never mocks).
//!
//! Every server gets its own data directory, append-only persistence (so a restart keeps
//! data, as on a PersistentVolume) and diskless replication with no delay, so replicas
//! sync in milliseconds.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bind to port 0 and release it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// One `redis-server` child process. Killed (SIGKILL) on drop.
pub struct RedisServer {
    pub port: u16,
    pub password: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    /// A standalone server (a primary) without a password.
    pub fn start() -> Self {
        Self::start_with(None, &[])
    }

    /// A server with an optional password (`requirepass` and `masterauth`) and extra
    /// `--key value` arguments.
    pub fn start_with(password: Option<&str>, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut s = Self {
            port: free_port(),
            password: password.map(str::to_string),
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    /// A server without a password on a given `port` (e.g. one a service was told about
    /// before Redis existed: start the service first, Redis later).
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut s = Self { port, password: None, dir, child: None, extra: Vec::new() };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    fn spawn_with(&mut self, once: &[&str]) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "no", "--daemonize", "no"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"])
            .args(["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"])
            .args(["--repl-diskless-load", "disabled", "--repl-timeout", "60"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path());
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw, "--masterauth", pw]);
        }
        cmd.args(&self.extra);
        cmd.args(once);
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).stdin(Stdio::null());
        let child = cmd.spawn().expect("spawn redis-server (apt-get install redis-server)");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10));
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `redis://[:password@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A fresh synchronous connection.
    pub fn conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// Run one command and return its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let mut c = self.conn()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
    }

    /// Wait until the server answers PING (panics after `timeout`).
    pub fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(pong) = self.cmd::<String>(&["PING"])
                && pong == "PONG"
            {
                return;
            }
            assert!(start.elapsed() < timeout, "redis-server on port {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Make this server a replica of `primary` and wait until the link is up.
    pub fn replicate(&self, primary: &RedisServer) {
        let _: () = self.cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]).expect("REPLICAOF");
        self.wait_link_up(Duration::from_secs(10));
    }

    /// Wait until `master_link_status:up` (panics after `timeout`).
    pub fn wait_link_up(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(info) = self.cmd::<String>(&["INFO", "replication"])
                && info.contains("master_link_status:up")
            {
                return;
            }
            assert!(start.elapsed() < timeout, "replica on port {} never linked", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until this primary sees `n` replicas in state `online` (a replica's link can
    /// be up before the primary counts it for `WAIT`; panics after `timeout`).
    pub fn wait_online_replicas(&self, n: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(info) = self.cmd::<String>(&["INFO", "replication"])
                && info.lines().filter(|l| l.starts_with("slave") && l.contains("state=online")).count() >= n
            {
                return;
            }
            assert!(start.elapsed() < timeout, "primary on port {} never saw {n} online replicas", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `INFO replication` field, e.g. `role`, `master_repl_offset`.
    pub fn info_field(&self, field: &str) -> Option<String> {
        let info: String = self.cmd(&["INFO", "replication"]).ok()?;
        info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// SIGKILL and reap: the process dies without a chance to flush or hand over.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process is frozen (connections hang) until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Start again on the same port with the same data directory (a pod restart).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Start again on the same port with an EMPTY data directory (a pod whose volume was
    /// lost).
    pub fn restart_empty(&mut self) {
        self.restart_with(true, &[]);
    }

    /// SIGKILL, then start again on the same port, keeping the data directory unless
    /// `empty`, with `once` added to this start's arguments only (for example
    /// `["--replicaof", "127.0.0.1", "7001"]`, as a pod's start script would).
    /// SIGTERM and wait for the exit, as the kubelet does when a pod is deleted (Redis
    /// flushes its AOF on the way out); SIGKILL if it takes longer than `grace`.
    pub fn stop_gracefully(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            self.resume_pid(child.id());
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn resume_pid(&self, pid: u32) {
        let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
    }

    /// A planned pod restart: graceful stop, then start with the same data and
    /// `once` arguments.
    pub fn restart_gracefully_with(&mut self, once: &[&str]) {
        self.stop_gracefully(Duration::from_secs(10));
        self.spawn_with(once);
    }

    pub fn restart_with(&mut self, empty: bool, once: &[&str]) {
        self.kill9();
        if !empty {
            self.spawn_with(once);
            return;
        }
        for entry in std::fs::read_dir(self.dir.path()).expect("read redis dir").flatten() {
            let p = entry.path();
            if p.file_name().is_some_and(|n| n == "redis.log") {
                continue;
            }
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
        self.spawn_with(once);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
    }
}

/// A primary and `n` replicas already linked to it.
pub fn cluster(n: usize, password: Option<&str>) -> (RedisServer, Vec<RedisServer>) {
    let primary = RedisServer::start_with(password, &[]);
    let replicas: Vec<_> = (0..n)
        .map(|_| {
            let r = RedisServer::start_with(password, &[]);
            r.replicate(&primary);
            r
        })
        .collect();
    (primary, replicas)
}
