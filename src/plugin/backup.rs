//! `backup NAME [--wait] [--timeout 10m]`: request one backup now; `backups NAME`: list the
//! backups `status.backup` records.
//!
//! The request is a merge patch of the `counterstack.io/backup` annotation = a fresh
//! RFC 3339 timestamp (the token). The operator takes one backup per new token and
//! answers in `status.backup.request`; the outcome is the `lastSuccessful` or
//! `lastFailed` record it writes. With `--wait` this polls the CounterApp every second
//! until [`answer`] says the request is answered.
//!
//! When a record answers this request ([`answer`]): `status.backup.request` is the token,
//! **and** the record is not the one the CounterApp carried just before the request,
//! **and** its time (a success's `startTime`, else its name; a failure's `time`) is not
//! older than the token, to the whole second (status times have no fraction) and with
//! [`CLOCK_SKEW_SECONDS`] of slack for this machine's clock against the operator's.
//! `request` alone does not say which record answers (the status has no phase), and an
//! operator that records the token when it starts would otherwise let an older backup
//! pass for this one. A fresh success wins over a fresh failure: a verified backup that
//! started after the request holds every write acknowledged before it, which is what
//! the user asked for (a later failure, e.g. of a scheduled backup, is printed as a note).

use std::fmt::Write;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use super::{CommandError, Error, get_app, table};
use crate::api::{BACKUP_ANNOTATION, BackupFailure, BackupRecord, BackupStatus, CounterApp};

/// How often the CounterApp is read while waiting (a backup takes seconds to minutes).
pub const POLL: Duration = Duration::from_secs(1);

/// Slack, in seconds, for the clock of the machine that writes the token against the
/// operator's clock that stamps the records.
pub const CLOCK_SKEW_SECONDS: i64 = 5;

/// What a backup command can end with besides the plugin's common errors.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "spec.backup is not set: nowhere to store a backup (CounterApp {namespace}/{name} needs spec.backup.s3 or spec.backup.volume, see docs/backup.md)"
    )]
    NotConfigured { namespace: String, name: String },
    #[error("backup {request} of {namespace}/{name} failed: {}", failure_line(.failure))]
    Failed { request: String, namespace: String, name: String, failure: BackupFailure },
    #[error(
        "no answer to backup {request} of {namespace}/{name} after {}s ({last}); the request stands: `kubectl counterstack backups {name} -n {namespace}` shows the backup once taken. Is the operator running, and does the installed CRD have status.backup (an older CRD prunes the answer)?",
        .after.as_secs()
    )]
    Timeout { request: String, namespace: String, name: String, after: Duration, last: String },
}

/// The merge patch that requests backup `token`.
pub fn request_patch(token: &str) -> serde_json::Value {
    json!({"metadata": {"annotations": {BACKUP_ANNOTATION: token}}})
}

/// The records a CounterApp carried just before the request: neither can answer it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    pub last_successful: Option<BackupRecord>,
    pub last_failed: Option<BackupFailure>,
}

