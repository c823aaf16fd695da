//! The leadership fence on Redis (issue 21), against real `redis-server` processes: an
//! operator whose leadership lapsed (its last renewal is older than its term, as after a
//! freeze) sends no command that changes a node, whatever asks for it (a planned
//! promotion, a config update, an ACL sync), while reads still work; the same client
//! with a live leadership changes the node.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::{RedisServer, cluster};
use counterstack::operator::fence::{Fence, FenceLabels};
use counterstack::operator::leader::Leadership;
use counterstack::replication::acl_sync::NodePlan;
use counterstack::replication::actuate::{self, Addresses};
use counterstack::replication::node::{NodeAddr, RedisClient, RedisNodes, is_fenced};
use counterstack::replication::{NodeAction, Phase, Plan};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

const TERM: Duration = Duration::from_secs(13);

fn addr(s: &RedisServer) -> NodeAddr {
    NodeAddr::new("127.0.0.1", s.port)
}

fn role(s: &RedisServer) -> String {
    s.info_field("role").unwrap_or_default()
}

fn config(s: &RedisServer, key: &str) -> String {
    let kv: Vec<String> = s.cmd(&["CONFIG", "GET", key]).unwrap();
    kv.get(1).cloned().unwrap_or_default()
}

/// Promote `pod` (a replica at `at`), as the replication manager's plan would.
fn promotion(pod: &str, at: NodeAddr) -> (Plan, Addresses) {
    let plan = Plan {
        phase: Phase::FailingOver,
        primary: Some(pod.to_string()),
        epoch: 2,
        holds_data: true,
        actions: vec![NodeAction::Promote { pod: pod.to_string() }],
        delete_pods: vec![],
        message: "test".into(),
        requeue_after: None,
        switchover: None,
    };
    let addrs = Addresses {
        dial: BTreeMap::from([(pod.to_string(), at.clone())]),
        replication: BTreeMap::from([(pod.to_string(), at)]),
    };
    (plan, addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_leader_changes_no_redis_node_and_a_live_one_does() {
    let (primary, replicas) = cluster(1, None);
    let replica = &replicas[0];
    let refused = Family::<FenceLabels, Counter>::default();
    let redis_refusals = || refused.get_or_create(&FenceLabels { target: "redis".into() }).get();

    // The last renewal seen is a minute old, the term 13 s: the leadership lapsed.
    let leadership = Leadership::until_renewed(TERM);
    leadership.renewed(Instant::now() - Duration::from_secs(60));
    let client = RedisClient::new("").gated(Arc::new(Fence::new(leadership.clone(), refused.clone())));

    // Reads pass.
    let snap = client.snapshot(&addr(replica)).await.expect("INFO of the replica");
    assert!(snap.info.contains("role:slave"), "{}", snap.info);
    assert_eq!(client.config_get(&addr(&primary), "maxmemory").await.unwrap().as_deref(), Some("0"));

    // Every write is refused before it is sent, and nothing changes.
    let fenced = |r: redis::RedisResult<()>, what: &str| {
        let e = r.expect_err(what);
        assert!(is_fenced(&e), "{what}: not the fence's refusal: {e}");
    };
    fenced(client.replicaof(&addr(replica), None).await, "REPLICAOF NO ONE");
    fenced(client.replicaof(&addr(&primary), Some(&addr(replica))).await, "REPLICAOF host port");
    fenced(client.config_set(&addr(&primary), "min-replicas-to-write", "1").await, "CONFIG SET");
    fenced(client.failover_to(&addr(&primary), &addr(replica), Duration::from_secs(2)).await, "FAILOVER TO");
    let plan =
        NodePlan { rules: BTreeMap::from([("default", vec!["nopass".to_string()])]), set_masterauth: true };
    fenced(client.acl_apply(&addr(&primary), &plan, "new-masterauth").await, "ACL SETUSER / CONFIG SET");
    // The replication manager's own path: a planned promotion stops at the fence.
    let (plan, addrs) = promotion("demo-redis-1", addr(replica));
    let err = actuate::apply(&plan, &addrs, &client).await.expect_err("a fenced promotion");
    let err = counterstack::operator::Error::from(err);
    assert!(err.not_leader(), "the reconcile does not see a fenced write as one: {err}");

    assert_eq!(role(&primary), "master");
    assert_eq!(role(replica), "slave");
    assert_eq!(config(&primary, "min-replicas-to-write"), "0");
    assert_eq!(config(&primary, "masterauth"), "");
    assert_eq!(redis_refusals(), 6);

    // The same client once the leadership is live again (a renewal seen now) changes the
    // node: the fence alone made the difference.
    leadership.renewed(Instant::now());
    let (plan, addrs) = promotion("demo-redis-1", addr(replica));
    let done = actuate::apply(&plan, &addrs, &client).await.expect("a leader's promotion");
    assert_eq!(done.promoted.as_deref(), Some("demo-redis-1"));
    assert_eq!(role(replica), "master");
    assert_eq!(redis_refusals(), 6);
}
