//! Leader election with two operator processes (the binary, as two replicas run it):
//! one leads, one stands by; kill -9 the leader and the standby takes over within the
//! lease duration, applying a spec change made meanwhile; never two leaders at once. A
//! leader frozen (SIGSTOP) in the middle of a reconcile, and woken after the standby took
//! over, sends no write on waking, then steps down and comes back as a standby.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use counterstack::names;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::json;

use crate::api_recorder::ApiRecorder;
use crate::harness::{self, Ctx, eventually, small_spec, timeout};

/// Lease duration the two operators run with (seconds).
pub const LEASE_SECONDS: u64 = 10;
const LEASE: &str = "counterstack-operator";

/// One operator process, killed on drop.
pub struct Operator {
    pub name: &'static str,
    pub port: u16,
    child: Child,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start one operator process beyond the defaults.
#[derive(Default)]
pub struct Options<'a> {
    /// KUBECONFIG (default: the suite's).
    pub kubeconfig: Option<&'a Path>,
    /// Extra environment (failpoints).
    pub env: Vec<(&'a str, &'a str)>,
    /// Write its log (stdout and stderr) here instead of dropping it (stdout) and the
    /// test's stderr.
    pub log: Option<PathBuf>,
}

impl Operator {
    pub fn start(name: &'static str, ns: &str) -> Self {
        Self::start_with(name, ns, Options::default())
    }

    pub fn start_with(name: &'static str, ns: &str, opts: Options<'_>) -> Self {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_counterstack"));
        cmd.args(["operator", "--namespace", ns, "--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--default-web-image", &harness::web_image()])
            .args(["--lease-duration-seconds", &LEASE_SECONDS.to_string()])
            .env("POD_NAME", name)
            .env("RUST_LOG", "warn")
            .envs(opts.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(k) = opts.kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        if let Some(path) = opts.log {
            // Its log lines go to stdout, the final error to stderr.
            let file = std::fs::File::create(path).expect("create the operator's log");
            cmd.stdout(file.try_clone().expect("the log file again")).stderr(file);
        } else {
            cmd.stderr(Stdio::inherit());
        }
        let child = cmd.spawn().expect("start the operator binary");
        Operator { name, port, child }
    }

    /// Whether the process is stopped (SIGSTOP): `T` in /proc/PID/stat.
    pub fn stopped(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // The state follows the command name in parentheses.
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {}", self.name);
    }

    /// The exit status once the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// `/readyz`: `leader`, `standby`, or None when it does not answer.
    pub async fn role(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let res = reqwest::get(url).await.ok()?;
        res.status().is_success().then_some(())?;
        res.text().await.ok()
    }

    /// kill -9: no chance to release the lease.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The leader and the standby, once each has said which it is.
async fn roles(ops: &[Operator; 2]) -> Result<(usize, usize), String> {
    let (a, b) = (ops[0].role().await, ops[1].role().await);
    match (a.as_deref(), b.as_deref()) {
        (Some("leader"), Some("standby")) => Ok((0, 1)),
        (Some("standby"), Some("leader")) => Ok((1, 0)),
        (Some("leader"), Some("leader")) => panic!("two leaders at once"),
        other => Err(format!("roles {other:?}")),
    }
}

/// The web Deployment of `app` has `want` replicas.
async fn web_replicas(ctx: &Ctx, app: &str, want: i32) -> Result<(), String> {
    let d = ctx.api::<Deployment>().get_opt(&names::web(app)).await.map_err(|e| e.to_string())?;
    let r = d.and_then(|d| d.spec?.replicas);
    if r == Some(want) { Ok(()) } else { Err(format!("web replicas {r:?}")) }
}

pub async fn the_standby_takes_over_when_the_leader_dies(ctx: Ctx) {
    let mut ops = [Operator::start("op-a", &ctx.ns), Operator::start("op-b", &ctx.ns)];
    let (leader, standby) = eventually("one leader and one standby", timeout(), || roles(&ops)).await;
    eprintln!("e2e: {} leads, {} stands by", ops[leader].name, ops[standby].name);

    // The leader does the work: the CounterApp gets its children.
    ctx.apply_app("demo", small_spec()).await;
    let web = names::web("demo");
    let replicas = |want: i32| {
        let ctx = &ctx;
        let web = web.clone();
        move || {
            let web = web.clone();
            async move {
                let d = ctx.api::<Deployment>().get_opt(&web).await.map_err(|e| e.to_string())?;
                let r = d.and_then(|d| d.spec?.replicas);
                if r == Some(want) { Ok(()) } else { Err(format!("web replicas {r:?}")) }
            }
        }
    };
    eventually("the leader to create the web Deployment", timeout(), replicas(2)).await;
    // Still exactly one leader while it works.
    assert_eq!(roles(&ops).await, Ok((leader, standby)));

    // kill -9 the leader, then change the spec at once.
    ops[leader].kill9();
    let killed = Instant::now();
    let mut spec = small_spec();
    spec["web"]["replicas"] = json!(3);
    ctx.apply_app("demo", spec).await;
    let limit = Duration::from_secs(LEASE_SECONDS + 5);
    eventually("the standby to apply the change", limit, replicas(3)).await;
    let took = killed.elapsed();
    eprintln!("e2e: the standby applied the change {took:?} after the leader died (limit {limit:?})");
    assert_eq!(ops[standby].role().await.as_deref(), Some("leader"));
    let lease = ctx.api::<Lease>().get(LEASE).await.unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(holder.starts_with(ops[standby].name), "lease held by {holder}");
}

/// The leader (op-a) stops with SIGSTOP right before its first write of a reconcile (a
/// failpoint: the worst moment, a write already decided), and stays frozen while op-b
/// takes the lease over, builds the stack and applies a spec change (watch events pile
/// up for op-a). Then SIGCONT: op-a must send no write at all (what it sends goes through
/// a recording front, `ApiRecorder`), say that it refused them, exit non-zero, and come
/// back as a standby.
pub async fn a_frozen_leader_sends_no_write_after_it_wakes(ctx: Ctx) {
    let recorder = ApiRecorder::start(harness::client_without_retries().await, &ctx.ns).await;
    let logs = tempfile::tempdir().expect("a log directory");
    let log = logs.path().join("op-a.log");
    let mut a = Operator::start_with(
        "op-a",
        &ctx.ns,
        Options {
            kubeconfig: Some(recorder.kubeconfig.path()),
            env: vec![("COUNTERSTACK_FAILPOINT", "before-write"), ("COUNTERSTACK_FAILPOINT_MODE", "stop")],
            log: Some(log.clone()),
        },
    );
    let role = |op: &Operator, want: &'static str| {
        let port = op.port;
        move || async move {
            let url = format!("http://127.0.0.1:{port}/readyz");
            let r = reqwest::get(url)
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            if r == want { Ok(()) } else { Err(format!("role {r}")) }
        }
    };
    eventually("op-a to lead (started alone)", timeout(), role(&a, "leader")).await;
    let b = Operator::start("op-b", &ctx.ns);
    eventually("op-b to stand by", timeout(), role(&b, "standby")).await;

    // op-a's first write for the new CounterApp stops the process.
    ctx.apply_app("demo", small_spec()).await;
    eventually("op-a to freeze before its first write", timeout(), || async {
        if a.stopped() { Ok(()) } else { Err("running".to_string()) }
    })
    .await;
    let frozen = Instant::now();

    // op-b takes over once op-a's lease passed, builds the stack, applies a change.
    let limit = Duration::from_secs(LEASE_SECONDS) + timeout();
    eventually("op-b to take the lease over", limit, role(&b, "leader")).await;
    eventually("op-b to create the web Deployment", timeout(), || web_replicas(&ctx, "demo", 2)).await;
    let mut spec = small_spec();
    spec["web"]["replicas"] = json!(3);
    ctx.apply_app("demo", spec).await;
    eventually("op-b to apply the change", timeout(), || web_replicas(&ctx, "demo", 3)).await;
    assert!(a.stopped(), "op-a woke up by itself");
    let lease = ctx.api::<Lease>().get(LEASE).await.unwrap();
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("op-b"));
    eprintln!("e2e: op-a frozen for {:?}; op-b leads and did the work", frozen.elapsed());

