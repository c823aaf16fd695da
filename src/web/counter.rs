//! The counter itself: its one Redis key and the writes the API offers. Shared by the
//! store (plain INCR/DECR/SET) and the idempotency script.

/// The one key the original app used.
pub const COUNTER_KEY: &str = "counter:value";

/// A counter write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Increment,
    Decrement,
    Reset,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Increment => "increment",
            Op::Decrement => "decrement",
            Op::Reset => "reset",
        }
    }
}
