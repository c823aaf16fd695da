//! Faults done to a Redis pod, the same calls on every cluster.
//!
//! Hung, killed and partitioned Redis need the process itself. Where the node is this
//! machine (`../shared/k8s`: the real node `node up`, whose InternalIP is an address of
//! this host, or the minikubelet of `pods up`), the suite reaches the pod's `redis-server`
//! from the host: SIGSTOP/SIGCONT and SIGKILL (found by the pod's IP in its network
//! namespace, or the `MINIKUBELET_POD=<pod uid>` every minikubelet process carries), and
//! a network cut with iptables DROP rules inside the pod's network namespace (every
//! packet but loopback's, both ways: the pod stays Ready, since its probes run inside
//! it). Signals from the host reach a container's PID 1, which ignores them when sent
//! from inside its own PID namespace.
//! Elsewhere nodes are out of reach; there the suite emulates hung and killed through the
//! exec API: `CLIENT PAUSE <ms> ALL` (every client, the operator's checks included, gets
//! no answer until it expires) and `SHUTDOWN NOSAVE NOW` (exits at once, without a final
//! save and without waiting for replicas, as close to kill -9 as Redis allows; the kubelet
//! restarts the container), and skips the partition (it needs NET_ADMIN in the pod).
//!
//! Deletion and eviction go through the API as `kubectl delete pod` and `kubectl drain` do.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::policy::v1::Eviction;
use kube::api::{AttachParams, DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use tokio::io::AsyncReadExt;

use crate::harness::Ctx;

/// How faults reach Redis on this cluster.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Faults {
    /// Signals and iptables on the pod's processes: the node is this machine.
    Local,
    /// Redis commands through the exec API (any other cluster).
    Exec,
}

/// A pod whose network is cut, to be healed.
pub struct Partitioned {
    pod: String,
}

/// The DROP rules of a cut: everything but loopback, in and out.
const CUT_RULES: [[&str; 6]; 2] =
    [["INPUT", "!", "-i", "lo", "-j", "DROP"], ["OUTPUT", "!", "-o", "lo", "-j", "DROP"]];

/// A hung Redis, to be resumed.
pub struct Hung {
    pod: String,
    /// Local: the stopped process.
    pid: Option<u32>,
    /// Exec: when the pause expires by itself.
    until: Instant,
}

impl Faults {
    /// Local when every node is a minikubelet or has an InternalIP of this machine,
    /// Exec otherwise.
    pub async fn detect(client: &Client) -> Faults {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let nodes = nodes.list(&ListParams::default()).await.expect("cannot list nodes");
        let here = local_addresses(std::process::id());
        let local = !nodes.items.is_empty()
            && nodes.items.iter().all(|n| {
                let status = n.status.as_ref();
                let minikubelet = status
                    .and_then(|s| s.node_info.as_ref())
                    .is_some_and(|i| i.kubelet_version.contains("minikubelet"));
                let this_host = status
                    .and_then(|s| s.addresses.as_ref())
                    .is_some_and(|a| a.iter().any(|a| a.type_ == "InternalIP" && here.contains(&a.address)));
                minikubelet || this_host
            });
        if local { Faults::Local } else { Faults::Exec }
    }

    /// Cut the pod's network (Local only; Err says why it cannot be done here).
    pub async fn partition(&self, ctx: &Ctx, pod: &str) -> Result<Partitioned, String> {
        if *self != Faults::Local {
            return Err("a network cut needs the node's processes (NET_ADMIN in the pod otherwise)".into());
        }
        let pid = redis_pid(ctx, pod).await;
        for rule in CUT_RULES {
            pod_iptables(pid, "-I", &rule).map_err(|e| format!("cut {pod}: {e}"))?;
        }
        Ok(Partitioned { pod: pod.to_string() })
    }

    /// Give a cut pod its network back (its network namespace outlives container restarts).
    pub async fn heal(&self, ctx: &Ctx, cut: Partitioned) {
        let pid = redis_pid(ctx, &cut.pod).await;
        for rule in CUT_RULES {
            pod_iptables(pid, "-D", &rule).unwrap_or_else(|e| panic!("heal {}: {e}", cut.pod));
        }
    }

