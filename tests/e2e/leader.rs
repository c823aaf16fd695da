//! Leader election with two operator processes (the binary, as two replicas run it):
//! one leads, one stands by; kill -9 the leader and the standby takes over within the
//! lease duration, applying a spec change made meanwhile; never two leaders at once.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use counterstack::names;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::json;

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

impl Operator {
    pub fn start(name: &'static str, ns: &str) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_counterstack"))
            .args(["operator", "--namespace", ns, "--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--default-web-image", &harness::web_image()])
            .args(["--lease-duration-seconds", &LEASE_SECONDS.to_string()])
            .env("POD_NAME", name)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the operator binary");
        Operator { name, port, child }
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
