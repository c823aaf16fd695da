//! Pure tests of the status computation (kstatus conditions, transition times,
//! summaries).

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, StatefulSet, StatefulSetStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::{Observation, Workload, changed_paths, compute, needs_patch, primary_available, reason};
use crate::api::{CounterAppStatus, RedisNodeStatus, RedisStatus};
use crate::replication::Health;

fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + secs).unwrap())
}

fn ready_workload(n: i32) -> Workload {
    Workload {
        desired: n,
        replicas: n,
        ready: n,
        available: n,
        updated: n,
        observed_current: true,
        deadline_exceeded: false,
        exists: true,
    }
}

fn redis_status() -> RedisStatus {
    RedisStatus { primary: Some("demo-redis-0".into()), epoch: 1, ready_replicas: 3, ..Default::default() }
}

/// A fully rolled-out, ready stack.
fn healthy() -> Observation {
    Observation {
        app: "demo".into(),
        generation: Some(2),
        paused: false,
        applied: false,
        web: ready_workload(4),
        redis: ready_workload(3),
        redis_status: Some(redis_status()),
        primary_ready: true,
        redis_health: None,
        invalid_spec: None,
        waiting: None,
        image_pull: None,
        storage_stalled: None,
        expanding: None,
        hibernating: None,
        backup: None,
        backup_configured: false,
        bootstrap: None,
        restore_failed: None,
    }
}

/// A stack just created: children applied, nothing running yet.
fn fresh() -> Observation {
    Observation {
        applied: true,
        web: Workload { desired: 4, exists: true, ..Default::default() },
        redis: Workload { desired: 3, exists: true, ..Default::default() },
        primary_ready: false,
        ..healthy()
    }
}

fn cond<'a>(s: &'a CounterAppStatus, type_: &str) -> Option<&'a Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

fn status_of(s: &CounterAppStatus, type_: &str) -> String {
    cond(s, type_).map(|c| c.status.clone()).unwrap_or_else(|| "<absent>".into())
}

#[test]
fn fresh_stack_is_reconciling_and_not_ready() {
    let s = compute(None, &fresh(), &t(0));
    assert_eq!(status_of(&s, "Ready"), "False");
    assert_eq!(cond(&s, "Ready").unwrap().reason, reason::PROGRESSING);
    assert_eq!(status_of(&s, "Reconciling"), "True");
    assert_eq!(status_of(&s, "Stalled"), "<absent>");
    assert_eq!(status_of(&s, "Available"), "False");
    assert_eq!(cond(&s, "Available").unwrap().reason, reason::WEB_UNAVAILABLE);
    assert_eq!(status_of(&s, "Degraded"), "True");
    assert_eq!(s.observed_generation, Some(2));
    for c in &s.conditions {
        assert_eq!(c.last_transition_time, t(0), "{}", c.type_);
        assert_eq!(c.observed_generation, Some(2), "{}", c.type_);
    }
    let web = s.web.as_ref().unwrap();
    assert_eq!(web.ready, "0/4");
    assert_eq!(
        web.selector,
        "app.kubernetes.io/component=web,app.kubernetes.io/instance=demo,app.kubernetes.io/name=counterstack"
    );
    assert_eq!(s.redis, Some(redis_status()));
}

#[test]
fn healthy_stack_is_ready_without_reconciling_or_stalled() {
    let s = compute(None, &healthy(), &t(0));
    assert_eq!(status_of(&s, "Ready"), "True");
    assert_eq!(cond(&s, "Ready").unwrap().reason, reason::READY);
    assert_eq!(status_of(&s, "Available"), "True");
    assert_eq!(status_of(&s, "Degraded"), "False");
    assert_eq!(status_of(&s, "Reconciling"), "<absent>");
    assert_eq!(status_of(&s, "Stalled"), "<absent>");
    let web = s.web.as_ref().unwrap();
    assert_eq!((web.replicas, web.ready_replicas, web.ready.as_str()), (4, 4, "4/4"));
}

#[test]
fn unchanged_observation_yields_identical_status_and_no_patch() {
    let first = compute(None, &healthy(), &t(0));
    let second = compute(Some(&first), &healthy(), &t(600));
    assert_eq!(second, first, "no timestamp may move when nothing flips");
    assert!(!needs_patch(Some(&first), &second));
    assert!(needs_patch(None, &second));
}