    // Wake op-a: everything it sends from now on is recorded.
    let mark = recorder.len();
    a.signal("CONT");
    let status = eventually("op-a to step down and exit", timeout(), || {
        let st = a.exited();
        async move { st.ok_or_else(|| "running".to_string()) }
    })
    .await;
    let after = recorder.since(mark);
    let writes: Vec<String> = after
        .iter()
        .filter(|s| s.is_write_outside_the_lease())
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("e2e: op-a after waking: {} requests, exit {status}; its log:\n{text}", after.len());
    assert!(writes.is_empty(), "op-a sent writes after waking without the lease: {writes:#?}");
    assert!(!status.success(), "op-a exited 0: it must exit non-zero to be restarted as a standby");
    assert!(
        text.contains("not the leader: write refused"),
        "op-a's log does not show the write it was about to send being refused"
    );
    assert!(text.contains("leadership lost"), "op-a's log does not say it lost the leadership");
    // op-b's work stands.
    web_replicas(&ctx, "demo", 3).await.expect("the web Deployment as op-b left it");

    // Restarted (same pod name, as a container restart), op-a stands by; op-b leads.
    drop(a);
    let a = Operator::start("op-a", &ctx.ns);
    eventually("op-a to come back as a standby", timeout(), role(&a, "standby")).await;
    assert_eq!(roles(&[b, a]).await, Ok((0, 1)));
}
