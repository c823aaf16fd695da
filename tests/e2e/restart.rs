//! The operator restarted in place during a failover (issue 21): a hung primary under
//! load, and while the in-cluster leader counts down `afterSeconds`, its process dies
//! (kill -9); the kubelet restarts the container in the same pod. The restarted process
//! has the same identity (the pod name), so it takes its Lease back at once instead of
//! waiting for it to expire, and continues the countdown from
//! `status.redis.primaryUnavailableSince` instead of starting it again. Writes pause at
//! most afterSeconds + 3 s; nothing acknowledged is lost.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::faults::{self, Faults};
use crate::harness::{Ctx, eventually, eventually_every, timeout};
use crate::in_cluster;
use crate::stack::Stack;

pub async fn a_leader_restarted_in_place_during_a_failover_costs_no_extra_pause(ctx: Ctx) {
    if crate::harness::operator_mode() != crate::harness::OperatorMode::Helm {
        eprintln!("e2e: SKIP restart in place: it restarts the in-cluster operator (E2E_OPERATOR=helm)");
        return;
    }
    let Some(stack) = Stack::deploy(&ctx, "demo", crate::stack::spec(), "restart in place").await else {
        return;
    };
    if stack.faults != Faults::Local {
        eprintln!("e2e: SKIP restart in place: the node's processes are out of reach");
        return;
    }
    let client = &ctx.client;
    let before = stack.wait_healthy("a healthy stack before the restart in place").await;
    let load = stack.start_load();
    stack.wait_writes(&load, Instant::now(), 24).await;

    let leader = eventually("a leader pod", timeout(), || in_cluster::leader_pod(client)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &in_cluster::namespace());
    let leader_pod = pods.get(&leader).await.unwrap_or_else(|e| panic!("pod {leader}: {e}"));
    let restarts_before = in_cluster::restarts(&leader_pod);
    let pid = faults::pod_process(&leader_pod, "counterstack");

    let from = Instant::now();
    let hung =
        stack.faults.hang(&stack.ctx, &before.pod, Duration::from_secs(stack.after_seconds + 15)).await;
    // The leader has seen the outage and recorded it: the countdown is under way.
    eventually_every("the outage in the status", timeout(), Duration::from_millis(100), || async {
        let cr = stack.cr().await?;
        let since = cr.status.and_then(|s| s.redis?.primary_unavailable_since);
        since.map(|_| ()).ok_or_else(|| "no status.redis.primaryUnavailableSince yet".to_string())
    })
    .await;
    faults::kill9(pid).unwrap_or_else(|e| panic!("kill -9 the operator of {leader} (pid {pid}): {e}"));
    let killed = from.elapsed();
    eprintln!("e2e: hung {}; killed the leader {leader}'s operator {killed:?} later", before.pod);

    let new = stack.wait_new_primary(&before).await;
    let switched = from.elapsed();
    stack.faults.resume(hung).await;
    stack.wait_replica(&before.pod, None).await;
    stack.wait_healthy("a healthy stack after the restart in place").await;
    stack.wait_writes(&load, Instant::now(), 24).await;
    let to = Instant::now();
    let report = load.stop().await;
    let final_value = stack.counter().await;
    let lost = stack.lost(&report, final_value);
    let gap = report.longest_gap(from, to);

    let now = eventually("a leader pod", timeout(), || in_cluster::leader_pod(client)).await;
    let restarted = pods.get(&leader).await.map(|p| in_cluster::restarts(&p)).unwrap_or_default();
    eprintln!(
        "e2e: restart in place: {} (epoch {}) primary {switched:?} after the hang; longest write pause {gap:?} \
         (afterSeconds {}); {} acknowledged, {} errors, lost {lost}; leader before {leader}, after {now}, \
         container restarts {restarts_before} -> {restarted}",
        new.pod,
        new.epoch,
        stack.after_seconds,
        report.acks.len(),
        report.errors,
    );
    assert!(restarted > restarts_before, "the operator container was not restarted in place");
    assert_eq!(now, leader, "the restarted container did not take its own Lease back");
    assert_eq!(lost, 0, "acknowledged increments lost");
    assert!(report.backwards.is_empty(), "reads went backwards: {:?}", report.backwards);
    let bound = Duration::from_secs(stack.after_seconds + 3);
    assert!(gap <= bound, "writes paused {gap:?}, more than afterSeconds + 3 s ({bound:?})");
    // Both operator pods ready again for the tests after this one.
    in_cluster::scale(client, in_cluster::REPLICAS, true).await;
}
