//! Coalesced writes (issue 22) against real redis-server processes: increments queued
//! behind a batch in flight become one `INCRBY`, each answered with its own value; random
//! mixes of increments, decrements, resets and idempotent writes from concurrent clients
//! always get answers that one serial order explains, with or without a replica to
//! `WAIT` for; a run that would overflow as a whole is retried write by write.
//!
//! `CLIENT PAUSE WRITE` holds the first write that reaches Redis (the batch in flight)
//! until every request of a round has reached the service, so the rest queue and go out
//! together as the next batch: big batches without relying on timing.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use common::redis_info;
use common::redis_server::{RedisServer, cluster};
use common::web::{READY, RawClient, WebServer, metric, wait_in_flight};
use counterstack::web::Op;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// One request of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Req {
    Plain(Op),
    /// With `Idempotency-Key` number `key` of the case (key k always carries the same op).
    Keyed(u8),
}

const KEYS: u8 = 6;

fn key_op(key: u8) -> Op {
    [Op::Increment, Op::Decrement, Op::Reset][usize::from(key % 3)]
}

impl Req {
    fn op(self) -> Op {
        match self {
            Req::Plain(op) => op,
            Req::Keyed(k) => key_op(k),
        }
    }
}

fn path(op: Op) -> String {
    format!("/api/counter/{}", op.name())
}

/// What one request was answered.
#[derive(Clone, Debug)]
struct Answer {
    req: Req,
    status: u16,
    value: Option<i64>,
    replayed: bool,
}

/// Send `reqs` concurrently, one client each, keys named `{prefix}-{k}`.
async fn send_all(addr: SocketAddr, reqs: &[Req], prefix: &str) -> Vec<tokio::task::JoinHandle<Answer>> {
    let mut tasks = Vec::with_capacity(reqs.len());
    for &req in reqs {
        let key = match req {
            Req::Keyed(k) => Some(format!("{prefix}-{k}")),
            Req::Plain(_) => None,
        };
        let mut c = RawClient::connect(addr).await.expect("connect to the web");
        tasks.push(tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = key.iter().map(|k| ("Idempotency-Key", k.as_str())).collect();
            let r = c.send("POST", &path(req.op()), &headers).await.expect("request");
            let value =
                serde_json::from_str::<serde_json::Value>(&r.body).ok().and_then(|v| v["value"].as_i64());
            Answer { req, status: r.status, value, replayed: r.header("idempotent-replayed") == Some("true") }
        }));
    }
    tasks
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Answer>>) -> Vec<Answer> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("client task"));
    }
    out
}

/// Send `reqs` while Redis holds writes (`CLIENT PAUSE WRITE`); let go once all are in
/// flight in the service.
async fn behind_a_paused_write(
    redis: &RedisServer,
    web: &WebServer,
    reqs: &[Req],
    prefix: &str,
) -> Vec<Answer> {
    let _: () = redis.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]).expect("CLIENT PAUSE");
    let tasks = send_all(web.addr, reqs, prefix).await;
    wait_in_flight(web, reqs.len()).await;
    let _: () = redis.cmd(&["CLIENT", "UNPAUSE"]).expect("CLIENT UNPAUSE");
    collect(tasks).await
}

/// `calls` of a command in `INFO commandstats` (0 when never called).
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]).expect("INFO commandstats");
    redis_info::command_calls(&info, command)
}