impl Baseline {
    pub fn of(status: Option<&BackupStatus>) -> Self {
        Self {
            last_successful: status.and_then(|s| s.last_successful.clone()),
            last_failed: status.and_then(|s| s.last_failed.clone()),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<'a> {
    /// Not answered yet: what was seen instead.
    Pending(String),
    /// A verified backup that started after the request.
    Succeeded(&'a BackupRecord),
    /// The request failed.
    Failed(&'a BackupFailure),
}

/// Whether `status` answers request `token` (see the module documentation).
pub fn answer<'a>(status: Option<&'a BackupStatus>, token: &str, before: &Baseline) -> Answer<'a> {
    let Some(status) = status else {
        return Answer::Pending("the CounterApp has no status.backup yet".into());
    };
    if status.request.is_empty() {
        return Answer::Pending("status.backup.request is empty: no request answered yet".into());
    }
    if status.request != token {
        return Answer::Pending(format!(
            "status.backup.request is {}, another request: this one is not answered yet",
            status.request
        ));
    }
    let floor = token_floor(token);
    let fresh = |t: Option<Timestamp>| match (floor, t) {
        (Some(floor), Some(t)) => t.as_second() >= floor,
        // A token that is not a timestamp, or a record without a time: the baseline decides.
        _ => true,
    };
    let success = status
        .last_successful
        .as_ref()
        .filter(|r| before.last_successful.as_ref() != Some(*r) && fresh(record_time(r)));
    let failure = status
        .last_failed
        .as_ref()
        .filter(|f| before.last_failed.as_ref() != Some(*f) && fresh(f.time.as_ref().map(|t| t.0)));
    match (success, failure) {
        (Some(r), _) => Answer::Succeeded(r),
        (None, Some(f)) => Answer::Failed(f),
        (None, None) => {
            let mut why =
                String::from("the operator answered this request, but records no backup newer than it yet");
            if let Some(r) = &status.last_successful
                && before.last_successful.as_ref() != Some(r)
            {
                let _ = write!(
                    why,
                    "; the last successful backup {} started {}, before the request (is this machine's clock ahead of the cluster's?)",
                    r.name,
                    record_time(r).map_or("at an unknown time".into(), |t| format!("at {t}")),
                );
            }
            Answer::Pending(why)
        }
    }
}

/// The earliest second a record answering `token` may carry, when the token is a time.
fn token_floor(token: &str) -> Option<i64> {
    token.parse::<Timestamp>().ok().map(|t| t.as_second() - CLOCK_SKEW_SECONDS)
}

/// When a backup started: `startTime`, else the time its name spells (`YYYYMMDDTHHMMSSZ`).
pub fn record_time(r: &BackupRecord) -> Option<Timestamp> {
    r.start_time.as_ref().map(|t| t.0).or_else(|| name_time(&r.name))
}

fn name_time(name: &str) -> Option<Timestamp> {
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", name)
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Whether `failed` is newer than the last success (so the stack's latest backup attempt
/// failed). Backups run one at a time, so a failure recorded after a success started
/// came after it; times are whole seconds, and a failure in the same second as the
/// success started counts as newer (better shown than hidden). A failure without a time
/// counts as newer too; with no success, any failure does.
pub fn failure_is_newer(failed: &BackupFailure, success: Option<&BackupRecord>) -> bool {
    match (failed.time.as_ref(), success.and_then(record_time)) {
        (Some(f), Some(s)) => f.0.as_second() >= s.as_second(),
        (None, _) => true,
        (Some(_), None) => success.is_none(),
    }
}

/// Bytes in binary units: `0 B`, `512 B`, `1.5 KiB`, `117.7 MiB`, `2.0 GiB`.
pub fn human_size(bytes: i64) -> String {
    if bytes < 0 {
        return "?".into();
    }
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // 1023.96 KiB would print as "1024.0 KiB": step up instead.
    if format!("{value:.1}") == "1024.0" && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long a backup took: `850 ms`, `3.4 s`, `2m05s`, `1h02m`; `-` when unknown.
pub fn human_duration(seconds: Option<f64>) -> String {
    let Some(s) = seconds.filter(|s| s.is_finite() && *s >= 0.0) else {
        return "-".into();
    };
    if s < 1.0 {
        return format!("{:.0} ms", s * 1000.0);
    }
    if s < 59.95 {
        return format!("{s:.1} s");
    }
    let whole = s.round() as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, whole % 3600 / 60)
    }
}

/// A span of whole seconds as kubectl prints ages: `45s`, `5m30s`, `42m`, `3h20m`, `30h`,
/// `3d4h`, `200d`, `2y30d`, `9y`.
pub fn human_age(seconds: u64) -> String {
    let (m, h, d) = (seconds / 60, seconds / 3600, seconds / 86_400);
    let with = |big: u64, bu: &str, small: u64, su: &str| {
        if small == 0 { format!("{big}{bu}") } else { format!("{big}{bu}{small}{su}") }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if m < 10 {
        with(m, "m", seconds % 60, "s")
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        with(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        with(d, "d", h % 24, "h")
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        with(d / 365, "y", d % 365, "d")
    } else {
        format!("{}y", d / 365)
    }
}

/// `5h ago` for a past time, `in 19h` for a future one.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let delta = now.as_second() - t.as_second();
    if delta >= 0 {
        format!("{} ago", human_age(delta.unsigned_abs()))
    } else {
        format!("in {}", human_age(delta.unsigned_abs()))
    }
}

/// `2026-01-01T03:00:00Z (5h ago)`.
pub fn time_and_age(t: Timestamp, now: Timestamp) -> String {
    format!("{t} ({})", relative(t, now))
}

/// One line about a failure: `AccessDenied: the message (3 attempts)`.
pub fn failure_line(f: &BackupFailure) -> String {
    let mut line = match (f.reason.is_empty(), f.message.is_empty()) {
        (false, false) => format!("{}: {}", f.reason, f.message),
        (false, true) => f.reason.clone(),
        (true, false) => f.message.clone(),
        (true, true) => "no reason given".into(),
    };
    if f.attempts > 1 {
        let _ = write!(line, " ({} attempts)", f.attempts);
    }
    line
}

/// When the next scheduled backup is due, or why there is none.
pub fn next_scheduled(app: &CounterApp, now: Timestamp) -> String {
    let Some(spec) = &app.spec.backup else {
        return "- (spec.backup is not set)".into();
    };
    let Some(schedule) = &spec.schedule else {
        return "- (no schedule: on demand only)".into();
    };
    if spec.suspend {
        return format!("- (schedule {schedule:?} suspended)");
    }
    match app.status.as_ref().and_then(|s| s.backup.as_ref()?.next_schedule_time.as_ref()) {
        Some(Time(t)) if t.as_second() < now.as_second() => {
            format!("{t} (due {}, schedule {schedule:?})", relative(*t, now))
        }
        Some(Time(t)) => format!("{t} ({}, schedule {schedule:?})", relative(*t, now)),
        None => format!("- (schedule {schedule:?}; the operator has not computed it yet)"),
    }
}

/// PURE: the `backups NAME` output.
pub fn list(app: &CounterApp, now: Timestamp) -> String {
    let mut out = String::new();
    let status = app.status.as_ref().and_then(|s| s.backup.clone()).unwrap_or_default();
    let (ns, name) = (app.namespace().unwrap_or_default(), app.name_any());
    match &app.spec.backup {
        Some(spec) => {
            let (place, prefix) = match spec.destination() {
                Some(d) => (d.describe(), d.prefix().to_string()),
                None => ("?".to_string(), String::new()),
            };
            let prefix = [prefix.as_str(), &ns, &name]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("/");
            let _ = writeln!(out, "Backups of {ns}/{name} in {place}/{prefix}/");
        }
        None => {
            let _ =
                writeln!(out, "Backups of {ns}/{name} (spec.backup is not set: no new backups are taken)");
        }
    }
    if status.backups.is_empty() {
        out.push_str("No backups recorded.\n");
    } else {
        let mut rows = vec![cells(["NAME", "STARTED", "SIZE", "DURATION", "SOURCE POD"])];
        for r in &status.backups {
            rows.push(cells([
                &r.name,
                &record_time(r).map_or("-".into(), |t| time_and_age(t, now)),
                &human_size(r.size_bytes),
                &human_duration(r.duration_seconds),
                if r.source_pod.is_empty() { "-" } else { &r.source_pod },
            ]));
        }
        table::table(&mut out, &rows);
    }
    out.push('\n');
    if let Some(f) = &status.last_failed
        && failure_is_newer(f, status.last_successful.as_ref())
    {
        let when = f.time.as_ref().map_or("at an unknown time".into(), |t| time_and_age(t.0, now));
        let _ = writeln!(out, "Last backup FAILED {when}: {}", failure_line(f));
    }
    let _ = writeln!(out, "Next scheduled: {}", next_scheduled(app, now));
    out
}

fn cells<const N: usize>(c: [&str; N]) -> Vec<String> {
    c.iter().map(|c| c.to_string()).collect()
}

/// One line about a successful backup: `20260101T030000Z: 1.2 MiB in 3.4 s from
/// demo-redis-1 at offset 1024, key counterstack/shop/demo/20260101T030000Z.rdb`.
pub fn success_line(r: &BackupRecord) -> String {
    let mut line =
        format!("{}: {} in {}", r.name, human_size(r.size_bytes), human_duration(r.duration_seconds));
    if !r.source_pod.is_empty() {
        let _ = write!(line, " from {}", r.source_pod);
    }
    if let Some(o) = r.offset {
        let _ = write!(line, " at offset {o}");
    }
    if !r.key.is_empty() {
        let _ = write!(line, ", key {}", r.key);
    }
    line
}

/// `backups NAME`.
pub async fn backups(client: &Client, ns: &str, name: &str) -> Result<String, CommandError> {
    let app = get_app(client, ns, name).await?;
    Ok(list(&app, Timestamp::now()))
}

/// `backup NAME [--wait] [--timeout]`: request a backup; with `wait`, wait for the result.
pub async fn request(
    client: &Client,
    ns: &str,
    name: &str,
    wait: bool,
    timeout: Duration,
) -> Result<String, CommandError> {
    let before = get_app(client, ns, name).await?;
    if before.spec.backup.is_none() {
        return Err(BackupError::NotConfigured { namespace: ns.into(), name: name.into() }.into());
    }
    let baseline = Baseline::of(before.status.as_ref().and_then(|s| s.backup.as_deref()));
    let token = Timestamp::now().to_string();
    let api: Api<CounterApp> = Api::namespaced(client.clone(), ns);
    api.patch(name, &PatchParams::default(), &Patch::Merge(request_patch(&token)))
        .await
        .map_err(|e| Error::from_kube("patch counterapps (annotations)", name, ns, e))?;
    if !wait {
        return Ok(format!(
            "backup {token} requested on {ns}/{name}\n\
             (`kubectl counterstack backups {name} -n {ns}` lists it once taken)\n"
        ));
    }
    eprintln!("backup {token} requested on {ns}/{name}; waiting up to {}s", timeout.as_secs());
    let started = Instant::now();
    loop {
        let last = match get_app(client, ns, name).await {
            Ok(app) => {
                let status = app.status.as_ref().and_then(|s| s.backup.as_deref());
                match answer(status, &token, &baseline) {
                    Answer::Succeeded(r) => {
                        let mut out =
                            format!("backup {token} of {ns}/{name} succeeded: {}\n", success_line(r));
                        if let Some(f) = status.and_then(|s| s.last_failed.as_ref())
                            && baseline.last_failed.as_ref() != Some(f)
                            && failure_is_newer(f, Some(r))
                        {
                            let _ = writeln!(out, "note: a later backup failed: {}", failure_line(f));
                        }
                        return Ok(out);
                    }
                    Answer::Failed(f) => {
                        return Err(BackupError::Failed {
                            request: token,
                            namespace: ns.into(),
                            name: name.into(),
                            failure: f.clone(),
                        }
                        .into());
                    }
                    Answer::Pending(why) => why,
                }
            }
            // A transient API error does not end a wait of minutes; it is what was last seen.
            Err(e @ Error::Api { .. }) => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        if started.elapsed() >= timeout {
            return Err(BackupError::Timeout {
                request: token,
                namespace: ns.into(),
                name: name.into(),
                after: timeout,
                last,
            }
            .into());
        }
        tokio::time::sleep(POLL.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BackupSpec, CounterAppSpec, CounterAppStatus, RetentionSpec, S3Credentials, S3Destination,
        VolumeDestination,
    };

    const TOKEN: &str = "2026-01-01T03:00:00.700Z";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn record(name: &str, start: Option<&str>) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            key: format!("counterstack/shop/demo/{name}.rdb"),
            start_time: start.map(|s| Time(ts(s))),
            size_bytes: 1_258_291,
            duration_seconds: Some(3.4),
            source_pod: "demo-redis-1".into(),
            offset: Some(1024),
        }
    }

    fn failed(at: Option<&str>, reason: &str) -> BackupFailure {
        BackupFailure {
            time: at.map(|s| Time(ts(s))),
            reason: reason.into(),
            message: "the store refused the access key".into(),
            attempts: 1,
        }
    }

    fn status(request: &str, ok: Option<BackupRecord>, ko: Option<BackupFailure>) -> BackupStatus {
        BackupStatus { request: request.into(), last_successful: ok, last_failed: ko, ..Default::default() }
    }

    fn spec() -> BackupSpec {
        BackupSpec {
            schedule: Some("0 3 * * *".into()),
            suspend: false,
            retention: RetentionSpec::default(),
            volume: None,
            s3: Some(S3Destination {
                endpoint: Some("http://minio:9000".into()),
                bucket: "backups".into(),
                prefix: "counterstack".into(),
                region: "us-east-1".into(),
                force_path_style: true,
                credentials: S3Credentials {
                    secret_name: "s3".into(),
                    access_key_id_key: "AWS_ACCESS_KEY_ID".into(),
                    secret_access_key_key: "AWS_SECRET_ACCESS_KEY".into(),
                },
                ca_bundle: None,
            }),
        }
    }

    #[test]
    fn the_request_sets_the_annotation() {
        let p = request_patch(TOKEN);
        assert_eq!(p, json!({"metadata": {"annotations": {"counterstack.io/backup": TOKEN}}}));
    }

    #[test]
    fn no_answer_until_the_request_names_the_token() {
        let none = Baseline::default();
        let new = record("20260101T030001Z", Some("2026-01-01T03:00:01Z"));
        assert!(matches!(answer(None, TOKEN, &none), Answer::Pending(_)));
        let s = status("", Some(new.clone()), None);
        assert!(matches!(answer(Some(&s), TOKEN, &none), Answer::Pending(w) if w.contains("empty")));
        let s = status("2025-12-31T00:00:00Z", Some(new.clone()), None);
        assert!(
            matches!(answer(Some(&s), TOKEN, &none), Answer::Pending(w) if w.contains("another request"))
        );
        let s = status(TOKEN, Some(new.clone()), None);
        assert_eq!(answer(Some(&s), TOKEN, &none), Answer::Succeeded(&new));
    }

    #[test]
    fn a_record_from_before_the_request_does_not_answer_it() {
        // The record the CounterApp carried before the request, even within the clock slack.
        let old = record("20260101T030000Z", Some("2026-01-01T03:00:00Z"));
        let before = Baseline { last_successful: Some(old.clone()), last_failed: None };
        let s = status(TOKEN, Some(old.clone()), None);
        assert!(matches!(answer(Some(&s), TOKEN, &before), Answer::Pending(_)));
        // A new record that started well before the request (e.g. finished between the
        // read and the patch, while the operator records the token as it starts).
        let earlier = record("20260101T025900Z", Some("2026-01-01T02:59:00Z"));
        let s = status(TOKEN, Some(earlier), None);
        match answer(Some(&s), TOKEN, &Baseline::default()) {
            Answer::Pending(why) => assert!(why.contains("before the request"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn times_compare_to_the_second_with_clock_slack() {
        let none = Baseline::default();
        // The token has milliseconds, status times do not: 03:00:00 answers 03:00:00.700.
        for start in ["2026-01-01T03:00:00Z", "2026-01-01T02:59:55Z"] {
            let r = record("x", Some(start));
            let s = status(TOKEN, Some(r.clone()), None);
            assert_eq!(answer(Some(&s), TOKEN, &none), Answer::Succeeded(&r), "{start}");
        }
        let r = record("x", Some("2026-01-01T02:59:54Z"));
        let s = status(TOKEN, Some(r), None);
        assert!(matches!(answer(Some(&s), TOKEN, &none), Answer::Pending(_)));
        // Without startTime, the name's time counts.
        let r = record("20260101T030002Z", None);
        let s = status(TOKEN, Some(r.clone()), None);
        assert_eq!(answer(Some(&s), TOKEN, &none), Answer::Succeeded(&r));
        let r = record("20251231T030002Z", None);
        let s = status(TOKEN, Some(r), None);
        assert!(matches!(answer(Some(&s), TOKEN, &none), Answer::Pending(_)));
        // A token that is not a time (set by hand): the baseline alone decides.
        let r = record("20200101T000000Z", None);
        let s = status("from-git-42", Some(r.clone()), None);
        assert_eq!(answer(Some(&s), "from-git-42", &none), Answer::Succeeded(&r));
    }

    #[test]
    fn a_fresh_failure_answers_unless_a_fresh_success_exists() {
        let old = record("20251231T030000Z", Some("2025-12-31T03:00:00Z"));
        let before = Baseline { last_successful: Some(old.clone()), last_failed: None };
        let f = failed(Some("2026-01-01T03:00:02Z"), "AccessDenied");
        let s = status(TOKEN, Some(old.clone()), Some(f.clone()));
        assert_eq!(answer(Some(&s), TOKEN, &before), Answer::Failed(&f));
        // A failure older than the request (a retried scheduled backup) does not answer.
        let stale = failed(Some("2026-01-01T02:00:00Z"), "AccessDenied");
        let s = status(TOKEN, Some(old.clone()), Some(stale));
        assert!(matches!(answer(Some(&s), TOKEN, &before), Answer::Pending(_)));
        // The same failure as before the request does not answer either.
        let before_f = Baseline { last_successful: Some(old.clone()), last_failed: Some(f.clone()) };
        let s = status(TOKEN, Some(old), Some(f.clone()));
        assert!(matches!(answer(Some(&s), TOKEN, &before_f), Answer::Pending(_)));
        // Fresh success and fresh failure: the verified backup is what was asked for.
        let new = record("20260101T030003Z", Some("2026-01-01T03:00:03Z"));
        let s = status(TOKEN, Some(new.clone()), Some(f));
        assert_eq!(answer(Some(&s), TOKEN, &before), Answer::Succeeded(&new));
    }

    #[test]
    fn which_failure_is_newer_than_the_last_success() {
        let ok = record("20260101T030000Z", Some("2026-01-01T03:00:00Z"));
        let f = |at: &str| failed(Some(at), "StoreError");
        assert!(failure_is_newer(&f("2026-01-01T04:00:00Z"), Some(&ok)));
        assert!(failure_is_newer(&f("2026-01-01T03:00:00Z"), Some(&ok)), "same second: shown");
        assert!(!failure_is_newer(&f("2026-01-01T02:59:59Z"), Some(&ok)));
        assert!(failure_is_newer(&f("2020-01-01T00:00:00Z"), None), "no success at all");
        assert!(failure_is_newer(&failed(None, "StoreError"), Some(&ok)), "no time: shown");
        // A success known only by its name.
        let by_name = record("20260101T030000Z", None);
        assert!(!failure_is_newer(&f("2026-01-01T02:00:00Z"), Some(&by_name)));
        assert!(failure_is_newer(&f("2026-01-01T03:30:00Z"), Some(&by_name)));
    }

    #[test]
    fn sizes_in_binary_units() {
        for (bytes, want) in [
            (0, "0 B"),
            (512, "512 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1_048_575, "1.0 MiB"),
            (1_258_291, "1.2 MiB"),
            (123_456_789, "117.7 MiB"),
            (2 * 1024 * 1024 * 1024, "2.0 GiB"),
            (i64::MAX, "8.0 EiB"),
            (-1, "?"),
        ] {
            assert_eq!(human_size(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn backup_durations() {
        for (s, want) in [
            (None, "-"),
            (Some(-1.0), "-"),
            (Some(f64::NAN), "-"),
            (Some(0.0), "0 ms"),
            (Some(0.85), "850 ms"),
            (Some(3.44), "3.4 s"),
            (Some(59.9), "59.9 s"),
            (Some(59.96), "1m00s"),
            (Some(125.0), "2m05s"),
            (Some(3720.0), "1h02m"),
        ] {
            assert_eq!(human_duration(s), want, "{s:?}");
        }
    }

    #[test]
    fn ages_like_kubectl() {
        for (s, want) in [
            (0, "0s"),
            (119, "119s"),
            (330, "5m30s"),
            (300, "5m"),
            (42 * 60, "42m"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (200 * 86_400, "200d"),
            (795 * 86_400, "2y65d"),
            (3650 * 86_400, "10y"),
        ] {
            assert_eq!(human_age(s), want, "{s}");
        }
        let now = ts("2026-01-01T08:00:00Z");
        assert_eq!(relative(ts("2026-01-01T03:00:00Z"), now), "5h ago");
        assert_eq!(relative(ts("2026-01-02T03:00:00Z"), now), "in 19h");
    }

    fn app(backup: Option<BackupSpec>, status: Option<BackupStatus>) -> CounterApp {
        let mut app =
            CounterApp::new("demo", CounterAppSpec { backup: backup.map(Box::new), ..Default::default() });
        app.metadata.namespace = Some("shop".into());
        app.status = Some(CounterAppStatus { backup: status.map(Box::new), ..Default::default() });
        app
    }

    #[test]
    fn the_backups_list() {
        let now = ts("2026-01-02T08:00:00Z");
        let newest = record("20260102T030000Z", Some("2026-01-02T03:00:00Z"));
        let mut older = record("20260101T030000Z", Some("2026-01-01T03:00:00Z"));
        older.size_bytes = 900;
        older.duration_seconds = Some(0.42);
        older.source_pod = String::new();
        let st = BackupStatus {
            last_successful: Some(newest.clone()),
            last_failed: Some(failed(Some("2026-01-02T04:00:00Z"), "AccessDenied")),
            next_schedule_time: Some(Time(ts("2026-01-03T03:00:00Z"))),
            request: TOKEN.into(),
            backups: vec![newest, older],
            ..Default::default()
        };
        let expected = "\
Backups of shop/demo in s3://backups/counterstack/shop/demo/
NAME              STARTED                         SIZE     DURATION  SOURCE POD
20260102T030000Z  2026-01-02T03:00:00Z (5h ago)   1.2 MiB  3.4 s     demo-redis-1
20260101T030000Z  2026-01-01T03:00:00Z (29h ago)  900 B    420 ms    -

Last backup FAILED 2026-01-02T04:00:00Z (4h ago): AccessDenied: the store refused the access key
Next scheduled: 2026-01-03T03:00:00Z (in 19h, schedule \"0 3 * * *\")
";
        assert_eq!(list(&app(Some(spec()), Some(st.clone())), now), expected);

        // A failure before the last success is history, not news.
        let mut healed = st;
        healed.last_failed = Some(failed(Some("2026-01-02T02:00:00Z"), "AccessDenied"));
        let out = list(&app(Some(spec()), Some(healed)), now);
        assert!(!out.contains("FAILED"), "{out}");
    }

    #[test]
    fn an_empty_or_unconfigured_list_says_so() {
        let now = ts("2026-01-02T08:00:00Z");
        let out = list(&app(None, None), now);
        assert_eq!(
            out,
            "Backups of shop/demo (spec.backup is not set: no new backups are taken)\n\
             No backups recorded.\n\nNext scheduled: - (spec.backup is not set)\n"
        );
        let mut on_demand = spec();
        on_demand.schedule = None;
        let out = list(&app(Some(on_demand), None), now);
        assert!(out.contains("No backups recorded.\n"), "{out}");
        assert!(out.contains("Next scheduled: - (no schedule: on demand only)\n"), "{out}");
        let mut suspended = spec();
        suspended.suspend = true;
        let out = list(&app(Some(suspended), None), now);
        assert!(out.contains("Next scheduled: - (schedule \"0 3 * * *\" suspended)\n"), "{out}");
        let out = list(&app(Some(spec()), None), now);
        assert!(out.contains("the operator has not computed it yet"), "{out}");
        let mut empty_prefix = spec();
        if let Some(s3) = empty_prefix.s3.as_mut() {
            s3.prefix = String::new();
        }
        let out = list(&app(Some(empty_prefix), None), now);
        assert!(out.starts_with("Backups of shop/demo in s3://backups/shop/demo/\n"), "{out}");
        let mut on_a_volume = spec();
        on_a_volume.s3 = None;
        on_a_volume.volume = Some(VolumeDestination { claim_name: "backups".into(), prefix: "cs".into() });
        let out = list(&app(Some(on_a_volume), None), now);
        assert!(out.starts_with("Backups of shop/demo in pvc/backups/cs/shop/demo/\n"), "{out}");
    }

    #[test]
    fn outcome_lines() {
        let r = record("20260101T030000Z", Some("2026-01-01T03:00:00Z"));
        assert_eq!(
            success_line(&r),
            "20260101T030000Z: 1.2 MiB in 3.4 s from demo-redis-1 at offset 1024, \
             key counterstack/shop/demo/20260101T030000Z.rdb"
        );
        let mut f = failed(None, "BucketNotFound");
        f.attempts = 3;
        let e = BackupError::Failed {
            request: TOKEN.into(),
            namespace: "shop".into(),
            name: "demo".into(),
            failure: f,
        };
        assert_eq!(
            e.to_string(),
            format!(
                "backup {TOKEN} of shop/demo failed: BucketNotFound: the store refused the access key (3 attempts)"
            )
        );
        let e = BackupError::NotConfigured { namespace: "shop".into(), name: "demo".into() };
        assert!(e.to_string().starts_with("spec.backup is not set: nowhere to store a backup"), "{e}");
    }

    /// A client over a fake API server holding one CounterApp; `operator` plays the
    /// operator on each PATCH (with the token written). Returns the requests seen.
    fn fake_api(
        app: CounterApp,
        operator: fn(&mut CounterApp, &str),
    ) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut app = app;
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                log.lock().unwrap().push(format!("{} {}", parts.method, parts.uri.path()));
                assert_eq!(
                    parts.uri.path(),
                    "/apis/counterstack.io/v1alpha1/namespaces/shop/counterapps/demo"
                );
                if parts.method == http::Method::PATCH {
                    let body = body.collect_bytes().await.unwrap();
                    let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let token = patch["metadata"]["annotations"][BACKUP_ANNOTATION].as_str().unwrap();
                    app.annotations_mut().insert(BACKUP_ANNOTATION.into(), token.into());
                    operator(&mut app, token);
                }
                let json = serde_json::to_vec(&app).unwrap();
                send.send_response(http::Response::new(Body::from(json)));
            }
        });
        (Client::new(service, "shop"), seen)
    }

    fn configured() -> CounterApp {
        let before = record("20251231T030000Z", Some("2025-12-31T03:00:00Z"));
        app(Some(spec()), Some(status("an-older-request", Some(before), None)))
    }

    #[tokio::test]
    async fn refuses_without_spec_backup_and_writes_nothing() {
        let (client, seen) = fake_api(app(None, None), |_, _| {});
        let err = request(&client, "shop", "demo", true, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, CommandError::Backup(BackupError::NotConfigured { .. })), "{err}");
        assert_eq!(
            seen.lock().unwrap().clone(),
            ["GET /apis/counterstack.io/v1alpha1/namespaces/shop/counterapps/demo"]
        );
    }

    #[tokio::test]
    async fn without_wait_prints_the_token() {
        let (client, seen) = fake_api(configured(), |_, _| {});
        let out = request(&client, "shop", "demo", false, Duration::from_secs(1)).await.unwrap();
        assert!(out.starts_with("backup 20") && out.contains(" requested on shop/demo\n"), "{out}");
        assert_eq!(seen.lock().unwrap().len(), 2, "one GET, one PATCH");
    }

    #[tokio::test]
    async fn waits_for_the_success_that_answers_the_token() {
        let (client, _) = fake_api(configured(), |app, token| {
            let b = app.status.as_mut().unwrap().backup.as_mut().unwrap();
            b.request = token.into();
            let start: Timestamp = token.parse().unwrap();
            b.last_successful =
                Some(BackupRecord { start_time: Some(Time(start)), ..record("20260101T030000Z", None) });
        });
        let out = request(&client, "shop", "demo", true, Duration::from_secs(5)).await.unwrap();
        assert!(
            out.contains(" of shop/demo succeeded: 20260101T030000Z: 1.2 MiB in 3.4 s from demo-redis-1"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn a_failed_answer_is_an_error() {
        let (client, _) = fake_api(configured(), |app, token| {
            let b = app.status.as_mut().unwrap().backup.as_mut().unwrap();
            b.request = token.into();
            b.last_failed =
                Some(BackupFailure { time: Some(Time(token.parse().unwrap())), ..failed(None, "NoSource") });
        });
        let err = request(&client, "shop", "demo", true, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("failed: NoSource: the store refused the access key"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_says_what_was_last_seen() {
        // The operator records the token but no backup newer than it.
        let (client, seen) = fake_api(configured(), |app, token| {
            app.status.as_mut().unwrap().backup.as_mut().unwrap().request = token.into();
        });
        let err = request(&client, "shop", "demo", true, Duration::from_secs(3)).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CommandError::Backup(BackupError::Timeout { .. })), "{msg}");
        assert!(
            msg.contains(
                "after 3s (the operator answered this request, but records no backup newer than it yet)"
            ),
            "{msg}"
        );
        // GET, PATCH, then a GET a second for 3 s.
        assert_eq!(seen.lock().unwrap().len(), 2 + 4, "{:?}", seen.lock().unwrap());
    }
}
