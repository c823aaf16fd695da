//! `spec.redis.config`: the Redis settings a CounterApp may set, in ONE place.
//!
//! [`SETTINGS`] is the allowlist. Everything else derives from it: the CRD's CEL rule
//! and its message ([`cel_rule`], [`cel_message`]), the offline check
//! ([`check`], run by `children::validate`), the split into settings applied at runtime
//! with `CONFIG SET` and settings that need a planned restart ([`is_live`]).
//!
//! Never allowed: anything about replication (`replicaof`, `masterauth`, `repl-*`,
//! `min-replicas-*`: the operator owns them), persistence and paths (`save`,
//! `appendonly`, `dir`, `dbfilename`, `appendfilename`, `appenddirname`), the network
//! and security (`port`, `bind`, `protected-mode`, `requirepass`, `user`, `aclfile`,
//! `rename-command`, `tls-*`), and process settings (`include`, `loadmodule`,
//! `daemonize`, `logfile`, `unixsocket`).

use std::collections::BTreeMap;

use schemars::{Schema, SchemaGenerator, json_schema};

/// The shape of a setting's value, checked offline (Redis checks ranges itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A byte count with an optional unit: `100mb`, `1gb`, `4096`.
    Bytes,
    /// A whole number within Redis 7.0's bounds for the setting (inclusive; what
    /// `CONFIG SET` answers "argument must be between ..." to). A value outside would
    /// also stop a restarting pod: Redis refuses to start on it.
    Int(i64, i64),
    /// `yes` or `no`.
    YesNo,
    /// One of the listed words.
    OneOf(&'static [&'static str]),
    /// `notify-keyspace-events` flags: letters of `KEg$lshzxetdmnA`, or empty.
    KeyspaceEvents,
}

/// One allowed setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The Redis configuration directive.
    pub name: &'static str,
    /// Redis 7.0 accepts it at runtime with `CONFIG SET` (checked against Debian's
    /// redis-server 7.0.15). `false`: it is immutable at runtime and takes effect only
    /// through a planned rolling restart of the Redis pods.
    pub live: bool,
    pub kind: ValueKind,
}

const fn live(name: &'static str, kind: ValueKind) -> Setting {
    Setting { name, live: true, kind }
}

const fn restart(name: &'static str, kind: ValueKind) -> Setting {
    Setting { name, live: false, kind }
}

use ValueKind::{Bytes, Int, KeyspaceEvents, OneOf, YesNo};

const I32: i64 = i32::MAX as i64;
const U32: i64 = u32::MAX as i64;

/// Every setting `spec.redis.config` accepts, sorted by name.
pub const SETTINGS: &[Setting] = &[
    live("active-defrag-cycle-max", Int(1, 99)),
    live("active-defrag-cycle-min", Int(1, 99)),
    live("active-defrag-ignore-bytes", Bytes),
    live("active-defrag-max-scan-fields", Int(1, i64::MAX)),
    live("active-defrag-threshold-lower", Int(0, 1000)),
    live("active-defrag-threshold-upper", Int(0, 1000)),
    live("active-expire-effort", Int(1, 10)),
    live("activedefrag", YesNo),
    live("appendfsync", OneOf(&["always", "everysec", "no"])),
    live("dynamic-hz", YesNo),
    live("hash-max-listpack-entries", Int(0, i64::MAX)),
    live("hash-max-listpack-value", Bytes),
    live("hz", Int(0, I32)),
    restart("io-threads", Int(1, 128)),
    restart("io-threads-do-reads", YesNo),
    live("latency-monitor-threshold", Int(0, i64::MAX)),
    live("latency-tracking", YesNo),
    live("lazyfree-lazy-eviction", YesNo),
    live("lazyfree-lazy-expire", YesNo),
    live("lazyfree-lazy-server-del", YesNo),
    live("lazyfree-lazy-user-del", YesNo),
    live("lazyfree-lazy-user-flush", YesNo),
    live("lfu-decay-time", Int(0, I32)),
    live("lfu-log-factor", Int(0, I32)),
    live("list-compress-depth", Int(0, I32)),
    live("list-max-listpack-size", Int(-I32 - 1, I32)),
    live("loglevel", OneOf(&["debug", "verbose", "notice", "warning"])),
    live("maxclients", Int(1, U32)),
    live("maxmemory", Bytes),
    live(
        "maxmemory-policy",
        OneOf(&[
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "noeviction",
        ]),
    ),
    live("maxmemory-samples", Int(1, I32)),
    live("notify-keyspace-events", KeyspaceEvents),
    live("set-max-intset-entries", Int(0, i64::MAX)),
    live("slowlog-log-slower-than", Int(-1, i64::MAX)),
    live("slowlog-max-len", Int(0, i64::MAX)),
    live("stream-node-max-bytes", Bytes),
    live("stream-node-max-entries", Int(0, i64::MAX)),
    live("tcp-keepalive", Int(0, I32)),
    live("timeout", Int(0, I32)),
    live("zset-max-listpack-entries", Int(0, i64::MAX)),
    live("zset-max-listpack-value", Bytes),
];

