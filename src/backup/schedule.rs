//! PURE: when the next backup is due and which backups retention deletes. No clock:
//! `now` is an argument.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{BackupSpec, BackupStatus, RetentionSpec};

/// A parsed `spec.backup.schedule` (five fields, UTC).
#[derive(Debug)]
pub struct Schedule(croner::Cron);

/// Longest wait between retries of a failed backup.
pub const MAX_RETRY: Duration = Duration::from_secs(15 * 60);
/// First retry of a failed backup.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);

fn to_chrono(t: Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.as_second(), 0)
}

fn from_chrono(t: chrono::DateTime<chrono::Utc>) -> Option<Timestamp> {
    Timestamp::from_second(t.timestamp()).ok()
}

impl Schedule {
    /// Parse a cron expression of exactly five fields.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        if expr.split_whitespace().count() != 5 {
            return Err(format!(
                "spec.backup.schedule {expr:?} must have five fields (minute hour day-of-month month day-of-week)"
            ));
        }
        croner::parser::CronParser::new()
            .parse(expr)
            .map(Schedule)
            .map_err(|e| format!("spec.backup.schedule {expr:?} is not a valid cron expression: {e}"))
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        from_chrono(self.0.find_next_occurrence(&to_chrono(t)?, false).ok()?)
    }

    /// The last slot at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        from_chrono(self.0.find_previous_occurrence(&to_chrono(t)?, true).ok()?)
    }

    /// The time between the next two slots after `t` (what the staleness alert
    /// multiplies).
    pub fn interval_after(&self, t: Timestamp) -> Option<Duration> {
        let a = self.next_after(t)?;
        let b = self.next_after(a)?;
        u64::try_from(b.as_second() - a.as_second()).ok().map(Duration::from_secs)
    }
}

/// Why a backup starts now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The annotation's new token.
    Request(String),
    /// A scheduled slot (the latest one due; missed older slots are not made up).
    Scheduled(Timestamp),
    /// A retry of the last failed backup.
    Retry,
}

/// What [`decide`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Start a backup now, and why.
    pub start: Option<Trigger>,
    /// The next scheduled slot (for status and the requeue).
    pub next_slot: Option<Timestamp>,
    /// When to look again (a slot or a retry), if ever.
    pub wake_at: Option<Timestamp>,
}

/// Whether the last attempt failed (a failure newer than the last success).
pub fn failing(status: Option<&BackupStatus>) -> bool {
    let Some(s) = status else { return false };
    let Some(f) = &s.last_failed else { return false };
    let ok = s.last_successful.as_ref().and_then(|o| o.start_time.as_ref()).map(|t| t.0);
    let failed = f.time.as_ref().map(|t| t.0);
    ok.is_none() || failed > ok
}

/// Delay before retry number `attempts` (1-based): 30 s doubling up to 15 min.
pub fn retry_delay(attempts: i32) -> Duration {
    let shift = u32::try_from(attempts.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
    FIRST_RETRY.saturating_mul(1 << shift).min(MAX_RETRY)
}

/// Decide whether a backup starts now. `anchor` is when the schedule starts counting
/// (the CounterApp's creation) when no slot was taken yet; `token` the backup
/// annotation's value.
pub fn decide(
    spec: &BackupSpec,
    schedule: Option<&Schedule>,
    status: Option<&BackupStatus>,
    token: Option<&str>,
    anchor: Timestamp,
    now: Timestamp,
) -> Decision {
    let answered = status.map_or("", |s| s.request.as_str());
    let last_slot = status.and_then(|s| s.last_schedule_time.as_ref()).map(|t| t.0).unwrap_or(anchor);
    let sched = schedule.filter(|_| !spec.suspend);
    let next_slot = sched.and_then(|s| s.next_after(now.max(last_slot)));
    let due_slot = sched.and_then(|s| s.last_at_or_before(now)).filter(|slot| *slot > last_slot);
    let retry_at = failing(status).then(|| {
        let s = status.and_then(|s| s.last_failed.as_ref());
        let at = s.and_then(|f| f.time.as_ref()).map_or(now, |t| t.0);
        let attempts = s.map_or(1, |f| f.attempts.max(1));
        let delay = i64::try_from(retry_delay(attempts).as_secs()).unwrap_or(i64::MAX);
        Timestamp::from_second(at.as_second().saturating_add(delay)).unwrap_or(at)
    });
    let start = match token.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if t != answered => Some(Trigger::Request(t.to_string())),
        _ => match due_slot {
            Some(slot) => Some(Trigger::Scheduled(slot)),
            None => retry_at.filter(|at| *at <= now).map(|_| Trigger::Retry),
        },
    };
    let wake_at = [next_slot, retry_at.filter(|at| *at > now)].into_iter().flatten().min();
    Decision { start, next_slot, wake_at }
}

