//! Exponential backoff arithmetic, shared by the operator's per-CounterApp retry delays
//! ([`crate::operator::backoff`]) and the web service's Redis reconnects
//! ([`crate::web`]'s upstream connector). Pure: callers keep their own counters and
//! draw their own randomness.

use std::time::Duration;

/// Delay before try number `n` (1 = the first retry): `base` doubled for each try after
/// the first, capped at `max` (`base`, 2 `base`, 4 `base`, ... `max`). Never overflows:
/// any `n` past the cap gives `max`.
pub fn exponential(n: u32, base: Duration, max: Duration) -> Duration {
    let exp = n.saturating_sub(1).min(31);
    base.checked_mul(1u32 << exp).map_or(max, |d| d.min(max))
}

/// "Equal jitter": `delay` scaled by `jitter` in [0, 1] into its upper half, from
/// `delay / 2` (jitter 0) to `delay` (jitter 1), so that many clients that failed at
/// once do not retry in lockstep yet none retries much sooner than planned. `jitter` is
/// clamped to [0, 1]; NaN counts as 1 (the full delay).
pub fn equal_jitter(delay: Duration, jitter: f64) -> Duration {
    let jitter = if jitter.is_nan() { 1.0 } else { jitter.clamp(0.0, 1.0) };
    delay.mul_f64(0.5 + 0.5 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_and_caps() {
        let d = |n| exponential(n, Duration::from_secs(5), Duration::from_secs(300)).as_secs();
        assert_eq!([d(0), d(1), d(2), d(3), d(4), d(5), d(6), d(7)], [5, 5, 10, 20, 40, 80, 160, 300]);
        assert_eq!(d(40), 300);
        assert_eq!(d(u32::MAX), 300);
    }

    #[test]
    fn equal_jitter_grows_caps_and_stays_in_the_upper_half() {
        let d = |n, jitter| {
            equal_jitter(exponential(n, Duration::from_millis(50), Duration::from_millis(200)), jitter)
        };
        assert_eq!(d(1, 1.0), Duration::from_millis(50));
        assert_eq!(d(1, 0.0), Duration::from_millis(25));
        assert_eq!(d(2, 1.0), Duration::from_millis(100));
        assert_eq!(d(3, 1.0), Duration::from_millis(200));
        assert_eq!(d(4, 1.0), Duration::from_millis(200));
        assert_eq!(d(30, 1.0), Duration::from_millis(200));
        assert_eq!(d(u32::MAX, 0.0), Duration::from_millis(100));
        assert!(d(3, 0.3) < d(3, 0.9));
        assert_eq!(d(1, -1.0), Duration::from_millis(25), "clamped");
        assert_eq!(d(1, 7.0), Duration::from_millis(50), "clamped");
        assert_eq!(d(1, f64::NAN), Duration::from_millis(50));
    }
}
