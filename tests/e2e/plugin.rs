//! `kubectl counterstack` against the cluster: the real binary, invoked under the
//! plugin's name (a `kubectl-counterstack` symlink, as docs/plugin.md installs it), with
//! the suite's KUBECONFIG and the test's namespace.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use counterstack::api::{CounterApp, SwitchoverPhase};
use counterstack::names;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use crate::harness::{Ctx, eventually, timeout};
use crate::load;
use crate::stack::Stack;

/// What one run of the plugin printed and how it exited.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// A `kubectl-counterstack` symlink to the binary under test, in a directory of its own.
fn plugin_path() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_counterstack"),
            dir.path().join("kubectl-counterstack"),
        )
        .unwrap();
        dir
    });
    dir.path().join("kubectl-counterstack")
}

/// `kubectl-counterstack -n NS ARGS...` (KUBECONFIG inherited); does not block the
/// runtime the load runs on.
pub async fn kubectl_counterstack(ctx: &Ctx, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = tokio::process::Command::new(plugin_path())
        .arg("-n")
        .arg(&ctx.ns)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run kubectl-counterstack: {e}"));
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    };
    eprintln!(
        "e2e: kubectl counterstack {} -> {} in {} ms\n{}{}",
        args.join(" "),
        out.status,
        run.took.as_millis(),
        run.stdout,
        run.stderr
    );
    run
}

/// The CRD in the cluster must keep `status.redis.switchover`: the suite installs this
/// build's CRD once per run, but on a shared cluster another checkout's run may install an
/// older one meanwhile, whose schema prunes the operator's answer (the plugin then times
/// out). Fail with that reason rather than with a timeout.
async fn assert_crd_has_switchover_status(ctx: &Ctx) {
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let crd = crds.get("counterapps.counterstack.io").await.unwrap();
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
    let redis = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["redis"]["properties"];
    assert!(
        redis.get("switchover").is_some(),
        "the cluster's CounterApp CRD has no status.redis.switchover (another run installed an older CRD); \
         re-run, or install crds/counterapp.yaml of this checkout"
    );
}

/// "writes paused N ms" in the plugin's output.
fn paused_ms(text: &str) -> Option<u64> {
    let rest = &text[text.find("writes paused ")? + "writes paused ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Switchover under write load through the plugin: a new primary, nothing acknowledged
/// lost, no read below an acknowledged value, and the pause the plugin reports < 1 s.
pub async fn switchover_under_load(stack: &Stack) {
    let before = stack.wait_healthy("a healthy stack before the switchover").await;
    let load = stack.start_load();
    let min_writes = 3 * load::clients();
    stack.wait_writes(&load, Instant::now(), min_writes).await;

    assert_crd_has_switchover_status(&stack.ctx).await;
    let from = Instant::now();
    let run = kubectl_counterstack(&stack.ctx, &["switchover", &stack.app, "--timeout", "60s"]).await;
    let after = stack.wait_healthy("a healthy stack after the switchover").await;
    stack.wait_writes(&load, Instant::now(), min_writes).await;
    let to = Instant::now();
    let report = load.stop().await;
    let final_value = stack.counter().await;
    let lost = stack.lost(&report, final_value);
    let gap = report.longest_gap(from, to);
    let pause = paused_ms(&run.stdout);
    eprintln!(
        "e2e: kubectl switchover: {} -> {} (epoch {} -> {}), reported pause {pause:?} ms, longest write gap {} ms, \
         acked {}, errors {}, lost {lost}, reads below an acknowledged value {} of {}, plugin took {} ms",
        before.pod,
        after.pod,
        before.epoch,
        after.epoch,
        gap.as_millis(),
        report.acks.len(),
        report.errors,
        report.backwards.len(),
        report.reads,
        run.took.as_millis()
    );
    assert!(run.ok, "kubectl counterstack switchover failed: {}", run.stderr);
    assert_ne!(after.pod, before.pod, "the primary did not change");
    assert!(after.epoch > before.epoch);
    assert!(run.stdout.contains(&format!("{} -> {}", before.pod, after.pod)), "{}", run.stdout);
    assert_eq!(lost, 0, "acknowledged increments were lost");
    assert!(report.backwards.is_empty(), "the counter went backwards for a reader: {:?}", report.backwards);
    let pause = pause.unwrap_or_else(|| panic!("no pause in the plugin's output: {}", run.stdout));
    assert!(pause < 1000, "writes paused {pause} ms");
    let cr = stack.cr().await.unwrap();
    let result = cr.status.and_then(|s| s.redis?.switchover).expect("status.redis.switchover");
    assert_eq!(
        (result.phase, result.to.as_str()),
        (SwitchoverPhase::Succeeded, after.pod.as_str()),
        "{result:?}"
    );
}

/// The Ready condition's reason.
fn ready_reason(cr: &CounterApp) -> Option<String> {
    cr.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.clone())
}

/// `status` lists every Redis pod and the primary; `pause` makes Ready's reason Paused
/// and a switchover meanwhile is refused (exit non-zero, says why); `resume` undoes it.
pub async fn status_pause_resume(ctx: &Ctx, app: &str, redis_pods: usize) {
    let run = kubectl_counterstack(ctx, &["status", app]).await;
    assert!(run.ok, "{}", run.stderr);
    for i in 0..redis_pods {
        let pod = format!("{}-{i}", names::redis(app));
        assert!(run.stdout.lines().any(|l| l.starts_with(&pod)), "{pod} missing from:\n{}", run.stdout);
    }
    assert!(run.stdout.contains("primary"), "{}", run.stdout);
    assert!(run.stdout.contains("CONDITION"), "{}", run.stdout);

    let missing = kubectl_counterstack(ctx, &["status", "no-such-app"]).await;
    assert!(!missing.ok);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);

    let run = kubectl_counterstack(ctx, &["pause", app]).await;
    assert!(run.ok && run.stdout.contains("paused"), "{}{}", run.stdout, run.stderr);
    let api = ctx.api::<CounterApp>();
    eventually("Ready reason Paused", timeout(), || async {
        let cr = api.get(app).await.map_err(|e| e.to_string())?;
        if ready_reason(&cr).as_deref() == Some("Paused") {
            Ok(())
        } else {
            Err(format!("{:?}", ready_reason(&cr)))
        }
    })
    .await;
    let run = kubectl_counterstack(ctx, &["status", app]).await;
    assert!(run.ok && run.stdout.contains("Paused") && run.stdout.contains("paused: true"), "{}", run.stdout);

    assert_crd_has_switchover_status(ctx).await;
    let refused = kubectl_counterstack(ctx, &["switchover", app, "--timeout", "30s"]).await;
    assert!(!refused.ok, "a switchover while paused must fail: {}", refused.stdout);
    assert!(refused.stderr.contains("paused"), "{}", refused.stderr);

    let run = kubectl_counterstack(ctx, &["resume", app]).await;
    assert!(run.ok && run.stdout.contains("resumed"), "{}{}", run.stdout, run.stderr);
    eventually("Ready reason not Paused", timeout(), || async {
        let cr = api.get(app).await.map_err(|e| e.to_string())?;
        match ready_reason(&cr) {
            Some(r) if r != "Paused" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_reported_pause() {
        assert_eq!(super::paused_ms("primary a -> b (writes paused 12 ms)\n"), Some(12));
        assert_eq!(super::paused_ms("nothing"), None);
    }
}