/// A backup in the store, as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub at: Timestamp,
}

/// The keys retention deletes: those outside the newest `keepLast` and older than
/// `maxAge` (when set). Never the newest one, never `keep` (the backup just taken).
pub fn to_delete(stored: &[Stored], retention: &RetentionSpec, keep: &str, now: Timestamp) -> Vec<String> {
    let mut by_age: Vec<&Stored> = stored.iter().collect();
    by_age.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.key.cmp(&a.key)));
    let keep_last = usize::try_from(retention.keep_last.max(1)).unwrap_or(1);
    let max_age = retention.max_age_seconds();
    by_age
        .iter()
        .skip(keep_last)
        .filter(|s| s.key != keep)
        .filter(|s| max_age.is_none_or(|age| now.as_second() - s.at.as_second() > age))
        .map(|s| s.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{BackupFailure, BackupRecord, S3Credentials, S3Destination};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(schedule: Option<&str>) -> BackupSpec {
        BackupSpec {
            schedule: schedule.map(str::to_string),
            suspend: false,
            retention: RetentionSpec::default(),
            s3: Some(S3Destination {
                endpoint: None,
                bucket: "b".into(),
                prefix: "p".into(),
                region: "us-east-1".into(),
                force_path_style: true,
                credentials: S3Credentials {
                    secret_name: "s".into(),
                    access_key_id_key: "a".into(),
                    secret_access_key_key: "k".into(),
                },
                ca_bundle: None,
            }),
            volume: None,
        }
    }

    fn kube(t: &str) -> Option<Time> {
        Some(Time(ts(t).to_string().parse().unwrap()))
    }

    #[test]
    fn a_schedule_needs_five_fields_and_valid_values() {
        assert!(Schedule::parse("0 3 * * *").is_ok());
        assert!(Schedule::parse("*/30 * * * *").is_ok());
        assert!(Schedule::parse("0 3 * *").unwrap_err().contains("five fields"));
        assert!(Schedule::parse("0 25 * * *").unwrap_err().contains("not a valid cron"));
        assert!(Schedule::parse("0 0 3 * * *").is_err());
    }

    #[test]
    fn a_slot_is_taken_once_and_missed_slots_are_not_made_up() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let sp = spec(Some("0 * * * *"));
        let created = ts("2026-12-03T10:20:00Z");
        // Before the first slot: nothing, wake at 11:00.
        let d = decide(&sp, Some(&s), None, None, created, ts("2026-12-03T10:59:59Z"));
        assert_eq!(d.start, None);
        assert_eq!(d.wake_at, Some(ts("2026-12-03T11:00:00Z")));
        // Three slots missed (operator down): one backup, for the latest slot.
        let d = decide(&sp, Some(&s), None, None, created, ts("2026-12-03T13:30:00Z"));
        assert_eq!(d.start, Some(Trigger::Scheduled(ts("2026-12-03T13:00:00Z"))));
        // Taken: nothing until the next one.
        let st = BackupStatus { last_schedule_time: kube("2026-12-03T13:00:00Z"), ..Default::default() };
        let d = decide(&sp, Some(&s), Some(&st), None, created, ts("2026-12-03T13:30:00Z"));
        assert_eq!(d.start, None);
        assert_eq!(d.next_slot, Some(ts("2026-12-03T14:00:00Z")));
    }

    #[test]
    fn a_request_is_answered_once_and_suspend_stops_only_the_schedule() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let mut sp = spec(Some("0 * * * *"));
        sp.suspend = true;
        let created = ts("2026-12-03T10:20:00Z");
        let now = ts("2026-12-03T13:30:00Z");
        assert_eq!(decide(&sp, Some(&s), None, None, created, now).start, None);
        let d = decide(&sp, Some(&s), None, Some("t1"), created, now);
        assert_eq!(d.start, Some(Trigger::Request("t1".into())));
        let st = BackupStatus { request: "t1".into(), ..Default::default() };
        assert_eq!(decide(&sp, Some(&s), Some(&st), Some("t1"), created, now).start, None);
        assert_eq!(decide(&sp, Some(&s), Some(&st), Some(" "), created, now).start, None);
    }

    #[test]
    fn a_failure_is_retried_with_growing_delays_until_a_success() {
        let sp = spec(None);
        let created = ts("2026-12-03T10:00:00Z");
        let failed = |attempts| BackupStatus {
            last_failed: Some(BackupFailure {
                time: kube("2026-12-03T12:00:00Z"),
                reason: "AccessDenied".into(),
                message: "m".into(),
                attempts,
            }),
            ..Default::default()
        };
        let d = decide(&sp, None, Some(&failed(1)), None, created, ts("2026-12-03T12:00:10Z"));
        assert_eq!(d.start, None);
        assert_eq!(d.wake_at, Some(ts("2026-12-03T12:00:30Z")));
        let d = decide(&sp, None, Some(&failed(1)), None, created, ts("2026-12-03T12:00:30Z"));
        assert_eq!(d.start, Some(Trigger::Retry));
        let d = decide(&sp, None, Some(&failed(3)), None, created, ts("2026-12-03T12:01:00Z"));
        assert_eq!(d.wake_at, Some(ts("2026-12-03T12:02:00Z")));
        assert_eq!(retry_delay(20), MAX_RETRY);
        // A later success ends the retries.
        let mut ok = failed(3);
        ok.last_successful = Some(BackupRecord {
            name: "n".into(),
            start_time: kube("2026-12-03T12:05:00Z"),
            ..Default::default()
        });
        let d = decide(&sp, None, Some(&ok), None, created, ts("2026-12-03T13:00:00Z"));
        assert_eq!((d.start, d.wake_at), (None, None));
    }

    #[test]
    fn retention_keeps_the_newest_and_what_max_age_protects() {
        let st = |k: &str, t: &str| Stored { key: k.into(), at: ts(t) };
        let stored = vec![
            st("a", "2026-12-01T00:00:00Z"),
            st("b", "2026-12-02T00:00:00Z"),
            st("c", "2026-12-03T00:00:00Z"),
            st("d", "2026-12-03T12:00:00Z"),
        ];
        let now = ts("2026-12-03T12:00:01Z");
        let keep2 = RetentionSpec { keep_last: 2, max_age: None };
        let mut del = to_delete(&stored, &keep2, "d", now);
        del.sort();
        assert_eq!(del, vec!["a", "b"]);
        let keep1_37h = RetentionSpec { keep_last: 1, max_age: Some("37h".into()) };
        assert_eq!(to_delete(&stored, &keep1_37h, "d", now), vec!["a"]);
        // keepLast 0 is refused by the schema; the newest stays anyway.
        let zero = RetentionSpec { keep_last: 0, max_age: None };
        assert!(!to_delete(&stored, &zero, "x", now).contains(&"d".to_string()));
        assert!(to_delete(&stored[..1], &keep2, "a", now).is_empty());
    }
}
