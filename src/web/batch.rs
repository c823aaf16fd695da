//! Coalescing: which Redis commands a batch of concurrent writes becomes, and which value
//! each write is answered with. Pure (no I/O): the writer (`writer.rs`) sends the commands
//! and hands the replies back here.
//!
//! Why the answers stay exact: every write of a batch arrived before the batch was sent
//! and is answered after its replies came back, so the writes of a batch are concurrent
//! and any order among them is a valid serial order. The plan picks the order that needs
//! the fewest commands. Between two resets (a reset splits a batch) it applies every
//! increment, then every decrement: `INCRBY counter:value n` answers v, the value after n
//! increments, so the counter held v-n+1, v-n+2, ..., v in turn and the i-th increment of
//! the run is answered v-n+1+i; likewise `INCRBY counter:value -m` for m decrements, whose
//! i-th is answered v+m-1-i. Every answered value is one the counter really held, each
//! increment of a run gets its own, and a run is applied (and made durable by the batch's
//! one `WAIT`) as a whole or not at all. Writes with an `Idempotency-Key` keep their own
//! script call (exactly-once needs the per-key record), and so does any write marked
//! `alone` (coalescing off, or a run that must be retried one by one).

use super::counter::Op;

/// One write of a batch, as the plan sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub op: Op,
    /// Has an `Idempotency-Key`: sent as its own script call.
    pub keyed: bool,
    /// Must get a command of its own (never merged into a run).
    pub alone: bool,
}

/// One Redis command of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `INCRBY counter:value delta` (sent as `INCR`/`DECR` when delta is ±1): a run of
    /// `delta` increments (delta > 0) or `-delta` decrements. Never 0.
    Add(i64),
    /// `SET counter:value 0`, answering one or more resets.
    Reset,
    /// The idempotency script for write `index` of the batch.
    Keyed(usize),
}

/// Where a write's answer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// Step `step` (0-based) of the run that `Command::Add` number `command` applies.
    Step { command: usize, step: i64 },
    /// The reply of command `command` itself (a reset: 0; a keyed write: the script's).
    Whole { command: usize },
}

impl Share {
    pub fn command(self) -> usize {
        match self {
            Share::Step { command, .. } | Share::Whole { command } => command,
        }
    }
}

/// The commands of a batch, in the order they are sent, and for each write (by its index
/// in the batch) where its answer comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub commands: Vec<Command>,
    pub shares: Vec<Share>,
}

/// The runs of one segment (the writes between two resets) not yet emitted.
#[derive(Default)]
struct Segment {
    ups: Vec<usize>,
    downs: Vec<usize>,
}

impl Segment {
    fn is_empty(&self) -> bool {
        self.ups.is_empty() && self.downs.is_empty()
    }
}

/// Plan a batch: `writes` in arrival order.
pub fn plan(writes: &[Write]) -> Plan {
    let mut p = Plan { commands: Vec::new(), shares: vec![Share::Whole { command: 0 }; writes.len()] };
    let mut segment = Segment::default();
    // The `Reset` command consecutive plain resets share, while nothing came between them.
    let mut open_reset: Option<usize> = None;
    for (i, w) in writes.iter().enumerate() {
        if w.keyed {
            p.shares[i] = Share::Whole { command: p.push(Command::Keyed(i)) };
            open_reset = None;
            continue;
        }
        match (w.op, w.alone) {
            (Op::Reset, alone) => {
                p.flush(&mut segment);
                let command = match open_reset {
                    Some(c) if !alone => c,
                    _ => p.push(Command::Reset),
                };
                p.shares[i] = Share::Whole { command };
                open_reset = (!alone).then_some(command);
            }
            (op, true) => {
                let delta = if op == Op::Increment { 1 } else { -1 };
                p.shares[i] = Share::Step { command: p.push(Command::Add(delta)), step: 0 };
                open_reset = None;
            }
            (Op::Increment, false) => segment.ups.push(i),
            (Op::Decrement, false) => segment.downs.push(i),
        }
        if !segment.is_empty() {
            open_reset = None;
        }
    }
    p.flush(&mut segment);
    p
}

impl Plan {
    fn push(&mut self, c: Command) -> usize {
        self.commands.push(c);
        self.commands.len() - 1
    }

    /// Emit a segment's runs: all its increments, then all its decrements.
    fn flush(&mut self, segment: &mut Segment) {
        for (run, sign) in [(&mut segment.ups, 1i64), (&mut segment.downs, -1i64)] {
            if run.is_empty() {
                continue;
            }
            // A batch holds at most a few hundred writes: the length fits.
            let len = i64::try_from(run.len()).unwrap_or(i64::MAX);
            let command = self.push(Command::Add(sign * len));
            for (step, &i) in (0i64..).zip(run.iter()) {
                self.shares[i] = Share::Step { command, step };
            }
            run.clear();
        }
    }
}

