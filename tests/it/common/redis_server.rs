//! Real `redis-server` processes on loopback ports the tests allocate (never mocks).
//!
//! Every server gets its own data directory, append-only persistence (so a restart keeps
//! data, as on a PersistentVolume) and diskless replication with no delay, so replicas
//! sync in milliseconds.

use std::net::TcpListener;
use std::path::PathBuf;
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

/// Redis pods started the way a Redis container starts: the rendered ConfigMap's start
/// script and redis.conf, the users' Secret files, and (optionally) a TLS Secret, all
/// installed under a per-pod root directory instead of `/etc/redis`, `/etc/redis-auth`,
/// `/etc/redis-tls`, `/run/redis` and `/data`, on a loopback port instead of 6379.
pub mod scripted {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use counterstack::acl::RedisUser;
    use counterstack::api::{CounterApp, CounterAppSpec, RedisTlsSpec};
    use counterstack::children::configmap::{AUTH_PATH, MOUNT_PATH, RUN_PATH, TLS_PATH};
    use counterstack::children::{self, Inputs, Passwords, TlsInputs, UserPassword};
    use redis::{ConnectionAddr, IntoConnectionInfo};

    pub use super::free_port;

    /// Distinct settled passwords per user (what the operator generates into Secrets).
    pub fn passwords() -> Passwords {
        Passwords {
            web: UserPassword::settled("web-Zx81mNq2rT5vW7yA9bC3dE6fG8hJ"),
            replication: UserPassword::settled("repl-Q2w3E4r5T6y7U8i9O0pAsDfGhJk"),
            operator: UserPassword::settled("oper-M1n2B3v4C5x6Z7l8K9j0HgFdSaP"),
        }
    }

    /// What a test needs from the rendered children.
    pub struct Rendered {
        pub data: BTreeMap<String, String>,
        /// The readiness probe's shell command (`sh -c COMMAND`).
        pub probe: String,
        pub tls: bool,
    }

    /// Render a CounterApp `demo` with `replicas` Redis replicas (syncReplicas defaults
    /// to 1), with `spec.redis.tls` when `tls`.
    pub fn render(replicas: i32, tls: bool) -> Rendered {
        let mut spec = CounterAppSpec::default();
        spec.redis.replicas = replicas;
        if tls {
            spec.redis.tls =
                Some(RedisTlsSpec { secret_name: Some("demo-redis-tls".into()), issuer_ref: None });
        }
        let cr = CounterApp::new("demo", spec);
        let inputs = Inputs {
            default_web_image: "unused".to_string(),
            passwords: passwords(),
            tls: tls.then(|| TlsInputs { ca_sha256: "0".repeat(64), cert_sha256: "1".repeat(64) }),
            operator_namespace: Some("counterstack-system".to_string()),
        };
        let children = children::all(&cr, &inputs).unwrap();
        let data = children.redis_config.data.unwrap();
        let sts = children.redis_statefulset.spec.unwrap();
        let container = &sts.template.spec.unwrap().containers[0];
        let probe =
            container.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap().command.as_ref().unwrap()[2]
                .clone();
        Rendered { data, probe, tls }
    }

    /// Rewrite the pod's absolute paths under `root` (`/etc/redis...` and `/run/redis`
    /// keep their shape below it) and the port 6379 of the local node to `port`.
    pub fn localize(text: &str, root: &Path, port: u16) -> String {
        // AUTH_PATH and TLS_PATH start with MOUNT_PATH: one replacement covers all three.
        assert!(AUTH_PATH.starts_with(MOUNT_PATH) && TLS_PATH.starts_with(MOUNT_PATH));
        let root = root.display().to_string();
        text.replace(MOUNT_PATH, &format!("{root}{MOUNT_PATH}"))
            .replace(RUN_PATH, &format!("{root}{RUN_PATH}"))
            .replace("-p 6379", &format!("-p {port}"))
    }

    /// Write each user's Secret files (`USER/password`, `USER/previous`) for the pod at
    /// `root`, as the projected Secret volume holds them.
    pub fn write_secrets(root: &Path, passwords: &Passwords) {
        for user in RedisUser::ALL {
            let dir = root.join(AUTH_PATH.trim_start_matches('/')).join(user.name());
            std::fs::create_dir_all(&dir).unwrap();
            let pw = passwords.get(user);
            std::fs::write(dir.join("password"), &pw.password).unwrap();
            std::fs::write(dir.join("previous"), &pw.previous).unwrap();
        }
    }

    /// The TLS Secret's files for every pod: `ca.crt`, `tls.crt`, `tls.key`.
    #[derive(Clone, Debug)]
    pub struct TlsFiles {
        pub dir: PathBuf,
    }