#[test]
fn transition_time_moves_only_for_flipped_conditions() {
    let before = compute(None, &healthy(), &t(0));
    let obs = Observation { web: Workload { ready: 3, available: 3, ..ready_workload(4) }, ..healthy() };
    let after = compute(Some(&before), &obs, &t(60));
    assert_eq!(status_of(&after, "Degraded"), "True");
    assert_eq!(cond(&after, "Degraded").unwrap().last_transition_time, t(60));
    assert_eq!(status_of(&after, "Ready"), "False");
    assert_eq!(cond(&after, "Ready").unwrap().last_transition_time, t(60));
    // Still available (3 pods): status unchanged, time kept.
    assert_eq!(status_of(&after, "Available"), "True");
    assert_eq!(cond(&after, "Available").unwrap().last_transition_time, t(0));
    assert_eq!(after.web.as_ref().unwrap().ready, "3/4");
}

#[test]
fn reason_change_without_flip_keeps_transition_time() {
    let web_down = Observation { web: Workload { ready: 3, available: 3, ..ready_workload(4) }, ..healthy() };
    let before = compute(None, &web_down, &t(0));
    assert_eq!(cond(&before, "Degraded").unwrap().reason, reason::WEB_NOT_READY);
    let redis_down =
        Observation { redis: Workload { ready: 2, available: 2, ..ready_workload(3) }, ..healthy() };
    let after = compute(Some(&before), &redis_down, &t(60));
    let d = cond(&after, "Degraded").unwrap();
    assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", reason::REDIS_NOT_READY));
    assert_eq!(d.last_transition_time, t(0));
}

#[test]
fn reconciling_is_removed_once_converged() {
    let during = compute(None, &fresh(), &t(0));
    assert!(cond(&during, "Reconciling").is_some());
    let done = compute(Some(&during), &healthy(), &t(30));
    assert_eq!(status_of(&done, "Reconciling"), "<absent>");
    assert_eq!(status_of(&done, "Ready"), "True");
    assert_eq!(cond(&done, "Ready").unwrap().last_transition_time, t(30));
}

#[test]
fn rollout_in_progress_is_reconciling() {
    let obs = Observation { web: Workload { updated: 2, replicas: 5, ..ready_workload(4) }, ..healthy() };
    let s = compute(None, &obs, &t(0));
    let r = cond(&s, "Reconciling").unwrap();
    assert_eq!(r.status, "True");
    assert!(r.message.contains("web Deployment rolling out (2/4"), "{}", r.message);
    assert_eq!(status_of(&s, "Ready"), "False");
}

#[test]
fn paused_keeps_ready_status_with_paused_reason() {
    let before = compute(None, &healthy(), &t(0));
    // Paused while a change would be rolling out: still no Reconciling.
    let obs = Observation { paused: true, applied: false, redis_status: None, ..fresh() };
    let s = compute(Some(&before), &obs, &t(60));
    let ready = cond(&s, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", reason::PAUSED));
    assert_eq!(ready.last_transition_time, t(0));
    assert_eq!(status_of(&s, "Reconciling"), "<absent>");
    assert_eq!(status_of(&s, "Stalled"), "<absent>");
    // status.redis is left as it was (no replication pass while paused).
    assert_eq!(s.redis, before.redis);

    let from_scratch = compute(None, &obs, &t(0));
    let ready = cond(&from_scratch, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason::PAUSED));
}

#[test]
fn invalid_spec_is_stalled_not_reconciling() {
    let obs = Observation { invalid_spec: Some("spec.web.port: bad".into()), ..fresh() };
    let s = compute(None, &obs, &t(0));
    let st = cond(&s, "Stalled").unwrap();
    assert_eq!((st.status.as_str(), st.reason.as_str()), ("True", reason::INVALID_SPEC));
    assert_eq!(st.message, "spec.web.port: bad");
    assert_eq!(status_of(&s, "Reconciling"), "<absent>");
    assert_eq!(cond(&s, "Ready").unwrap().reason, reason::INVALID_SPEC);
}