/// The value step `step` (0-based) of a run of `delta` answers, given `after`, the counter
/// after the whole run (the `INCRBY` reply): the run started at `after - delta` and moved
/// one at a time towards `after`. `None` only for inputs no Redis reply can produce.
pub fn step_value(after: i64, delta: i64, step: i64) -> Option<i64> {
    if delta == 0 || step < 0 || step >= delta.checked_abs()? {
        return None;
    }
    let before = after.checked_sub(delta)?;
    before.checked_add(delta.signum().checked_mul(step.checked_add(1)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const INC: Write = Write { op: Op::Increment, keyed: false, alone: false };
    const DEC: Write = Write { op: Op::Decrement, keyed: false, alone: false };
    const RESET: Write = Write { op: Op::Reset, keyed: false, alone: false };

    fn keyed(op: Op) -> Write {
        Write { op, keyed: true, alone: false }
    }

    fn alone(op: Op) -> Write {
        Write { op, keyed: false, alone: true }
    }

    #[test]
    fn concurrent_increments_become_one_incrby_with_distinct_values() {
        let p = plan(&[INC; 5]);
        assert_eq!(p.commands, vec![Command::Add(5)]);
        let values: Vec<i64> = p
            .shares
            .iter()
            .map(|s| match *s {
                Share::Step { command: 0, step } => step_value(105, 5, step).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, vec![101, 102, 103, 104, 105]);
    }

    #[test]
    fn increments_then_decrements_per_segment_and_a_reset_splits_the_batch() {
        let p = plan(&[INC, DEC, INC, RESET, DEC, INC, DEC]);
        assert_eq!(
            p.commands,
            vec![Command::Add(2), Command::Add(-1), Command::Reset, Command::Add(1), Command::Add(-2)]
        );
        assert_eq!(
            p.shares,
            vec![
                Share::Step { command: 0, step: 0 },
                Share::Step { command: 1, step: 0 },
                Share::Step { command: 0, step: 1 },
                Share::Whole { command: 2 },
                Share::Step { command: 4, step: 0 },
                Share::Step { command: 3, step: 0 },
                Share::Step { command: 4, step: 1 },
            ]
        );
    }

    #[test]
    fn consecutive_resets_share_one_set_unless_something_comes_between() {
        let p = plan(&[RESET, RESET, INC, RESET, RESET]);
        assert_eq!(p.commands, vec![Command::Reset, Command::Add(1), Command::Reset]);
        assert_eq!(p.shares[1], Share::Whole { command: 0 });
        assert_eq!(p.shares[4], Share::Whole { command: 2 });
        let p = plan(&[RESET, keyed(Op::Increment), RESET]);
        assert_eq!(p.commands, vec![Command::Reset, Command::Keyed(1), Command::Reset]);
    }

    #[test]
    fn keyed_and_alone_writes_get_their_own_command() {
        let p = plan(&[INC, keyed(Op::Increment), alone(Op::Increment), INC, alone(Op::Decrement)]);
        assert_eq!(p.commands, vec![Command::Keyed(1), Command::Add(1), Command::Add(-1), Command::Add(2)]);
        assert_eq!(p.shares[1], Share::Whole { command: 0 });
        assert_eq!(p.shares[2], Share::Step { command: 1, step: 0 });
        assert_eq!(p.shares[0], Share::Step { command: 3, step: 0 });
        assert_eq!(p.shares[3], Share::Step { command: 3, step: 1 });
        let p = plan(&[alone(Op::Reset), alone(Op::Reset)]);
        assert_eq!(p.commands, vec![Command::Reset, Command::Reset], "alone resets are not merged");
    }

    #[test]
    fn an_empty_batch_sends_nothing() {
        assert_eq!(plan(&[]), Plan::default());
    }

    #[test]
    fn decrement_runs_count_down_to_the_reply() {
        let values: Vec<i64> = (0..3).map(|s| step_value(7, -3, s).unwrap()).collect();
        assert_eq!(values, vec![9, 8, 7]);
        assert_eq!(step_value(i64::MAX, 2, 1), Some(i64::MAX));
        assert_eq!(step_value(i64::MIN, -2, 1), Some(i64::MIN));
        assert_eq!(step_value(5, 2, 2), None, "step beyond the run");
        assert_eq!(step_value(5, 0, 0), None);
        assert_eq!(step_value(i64::MIN, 1, 0), None, "no reply is below the run's start");
    }

    /// A counter, with Redis's overflow rule, running the commands of a plan.
    fn run(start: i64, p: &Plan, writes: &[Write]) -> Option<(Vec<i64>, i64)> {
        let mut counter = start;
        let mut replies = Vec::new();
        for c in &p.commands {
            counter = match *c {
                Command::Add(d) => counter.checked_add(d)?,
                Command::Reset => 0,
                Command::Keyed(i) => match writes[i].op {
                    Op::Increment => counter.checked_add(1)?,
                    Op::Decrement => counter.checked_sub(1)?,
                    Op::Reset => 0,
                },
            };
            replies.push(counter);
        }
        let answers = p
            .shares
            .iter()
            .map(|s| match (*s, p.commands[s.command()]) {
                (Share::Step { command, step }, Command::Add(d)) => step_value(replies[command], d, step),
                (Share::Whole { command }, _) => Some(replies[command]),
                _ => None,
            })
            .collect::<Option<Vec<i64>>>()?;
        Some((answers, counter))
    }

    /// Whether some serial order of `writes`, one at a time from `start`, answers exactly
    /// `answers` and ends at `end`: the answers, sorted by (op, value), must be what a
    /// greedy replay produces. Exhaustive over orders for small batches.
    fn serial_order_exists(start: i64, writes: &[Write], answers: &[i64], end: i64) -> bool {
        fn search(counter: i64, left: &mut Vec<(Op, i64)>, end: i64) -> bool {
            if left.is_empty() {
                return counter == end;
            }
            for k in 0..left.len() {
                let (op, answer) = left[k];
                let next = match op {
                    Op::Increment => counter.checked_add(1),
                    Op::Decrement => counter.checked_sub(1),
                    Op::Reset => Some(0),
                };
                if next == Some(answer) {
                    let taken = left.remove(k);
                    if search(answer, left, end) {
                        return true;
                    }
                    left.insert(k, taken);
                }
            }
            false
        }
        let mut left: Vec<(Op, i64)> = writes.iter().map(|w| w.op).zip(answers.iter().copied()).collect();
        search(start, &mut left, end)
    }

    fn write() -> impl Strategy<Value = Write> {
        (0..3u8, any::<bool>(), prop::bool::weighted(0.15)).prop_map(|(op, keyed, alone)| Write {
            op: [Op::Increment, Op::Decrement, Op::Reset][usize::from(op)],
            keyed,
            alone,
        })
    }

    proptest! {
        /// Every answer is a value the counter held in one serial order of the batch, and
        /// the counter ends where that order ends.
        #[test]
        fn answers_follow_one_serial_order(
            start in -20i64..20,
            writes in prop::collection::vec(write(), 0..9),
        ) {
            let p = plan(&writes);
            prop_assert_eq!(p.shares.len(), writes.len());
            let (answers, end) = run(start, &p, &writes).expect("no overflow near 0");
            prop_assert!(serial_order_exists(start, &writes, &answers, end), "{:?} -> {:?}", p, answers);
        }

        /// Between resets, increments never share a value, and a batch of n plain
        /// increments is one command answering start+1 ..= start+n.
        #[test]
        fn increments_get_distinct_values(start in any::<i32>(), n in 1usize..512) {
            let writes = vec![INC; n];
            let p = plan(&writes);
            prop_assert_eq!(p.commands.len(), 1);
            let (mut answers, end) = run(i64::from(start), &p, &writes).expect("fits");
            answers.sort_unstable();
            let want: Vec<i64> = (1..=n as i64).map(|k| i64::from(start) + k).collect();
            prop_assert_eq!(answers, want);
            prop_assert_eq!(end, i64::from(start) + n as i64);
        }

        /// Runs never hold a reset; resets and keyed writes are their own commands; an
        /// alone write is a run of one.
        #[test]
        fn commands_and_shares_agree(writes in prop::collection::vec(write(), 0..64)) {
            let p = plan(&writes);
            let mut covered = vec![0i64; p.commands.len()];
            for (i, (w, s)) in writes.iter().zip(&p.shares).enumerate() {
                let c = p.commands[s.command()];
                match (w.op, w.keyed, c) {
                    (_, true, Command::Keyed(k)) => prop_assert_eq!(k, i),
                    (Op::Reset, false, Command::Reset) => {}
                    (Op::Increment, false, Command::Add(d)) => prop_assert!(d > 0 && (!w.alone || d == 1)),
                    (Op::Decrement, false, Command::Add(d)) => prop_assert!(d < 0 && (!w.alone || d == -1)),
                    other => prop_assert!(false, "write {i} {other:?}"),
                }
                if let Share::Step { command, .. } = *s {
                    covered[command] += 1;
                }
            }
            for (c, n) in p.commands.iter().zip(covered) {
                if let Command::Add(d) = c {
                    prop_assert_eq!(d.abs(), n, "a run of {} answers {} writes", d, n);
                }
            }
        }
    }
}
