//! Locking a `std::sync::Mutex` without panicking on poison.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, recovering the guard if the mutex is poisoned.
///
/// A mutex is poisoned when a thread panicked while holding it. Every mutex this crate
/// locks this way guards plain values (maps of counters, hashes, statuses and
/// observations, an `Option` taken once), and every critical section is one short
/// update with no invariant spanning several steps: a panic leaves at worst one entry
/// missing or stale, which each user already tolerates (it is a cache or memory that
/// the next pass rebuilds). So the data stay usable, and turning one panic into a panic
/// of every later caller (the reconcile loop, the replication manager, the web
/// service's connector) would only spread it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_mutex_still_hands_out_its_value() {
        let m = Mutex::new(vec![1]);
        let poisoner = std::thread::scope(|s| {
            s.spawn(|| {
                let mut v = lock(&m);
                v.push(2);
                panic!("poison the mutex");
            })
            .join()
        });
        assert!(poisoner.is_err());
        assert!(m.is_poisoned());
        lock(&m).push(3);
        assert_eq!(*lock(&m), [1, 2, 3]);
    }
}
