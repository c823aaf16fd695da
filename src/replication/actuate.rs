//! Apply a [`Plan`] through [`RedisNodes`], in order. A failed fence, promotion or
//! hand-over stops the pass (the next pass decides again from fresh observations); a
//! failed repoint of an ordinary replica or a config update is only a warning.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Error;
use super::decide::{NodeAction, Plan};
use super::node::{NodeAddr, RedisNodes};
use super::observe::{Role, parse_info};

/// What was done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actuated {
    /// Masters demoted to replicas (fencing).
    pub fenced: Vec<String>,
    /// `REPLICAOF NO ONE` succeeded here.
    pub promoted: Option<String>,
    /// FAILOVER TO completed: (from, to, how long it took).
    pub handed_over: Option<(String, String, Duration)>,
    /// Non-fatal failures.
    pub warnings: Vec<String>,
}

/// Addresses of every pod of the pass.
pub struct Addresses {
    /// Where the operator dials each pod.
    pub dial: BTreeMap<String, NodeAddr>,
    /// What REPLICAOF names to follow each pod.
    pub replication: BTreeMap<String, NodeAddr>,
}

impl Addresses {
    fn dial(&self, pod: &str) -> Result<&NodeAddr, Error> {
        self.dial.get(pod).ok_or_else(|| Error::NoAddress { pod: pod.to_string() })
    }
    fn replication(&self, pod: &str) -> Result<&NodeAddr, Error> {
        self.replication.get(pod).ok_or_else(|| Error::NoAddress { pod: pod.to_string() })
    }
}

/// Run `plan.actions`.
pub async fn apply<N: RedisNodes>(plan: &Plan, addrs: &Addresses, nodes: &N) -> Result<Actuated, Error> {
    let mut out = Actuated::default();
    for action in &plan.actions {
        match action {
            NodeAction::Follow { pod, primary, fence } => {
                let res = async {
                    nodes
                        .replicaof(addrs.dial(pod)?, Some(addrs.replication(primary)?))
                        .await
                        .map_err(|e| Error::redis(pod, e))
                }
                .await;
                match (res, fence) {
                    (Ok(()), true) => out.fenced.push(pod.clone()),
                    (Ok(()), false) => {}
                    (Err(e), true) => return Err(e),
                    (Err(e), false) => out.warnings.push(format!("repointing {pod} to {primary}: {e}")),
                }
            }
            NodeAction::Promote { pod } => {
                nodes.replicaof(addrs.dial(pod)?, None).await.map_err(|e| Error::redis(pod, e))?;
                out.promoted = Some(pod.clone());
                crate::failpoint::hit("after-promote").map_err(Error::Failpoint)?;
            }
            NodeAction::SetMinReplicas { pod, value } => {
                let res = async {
                    nodes
                        .config_set(addrs.dial(pod)?, "min-replicas-to-write", &value.to_string())
                        .await
                        .map_err(|e| Error::redis(pod, e))
                }
                .await;
                if let Err(e) = res {
                    out.warnings.push(format!("setting min-replicas-to-write on {pod}: {e}"));
                }
            }
            NodeAction::Handover { from, to, target, timeout } => {
                let started = Instant::now();
                let (from_ep, to_ep) = (addrs.dial(from)?, addrs.dial(to)?);
                nodes.failover_to(from_ep, target, *timeout).await.map_err(|e| Error::redis(from, e))?;
                wait_handover(nodes, from, from_ep, to, to_ep, *timeout + Duration::from_secs(2)).await?;
                out.handed_over = Some((from.clone(), to.clone(), started.elapsed()));
                crate::failpoint::hit("after-handover").map_err(Error::Failpoint)?;
            }
        }
    }
    Ok(out)
}

/// FAILOVER TO returns at once; it is done when the target is a master and the old
/// primary a replica. Redis aborts it itself after its TIMEOUT (the old primary then
/// stays primary), so giving up here is safe.
async fn wait_handover<N: RedisNodes>(
    nodes: &N,
    from: &str,
    from_ep: &NodeAddr,
    to: &str,
    to_ep: &NodeAddr,
    limit: Duration,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        // Best effort: if it fails the replica still acknowledges within a second.
        let _ = nodes.request_ack(to_ep).await;
        let role = |ep: &NodeAddr| {
            let ep = ep.clone();
            async move { nodes.snapshot(&ep).await.ok().and_then(|s| parse_info(&s.info).ok()).map(|i| i.role) }
        };
        let (to_role, from_role) = futures::join!(role(to_ep), role(from_ep));
        if to_role == Some(Role::Master) && from_role == Some(Role::Replica) {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(Error::Handover {
                from: from.to_string(),
                to: to.to_string(),
                message: format!(
                    "not completed after {limit:?} (target {to_role:?}, old primary {from_role:?})"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the node at `at` is a master with at least `min_replicas` replicas in sync
/// (so `min-replicas-to-write` lets writes through), for at most `limit`.
pub async fn wait_writable<N: RedisNodes>(
    nodes: &N,
    at: &NodeAddr,
    min_replicas: i64,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    loop {
        let info = nodes.snapshot(at).await.ok().and_then(|s| parse_info(&s.info).ok());
        if info.is_some_and(|i| i.role == Role::Master && i64::from(i.online_replicas) >= min_replicas) {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
