//! `Idempotency-Key`: the first result of a keyed write is stored next to the counter by
//! one Lua script, atomically with the write, so retries (even 50 concurrent ones) change
//! the counter once and all get the first answer.

use redis::Cmd;

use super::counter::{COUNTER_KEY, Op};
use super::error::Error;

/// Records live 24 h, as Stripe's idempotency keys do.
pub const TTL_SECONDS: u64 = 24 * 60 * 60;
const KEY_PREFIX: &str = "counter:idempotency:";

/// KEYS[1] counter, KEYS[2] record; ARGV[1] op name, ARGV[2] TTL seconds.
/// Returns {op, value, replayed}. The value travels as a string: Lua numbers are doubles
/// and would round counters beyond 2^53. `#!lua` without `no-writes` makes a replica
/// refuse the script up front with READONLY (so nothing half-runs there).
pub const SCRIPT: &str = r#"#!lua
local done = redis.call('GET', KEYS[2])
if done then
  local sep = string.find(done, ':', 1, true)
  return {string.sub(done, 1, sep - 1), string.sub(done, sep + 1), 1}
end
if ARGV[1] == 'increment' then
  redis.call('INCR', KEYS[1])
elseif ARGV[1] == 'decrement' then
  redis.call('DECR', KEYS[1])
else
  redis.call('SET', KEYS[1], '0')
end
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. v, 'EX', ARGV[2])
return {ARGV[1], v, 0}
"#;

/// Validate a header value: 1..=255 visible ASCII characters.
pub fn validate_key(raw: &[u8]) -> Result<&str, Error> {
    if raw.is_empty() || raw.len() > 255 || !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Error::BadIdempotencyKey);
    }
    // All bytes are ASCII, so this cannot fail; map the impossible error anyway.
    std::str::from_utf8(raw).map_err(|_| Error::BadIdempotencyKey)
}

/// `EVAL` command for `op` under `key` (EVAL rather than EVALSHA so it also works inside
/// a pipeline and right after a failover, when the new primary's script cache is empty).
pub fn command(op: Op, key: &str) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SCRIPT).arg(2).arg(COUNTER_KEY).arg(format!("{KEY_PREFIX}{key}")).arg(op.name()).arg(TTL_SECONDS);
    cmd
}

/// Result of the script: `(value, replayed)`, or a reuse-for-another-op error.
pub fn parse_reply(op: Op, reply: redis::Value) -> Result<(i64, bool), Error> {
    let (stored_op, value, replayed): (String, String, i64) =
        redis::from_redis_value(reply).map_err(|_| Error::NotAnInteger)?;
    if stored_op != op.name() {
        return Err(Error::IdempotencyKeyReused(stored_op));
    }
    let value = value.parse::<i64>().map_err(|_| Error::NotAnInteger)?;
    Ok((value, replayed == 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert_eq!(validate_key(b"abc-123_:/").unwrap(), "abc-123_:/");
        assert!(validate_key(b"").is_err());
        assert!(validate_key(b"has space").is_err());
        assert!(validate_key("é".as_bytes()).is_err());
        assert!(validate_key(&[b'a'; 256]).is_err());
        assert!(validate_key(&[b'a'; 255]).is_ok());
    }

    #[test]
    fn the_command_evals_the_script_on_the_counter_and_the_keyed_record() {
        let args: Vec<Vec<u8>> = command(Op::Decrement, "k1")
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                other => panic!("unexpected argument {other:?}"),
            })
            .collect();
        let expected: Vec<&[u8]> = vec![
            b"EVAL",
            SCRIPT.as_bytes(),
            b"2",
            b"counter:value",
            b"counter:idempotency:k1",
            b"decrement",
            b"86400",
        ];
        assert_eq!(args, expected);
    }

    #[test]
    fn replies_parse_and_detect_reuse() {
        let reply = |op: &str, v: &str, r: i64| {
            Value::Array(vec![Value::BulkString(op.into()), Value::BulkString(v.into()), Value::Int(r)])
        };
        assert_eq!(
            parse_reply(Op::Increment, reply("increment", "9223372036854775807", 0)).unwrap(),
            (i64::MAX, false)
        );
        assert_eq!(parse_reply(Op::Reset, reply("reset", "0", 1)).unwrap(), (0, true));
        assert!(matches!(
            parse_reply(Op::Decrement, reply("increment", "5", 1)),
            Err(Error::IdempotencyKeyReused(op)) if op == "increment"
        ));
    }
}
