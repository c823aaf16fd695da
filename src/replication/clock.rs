//! The failover countdown across leaders: the monitor times an outage on this process's
//! monotonic clock; `status.redis.primaryUnavailableSince` carries its start (wall
//! clock, whole seconds) to the next leader, so a restarted operator or a standby that
//! takes over continues the countdown instead of starting it again. Pure conversions.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// An outage recorded longer ago than this is not continued: the leader that wrote it
/// has been gone too long for it to describe the outage seen now (the primary may have
/// come back and failed again meanwhile). The countdown then starts afresh.
pub const MAX_RESUME_AGE: Duration = Duration::from_secs(60);

/// The status value for an outage that began `age` ago (at `now`): rounded up to the
/// second, so that a leader continuing from it never fails over early. `kept` (the value
/// already in the status) stays while it is within a second of that, so that passes do
/// not rewrite the status as the two clocks drift.
pub fn to_status(age: Duration, now: Timestamp, kept: Option<&Time>) -> Time {
    let start = now.checked_sub(SignedDuration::try_from(age).unwrap_or(SignedDuration::ZERO)).unwrap_or(now);
    let up = if start.subsec_nanosecond() > 0 { start.as_second() + 1 } else { start.as_second() };
    let rounded = Timestamp::from_second(up).unwrap_or(start);
    match kept {
        Some(k) if k.0.duration_since(rounded).abs() <= SignedDuration::from_secs(1) => k.clone(),
        _ => Time(rounded),
    }
}

/// The monotonic start of an outage the status records, seen at (`now`, `now_instant`):
/// `None` when it is older than [`MAX_RESUME_AGE`]. A start in the future (clocks of
/// two pods disagree) counts as now.
pub fn from_status(since: &Time, now: Timestamp, now_instant: Instant) -> Option<Instant> {
    let age = now.duration_since(since.0);
    if age.is_negative() {
        return Some(now_instant);
    }
    let age = Duration::try_from(age).ok()?;
    if age > MAX_RESUME_AGE {
        return None;
    }
    now_instant.checked_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_start_is_rounded_up_and_kept_while_it_stays_within_a_second() {
        let now = at("2026-12-03T10:00:10.300Z");
        let t = to_status(Duration::from_millis(2_500), now, None);
        assert_eq!(t.0, at("2026-12-03T10:00:08Z"), "07.8 rounds up: never earlier than the outage");
        // The next pass computes 08.1 (clocks drift): the status keeps its value.
        let later = to_status(Duration::from_millis(2_200), now, Some(&t));
        assert_eq!(later, t);
        // A start that moved (an earlier failure seen) is written.
        let moved = to_status(Duration::from_secs(5), now, Some(&t));
        assert_eq!(moved.0, at("2026-12-03T10:00:06Z"));
    }

    #[test]
    fn a_recorded_start_becomes_an_instant_unless_too_old() {
        let now = at("2026-12-03T10:00:10Z");
        let i = Instant::now();
        let since = Time(at("2026-12-03T10:00:04Z"));
        assert_eq!(from_status(&since, now, i), Some(i - Duration::from_secs(6)));
        let future = Time(at("2026-12-03T10:00:12Z"));
        assert_eq!(from_status(&future, now, i), Some(i), "a clock ahead counts as now");
        let old = Time(at("2026-12-03T09:58:00Z"));
        assert_eq!(from_status(&old, now, i), None, "older than MAX_RESUME_AGE: start afresh");
    }

    #[test]
    fn a_round_trip_never_starts_the_countdown_earlier() {
        let i = Instant::now();
        let now = Timestamp::now();
        for ms in [0u64, 1, 499, 500, 999, 1_000, 4_321] {
            let t = to_status(Duration::from_millis(ms), now, None);
            let back = from_status(&t, now, i).unwrap();
            assert!(back >= i - Duration::from_millis(ms), "{ms} ms: resumed earlier than the outage began");
            assert!(i.duration_since(back) + Duration::from_secs(1) > Duration::from_millis(ms), "{ms} ms");
        }
    }
}
