//! Operator-caused rollouts a few stacks at a time (issue 21): the operator restarts with
//! another `--default-web-image`; the web Deployment of a Ready stack waits for a rollout
//! slot when every slot is held, rolls when one frees, and gives it back once Ready. A
//! change the user makes rolls at once, slots or not.

use serde_json::json;

use super::fake_api::{FakeApi, Recorded};
use super::*;

/// A new operator process with another default web image and `max` rollout slots.
fn upgraded(ctx: &Arc<Context>, max: usize) -> Arc<Context> {
    let mut fresh = Context::new(ctx.client.clone(), "registry.example/counterstack:next");
    fresh.redis_addressing = ctx.redis_addressing.clone();
    fresh.max_concurrent_rollouts = max;
    Arc::new(fresh)
}

fn deployment_image(fake: &FakeApi) -> String {
    fake.get(DEPLOY).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn sent(fake: &FakeApi) -> Vec<String> {
    writes(&fake.requests()).iter().filter(|r| !r.is_event()).map(Recorded::line).collect()
}

#[tokio::test]
async fn an_operator_change_waits_for_a_slot_rolls_when_one_frees_and_gives_it_back() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    assert_eq!(deployment_image(&fake), "registry.example/counterstack:test");

    let ctx = upgraded(&ctx, 1);
    assert!(ctx.rollout_slots.acquire("ns", "another-stack", 1), "another stack rolls");
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert!(!sent(&fake).contains(&format!("PATCH {DEPLOY}")), "rolled without a slot: {:#?}", sent(&fake));
    assert_eq!(deployment_image(&fake), "registry.example/counterstack:test");
    let cr = load_cr(&fake);
    let (status, reason) = condition(&cr, "Reconciling").expect("Reconciling while it waits");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Progressing"));
    let msg = cr
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciling")
        .unwrap()
        .message
        .clone();
    assert!(msg.contains("waits for a rollout slot (1 of 1 stacks are rolling"), "{msg}");

    // The other stack is done: this one takes the slot and rolls.
    assert_eq!(
        ctx.rollout_slots.release("ns", "another-stack", 1),
        Some(vec![("ns".to_string(), "demo".to_string())]),
        "the waiting stack is next in line, and woken"
    );
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert!(sent(&fake).contains(&format!("PATCH {DEPLOY}")), "{:#?}", sent(&fake));
    assert_eq!(deployment_image(&fake), "registry.example/counterstack:next");
    assert!(ctx.rollout_slots.holds("ns", "demo"));
    assert!(!ctx.rollout_slots.acquire("ns", "another-stack", 1), "the slot is held while it rolls");

    // Rolled out and Ready: the slot is given back.
    cluster_catches_up(&fake, [Some("primary"), Some("replica"), Some("replica")]);
    settle(&ctx, &fake).await;
    assert_eq!(condition(&load_cr(&fake), "Ready").map(|c| c.0), Some("True".into()));
    assert!(!ctx.rollout_slots.holds("ns", "demo"), "slot kept after the stack was Ready");
}

#[tokio::test]
async fn a_change_the_user_makes_rolls_at_once_even_with_every_slot_held() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    let ctx = upgraded(&ctx, 1);
    assert!(ctx.rollout_slots.acquire("ns", "another-stack", 1));
    fake.mutate(CR, |cr| cr["spec"]["web"] = json!({ "image": "registry.example/web:2" }));
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert!(sent(&fake).contains(&format!("PATCH {DEPLOY}")), "{:#?}", sent(&fake));
    assert_eq!(deployment_image(&fake), "registry.example/web:2");
    assert!(!ctx.rollout_slots.holds("ns", "demo"), "a user change takes no slot");
}

#[tokio::test]
async fn an_upgrade_that_renders_the_same_pods_rolls_nothing_and_takes_no_slot() {
    let (ctx, fake, _redis) = setup_redis(json!({}));
    ready_stack(&ctx, &fake).await;
    // Same default image, a new process: same templates.
    let mut same = Context::new(ctx.client.clone(), "registry.example/counterstack:test");
    same.redis_addressing = ctx.redis_addressing.clone();
    same.max_concurrent_rollouts = 1;
    let ctx = Arc::new(same);
    fake.clear_requests();
    reconcile(load_cr(&fake), synced(&ctx, &fake)).await.expect("reconcile");
    assert!(sent(&fake).is_empty(), "{:#?}", sent(&fake));
    assert!(ctx.rollout_slots.is_empty());
}
