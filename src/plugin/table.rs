//! PURE: the `kubectl counterstack status` table, from a CounterApp, the readiness of
//! its Redis pods and the time now (for ages).

use std::collections::BTreeMap;
use std::fmt::Write;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::backup;
use crate::api::{CounterApp, SwitchoverStatus};

/// Readiness of each Redis pod by name, as the API reports it (`None`: not known, e.g.
/// pods could not be listed).
pub type Readiness = Option<BTreeMap<String, bool>>;

/// Render the status of `app` at `now`: a summary, one row per Redis pod (every pod in
/// status and every pod that exists), the last switchover, the backups, and the conditions.
pub fn render(app: &CounterApp, ready: &Readiness, now: Timestamp) -> String {
    let mut out = String::new();
    let status = app.status.clone().unwrap_or_default();
    let redis = status.redis.clone().unwrap_or_default();
    let dash = |s: Option<String>| s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "CounterApp {}/{}  paused: {}  web: {}",
        app.namespace().unwrap_or_default(),
        app.name_any(),
        app.spec.paused,
        dash(status.web.as_ref().map(|w| w.ready.clone())),
    );
    let _ = writeln!(
        out,
        "Primary: {}  Epoch: {}  Last failover: {}",
        dash(redis.primary.clone()),
        redis.epoch,
        dash(redis.last_failover_time.as_ref().map(time))
    );
    if let Some(since) = &redis.primary_unavailable_since {
        let _ = writeln!(
            out,
            "Primary unavailable since {} (fails over {} s after that)",
            time(since),
            app.spec.redis.failover.after_seconds
        );
    }
    let _ = writeln!(out, "Last switchover: {}", redis.switchover.as_ref().map_or("-".into(), switchover));
    if let Some(s) = &redis.storage {
        let _ = writeln!(out, "Volumes: {}/{} at {}: {}", s.resized, s.volumes, s.size, s.message);
    }
    if !redis.rotating_passwords.is_empty() {
        let _ = writeln!(out, "Rotating passwords of: {}", redis.rotating_passwords.join(", "));
    }
    for line in backup_lines(app, now) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');

    let mut rows = vec![row(["POD", "ROLE", "OFFSET", "LAG", "LINK", "READY"])];
    let mut seen = vec![];
    for n in &redis.nodes {
        let primary = redis.primary.as_deref() == Some(n.pod.as_str());
        rows.push(row([
            &n.pod,
            &n.role,
            &n.offset.to_string(),
            &n.lag_bytes.to_string(),
            if primary || n.role != "replica" {
                "-"
            } else if n.link_up {
                "up"
            } else {
                "down"
            },
            &readiness(ready, &n.pod),
        ]));
        seen.push(n.pod.as_str());
    }
    for pod in ready.iter().flat_map(|r| r.keys()).filter(|p| !seen.contains(&p.as_str())) {
        rows.push(row([pod, "-", "-", "-", "-", &readiness(ready, pod)]));
    }
    table(&mut out, &rows);
    out.push('\n');

    let mut rows = vec![row(["CONDITION", "STATUS", "REASON", "MESSAGE"])];
    for c in &status.conditions {
        rows.push(row([&c.type_, &c.status, &c.reason, &c.message]));
    }
    if status.conditions.is_empty() {
        rows.push(row(["-", "-", "-", "no conditions yet (is the operator running?)"]));
    }
    table(&mut out, &rows);
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn readiness(ready: &Readiness, pod: &str) -> String {
    match ready {
        None => "?".into(),
        Some(r) => match r.get(pod) {
            Some(true) => "yes".into(),
            Some(false) => "no".into(),
            None => "gone".into(),
        },
    }
}

fn time(t: &Time) -> String {
    t.0.to_string()
}

/// One line about a switchover result.
pub fn switchover(s: &SwitchoverStatus) -> String {
    let mut line = format!("{} {}", s.request, s.phase.as_str());
    if !s.to.is_empty() {
        let _ = write!(line, " to {}", s.to);
    }
    if let Some(p) = s.pause_seconds {
        let _ = write!(line, ", writes paused {:.0} ms", p * 1000.0);
    }
    if let Some(t) = &s.completed_time {
        let _ = write!(line, " at {}", time(t));
    }
    if !s.message.is_empty() {
        let _ = write!(line, ": {}", s.message);
    }
    line
}