    impl TlsFiles {
        pub fn ca_pem(&self) -> Vec<u8> {
            std::fs::read(self.dir.join("ca.crt")).unwrap()
        }
    }

    /// A self-signed CA in `dir` (`ca.crt`, `ca.key`).
    pub fn generate_ca(dir: &Path) {
        crate::common::pki::make_ca(dir, "ca");
    }

    /// A CA and a server certificate it signed (`tls.crt`, `tls.key`), naming `sans`
    /// (`DNS:demo-redis-primary,IP:127.0.0.1`, ...).
    pub fn generate_tls(dir: &Path, sans: &str) -> TlsFiles {
        generate_ca(dir);
        crate::common::pki::make_server(dir, "tls", "ca", sans);
        TlsFiles { dir: dir.to_path_buf() }
    }

    /// Install one pod at `root`: the ConfigMap's files (rewritten for `root` and
    /// `port`), the users' Secret files, the TLS Secret's files when given, and the
    /// empty `run` and data directories.
    pub fn install(r: &Rendered, root: &Path, port: u16, passwords: &Passwords, tls: Option<&TlsFiles>) {
        let data = &r.data;
        let etc = root.join(MOUNT_PATH.trim_start_matches('/'));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::create_dir_all(root.join(RUN_PATH.trim_start_matches('/'))).unwrap();
        let conf = localize(&data["redis.conf"], root, port)
            // `port 6379` or `tls-port 6379`
            .replace("port 6379\n", &format!("port {port}\n"))
            .replace("bind * -::*\n", "bind 127.0.0.1\n")
            .replace("dir /data\n", &format!("dir {}\n", root.join("data").display()));
        assert!(
            !conf.contains("6379") && conf.contains("bind 127.0.0.1\n"),
            "redis.conf changed shape: {conf}"
        );
        assert_eq!(conf.contains("tls-port"), r.tls);
        let script = localize(&data["start.sh"], root, port);
        for path in [MOUNT_PATH, AUTH_PATH, RUN_PATH] {
            assert!(data["start.sh"].contains(path), "start.sh no longer reads {path}");
        }
        let prestop = localize(&data["prestop.sh"], root, port);
        assert!(data["prestop.sh"].contains("-p 6379"), "prestop.sh no longer dials -p 6379");
        std::fs::write(etc.join("redis.conf"), conf).unwrap();
        std::fs::write(etc.join("start.sh"), script).unwrap();
        std::fs::write(etc.join("prestop.sh"), prestop).unwrap();
        std::fs::write(etc.join("pods"), &data["pods"]).unwrap();
        std::fs::write(etc.join("acl-rules"), &data["acl-rules"]).unwrap();
        write_secrets(root, passwords);
        if let Some(t) = tls {
            let dir = root.join(TLS_PATH.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            for f in ["ca.crt", "tls.crt", "tls.key"] {
                std::fs::copy(t.dir.join(f), dir.join(f)).unwrap();
            }
        }
    }

    /// `n` pod roots under `tmp` with the rendered files installed, and their ports.
    pub fn pods(r: &Rendered, tmp: &Path, n: usize, tls: Option<&TlsFiles>) -> (Vec<PathBuf>, Vec<u16>) {
        let roots: Vec<PathBuf> = (0..n).map(|k| tmp.join(format!("pod-{k}"))).collect();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        for (root, port) in roots.iter().zip(&ports) {
            install(r, root, *port, &passwords(), tls);
        }
        (roots, ports)
    }

    /// A redis-server started through the installed start script. Killed on drop.
    pub struct ScriptedRedis {
        pub pod: String,
        pub port: u16,
        pub root: PathBuf,
        child: Option<Child>,
        /// `REDIS_ANNOUNCE` (None: the script's own `POD_NAME.HEADLESS_SERVICE`).
        announce: Option<String>,
        /// The CA test connections verify the server against (TLS-only servers).
        ca: Option<Vec<u8>>,
    }

    impl Drop for ScriptedRedis {
        fn drop(&mut self) {
            self.kill9();
        }
    }

    impl ScriptedRedis {
        /// Run the start script installed at `root` as pod `pod`, with `peers` as
        /// `REDIS_PEERS` (None: the script's own discovery), and wait until it answers
        /// PING (as the operator user).
        pub fn start(root: &Path, pod: &str, port: u16, peers: Option<&[u16]>) -> Self {
            Self::start_announcing(root, pod, port, peers, None)
        }

        /// [`ScriptedRedis::start`] with `REDIS_ANNOUNCE` (a name that resolves here).
        pub fn start_announcing(
            root: &Path,
            pod: &str,
            port: u16,
            peers: Option<&[u16]>,
            announce: Option<&str>,
        ) -> Self {
            let tls_ca = root.join(TLS_PATH.trim_start_matches('/')).join("ca.crt");
            let mut r = ScriptedRedis {
                pod: pod.to_string(),
                port,
                root: root.to_path_buf(),
                child: None,
                announce: announce.map(str::to_string),
                ca: std::fs::read(tls_ca).ok(),
            };
            r.spawn(peers);
            r
        }

        fn spawn(&mut self, peers: Option<&[u16]>) {
            let log = File::create(self.log_path()).unwrap();
            let mut cmd = Command::new("sh");
            cmd.arg(self.etc("start.sh"))
                .env("POD_NAME", &self.pod)
                .env("HEADLESS_SERVICE", "demo-redis-headless")
                .env_remove("REDIS_PEERS")
                .env_remove("REDIS_ANNOUNCE")
                .env_remove("REDISCLI_AUTH")
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
            // As the pod-local monitor user with redis-cli (what the probe does): this
            // works whatever names the TLS certificate carries.
            self.wait_until("PONG", |r| r.monitor_cli(&["PING"]).is_some_and(|p| p.trim() == "PONG"));
        }

        /// redis-cli (as in the pod: `$CLI_TLS` flags from `monitor.env`) running `args`
        /// as `user` with `password`: its output, or None when it failed.
        pub fn cli_as(&self, user: &str, password: &str, args: &[&str]) -> Option<String> {
            let cli_tls = match self.ca {
                Some(_) => {
                    let ca = self.root.join(TLS_PATH.trim_start_matches('/')).join("ca.crt");
                    vec!["--tls".to_string(), "--cacert".to_string(), ca.display().to_string()]
                }
                None => vec![],
            };
            let out = Command::new("redis-cli")
                .args(cli_tls)
                .args(["--user", user, "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(args)
                .env("REDISCLI_AUTH", password)
                .stdin(Stdio::null())
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            // redis-cli exits 0 on an error reply (NOPERM, WRONGPASS, ...).
            let error = ["ERR", "NO", "WRONGPASS", "READONLY", "LOADING"].iter().any(|e| text.starts_with(e));
            (out.status.success() && !error).then_some(text)
        }

        /// [`Self::cli_as`] as the monitor user with the password from `monitor.env`.
        pub fn monitor_cli(&self, args: &[&str]) -> Option<String> {
            let env = std::fs::read_to_string(self.run_file("monitor.env")).ok()?;
            let pw = env.lines().find_map(|l| l.strip_prefix("REDISCLI_AUTH='")?.strip_suffix('\''))?;
            self.cli_as("monitor", pw, args)
        }

        /// The redis-server process (the script exec'd it).
        pub fn pid(&self) -> Option<u32> {
            self.child.as_ref().map(Child::id)
        }

        /// A file of the installed ConfigMap.
        pub fn etc(&self, name: &str) -> PathBuf {
            self.root.join(MOUNT_PATH.trim_start_matches('/')).join(name)
        }

        /// A file the start script wrote in the `run` directory.
        pub fn run_file(&self, name: &str) -> PathBuf {
            self.root.join(RUN_PATH.trim_start_matches('/')).join(name)
        }

        pub fn log_path(&self) -> PathBuf {
            self.root.join("start.log")
        }

        /// What the start script (and redis-server, which logs to stdout) printed.
        pub fn log(&self) -> String {
            std::fs::read_to_string(self.log_path()).unwrap()
        }

        /// SIGKILL (the script exec'd redis-server, so the child is the server itself).
        pub fn kill9(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }

        /// Restart as a pod restart does: same data dir (or an emptied one), same script,
        /// the Secret files as they are now.
        pub fn restart(&mut self, peers: &[u16], empty: bool) {
            self.kill9();
            if empty {
                std::fs::remove_dir_all(self.root.join("data")).unwrap();
                std::fs::create_dir_all(self.root.join("data")).unwrap();
            }
            self.spawn(Some(peers));
        }

        /// The user's current password as its Secret file holds it.
        pub fn password(&self, user: &str) -> String {
            let path = self.root.join(AUTH_PATH.trim_start_matches('/')).join(user).join("password");
            std::fs::read_to_string(path).unwrap()
        }

        /// The monitor user's password the start script wrote to `monitor.env`.
        pub fn monitor_password(&self) -> String {
            let env = std::fs::read_to_string(self.run_file("monitor.env")).unwrap();
            env.lines()
                .find_map(|l| l.strip_prefix("REDISCLI_AUTH='")?.strip_suffix('\''))
                .expect("REDISCLI_AUTH in monitor.env")
                .to_string()
        }

        /// A connection as `user` with `password` (None: no AUTH at all), over TLS when
        /// the pod has a TLS Secret.
        pub fn conn(
            &self,
            user: Option<&str>,
            password: Option<&str>,
        ) -> redis::RedisResult<redis::Connection> {
            let addr = match self.ca {
                Some(_) => ConnectionAddr::TcpTls {
                    host: "127.0.0.1".into(),
                    port: self.port,
                    insecure: false,
                    tls_params: None,
                },
                None => ConnectionAddr::Tcp("127.0.0.1".into(), self.port),
            };
            let info = addr.into_connection_info()?;
            let mut s = info.redis_settings().clone().set_skip_set_lib_name();
            if let Some(u) = user {
                s = s.set_username(u);
            }
            if let Some(p) = password {
                s = s.set_password(p);
            }
            let info = info.set_redis_settings(s);
            let client = match &self.ca {
                Some(ca) => redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) },
                )?,
                None => redis::Client::open(info)?,
            };
            client.get_connection_with_timeout(Duration::from_secs(2))
        }

        /// One command as `user` with `password`.
        pub fn cmd_as<T: redis::FromRedisValue>(
            &self,
            user: &str,
            password: &str,
            args: &[&str],
        ) -> redis::RedisResult<T> {
            let mut c = self.conn(Some(user), Some(password))?;
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query(&mut c)
        }

        /// One command as `user` with its current Secret password.
        pub fn as_user<T: redis::FromRedisValue>(&self, user: &str, args: &[&str]) -> redis::RedisResult<T> {
            self.cmd_as(user, &self.password(user), args)
        }

        /// One command as the web service (`web`).
        pub fn web<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
            self.as_user("web", args)
        }