    /// Make the pod's Redis stop answering for at most `max` (Exec: exactly `max`).
    pub async fn hang(&self, ctx: &Ctx, pod: &str, max: Duration) -> Hung {
        match self {
            Faults::Local => {
                let pid = redis_pid(ctx, pod).await;
                signal("STOP", pid).unwrap_or_else(|e| panic!("SIGSTOP {pod}: {e}"));
                Hung { pod: pod.to_string(), pid: Some(pid), until: Instant::now() + max }
            }
            Faults::Exec => {
                let ms = max.as_millis();
                redis_cli(ctx, pod, &format!("CLIENT PAUSE {ms} ALL"))
                    .await
                    .unwrap_or_else(|e| panic!("CLIENT PAUSE on {pod}: {e}"));
                Hung { pod: pod.to_string(), pid: None, until: Instant::now() + max }
            }
        }
    }

    /// Let a hung Redis run again. Exec: a paused Redis postpones CLIENT UNPAUSE too, so
    /// this waits for the pause to expire.
    pub async fn resume(&self, hung: Hung) {
        match hung.pid {
            Some(pid) => {
                // The kubelet may have restarted the container meanwhile: nothing to resume.
                if let Err(e) = signal("CONT", pid) {
                    eprintln!("e2e: SIGCONT {} (pid {pid}): {e}", hung.pod);
                }
            }
            None => tokio::time::sleep(hung.until.saturating_duration_since(Instant::now())).await,
        }
    }

    /// Stop the pod's Redis abruptly; the kubelet restarts the container.
    pub async fn kill(&self, ctx: &Ctx, pod: &str) {
        match self {
            Faults::Local => {
                let pid = redis_pid(ctx, pod).await;
                signal("KILL", pid).unwrap_or_else(|e| panic!("SIGKILL {pod}: {e}"));
            }
            Faults::Exec => {
                // The connection drops when Redis exits: an error here is the expected outcome.
                let out = redis_cli(ctx, pod, "SHUTDOWN NOSAVE NOW").await;
                eprintln!("e2e: SHUTDOWN NOSAVE NOW on {pod}: {out:?}");
            }
        }
    }

    /// `master` or `slave`: the first line of the pod's `ROLE`.
    pub async fn role(&self, ctx: &Ctx, pod: &str) -> Result<String, String> {
        match self {
            Faults::Local => {
                let mut c = connect_local(ctx, pod).await?;
                let role: redis::Value = redis::cmd("ROLE")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| format!("ROLE on {pod}: {e}"))?;
                match role {
                    redis::Value::Array(v) => match v.first() {
                        Some(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).to_string()),
                        other => Err(format!("ROLE on {pod}: {other:?}")),
                    },
                    other => Err(format!("ROLE on {pod}: {other:?}")),
                }
            }
            Faults::Exec => {
                let out = redis_cli(ctx, pod, "ROLE").await?;
                out.lines().next().map(|l| l.trim().to_string()).ok_or(format!("ROLE on {pod}: no output"))
            }
        }
    }
}

/// The CounterApp that owns Redis pod `pod` (`NAME-redis-K`).
fn app_of(pod: &str) -> Result<&str, String> {
    pod.rsplitn(3, '-').nth(2).ok_or(format!("{pod} is not a Redis pod name"))
}

/// The operator user's Redis password of the CounterApp that owns Redis pod `pod`.
pub(crate) async fn password(ctx: &Ctx, pod: &str) -> Result<String, String> {
    Ok(user_passwords(ctx, app_of(pod)?, "operator").await?.0)
}