/// Longest value accepted (the CRD's `maxLength`; it also bounds the CEL cost estimate).
pub const MAX_VALUE_LEN: usize = 64;

/// The setting called `name`, when it is allowed.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// `name` is allowed and Redis applies it at runtime (`CONFIG SET`).
pub fn is_live(name: &str) -> bool {
    setting(name).is_some_and(|s| s.live)
}

/// The allowed names, comma-separated (the CEL message and offline errors list them).
pub fn allowed_list() -> String {
    SETTINGS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// The CEL rule on `spec.redis.config`: every key is in the allowlist.
pub fn cel_rule() -> String {
    let quoted: Vec<String> = SETTINGS.iter().map(|s| format!("'{}'", s.name)).collect();
    format!("self.all(k, k in [{}])", quoted.join(", "))
}

/// The CEL rule on the values of `spec.redis.config`: each has its setting's form
/// (the same forms [`check`] enforces offline).
pub fn cel_value_rule() -> String {
    let names = |want: fn(ValueKind) -> bool| -> String {
        let quoted: Vec<String> =
            SETTINGS.iter().filter(|s| want(s.kind)).map(|s| format!("'{}'", s.name)).collect();
        quoted.join(", ")
    };
    let mut conds = vec![
        format!("(!(k in [{}]) || self[k].matches('{BYTES_RE}'))", names(|k| k == Bytes)),
        format!("(!(k in [{}]) || self[k].matches('{INTEGER_RE}'))", names(|k| matches!(k, Int(..)))),
        format!("(!(k in [{}]) || self[k] in ['yes', 'no'])", names(|k| k == YesNo)),
        format!("(!(k in [{}]) || self[k].matches('{KEYSPACE_EVENTS_RE}'))", names(|k| k == KeyspaceEvents)),
    ];
    for s in SETTINGS {
        if let OneOf(words) = s.kind {
            let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
            conds.push(format!("(k != '{}' || self[k] in [{}])", s.name, quoted.join(", ")));
        }
    }
    format!("self.all(k, {})", conds.join(" && "))
}

/// The value rule's message: the form of each kind of setting.
pub fn cel_value_message() -> String {
    let mut parts = vec![
        "byte counts (such as 100mb) for maxmemory and the other *-bytes settings".to_string(),
        "whole numbers for counts and times".to_string(),
        "yes or no for switches".to_string(),
        "notify-keyspace-events flags from KEg$lshzxetdmnA".to_string(),
    ];
    for s in SETTINGS {
        if let OneOf(words) = s.kind {
            parts.push(format!("{} one of {}", s.name, words.join(", ")));
        }
    }
    format!("each value must have its setting's form: {}", parts.join("; "))
}

/// Byte count with an optional unit (Redis' memtoull accepts these, any case).
const BYTES_RE: &str = "^[0-9]+([kKmMgG][bB]?|[bB])?$";
const INTEGER_RE: &str = "^-?[0-9]+$";
const KEYSPACE_EVENTS_RE: &str = "^[KEg$lshzxetdmnA]*$";

/// The CEL rule's message: names every allowed key.
pub fn cel_message() -> String {
    format!(
        "may only set these Redis settings (replication, persistence, paths, ports and security are \
         managed by the operator): {}",
        allowed_list()
    )
}

/// The settings of `config` that need a restart, rendered as they go into redis.conf;
/// empty when there are none. The Redis pod template's config hash covers exactly this,
/// so a live setting never rolls the pods.
pub fn restart_lines(config: &BTreeMap<String, String>) -> String {
    config.iter().filter(|(k, _)| !is_live(k)).map(|(k, v)| conf_line(k, v)).collect()
}

/// One redis.conf line. The value is quoted; the schema and [`check`] refuse quotes,
/// backslashes and control characters in values, so it cannot end the quote or start
/// another directive.
pub fn conf_line(key: &str, value: &str) -> String {
    format!("{key} \"{value}\"\n")
}

/// Check one key and value offline. `Err` says what is wrong, without the field name.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    let Some(s) = setting(key) else {
        return Err(format!("{key:?} is not an allowed Redis setting; allowed: {}", allowed_list()));
    };
    if value.len() > MAX_VALUE_LEN {
        return Err(format!("must be at most {MAX_VALUE_LEN} characters, got {}", value.len()));
    }
    if value.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(format!("must not contain quotes, backslashes or control characters, got {value:?}"));
    }
    let ok = match s.kind {
        Bytes => {
            let lower = value.to_ascii_lowercase();
            let digits = ["gb", "mb", "kb", "g", "m", "k", "b"]
                .iter()
                .find_map(|u| lower.strip_suffix(u))
                .unwrap_or(&lower);
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
        }
        Int(min, max) => value.parse::<i64>().is_ok_and(|n| (min..=max).contains(&n)),
        YesNo => matches!(value, "yes" | "no"),
        OneOf(words) => words.contains(&value),
        KeyspaceEvents => value.chars().all(|c| "KEg$lshzxetdmnA".contains(c)),
    };
    if ok {
        return Ok(());
    }
    Err(match s.kind {
        Bytes => format!("must be a byte count such as 100mb, 1gb or 4096, got {value:?}"),
        Int(min, max) => format!("must be a whole number from {min} to {max}, got {value:?}"),
        YesNo => format!("must be yes or no, got {value:?}"),
        OneOf(words) => format!("must be one of {}, got {value:?}", words.join(", ")),
        KeyspaceEvents => {
            format!("must be made of the flags K, E, g, $, l, s, h, z, x, e, t, d, m, n, A, got {value:?}")
        }
    })
}