        /// One command as the operator (`operator`).
        pub fn op<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
            self.as_user("operator", args)
        }

        /// One command as the pod-local `monitor` user (its password from monitor.env).
        pub fn monitor<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
            self.cmd_as("monitor", &self.monitor_password(), args)
        }

        /// Poll until `ok` (panics after 10 s: something never happened).
        pub fn wait_until(&self, what: &str, mut ok: impl FnMut(&Self) -> bool) {
            let start = Instant::now();
            while !ok(self) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{}: {what} never happened\n{}",
                    self.pod,
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        }

        /// An `INFO replication` field (as the operator).
        pub fn info(&self, field: &str) -> Option<String> {
            let info: String = self.op(&["INFO", "replication"]).ok()?;
            info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_string()))
        }

        /// A `CONFIG GET` value (as the operator).
        pub fn config(&self, key: &str) -> Option<String> {
            let got: Vec<String> = self.op(&["CONFIG", "GET", key]).unwrap();
            got.get(1).cloned()
        }

        /// Assert this node is a replica of `127.0.0.1:port`.
        pub fn assert_replica_of(&self, port: u16) {
            assert_eq!(self.info("role").as_deref(), Some("slave"), "{} must be a replica", self.pod);
            assert_eq!(self.info("master_host").as_deref(), Some("127.0.0.1"), "{}", self.pod);
            assert_eq!(self.info("master_port"), Some(port.to_string()), "{}: {}", self.pod, self.log());
        }

        /// What the operator does to promote a node.
        pub fn promote(&self) {
            let _: () = self.op(&["REPLICAOF", "NO", "ONE"]).unwrap();
            assert_eq!(self.info("role").as_deref(), Some("master"));
        }

        /// Wait until this replica's link to its master is up.
        pub fn wait_linked(&self) {
            self.wait_until("link up", |r| r.info("master_link_status").as_deref() == Some("up"));
        }

        /// What the operator does to repoint a node.
        pub fn follow(&self, port: u16) {
            let _: () = self.op(&["REPLICAOF", "127.0.0.1", &port.to_string()]).unwrap();
            self.wait_linked();
        }

        /// `GET counter:value` as the web service.
        pub fn counter(&self) -> Option<i64> {
            self.web::<Option<i64>>(&["GET", "counter:value"]).unwrap()
        }

        /// Run the rendered readiness probe against this pod (its `monitor.env`, or
        /// `env` instead when given).
        pub fn probe(&self, probe: &str, env: Option<&str>) -> bool {
            let mut cmd = localize(probe, &self.root, self.port);
            if let Some(env) = env {
                let alt = self.root.join("alt-monitor.env");
                std::fs::write(&alt, env).unwrap();
                cmd = cmd
                    .replace(&self.run_file("monitor.env").display().to_string(), &alt.display().to_string());
            }
            Command::new("sh")
                .args(["-c", &cmd])
                .env_remove("REDISCLI_AUTH")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success()
        }

        /// The installed preStop hook, started in the background (`PRESTOP_WAIT` seconds).
        pub fn prestop(&self, wait_secs: u32) -> Child {
            Command::new("sh")
                .arg(self.etc("prestop.sh"))
                .env("PRESTOP_WAIT", wait_secs.to_string())
                .env_remove("REDISCLI_AUTH")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        }
    }
}