#[test]
fn deployment_progress_deadline_means_stalled() {
    let d = Deployment {
        metadata: ObjectMeta { generation: Some(3), ..Default::default() },
        status: Some(DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(4),
            updated_replicas: Some(1),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let web = Workload::from_deployment(Some(&d), 4);
    assert!(web.deadline_exceeded && !web.rolled_out());
    let s = compute(None, &Observation { web, ..healthy() }, &t(0));
    assert_eq!(cond(&s, "Stalled").unwrap().reason, reason::DEADLINE_EXCEEDED);
    assert_eq!(status_of(&s, "Reconciling"), "<absent>");
}

#[test]
fn primary_not_ready_makes_stack_unavailable() {
    let s = compute(None, &Observation { primary_ready: false, ..healthy() }, &t(0));
    let a = cond(&s, "Available").unwrap();
    assert_eq!((a.status.as_str(), a.reason.as_str()), ("False", reason::PRIMARY_NOT_READY));
    let none = Observation { redis_status: Some(RedisStatus::default()), ..healthy() };
    assert_eq!(cond(&compute(None, &none, &t(0)), "Available").unwrap().reason, reason::NO_PRIMARY);
}

#[test]
fn replica_link_down_is_degraded() {
    let mut rs = redis_status();
    rs.nodes = vec![
        RedisNodeStatus { pod: "demo-redis-0".into(), role: "primary".into(), ..Default::default() },
        RedisNodeStatus {
            pod: "demo-redis-1".into(),
            role: "replica".into(),
            link_up: true,
            ..Default::default()
        },
        RedisNodeStatus {
            pod: "demo-redis-2".into(),
            role: "replica".into(),
            link_up: false,
            ..Default::default()
        },
    ];
    let s = compute(None, &Observation { redis_status: Some(rs), ..healthy() }, &t(0));
    let d = cond(&s, "Degraded").unwrap();
    assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", reason::LINK_DOWN));
    assert!(d.message.contains("demo-redis-2") && !d.message.contains("demo-redis-1"));
}

#[test]
fn condition_order_does_not_force_a_patch() {
    let s = compute(None, &healthy(), &t(0));
    let mut reversed = s.clone();
    reversed.conditions.reverse();
    assert!(!needs_patch(Some(&reversed), &s));
}

#[test]
fn workloads_from_objects() {
    let missing = Workload::from_deployment(None, 4);
    assert!(!missing.exists && !missing.rolled_out() && missing.desired == 4);

    let stale = Deployment {
        metadata: ObjectMeta { generation: Some(2), ..Default::default() },
        status: Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(4),
            updated_replicas: Some(4),
            ready_replicas: Some(4),
            available_replicas: Some(4),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(!Workload::from_deployment(Some(&stale), 4).rolled_out(), "generation not observed yet");

    let sts = |current: &str, update: &str, updated: i32| StatefulSet {
        metadata: ObjectMeta { generation: Some(1), ..Default::default() },
        status: Some(StatefulSetStatus {
            observed_generation: Some(1),
            replicas: 3,
            ready_replicas: Some(3),
            updated_replicas: Some(updated),
            current_revision: Some(current.into()),
            update_revision: Some(update.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(Workload::from_statefulset(Some(&sts("r1", "r1", 0)), 3).rolled_out());
    let rolling = Workload::from_statefulset(Some(&sts("r1", "r2", 1)), 3);
    assert!(!rolling.rolled_out());
    assert_eq!((rolling.updated, rolling.ready), (1, 3));
}

#[test]
fn replication_health_drives_available_and_degraded() {
    let failing_over = Health {
        available: false,
        degraded: true,
        reason: "FailoverInProgress".into(),
        message: "promoting demo-redis-1".into(),
        ..Health::default()
    };
    let s = compute(None, &Observation { redis_health: Some(failing_over), ..healthy() }, &t(0));
    let a = cond(&s, "Available").unwrap();
    assert_eq!((a.status.as_str(), a.reason.as_str()), ("False", "FailoverInProgress"));
    assert_eq!(a.message, "promoting demo-redis-1");
    let d = cond(&s, "Degraded").unwrap();
    assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "FailoverInProgress"));
    assert_eq!(status_of(&s, "Ready"), "False");

    // An invalid reason string never reaches the API (it would reject the status).
    let odd = Health {
        available: true,
        degraded: true,
        reason: "not a reason!".into(),
        message: "m".into(),
        ..Health::default()
    };
    let s = compute(None, &Observation { redis_health: Some(odd), ..healthy() }, &t(0));
    assert_eq!(cond(&s, "Degraded").unwrap().reason, reason::REDIS_NOT_READY);

    let fine = Health {
        available: true,
        degraded: false,
        reason: "ReplicationHealthy".into(),
        message: "ok".into(),
        ..Health::default()
    };
    let s = compute(None, &Observation { redis_health: Some(fine.clone()), ..healthy() }, &t(0));
    assert_eq!(status_of(&s, "Ready"), "True");

    // A setting that applies at the next restart is said in Ready's message, not degraded.
    let pending =
        Health { pending_restart: vec!["demo-redis-0: dynamic-hz yes: unknown option".into()], ..fine };
    let s = compute(None, &Observation { redis_health: Some(pending), ..healthy() }, &t(0));
    let r = cond(&s, "Ready").unwrap();
    assert_eq!(r.status, "True");
    assert!(r.message.contains("next restart: demo-redis-0: dynamic-hz yes"), "{}", r.message);
    assert_eq!(status_of(&s, "Degraded"), "False");
}

#[test]
fn moving_replication_offsets_alone_do_not_force_a_patch() {
    let node = |pod: &str, offset, lag| RedisNodeStatus {
        pod: pod.into(),
        role: "replica".into(),
        offset,
        lag_bytes: lag,
        link_up: true,
    };
    let mut rs = redis_status();
    rs.nodes = vec![node("demo-redis-1", 100, 0)];
    let before = compute(None, &Observation { redis_status: Some(rs.clone()), ..healthy() }, &t(0));
    rs.nodes = vec![node("demo-redis-1", 5000, 12)];
    let after = compute(Some(&before), &Observation { redis_status: Some(rs.clone()), ..healthy() }, &t(60));
    assert!(!needs_patch(Some(&before), &after));
    // Anything else changing writes the fresh offsets too.
    rs.nodes[0].link_up = false;
    let changed = compute(Some(&before), &Observation { redis_status: Some(rs), ..healthy() }, &t(60));
    assert!(needs_patch(Some(&before), &changed));
    // The debug line names the field that forced the write, not the offsets riding along.
    assert_eq!(changed_paths(Some(&before), &after), Vec::<String>::new());
    let paths = changed_paths(Some(&before), &changed);
    assert!(paths.contains(&"status.redis.nodes[0].linkUp: true -> false".to_string()), "{paths:?}");
    assert!(paths.iter().all(|p| !p.contains("offset") && !p.contains("lagBytes")), "{paths:?}");
    assert_eq!(changed.redis.unwrap().nodes[0].offset, 5000);
}

#[test]
fn primary_available_needs_a_named_ready_writable_primary() {
    let avail = |o: &Observation| primary_available(o, o.redis_status.as_ref());
    assert!(avail(&healthy()));
    // Web pods do not matter: this is the Redis half of Available.
    assert!(avail(&Observation { web: Workload::default(), ..healthy() }));
    assert!(!avail(&Observation { primary_ready: false, ..healthy() }));
    assert!(!avail(&Observation { redis_status: Some(RedisStatus::default()), ..healthy() }));
    assert!(!avail(&Observation { redis_status: None, ..healthy() }));
    let lost = Health {
        available: false,
        degraded: true,
        reason: "PrimaryUnavailable".into(),
        message: "demo-redis-0 does not answer".into(),
        ..Health::default()
    };
    assert!(!avail(&Observation { redis_health: Some(lost), ..healthy() }));
}

#[test]
fn a_running_password_rotation_is_reconciling_and_says_so() {
    let mut obs = healthy();
    obs.waiting =
        Some("rotating the Redis password of web: waiting for every client to use the new one".into());
    let st = compute(None, &obs, &t(0));
    let rec = st.conditions.iter().find(|c| c.type_ == "Reconciling").expect("Reconciling while rotating");
    assert_eq!(rec.status, "True");
    assert!(rec.message.contains("rotating the Redis password of web"), "{}", rec.message);
}

#[test]
fn pods_that_cannot_pull_their_image_stall_the_stack_with_the_cause() {
    use crate::operator::image_pull::PullFailure;
    let what = "web pods cannot pull reg:5443/counterstack:0.1.0".to_string();
    let denied = PullFailure {
        what: what.clone(),
        cause: Some("the registry refused the credentials (401 Unauthorized)".into()),
    };
    let s = compute(None, &Observation { image_pull: Some(denied), ..fresh() }, &t(0));
    assert_eq!(status_of(&s, "Stalled"), "True");
    assert_eq!(status_of(&s, "Reconciling"), "<absent>");
    let stalled = cond(&s, "Stalled").unwrap();
    assert_eq!(stalled.reason, reason::IMAGE_PULL_FAILED);
    assert!(
        stalled.message.contains("401 Unauthorized") && stalled.message.starts_with(&what),
        "{}",
        stalled.message
    );
    let ready = cond(&s, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason::IMAGE_PULL_FAILED));
    assert_eq!(ready.message, stalled.message);

    // Backing off without a cause: the status stays as it was (no patch per retry).
    let backoff = PullFailure { what, cause: None };
    let again = compute(Some(&s), &Observation { image_pull: Some(backoff), ..fresh() }, &t(30));
    assert_eq!(again, s);
    assert!(!needs_patch(Some(&s), &again));

    // Fixed (the pods pull and run): no longer stalled.
    let fixed = compute(Some(&s), &fresh(), &t(60));
    assert_eq!(status_of(&fixed, "Stalled"), "<absent>");
    assert_eq!(status_of(&fixed, "Reconciling"), "True");
}

#[test]
fn volumes_that_cannot_grow_stall_a_running_stack_and_say_why() {
    let msg =
        "spec.redis.storage.size asks for 2Gi but the volumes cannot grow from 1Gi: forbidden".to_string();
    let s = compute(None, &Observation { storage_stalled: Some(msg.clone()), ..healthy() }, &t(0));
    let stalled = cond(&s, "Stalled").expect("Stalled");
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "VolumeExpansionRefused"));
    assert_eq!(stalled.message, msg);
    assert_eq!(status_of(&s, "Ready"), "False");
    assert_eq!(status_of(&s, "Reconciling"), "<absent>");
    // The stack itself still serves: Available stays true.
    assert_eq!(status_of(&s, "Available"), "True");
}

#[test]
fn an_expansion_in_progress_is_reconciling_with_its_count() {
    let progress = crate::api::StorageStatus {
        size: "2Gi".into(),
        volumes: 3,
        resized: 1,
        message: "waiting for the storage driver to resize data-demo-redis-1 at 1Gi".into(),
    };
    let s = compute(None, &Observation { expanding: Some(progress), ..healthy() }, &t(0));
    let r = cond(&s, "Reconciling").expect("Reconciling");
    assert_eq!(r.reason, "ExpandingVolumes");
    assert!(r.message.starts_with("expanding the Redis volumes to 2Gi: 1/3 resized;"), "{}", r.message);
    assert_eq!(status_of(&s, "Ready"), "False");
    let done = compute(Some(&s), &healthy(), &t(1));
    assert_eq!(status_of(&done, "Reconciling"), "<absent>");
    assert_eq!(status_of(&done, "Ready"), "True");
}

#[test]
fn a_hibernated_stack_is_ready_not_available_and_says_how_to_wake_it() {
    let stopping =
        Observation { hibernating: Some(3), web: ready_workload(0), redis: ready_workload(0), ..healthy() };
    let s = compute(None, &stopping, &t(0));
    assert_eq!(cond(&s, "Reconciling").map(|c| c.reason.as_str()), Some("Hibernating"));
    assert_eq!(
        cond(&s, "Ready").map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("False", "Hibernating"))
    );
    assert!(cond(&s, "Ready").unwrap().message.contains("waiting for 3 pod(s) to stop"));

    let done = compute(Some(&s), &Observation { hibernating: Some(0), ..stopping }, &t(1));
    assert_eq!(status_of(&done, "Reconciling"), "<absent>");
    let ready = cond(&done, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Hibernated"));
    assert!(ready.message.contains("set spec.hibernate to false"), "{}", ready.message);
    assert_eq!(status_of(&done, "Available"), "False");
    assert_eq!(status_of(&done, "Degraded"), "False");
}

#[test]
fn a_primary_that_cannot_persist_is_degraded_and_not_ready_but_available() {
    use crate::replication::persistence::STORAGE_FULL;
    // What the replication pass reports for a full volume (`persistence::with_problem`).
    let full = Health {
        available: true,
        degraded: true,
        reason: STORAGE_FULL.into(),
        message: "Redis cannot write to its volume: demo-redis-0 (the primary) refuses writes: \
                  MISCONF Errors writing to the AOF file: No space left on device"
            .into(),
        ..Health::default()
    };
    let s = compute(None, &Observation { redis_health: Some(full.clone()), ..healthy() }, &t(0));
    let d = cond(&s, "Degraded").unwrap();
    assert_eq!(
        (d.status.as_str(), d.reason.as_str(), d.message.as_str()),
        ("True", STORAGE_FULL, full.message.as_str())
    );
    let r = cond(&s, "Ready").unwrap();
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", STORAGE_FULL), "writes are refused");
    assert_eq!(status_of(&s, "Available"), "True", "the primary is up and serves reads");
    assert_eq!(status_of(&s, "Stalled"), "<absent>", "nothing for the user to change in the spec");
    assert!(primary_available(&Observation { redis_health: Some(full), ..healthy() }, Some(&redis_status())));

    // Room again: the next pass reports a healthy stack and everything clears.
    let fine = Health {
        degraded: false,
        reason: "ReplicationHealthy".into(),
        message: "ok".into(),
        ..Health::default()
    };
    let healed = compute(
        Some(&s),
        &Observation { redis_health: Some(Health { available: true, ..fine }), ..healthy() },
        &t(60),
    );
    assert_eq!(status_of(&healed, "Ready"), "True");
    assert_eq!(status_of(&healed, "Degraded"), "False");
}