/// Schema of `spec.redis.config`: a string map with at most one entry per allowed
/// setting, each value bounded (`maxLength` keeps the CEL cost estimate within the API
/// server's budget) and free of quotes, backslashes and control characters.
pub fn schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": SETTINGS.len(),
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_VALUE_LEN,
            "pattern": "^[^\"\\\\\\x00-\\x1f\\x7f]*$",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_is_sorted_unique_and_never_names_what_the_operator_owns() {
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        for forbidden in [
            "replicaof",
            "slaveof",
            "masterauth",
            "requirepass",
            "dir",
            "dbfilename",
            "appendfilename",
            "appenddirname",
            "port",
            "bind",
            "protected-mode",
            "rename-command",
            "user",
            "aclfile",
            "save",
            "appendonly",
            "include",
            "loadmodule",
            "daemonize",
            "logfile",
            "unixsocket",
            "min-replicas-to-write",
            "min-replicas-max-lag",
        ] {
            assert!(setting(forbidden).is_none(), "{forbidden} must not be allowed");
        }
        assert!(names.iter().all(|n| !n.starts_with("tls-") && !n.starts_with("repl-")));
    }

    #[test]
    fn only_io_threads_need_a_restart() {
        let restart: Vec<&str> = SETTINGS.iter().filter(|s| !s.live).map(|s| s.name).collect();
        assert_eq!(restart, ["io-threads", "io-threads-do-reads"]);
        assert!(is_live("maxmemory-policy"));
        assert!(!is_live("requirepass"), "not allowed at all");
    }

    #[test]
    fn the_cel_rule_and_message_name_every_allowed_key() {
        let (rule, message) = (cel_rule(), cel_message());
        for s in SETTINGS {
            assert!(rule.contains(&format!("'{}'", s.name)), "{}", s.name);
            assert!(message.contains(s.name), "{}", s.name);
        }
        assert!(rule.starts_with("self.all(k, k in ['active-defrag-cycle-max', "), "{rule}");
    }

    /// The field's doc comment (`kubectl explain`) is written by hand: it must name every
    /// allowed key.
    #[test]
    fn kubectl_explain_names_every_allowed_key() {
        let crd = serde_json::to_value(crate::crd::open_api_schema().unwrap()).unwrap();
        let description =
            crd["properties"]["spec"]["properties"]["redis"]["properties"]["config"]["description"]
                .as_str()
                .unwrap()
                .replace('\n', " ");
        for s in SETTINGS {
            assert!(description.contains(s.name), "the doc comment of RedisSpec::config misses {}", s.name);
        }
    }

    #[test]
    fn restart_lines_hold_only_settings_that_need_a_restart() {
        let mut config = BTreeMap::from([("maxmemory-policy".to_string(), "allkeys-lru".to_string())]);
        assert_eq!(restart_lines(&config), "");
        config.insert("io-threads".into(), "4".into());
        assert_eq!(restart_lines(&config), "io-threads \"4\"\n");
    }

    #[test]
    fn values_are_checked_by_kind() {
        for (k, v) in [
            ("maxmemory", "100mb"),
            ("maxmemory", "1GB"),
            ("maxmemory", "0"),
            ("slowlog-log-slower-than", "-1"),
            ("activedefrag", "yes"),
            ("maxmemory-policy", "allkeys-lru"),
            ("notify-keyspace-events", "Ex"),
            ("notify-keyspace-events", ""),
        ] {
            assert_eq!(check(k, v), Ok(()), "{k} {v}");
        }
        for (k, v) in [
            ("maxmemory", "lots"),
            ("maxmemory", "mb"),
            ("hz", "1.5"),
            ("timeout", "-1"),
            ("active-expire-effort", "20"),
            ("maxclients", "0"),
            ("activedefrag", "true"),
            ("maxmemory-policy", "bogus"),
            ("notify-keyspace-events", "Q"),
            ("maxmemory-policy", "noeviction\nrequirepass x"),
            ("appendfsync", "always\" requirepass \"x"),
        ] {
            assert!(check(k, v).is_err(), "{k} {v}");
        }
        let err = check("requirepass", "x").unwrap_err();
        assert!(err.contains("maxmemory-policy") && err.contains("io-threads"), "{err}");
    }
}
