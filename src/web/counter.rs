//! The counter itself: its one Redis key and the writes the API offers. Shared by the
//! writer (coalesced INCRBY, SET) and the idempotency script.

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

/// What a write answers the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub value: i64,
    /// True when an `Idempotency-Key` replayed an earlier result.
    pub replayed: bool,
}