/// The `Backup:` line (last successful backup, next scheduled one) and a line about the
/// last failure; nothing when the CounterApp has neither spec.backup nor status.backup.
pub fn backup_lines(app: &CounterApp, now: Timestamp) -> Vec<String> {
    let status = app.status.as_ref().and_then(|s| s.backup.as_ref());
    if app.spec.backup.is_none() && status.is_none() {
        return vec![];
    }
    let last = status.and_then(|s| s.last_successful.as_ref());
    let mut lines = vec![format!(
        "Backup: last successful {}  next: {}",
        last.map_or("-".into(), |r| {
            let when = backup::record_time(r).map_or("time unknown".into(), |t| backup::relative(t, now));
            format!("{} ({when}, {})", r.name, backup::human_size(r.size_bytes))
        }),
        backup::next_scheduled(app, now),
    )];
    if let Some(f) = status.and_then(|s| s.last_failed.as_ref()) {
        let when = f.time.as_ref().map_or("at an unknown time".into(), |t| backup::time_and_age(t.0, now));
        lines.push(if backup::failure_is_newer(f, last) {
            format!("Last backup FAILED {when}: {}", backup::failure_line(f))
        } else {
            format!("Last backup failure {when}, succeeded since: {}", backup::failure_line(f))
        });
    }
    lines
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub(super) fn table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::api::{
        CounterAppSpec, CounterAppStatus, RedisNodeStatus, RedisStatus, SwitchoverPhase, WebStatus,
    };

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn now() -> Timestamp {
        "2026-01-02T08:00:00Z".parse().unwrap()
    }

    fn node(i: u32, role: &str, offset: i64, lag: i64, link: bool) -> RedisNodeStatus {
        RedisNodeStatus {
            pod: format!("demo-redis-{i}"),
            role: role.into(),
            offset,
            lag_bytes: lag,
            link_up: link,
        }
    }

    fn app() -> CounterApp {
        let mut app = CounterApp::new("demo", CounterAppSpec::default());
        app.metadata.namespace = Some("shop".into());
        app.status = Some(CounterAppStatus {
            observed_generation: Some(2),
            conditions: vec![
                Condition {
                    type_: "Available".into(),
                    status: "True".into(),
                    reason: "WebAndPrimaryAvailable".into(),
                    message: "4 web pod(s) available; Redis primary demo-redis-1 is ready".into(),
                    observed_generation: Some(2),
                    last_transition_time: t("2026-01-01T00:00:00Z"),
                },
                Condition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    reason: "ReplicationLinkDown".into(),
                    message: "replication link down on demo-redis-2".into(),
                    observed_generation: Some(2),
                    last_transition_time: t("2026-01-01T00:00:00Z"),
                },
            ],
            web: Some(WebStatus { ready: "4/4".into(), ..Default::default() }),
            redis: Some(RedisStatus {
                primary: Some("demo-redis-1".into()),
                epoch: 3,
                ready_replicas: 3,
                last_failover_time: Some(t("2026-01-01T10:00:00Z")),
                primary_unavailable_since: None,
                holds_data: true,
                nodes: vec![
                    node(0, "replica", 1000, 24, true),
                    node(1, "primary", 1024, 0, false),
                    node(2, "replica", 900, 124, false),
                ],
                switchover: Some(SwitchoverStatus {
                    request: "2026-01-01T09:59:59Z".into(),
                    to: "demo-redis-1".into(),
                    phase: SwitchoverPhase::Succeeded,
                    message: "demo-redis-0 handed the primary over to demo-redis-1; writes paused 12 ms"
                        .into(),
                    pause_seconds: Some(0.012),
                    completed_time: Some(t("2026-01-01T10:00:00Z")),
                }),
                rotating_passwords: vec![],
                storage: None,
                hibernated: false,
            }),
            backup: None,
            bootstrap: None,
        });
        app
    }

    #[test]
    fn the_status_table_shows_every_pod_the_switchover_and_the_conditions() {
        let ready: Readiness = Some(
            [
                ("demo-redis-0", true),
                ("demo-redis-1", true),
                ("demo-redis-2", false),
                ("demo-redis-3", false),
            ]
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect(),
        );
        let expected = "\
CounterApp shop/demo  paused: false  web: 4/4
Primary: demo-redis-1  Epoch: 3  Last failover: 2026-01-01T10:00:00Z
Last switchover: 2026-01-01T09:59:59Z Succeeded to demo-redis-1, writes paused 12 ms at 2026-01-01T10:00:00Z: demo-redis-0 handed the primary over to demo-redis-1; writes paused 12 ms

POD           ROLE     OFFSET  LAG  LINK  READY
demo-redis-0  replica  1000    24   up    yes
demo-redis-1  primary  1024    0    -     yes
demo-redis-2  replica  900     124  down  no
demo-redis-3  -        -       -    -     no

CONDITION  STATUS  REASON                  MESSAGE
Available  True    WebAndPrimaryAvailable  4 web pod(s) available; Redis primary demo-redis-1 is ready
Ready      False   ReplicationLinkDown     replication link down on demo-redis-2
";
        assert_eq!(render(&app(), &ready, now()), expected);
    }

    #[test]
    fn a_fresh_counterapp_renders_dashes_and_unknown_readiness() {
        let app = CounterApp::new("demo", CounterAppSpec::default());
        let out = render(&app, &None, now());
        assert!(out.contains("Primary: -  Epoch: 0  Last failover: -"), "{out}");
        assert!(out.contains("Last switchover: -"), "{out}");
        assert!(!out.contains("Volumes:"), "{out}");
        assert!(out.contains("no conditions yet"), "{out}");
    }

    #[test]
    fn an_unavailable_primary_gets_its_line() {
        let mut app = app();
        assert!(!render(&app, &None, now()).contains("unavailable since"));
        let redis = app.status.as_mut().unwrap().redis.as_mut().unwrap();
        redis.primary_unavailable_since = Some(t("2026-01-01T11:00:00Z"));
        let out = render(&app, &None, now());
        assert!(
            out.contains("Primary unavailable since 2026-01-01T11:00:00Z (fails over 5 s after that)\n"),
            "{out}"
        );
    }

    #[test]
    fn a_volume_expansion_in_progress_gets_its_line() {
        let mut app = app();
        let redis = app.status.as_mut().unwrap().redis.as_mut().unwrap();
        redis.storage = Some(crate::api::StorageStatus {
            size: "2Gi".into(),
            volumes: 3,
            resized: 1,
            message: "waiting for the storage driver to resize data-demo-redis-1 at 1Gi".into(),
        });
        let out = render(&app, &None, now());
        assert!(
            out.contains(
                "Volumes: 1/3 at 2Gi: waiting for the storage driver to resize data-demo-redis-1 at 1Gi\n"
            ),
            "{out}"
        );
    }

    fn backup_spec(schedule: Option<&str>) -> crate::api::BackupSpec {
        serde_json::from_value(serde_json::json!({
            "schedule": schedule,
            "s3": {"bucket": "backups", "credentials": {"secretName": "s3"}},
        }))
        .unwrap()
    }

    #[test]
    fn no_backup_line_without_spec_or_status_backup() {
        let out = render(&app(), &None, now());
        assert!(!out.contains("Backup"), "{out}");
        assert!(backup_lines(&app(), now()).is_empty());
    }

    #[test]
    fn the_backup_lines() {
        use crate::api::{BackupFailure, BackupRecord, BackupStatus};
        let mut app = app();
        app.spec.backup = Some(Box::new(backup_spec(Some("0 3 * * *"))));
        // Configured, nothing taken yet.
        assert_eq!(
            backup_lines(&app, now()),
            [
                "Backup: last successful -  next: - (schedule \"0 3 * * *\"; the operator has not computed it yet)"
            ]
        );
        let ok = BackupRecord {
            name: "20260102T030000Z".into(),
            start_time: Some(t("2026-01-02T03:00:00Z")),
            size_bytes: 1_258_291,
            duration_seconds: Some(3.4),
            source_pod: "demo-redis-1".into(),
            ..Default::default()
        };
        let failed = |at: &str| BackupFailure {
            time: Some(t(at)),
            reason: "AccessDenied".into(),
            message: "the store refused the access key".into(),
            attempts: 3,
        };
        app.status.as_mut().unwrap().backup = Some(Box::new(BackupStatus {
            last_successful: Some(ok),
            last_failed: Some(failed("2026-01-02T04:00:00Z")),
            next_schedule_time: Some(t("2026-01-03T03:00:00Z")),
            ..Default::default()
        }));
        let out = render(&app, &None, now());
        assert!(
            out.contains(
                "Last switchover: 2026-01-01T09:59:59Z Succeeded to demo-redis-1, writes paused 12 ms at 2026-01-01T10:00:00Z: demo-redis-0 handed the primary over to demo-redis-1; writes paused 12 ms
Backup: last successful 20260102T030000Z (5h ago, 1.2 MiB)  next: 2026-01-03T03:00:00Z (in 19h, schedule \"0 3 * * *\")
Last backup FAILED 2026-01-02T04:00:00Z (4h ago): AccessDenied: the store refused the access key (3 attempts)

POD "
            ),
            "{out}"
        );
        // A failure before the last success is shown as history.
        app.status.as_mut().unwrap().backup.as_mut().unwrap().last_failed =
            Some(failed("2026-01-02T02:00:00Z"));
        assert_eq!(
            backup_lines(&app, now())[1],
            "Last backup failure 2026-01-02T02:00:00Z (6h ago), succeeded since: AccessDenied: the store refused the access key (3 attempts)"
        );
        // spec.backup removed, status kept: still shown, with why nothing is scheduled.
        app.spec.backup = None;
        assert!(backup_lines(&app, now())[0].ends_with("next: - (spec.backup is not set)"));
    }
}