/// `password` and `previous` of a Redis user's Secret (equal unless a rotation runs).
pub(crate) async fn user_passwords(ctx: &Ctx, app: &str, user: &str) -> Result<(String, String), String> {
    let name = counterstack::names::redis_user_secret(app, user);
    let secret = ctx.api::<Secret>().get(&name).await.map_err(|e| format!("Secret {name}: {e}"))?;
    let data = secret.data.unwrap_or_default();
    let key = |k: &str| -> Result<String, String> {
        let bytes = data.get(k).ok_or(format!("{name} has no {k}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|e| e.to_string())
    };
    let password = key(counterstack::names::PASSWORD_KEY)?;
    let previous = key(counterstack::names::PREVIOUS_KEY).unwrap_or_else(|_| password.clone());
    Ok((password, previous))
}

/// `redis-cli <args>` in the pod's Redis container. Faults need commands no stack user
/// has (CLIENT PAUSE, SHUTDOWN): as the operator user the test first gives itself a
/// temporary admin user `e2e-faults` on that node (test only; the node forgets it when
/// it restarts).
pub(crate) async fn redis_cli(ctx: &Ctx, pod: &str, args: &str) -> Result<String, String> {
    let op = password(ctx, pod).await?;
    let admin = counterstack::acl::random_password();
    let script = format!(
        ". /run/redis/monitor.env; \
         REDISCLI_AUTH='{op}' redis-cli $CLI_TLS --user operator -h 127.0.0.1 -p 6379 \
           ACL SETUSER e2e-faults on '>{admin}' '~*' '&*' +@all >/dev/null && \
         REDISCLI_AUTH='{admin}' redis-cli $CLI_TLS --user e2e-faults -h 127.0.0.1 -p 6379 {args}"
    );
    // stdout only: an unread stderr stream could fill and stall the exec; redis-cli
    // prints command errors on stdout anyway.
    let ap = AttachParams::default().container("redis").stdout(true).stderr(false);
    let mut proc = ctx
        .api::<Pod>()
        .exec(pod, ["sh", "-c", &script], &ap)
        .await
        .map_err(|e| format!("exec in {pod}: {e}"))?;
    let mut out = String::new();
    if let Some(mut stdout) = proc.stdout() {
        stdout.read_to_string(&mut out).await.map_err(|e| e.to_string())?;
    }
    let status = match proc.take_status() {
        Some(s) => s.await,
        None => None,
    };
    let _ = proc.join().await;
    match status {
        Some(s) if s.status.as_deref() == Some("Failure") => {
            Err(format!("{script}: {} {out}", s.message.unwrap_or_default()))
        }
        _ => Ok(out),
    }
}

/// PID of the pod's `redis-server` on this machine (Local only).
async fn redis_pid(ctx: &Ctx, pod: &str) -> u32 {
    let p = ctx.api::<Pod>().get(pod).await.unwrap_or_else(|e| panic!("pod {pod}: {e}"));
    pod_process(&p, "redis-server")
}

/// PID of the process named `comm` of pod `p` on this machine (Local only).
pub fn pod_process(p: &Pod, comm: &str) -> u32 {
    let pod = p.name_any();
    let uid = p.uid().unwrap_or_default();
    let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_else(|| panic!("{pod} has no IP"));
    let found = find_process(comm, &format!("MINIKUBELET_POD={uid}"), &ip);
    match found.as_slice() {
        [pid] => *pid,
        _ => panic!("expected one {comm} process of pod {pod} (uid {uid}, IP {ip}), found {found:?}"),
    }
}

/// kill -9 of process `pid`.
pub fn kill9(pid: u32) -> Result<(), String> {
    signal("KILL", pid)
}

/// Processes named `comm` that carry `env` (`KEY=value`) in their environment or live in
/// the network namespace that owns `ip`. Redis overwrites its environment with its process
/// title (setproctitle), so its pod shows through the pod's own IP instead.
fn find_process(comm: &str, env: &str, ip: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        // Processes come and go while we look; unreadable ones are not ours.
        let Ok(name) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
        if name.trim_end() != comm {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|kv| kv == env.as_bytes())
            || local_addresses(pid).iter().any(|a| a == ip)
        {
            pids.push(pid);
        }
    }
    pids
}

/// IPv4 addresses local to the network namespace of `pid` (`/32 host LOCAL` entries of
/// its fib_trie).
fn local_addresses(pid: u32) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).unwrap_or_default();
    let mut last = "";
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(addr) = line.trim().strip_prefix("|-- ") {
            last = addr;
        } else if line.contains("/32 host LOCAL") && !out.iter().any(|a| a == last) {
            out.push(last.to_string());
        }
    }
    out
}

