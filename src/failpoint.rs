//! Crash points for tests of what happens when the operator dies mid-way: with
//! `COUNTERSTACK_FAILPOINT=<name>` set, reaching the named point aborts the process (as a
//! kill -9 would, between two steps), or, with `COUNTERSTACK_FAILPOINT_MODE=error`, ends
//! that one pass with an error, once (for tests that drive the replication manager
//! in-process and then go on with a fresh one, as the next leader would), or, with
//! `COUNTERSTACK_FAILPOINT_MODE=stop`, stops the whole process with SIGSTOP, once, as a
//! freeze would (it goes on where it stopped after a SIGCONT). Unset, a point costs a lock
//! and a comparison.
//!
//! Points: `after-promote` (a replica was made primary; nothing else done),
//! `after-handover` (FAILOVER TO completed; other replicas not yet repointed),
//! `before-labels` (Redis roles changed; no role label moved, no status written),
//! `before-status` (labels moved; status not written), `before-write` (a mutating API
//! request is about to leave, before the leadership fence looks at it).

use std::sync::Mutex;

use crate::locked::lock;

/// What reaching the armed point does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Abort,
    Error,
    Stop,
}

/// The armed point and its mode; read from the environment on first use.
static ARMED: Mutex<Option<Option<(String, Mode)>>> = Mutex::new(None);

/// Reached point `name`: abort, stop, or return `Err(name)` once, when it is the armed one.
pub fn hit(name: &'static str) -> Result<(), &'static str> {
    let mut armed = lock(&ARMED);
    let point = armed.get_or_insert_with(|| {
        let name = std::env::var("COUNTERSTACK_FAILPOINT").ok().filter(|s| !s.is_empty())?;
        let mode = match std::env::var("COUNTERSTACK_FAILPOINT_MODE").as_deref() {
            Ok("error") => Mode::Error,
            Ok("stop") => Mode::Stop,
            _ => Mode::Abort,
        };
        Some((name, mode))
    });
    match point {
        Some((p, Mode::Error)) if p == name => {
            *point = None;
            Err(name)
        }
        Some((p, Mode::Stop)) if p == name => {
            *point = None;
            drop(armed);
            eprintln!("failpoint {name}: stopping (SIGSTOP)");
            // SAFETY: raise(3) has no memory-safety preconditions; every thread stops
            // until a SIGCONT, then this returns.
            unsafe { libc::raise(libc::SIGSTOP) };
            Ok(())
        }
        Some((p, Mode::Abort)) if p == name => {
            eprintln!("failpoint {name}: aborting");
            std::process::abort()
        }
        _ => Ok(()),
    }
}

/// Arm `name` in error mode (tests in one process; replaces the environment's choice).
pub fn arm_error(name: &str) {
    *lock(&ARMED) = Some(Some((name.to_string(), Mode::Error)));
}