async fn web_on(redis: &RedisServer, extra: &[&str]) -> WebServer {
    let url = redis.url();
    let mut flags = vec!["--redis-url", url.as_str()];
    flags.extend_from_slice(extra);
    let web = WebServer::start(&flags).await;
    web.wait_ready(200, READY).await;
    web
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_queued_behind_a_batch_in_flight_are_one_incrby_with_distinct_values() {
    let redis = RedisServer::start();
    let web = web_on(&redis, &[]).await;
    let answers = behind_a_paused_write(&redis, &web, &[Req::Plain(Op::Increment); 50], "").await;
    let mut values: Vec<i64> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{a:?}");
            a.value.expect("a value")
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (1..=50).collect::<Vec<i64>>(), "each increment its own value");
    assert_eq!(redis.cmd::<String>(&["GET", "counter:value"]).unwrap(), "50");
    // The write Redis held, and one command for everything queued behind it.
    let commands = calls(&redis, "incr") + calls(&redis, "incrby");
    assert!(commands <= 2, "50 increments took {commands} commands");
    assert!(calls(&redis, "incrby") >= 1);
    assert!(metric(&web, "counterstack_web_write_batch_writes_sum").await >= 49.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_would_overflow_is_retried_write_by_write() {
    let redis = RedisServer::start();
    let web = web_on(&redis, &[]).await;
    let _: () = redis.cmd(&["SET", "counter:value", &(i64::MAX - 3).to_string()]).unwrap();
    let answers = behind_a_paused_write(&redis, &web, &[Req::Plain(Op::Increment); 10], "").await;
    // As one write at a time would be answered: three fit, seven would overflow.
    let ok: BTreeSet<i64> = answers.iter().filter(|a| a.status == 200).filter_map(|a| a.value).collect();
    assert_eq!(ok, BTreeSet::from([i64::MAX - 2, i64::MAX - 1, i64::MAX]), "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a.status == 409).count(), 7, "{answers:?}");
    assert_eq!(redis.cmd::<String>(&["GET", "counter:value"]).unwrap(), i64::MAX.to_string());
}

/// One case: rounds of concurrent requests, each round either behind a paused write
/// (one big batch) or free-running.
#[derive(Clone, Debug)]
struct Case {
    rounds: Vec<(bool, Vec<Req>)>,
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        6 => Just(Req::Plain(Op::Increment)),
        3 => Just(Req::Plain(Op::Decrement)),
        1 => Just(Req::Plain(Op::Reset)),
        2 => (0..KEYS).prop_map(Req::Keyed),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec((any::<bool>(), prop::collection::vec(req(), 1..40)), 1..5)
        .prop_map(|rounds| Case { rounds })
}

/// Run random cases against `redis` (the primary) through `web`: from 0, every answer
/// must be 200, each idempotency key applied once (all its answers equal), and the
/// applied writes' answers explained by one serial order ending at the final value.
async fn random_mixes_follow_one_serial_order(redis: &RedisServer, web: &WebServer) {
    let handle = tokio::runtime::Handle::current();
    let config = Config { cases: 10, max_shrink_iters: 16, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    // Every run of a case (shrinking included) gets its own idempotency keys.
    let case_no = std::sync::atomic::AtomicU32::new(0);
    let result = tokio::task::block_in_place(|| {
        runner.run(&case(), |case| {
            let prefix = format!("case{}", case_no.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            handle.block_on(run_case(redis, web, &case, &prefix))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn run_case(
    redis: &RedisServer,
    web: &WebServer,
    case: &Case,
    prefix: &str,
) -> Result<(), TestCaseError> {
    let _: () = redis.cmd(&["SET", "counter:value", "0"]).expect("SET");
    let mut answers = Vec::new();
    for (paused, reqs) in &case.rounds {
        let round = if *paused {
            behind_a_paused_write(redis, web, reqs, prefix).await
        } else {
            collect(send_all(web.addr, reqs, prefix).await).await
        };
        answers.extend(round);
    }
    let end: i64 = redis.cmd::<String>(&["GET", "counter:value"]).expect("GET").parse().expect("an integer");
    let mut applied = Vec::new();
    let mut by_key: BTreeMap<u8, Vec<&Answer>> = BTreeMap::new();
    for a in &answers {
        prop_assert_eq!(a.status, 200, "{:?}", a);
        let value = a.value.ok_or_else(|| TestCaseError::fail(format!("no value: {a:?}")))?;
        match a.req {
            Req::Plain(op) => applied.push((op, value)),
            Req::Keyed(k) => by_key.entry(k).or_default().push(a),
        }
    }
    for (k, group) in by_key {
        let firsts: Vec<&&Answer> = group.iter().filter(|a| !a.replayed).collect();
        prop_assert_eq!(firsts.len(), 1, "key {} applied {} times: {:?}", k, firsts.len(), group);
        prop_assert!(
            group.iter().all(|a| a.value == firsts[0].value),
            "key {} answered differently: {:?}",
            k,
            group
        );
        applied.push((key_op(k), firsts[0].value.unwrap_or_default()));
    }
    serial_order(&applied, end).map_err(|e| TestCaseError::fail(format!("{e}\nanswers: {answers:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mixes_from_concurrent_clients_follow_one_serial_order() {
    let redis = RedisServer::start();
    let web = web_on(&redis, &[]).await;
    random_mixes_follow_one_serial_order(&redis, &web).await;
    // Writes were coalesced (keyed writes and resets keep commands of their own).
    let writes = metric(&web, "counterstack_web_write_batch_writes_sum").await;
    let commands = metric(&web, "counterstack_web_write_batch_commands_sum").await;
    assert!(commands < writes, "{writes} writes in {commands} commands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mixes_with_a_sync_replica_follow_one_serial_order() {
    let (primary, replicas) = cluster(1, None);
    primary.wait_online_replicas(1, READY);
    let web = web_on(&primary, &["--sync-replicas", "1", "--sync-timeout-ms", "5000"]).await;
    random_mixes_follow_one_serial_order(&primary, &web).await;
    // Every acknowledged write reached the replica.
    let on_primary: String = primary.cmd(&["GET", "counter:value"]).unwrap();
    let on_replica: String = replicas[0].cmd(&["GET", "counter:value"]).unwrap();
    assert_eq!(on_replica, on_primary);
}

/// Whether one serial order of the `applied` writes, each answered with its value, leads
/// from 0 to `end`. Each write is an edge between the values before and after it (an
/// increment answered v: v-1 -> v; a decrement: v+1 -> v; a reset: anything -> 0), and a
/// serial order is a trail from 0 to `end` using every edge once: an Euler trail. One
/// exists exactly when every value is left as often as it is reached (0 once more, `end`
/// once less), the resets' free tails making up any surplus, and all edges are connected.
fn serial_order(applied: &[(Op, i64)], end: i64) -> Result<(), String> {
    let start = 0i64;
    // Per value: (times left) - (times reached) by increments and decrements, minus the
    // resets that reach 0.
    let mut balance: BTreeMap<i64, i64> = BTreeMap::from([(start, 0), (end, 0)]);
    let mut parent: HashMap<i64, i64> = HashMap::new();
    let mut resets = 0;
    for &(op, value) in applied {
        let from = match op {
            Op::Increment => value - 1,
            Op::Decrement => value + 1,
            Op::Reset if value == 0 => {
                resets += 1;
                continue;
            }
            Op::Reset => return Err(format!("a reset answered {value}")),
        };
        *balance.entry(from).or_default() += 1;
        *balance.entry(value).or_default() -= 1;
        union(&mut parent, from, value);
    }
    *balance.entry(0).or_default() -= resets;
    if resets > 0 {
        union(&mut parent, 0, 0);
    }
    for (&value, &b) in &balance {
        let want = i64::from(value == start) - i64::from(value == end);
        // Resets leave from here (their tails): never a negative number of them.
        let tails = want - b;
        if tails < 0 {
            return Err(format!("value {value} is left {} more times than any order allows", -tails));
        }
        if tails > 0 {
            union(&mut parent, value, 0);
        }
    }
    if applied.is_empty() {
        return if end == start { Ok(()) } else { Err(format!("nothing applied, but the counter is {end}")) };
    }
    let root = find(&mut parent, start);
    let values: Vec<i64> = parent.keys().copied().collect();
    for v in values {
        if find(&mut parent, v) != root {
            return Err(format!("value {v} cannot be reached from 0 in any order"));
        }
    }
    Ok(())
}

fn find(parent: &mut HashMap<i64, i64>, v: i64) -> i64 {
    let p = *parent.entry(v).or_insert(v);
    if p == v {
        return v;
    }
    let root = find(parent, p);
    parent.insert(v, root);
    root
}

fn union(parent: &mut HashMap<i64, i64>, a: i64, b: i64) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    parent.insert(ra, rb);
}

#[test]
fn the_serial_order_check_tells_possible_from_impossible_answers() {
    use Op::{Decrement as D, Increment as I, Reset as R};
    assert!(serial_order(&[], 0).is_ok());
    assert!(serial_order(&[], 3).is_err());
    assert!(serial_order(&[(I, 1), (I, 2), (I, 3)], 3).is_ok());
    assert!(serial_order(&[(I, 1), (I, 1)], 2).is_err(), "one value answered twice");
    assert!(serial_order(&[(I, 1), (I, 3)], 3).is_err(), "a value skipped");
    assert!(serial_order(&[(I, 1), (I, 2)], 3).is_err(), "a write not accounted for");
    assert!(serial_order(&[(I, 1), (D, 0), (I, 1)], 1).is_ok(), "a decrement in between");
    assert!(serial_order(&[(I, 1), (I, 2), (R, 0), (I, 1)], 1).is_ok(), "a reset in between");
    assert!(serial_order(&[(I, 1), (I, 2), (R, 0), (I, 1)], 2).is_ok(), "1, reset, 1, 2");
    assert!(serial_order(&[(I, 1), (I, 2), (R, 0), (I, 1)], 3).is_err());
    assert!(serial_order(&[(R, 0), (D, -1), (I, 0), (I, 1)], 1).is_ok());
    assert!(serial_order(&[(D, 4)], 4).is_err(), "decrement from a value never held");
    assert!(serial_order(&[(I, 5), (I, 6), (R, 0)], 0).is_err(), "5 is never reached from 0");
    assert!(serial_order(&[(R, 3)], 0).is_err());
}