/// `iptables -w <op> <rule>` in the network namespace of process `pid`.
fn pod_iptables(pid: u32, op: &str, rule: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["iptables", "-w", op])
        .args(rule)
        .output()
        .map_err(|e| format!("nsenter: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

fn signal(sig: &str, pid: u32) -> Result<(), String> {
    let out = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .output()
        .map_err(|e| format!("kill: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

/// `kubectl delete pod` (default grace period).
pub async fn delete(ctx: &Ctx, pod: &str) {
    ctx.api::<Pod>()
        .delete(pod, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete {pod}: {e}"));
}

/// A policy/v1 Eviction as `kubectl drain` sends it, retried while a PodDisruptionBudget
/// forbids it (429) as drain does; gives up after `limit`.
pub async fn evict(ctx: &Ctx, pod: &str, limit: Duration) {
    let mut eviction = Eviction::default();
    eviction.metadata.name = Some(pod.to_string());
    eviction.metadata.namespace = Some(ctx.ns.clone());
    let mut body = serde_json::to_value(&eviction).unwrap();
    body["apiVersion"] = "policy/v1".into();
    body["kind"] = "Eviction".into();
    let uri = format!("/api/v1/namespaces/{}/pods/{pod}/eviction", ctx.ns);
    let start = Instant::now();
    loop {
        let req = http::Request::post(&uri)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        match ctx.client.request_text(req).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 429 && start.elapsed() < limit => {
                eprintln!("e2e: eviction of {pod} refused for now ({}); retrying in 5 s", s.message);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => panic!("evict {pod}: {e}"),
        }
    }
}

/// A connection to the pod's Redis over its IP: on the local control plane pod IPs are
/// reachable from this machine (bridge mkbr0). 1 s connect and response timeouts.
pub(crate) async fn connect_local(ctx: &Ctx, pod: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let p = ctx.api::<Pod>().get(pod).await.map_err(|e| e.to_string())?;
    let ip = p.status.and_then(|s| s.pod_ip).ok_or(format!("{pod} has no IP"))?;
    let app = app_of(pod)?;
    // The operator's way in: its user, the current password then the one a rotation
    // moves away from, TLS verifying the pod's stable name (not its IP).
    let (password, previous) = user_passwords(ctx, app, "operator").await?;
    let auth = counterstack::replication::node::NodeAuth {
        username: Some("operator".into()),
        passwords: vec![password, previous],
        tls: tls_ca(ctx, app).await?,
        names: [(ip.clone(), format!("{pod}.{}", counterstack::names::redis_headless(app)))].into(),
    };
    let at = counterstack::replication::node::NodeAddr::new(ip.clone(), 6379);
    let second = Duration::from_secs(1);
    counterstack::replication::node::connect(&at, &auth, second, second)
        .await
        .map_err(|e| format!("{pod} ({ip}): {e}"))
}

/// The CA of the CounterApp's `spec.redis.tls` (from its TLS Secret), None without TLS.
pub(crate) async fn tls_ca(ctx: &Ctx, app: &str) -> Result<Option<counterstack::dial::TlsCa>, String> {
    let cr = ctx.api::<counterstack::api::CounterApp>().get(app).await.map_err(|e| e.to_string())?;
    let Some(secret) = counterstack::children::statefulset::tls_secret_name(&cr) else { return Ok(None) };
    let s = ctx.api::<Secret>().get(&secret).await.map_err(|e| format!("Secret {secret}: {e}"))?;
    let ca = s
        .data
        .unwrap_or_default()
        .get("ca.crt")
        .map(|b| b.0.clone())
        .ok_or(format!("{secret}: no ca.crt"))?;
    Ok(Some(counterstack::dial::TlsCa::from_pem(ca)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_found_by_environment_entry_or_address_and_name() {
        // This test process: its name and one entry of its environment, matched exactly.
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let comm = comm.trim_end();
        let environ = std::fs::read("/proc/self/environ").unwrap();
        let entry = String::from_utf8_lossy(environ.split(|b| *b == 0).next().unwrap()).to_string();
        assert!(entry.contains('='), "{entry}");
        let me = std::process::id();
        assert!(find_process(comm, &entry, "192.0.2.1").contains(&me));
        assert!(!find_process(comm, &format!("{entry}-not"), "192.0.2.1").contains(&me));
        assert!(!find_process("not-this-name", &entry, "192.0.2.1").contains(&me));
        // Loopback is local to every network namespace, ours included.
        assert!(local_addresses(me).contains(&"127.0.0.1".to_string()));
        assert!(find_process(comm, "NO_SUCH_VARIABLE=1", "127.0.0.1").contains(&me));
    }
}
