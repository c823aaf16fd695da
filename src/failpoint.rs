//! Crash points for tests of what happens when the operator dies mid-way: with
//! `COUNTERSTACK_FAILPOINT=<name>` set, reaching the named point aborts the process (as a
//! kill -9 would, between two steps), or, with `COUNTERSTACK_FAILPOINT_MODE=error`, ends
//! that one pass with an error, once (for tests that drive the replication manager
//! in-process and then go on with a fresh one, as the next leader would). Unset, a point
//! costs a lock and a comparison.
//!
//! Points: `after-promote` (a replica was made primary; nothing else done),
//! `after-handover` (FAILOVER TO completed; other replicas not yet repointed),
//! `before-labels` (Redis roles changed; no role label moved, no status written),
//! `before-status` (labels moved; status not written).

use std::sync::Mutex;

use crate::locked::lock;

/// The armed point and whether it errors (instead of aborting); read from the
/// environment on first use.
static ARMED: Mutex<Option<Option<(String, bool)>>> = Mutex::new(None);

/// Reached point `name`: abort, or return `Err(name)` once, when it is the armed one.
pub fn hit(name: &'static str) -> Result<(), &'static str> {
    let mut armed = lock(&ARMED);
    let point = armed.get_or_insert_with(|| {
        let name = std::env::var("COUNTERSTACK_FAILPOINT").ok().filter(|s| !s.is_empty())?;
        Some((name, std::env::var("COUNTERSTACK_FAILPOINT_MODE").is_ok_and(|m| m == "error")))
    });
    match point {
        Some((p, true)) if p == name => {
            *point = None;
            Err(name)
        }
        Some((p, false)) if p == name => {
            eprintln!("failpoint {name}: aborting");
            std::process::abort()
        }
        _ => Ok(()),
    }
}

/// Arm `name` in error mode (tests in one process; replaces the environment's choice).
pub fn arm_error(name: &str) {
    *lock(&ARMED) = Some(Some((name.to_string(), true)));
}
