//! `switchover NAME [--to POD] [--timeout 60s]`: request a planned hand-over of the Redis
//! primary and wait for the operator's answer.
//!
//! The request is a merge patch of two annotations: `counterstack.io/switchover` = a
//! fresh RFC 3339 timestamp (the token) and `counterstack.io/switchover-to` = the target
//! (empty: the operator picks the most advanced replica in sync). The operator answers
//! in `status.redis.switchover`; this polls the CounterApp every 500 ms until that names
//! the token with a final phase.

use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::{Error, get_app};
use crate::api::{
    CounterApp, SWITCHOVER_ANNOTATION, SWITCHOVER_TO_ANNOTATION, SwitchoverPhase, SwitchoverStatus,
};

/// How often the CounterApp is read while waiting.
pub const POLL: Duration = Duration::from_millis(500);

/// The merge patch that requests switchover `token` (to `to`, or the operator's choice).
pub fn request_patch(token: &str, to: Option<&str>) -> serde_json::Value {
    json!({"metadata": {"annotations": {
        SWITCHOVER_ANNOTATION: token,
        SWITCHOVER_TO_ANNOTATION: to.unwrap_or(""),
    }}})
}

/// The operator's final answer to `token`, if the CounterApp carries one.
pub fn answer<'a>(app: &'a CounterApp, token: &str) -> Option<&'a SwitchoverStatus> {
    app.status
        .as_ref()?
        .redis
        .as_ref()?
        .switchover
        .as_ref()
        .filter(|s| s.request == token && s.phase != SwitchoverPhase::InProgress)
}

/// Request the switchover and wait for its result; the text to print on success.
pub async fn run(
    client: &Client,
    ns: &str,
    name: &str,
    to: Option<&str>,
    timeout: Duration,
) -> Result<String, Error> {
    let before = get_app(client, ns, name).await?;
    let old_primary = before.status.as_ref().and_then(|s| s.redis.as_ref()?.primary.clone());
    let token = jiff::Timestamp::now().to_string();
    let api: Api<CounterApp> = Api::namespaced(client.clone(), ns);
    api.patch(name, &PatchParams::default(), &Patch::Merge(request_patch(&token, to)))
        .await
        .map_err(|e| Error::from_kube("patch counterapps (annotations)", name, ns, e))?;
    eprintln!(
        "switchover {token} requested on {ns}/{name} (primary {}, to {}); waiting up to {}s",
        old_primary.as_deref().unwrap_or("-"),
        to.unwrap_or("the most advanced replica"),
        timeout.as_secs()
    );
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    loop {
        let app = get_app(client, ns, name).await?;
        if let Some(s) = answer(&app, &token) {
            return match s.phase {
                SwitchoverPhase::Succeeded => Ok(format!(
                    "switched over {ns}/{name}: primary {} -> {} (writes paused {} ms)\n",
                    old_primary.as_deref().unwrap_or("-"),
                    s.to,
                    s.pause_seconds.map_or("?".into(), |p| format!("{:.0}", p * 1000.0)),
                )),
                _ => Err(Error::SwitchoverFailed { request: token, message: s.message.clone() }),
            };
        }
        if let Some(s) = app.status.as_ref().and_then(|s| s.redis.as_ref()?.switchover.as_ref())
            && s.request == token
        {
            last = format!("{}: {}", s.phase.as_str(), s.message);
        }
        if started.elapsed() >= timeout {
            return Err(Error::Timeout { request: token, after: timeout, last });
        }
        tokio::time::sleep(POLL.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CounterAppSpec, CounterAppStatus, RedisStatus};

    #[test]
    fn the_request_sets_both_annotations() {
        let p = request_patch("2026-01-01T00:00:00Z", None);
        assert_eq!(p["metadata"]["annotations"]["counterstack.io/switchover"], "2026-01-01T00:00:00Z");
        assert_eq!(p["metadata"]["annotations"]["counterstack.io/switchover-to"], "");
        let p = request_patch("t", Some("demo-redis-2"));
        assert_eq!(p["metadata"]["annotations"]["counterstack.io/switchover-to"], "demo-redis-2");
    }

    #[test]
    fn only_a_final_answer_to_this_token_ends_the_wait() {
        let with = |request: &str, phase| {
            let mut app = CounterApp::new("demo", CounterAppSpec::default());
            app.status = Some(CounterAppStatus {
                redis: Some(RedisStatus {
                    switchover: Some(SwitchoverStatus {
                        request: request.into(),
                        phase,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            app
        };
        assert!(answer(&with("t1", SwitchoverPhase::Succeeded), "t1").is_some());
        assert!(answer(&with("t1", SwitchoverPhase::Failed), "t1").is_some());
        assert!(answer(&with("t1", SwitchoverPhase::InProgress), "t1").is_none());
        assert!(answer(&with("t0", SwitchoverPhase::Succeeded), "t1").is_none());
        assert!(answer(&CounterApp::new("demo", CounterAppSpec::default()), "t1").is_none());
    }
}
