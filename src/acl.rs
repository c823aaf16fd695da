//! Redis ACL users: who may run what, and their passwords' form (generated, checked,
//! hashed). Shared by the builders (the ACL rules file), the replication manager (live
//! rotation) and the operator (the users' Secrets). Nobody uses `default` (disabled); each client has
//! its own user with only the commands it sends. Passwords never appear here: the start
//! script adds each user's password hashes from the mounted Secrets
//! (`configmap::START_SCRIPT`), and the replication manager adds and removes them live
//! during a rotation.

use std::fmt;

/// The ACL users whose passwords live in Secrets (one Secret each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RedisUser {
    /// The web service: the counter and its idempotency records, nothing else.
    Web,
    /// Replicas following their primary (`masteruser`), and the start script asking
    /// peers who the primary is.
    Replication,
    /// The operator's replication manager and health checks.
    Operator,
}

impl RedisUser {
    pub const ALL: [RedisUser; 3] = [RedisUser::Web, RedisUser::Replication, RedisUser::Operator];

    /// The ACL user name (also the suffix of its Secret `NAME-redis-auth-USER`).
    pub fn name(self) -> &'static str {
        match self {
            RedisUser::Web => "web",
            RedisUser::Replication => "replication",
            RedisUser::Operator => "operator",
        }
    }

    /// ACL rules after `on` and the passwords.
    pub fn rules(self) -> &'static str {
        match self {
            RedisUser::Web => WEB_RULES,
            RedisUser::Replication => REPLICATION_RULES,
            RedisUser::Operator => OPERATOR_RULES,
        }
    }

    /// The user a `counterstack.io/rotate` entry names (`redis-web`, ...).
    pub fn from_rotate_target(target: &str) -> Option<Vec<RedisUser>> {
        match target.trim() {
            "redis-all" => Some(Self::ALL.to_vec()),
            t => Self::ALL.into_iter().find(|u| t.strip_prefix("redis-") == Some(u.name())).map(|u| vec![u]),
        }
    }
}

impl fmt::Display for RedisUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The counter (`counter:value`), idempotency records (`counter:idempotency:*`), and the
/// commands the web service sends: the writes and reads (also inside its Lua script,
/// which Redis checks against the same rules), `WAIT` for synchronous replicas, `ROLE`
/// to tell a primary from a demoted one. No FLUSHALL, CONFIG, KEYS, DEBUG, MODULE, ...
pub const WEB_RULES: &str = "resetchannels resetkeys ~counter:value ~counter:idempotency:* -@all +get +set +incr +incrby +decr +eval +wait +ping +role";

/// What a replica sends its primary (`PSYNC`, `REPLCONF`, `PING`), plus `ROLE`, which the
/// start script asks every peer.
pub const REPLICATION_RULES: &str = "resetchannels resetkeys -@all +psync +replconf +ping +role";

/// The replication manager's commands: observe (`INFO`, `ROLE`, `PING`, `CONFIG GET`),
/// move roles (`REPLICAOF`, `FAILOVER`, `REPLCONF GETACK`), apply `spec.redis.config`
/// (`CONFIG SET`), and rotate passwords (`ACL GETUSER`/`SETUSER`). No keys. `ACL SETUSER`
/// makes this user as powerful as Redis' admin: its Secret is the one to guard.
pub const OPERATOR_RULES: &str = "resetchannels resetkeys -@all +ping +role +info +config|get +config|set +replicaof +failover +replconf +acl|getuser +acl|setuser";

/// Pod-local user of the readiness probe, the preStop hook and the metrics exporter.
/// Its password is random per container start and never leaves the pod (the start
/// script writes it to the pod's `run` emptyDir), so it needs no Secret or rotation.
pub const MONITOR_USER: &str = "monitor";
const MONITOR_RULES: &str = "resetchannels resetkeys -@all +ping +role +info";

/// `default` can neither log in nor run anything.
const DEFAULT_RULES: &str = "off resetpass nocommands resetkeys resetchannels";

/// The ConfigMap's `acl-rules`: one line per user, `USER RULES`. The start script turns
/// it into the ACL file, adding `on` and password hashes to every user but `default`.
pub fn rules_file() -> String {
    let mut out = format!("default {DEFAULT_RULES}\n");
    for user in RedisUser::ALL {
        out.push_str(&format!("{} {}\n", user.name(), user.rules()));
    }
    out.push_str(&format!("{MONITOR_USER} {MONITOR_RULES}\n"));
    out
}

/// Characters a password may have: they go into redis.conf (`masterauth`) and ACL
/// rules unquoted, so nothing that Redis' config parser or a shell treats specially.
pub fn password_problem(password: &str) -> Option<String> {
    const EXTRA: &str = "._~+/=@%^:,!*-";
    if !(16..=256).contains(&password.len()) {
        return Some(format!("must be 16 to 256 characters long (it has {})", password.len()));
    }
    password
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || EXTRA.contains(*c)))
        .map(|c| format!("has the character {c:?}; use letters, digits and {EXTRA}"))
}

/// Length of a generated password.
pub const PASSWORD_LEN: usize = 32;

/// A random alphanumeric password of [`PASSWORD_LEN`] characters (what the operator
/// generates for a new user Secret and `counterstack render` prints; always passes
/// [`password_problem`]).
pub fn random_password() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(PASSWORD_LEN).map(char::from).collect()
}

/// Lowercase hex SHA-256 of a password: how Redis lists it (`ACL GETUSER`) and how the
/// ACL file names it (`#HASH`).
pub fn password_hash(password: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(password.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_targets_name_users() {
        assert_eq!(RedisUser::from_rotate_target("redis-web"), Some(vec![RedisUser::Web]));
        assert_eq!(RedisUser::from_rotate_target(" redis-operator"), Some(vec![RedisUser::Operator]));
        assert_eq!(RedisUser::from_rotate_target("redis-all"), Some(RedisUser::ALL.to_vec()));
        assert_eq!(RedisUser::from_rotate_target("web"), None);
        assert_eq!(RedisUser::from_rotate_target("redis-default"), None);
    }

    #[test]
    fn passwords_that_would_break_a_config_line_are_refused() {
        assert_eq!(password_problem("Zx81mNq2rT5vW7yA9bC3dE6fG8hJ0kL4"), None);
        assert_eq!(password_problem("a-b_c.d~e+f/g=h@i%j^k:l,m!n*o"), None);
        assert!(password_problem("short").unwrap().contains("16 to 256"));
        assert!(password_problem("with space in it ok?").unwrap().contains("' '"));
        assert!(password_problem("quote\"inside-the-password").unwrap().contains("'\"'"));
    }

    #[test]
    fn hash_is_what_redis_lists() {
        // `ACL SETUSER u >foobar` then `ACL GETUSER u` lists this hash.
        assert_eq!(
            password_hash("foobar"),
            "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"
        );
    }

    #[test]
    fn every_user_has_a_line_and_default_is_off() {
        let f = rules_file();
        assert!(f.starts_with("default off resetpass nocommands"));
        for u in ["web ", "replication ", "operator ", "monitor "] {
            assert_eq!(f.lines().filter(|l| l.starts_with(u)).count(), 1, "{u}");
        }
    }
}
