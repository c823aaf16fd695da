//! `spec.redis.config` on running Redis: the replication manager's config step (the same
//! code as in a cluster, over redis-rs) sets a live setting on the primary and the
//! replica with CONFIG SET, without restarting either process (same `run_id`), and a
//! value Redis refuses is reported once, not retried on every pass.

use crate::common;

use std::time::{Duration, Instant};

use common::failover_driver::{Stack, spec};
use common::redis_server::RedisServer;

fn config_get(server: &RedisServer, key: &str) -> String {
    let reply: Vec<String> = server.cmd(&["CONFIG", "GET", key]).unwrap();
    reply.get(1).cloned().unwrap_or_default()
}

fn run_id(server: &RedisServer) -> String {
    let info: String = server.cmd(&["INFO", "server"]).unwrap();
    info.lines().find_map(|l| l.strip_prefix("run_id:")).unwrap().trim().to_string()
}

/// Wait until every server reports `value` for `key`.
async fn wait_config(stack: &Stack, key: &str, value: &str) {
    let start = Instant::now();
    loop {
        let got: Vec<String> = stack.servers.lock().unwrap().iter().map(|s| config_get(s, key)).collect();
        if got.iter().all(|g| g == value) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{key} is {got:?}, want {value} everywhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_setting_reaches_primary_and_replica_without_a_restart() {
    let stack = Stack::start(spec(1, 1, 2));
    stack.wait_healthy(1, Duration::from_secs(10)).await;
    let before: Vec<String> = stack.servers.lock().unwrap().iter().map(run_id).collect();
    assert!(stack.servers.lock().unwrap().iter().all(|s| config_get(s, "maxmemory-policy") == "noeviction"));

    stack.set_spec(|s| {
        s.redis.config.insert("maxmemory-policy".into(), "allkeys-lru".into());
        s.redis.config.insert("maxmemory".into(), "64mb".into());
        // Needs a restart: the config step never sends it (Redis would refuse it).
        s.redis.config.insert("io-threads".into(), "2".into());
    });
    wait_config(&stack, "maxmemory-policy", "allkeys-lru").await;
    wait_config(&stack, "maxmemory", &(64 * 1024 * 1024).to_string()).await;
    let after: Vec<String> = stack.servers.lock().unwrap().iter().map(run_id).collect();
    assert_eq!(before, after, "no Redis process restarted");
    assert!(stack.servers.lock().unwrap().iter().all(|s| config_get(s, "io-threads") == "1"));

    // A changed value follows; a refused one is reported once per refusal.
    stack.set_spec(|s| {
        s.redis.config.insert("maxmemory-policy".into(), "volatile-lfu".into());
        s.redis.config.insert("active-expire-effort".into(), "20".into());
    });
    wait_config(&stack, "maxmemory-policy", "volatile-lfu").await;
    let passes = stack.state.lock().unwrap().passes;
    while stack.state.lock().unwrap().passes < passes + 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = stack.stop().await;
    let rejected: Vec<_> = state.events.iter().filter(|e| e.reason == "ConfigRejected").collect();
    assert_eq!(rejected.len(), 1, "one Event, no retry storm: {rejected:?}");
    assert!(rejected[0].warning);
    assert!(rejected[0].note.contains("active-expire-effort"), "{}", rejected[0].note);
    assert!(rejected[0].note.contains("between 1 and 10"), "Redis' own words: {}", rejected[0].note);
    assert!(state.errors.is_empty(), "{:?}", state.errors);
}
