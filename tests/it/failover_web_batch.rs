//! kill -9 of the primary while a coalesced batch of the web service waits in `WAIT` for
//! its replica: that batch is refused as a whole (503), and every increment the service
//! acknowledged is in the final value on the new primary. Real redis-server processes,
//! the replication manager driving the failover, the web service (SYNC_REPLICAS=1,
//! coalescing on) behind a "primary Service" that follows the role label.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::failover_driver::{KEY, PASSWORD, Stack, spec};
use common::tcp_proxy::TcpProxy;
use common::web::{READY, RawClient, WebServer, value_of};

/// One answered request of one client.
#[derive(Clone, Copy, Debug)]
struct Sent {
    client: usize,
    started: Instant,
    ended: Instant,
    status: u16,
    value: Option<i64>,
}

const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_the_primary_mid_batch_refuses_that_batch_and_loses_no_acknowledged_increment() {
    let stack = Stack::start(spec(2, 1, 1));
    let first = stack.wait_healthy(2, Duration::from_secs(10)).await;
    let old = stack.ordinal_of(&first);

    // The primary Service: new connections go to whichever pod is labelled primary.
    let proxy = Arc::new(TcpProxy::start(format!("127.0.0.1:{}", stack.ports[old]).parse().unwrap()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let follow = {
        let (proxy, stop, primary_port) = (proxy.clone(), stop.clone(), stack.primary_port.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let port = primary_port.load(Ordering::SeqCst);
                if port != 0 {
                    proxy.switch(format!("127.0.0.1:{port}").parse().unwrap());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let url = proxy.url();
    // A WAIT longer than the test takes to kill: the batch is still waiting then.
    let web = WebServer::start(&[
        "--redis-url",
        &url,
        "--redis-password",
        PASSWORD,
        "--sync-replicas",
        "1",
        "--sync-timeout-ms",
        "5000",
    ])
    .await;
    web.wait_ready(200, READY).await;

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (stop, addr) = (stop.clone(), web.addr);
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        conn = RawClient::connect(addr).await.ok();
                    }
                    let Some(c) = conn.as_mut() else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let started = Instant::now();
                    match c.request("POST", "/api/counter/increment").await {
                        Ok((status, body, _)) => {
                            let value = (status == 200).then(|| value_of(&body));
                            sent.push(Sent { client, started, ended: Instant::now(), status, value });
                        }
                        Err(_) => conn = None,
                    }
                }
                sent
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Both replicas hold the counter before the freeze: a replica reported linked can still
    // be empty for a moment after its sync (offset 0), and the operator rightly never
    // promotes with only one replica of two holding data (k + r > n), so the failover this
    // test is about would not happen.
    let deadline = Instant::now() + READY;
    for i in (0..stack.ports.len()).filter(|i| *i != old) {
        loop {
            let value: Option<i64> = stack.servers.lock().unwrap()[i].cmd(&["GET", KEY]).unwrap();
            if value.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "replica {i} never received the counter");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Freeze the replicas: the next batch is applied on the primary and waits in WAIT.
    let replicas: Vec<usize> = (0..stack.ports.len()).filter(|i| *i != old).collect();
    for &i in &replicas {
        stack.servers.lock().unwrap()[i].pause();
    }
    let deadline = Instant::now() + READY;
    loop {
        let info: String = stack.servers.lock().unwrap()[old].cmd(&["INFO", "clients"]).unwrap();
        let blocked = info
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:")?.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if blocked >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no batch ever waited in WAIT: {info}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let in_wait: i64 = stack.servers.lock().unwrap()[old].cmd(&["GET", KEY]).unwrap();

    // kill -9 the primary mid-batch; the replicas come back; the operator fails over.
    let killed_at = Instant::now();
    stack.servers.lock().unwrap()[old].kill9();
    for &i in &replicas {
        stack.servers.lock().unwrap()[i].resume();
    }
    let new = stack.wait_primary_change(&first, Duration::from_secs(15)).await;
    let deadline = Instant::now() + READY;
    loop {
        let (status, _, _) =
            RawClient::connect(web.addr).await.unwrap().request("GET", "/api/counter").await.unwrap();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the service never read from the new primary");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for c in clients {
        sent.extend(c.await.unwrap());
    }
    let _ = follow.await;
    let final_value: i64 = stack.servers.lock().unwrap()[stack.ordinal_of(&new)].cmd(&["GET", KEY]).unwrap();
    let _ = stack.stop().await;

    let acked: Vec<&Sent> = sent.iter().filter(|s| s.status == 200).collect();
    let after_kill = acked.iter().filter(|s| s.started > killed_at).count();
    let at_kill: Vec<&Sent> = sent.iter().filter(|s| s.started < killed_at && s.ended > killed_at).collect();
    println!(
        "{} requests, {} acknowledged ({after_kill} after the kill), {} in flight at the kill, \
         counter {in_wait} when the batch waited, final {final_value}",
        sent.len(),
        acked.len(),
        at_kill.len()
    );
    assert!(sent.iter().all(|s| s.status == 200 || s.status == 503), "only 200 or 503: {sent:?}");
    assert!(after_kill > 0, "no increment acknowledged by the new primary");
    // The batch in WAIT at the kill: refused, as a whole (its writes share one verdict).
    assert!(at_kill.iter().any(|s| s.status == 503), "the batch in flight was not refused: {at_kill:?}");
    // Every acknowledged increment survived: distinct values, none above the final
    // counter, as many increments in it as were acknowledged, and each client's rising.
    let mut values: Vec<i64> = acked.iter().filter_map(|s| s.value).collect();
    values.sort_unstable();
    let distinct = values.len();
    values.dedup();
    assert_eq!(values.len(), distinct, "a value was acknowledged twice: the counter went back");
    assert!(
        values.last().is_none_or(|max| *max <= final_value),
        "acknowledged above the final {final_value}"
    );
    assert!(final_value >= acked.len() as i64, "{} acknowledged, final {final_value}", acked.len());
    for client in 0..CLIENTS {
        let mine: Vec<i64> = acked.iter().filter(|s| s.client == client).filter_map(|s| s.value).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "client {client} saw its counter go back: {mine:?}");
    }
}
