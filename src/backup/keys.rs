//! Object names: `PREFIX/NAMESPACE/NAME/YYYYMMDDTHHMMSSZ.rdb`. The backup's name is its
//! UTC start time to the second, so names sort by time and one CounterApp cannot take
//! two backups under one name (the operator starts at most one a second per stack).

use jiff::Timestamp;

/// File extension of a backup object.
const SUFFIX: &str = ".rdb";
/// `strftime` format of a backup's name.
const NAME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// `a/b` for `/a//b/` (no leading, trailing or double slash; empty stays empty).
pub fn normalize_prefix(prefix: &str) -> String {
    prefix.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/")
}

/// The folder holding one CounterApp's backups, `PREFIX/NAMESPACE/NAME` (no leading,
/// trailing or double slash; `NAMESPACE/NAME` when the prefix is empty).
pub fn folder(prefix: &str, namespace: &str, name: &str) -> String {
    let prefix = normalize_prefix(prefix);
    if prefix.is_empty() { format!("{namespace}/{name}") } else { format!("{prefix}/{namespace}/{name}") }
}

/// A backup's name: its start time.
pub fn name_at(at: Timestamp) -> String {
    at.strftime(NAME_FORMAT).to_string()
}

/// The object key of the backup `name` in `folder`.
pub fn key(folder: &str, name: &str) -> String {
    format!("{folder}/{name}{SUFFIX}")
}

/// The name and start time of a key directly in `folder`; None for anything else (a
/// foreign object, a sub-folder, a name that is not a time).
pub fn parse(folder: &str, key: &str) -> Option<(String, Timestamp)> {
    let name = key.strip_prefix(folder)?.strip_prefix('/')?.strip_suffix(SUFFIX)?;
    let at = parse_name(name)?;
    Some((name.to_string(), at))
}

/// The start time a backup name stands for.
pub fn parse_name(name: &str) -> Option<Timestamp> {
    if name.len() != 16 {
        return None;
    }
    let dt = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", name.strip_suffix('Z')?).ok()?;
    let at = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    // Only the form name_at writes (strptime also takes shorter fields).
    (name_at(at) == name).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The key of a backup of NAMESPACE/NAME started at `t`.
    fn bkey(prefix: &str, ns: &str, name: &str, t: Timestamp) -> String {
        key(&folder(prefix, ns, name), &name_at(t))
    }

    /// Its time back, for keys in that folder.
    fn pkey(prefix: &str, ns: &str, name: &str, k: &str) -> Option<Timestamp> {
        parse(&folder(prefix, ns, name), k).map(|(_, t)| t)
    }

    #[test]
    fn backup_keys_have_the_documented_form() {
        let t = at("2026-12-03T16:22:00.123456Z");
        assert_eq!(bkey("backups", "prod", "web", t), "backups/prod/web/20261203T162200Z.rdb");
        assert_eq!(bkey("", "prod", "web", t), "prod/web/20261203T162200Z.rdb");
        assert_eq!(bkey("/", "prod", "web", t), "prod/web/20261203T162200Z.rdb");
        assert_eq!(bkey("/a//b/", "prod", "web", t), "a/b/prod/web/20261203T162200Z.rdb");
        assert_eq!(folder("a/", "prod", "web"), "a/prod/web");
    }

    #[test]
    fn backup_keys_parse_back_to_their_second() {
        let t = at("2026-12-03T16:22:07.999Z");
        for prefix in ["", "backups", "/x/y/"] {
            let key = bkey(prefix, "ns", "app", t);
            assert_eq!(pkey(prefix, "ns", "app", &key), Some(at("2026-12-03T16:22:07Z")), "{key}");
        }
    }

    #[test]
    fn foreign_objects_are_ignored() {
        let p = |k: &str| pkey("backups", "ns", "app", k);
        assert_eq!(p("backups/ns/app/20261203T162207Z.rdb"), Some(at("2026-12-03T16:22:07Z")));
        for k in [
            "backups/ns/app2/20261203T162207Z.rdb",
            "backups/ns/ap/20261203T162207Z.rdb",
            "backups/other/app/20261203T162207Z.rdb",
            "other/ns/app/20261203T162207Z.rdb",
            "backups/ns/app/20261203T162207Z.rdb.tmp",
            "backups/ns/app/20261203T162207.rdb",
            "backups/ns/app/20261303T162207Z.rdb",
            "backups/ns/app/2026120T1622070Z.rdb",
            "backups/ns/app/x/20261203T162207Z.rdb",
            "backups/ns/app/README",
            "backups/ns/app/",
            "backups/ns/app",
            "",
        ] {
            assert_eq!(p(k), None, "{k}");
        }
    }

    #[test]
    fn keys_sort_by_time() {
        let times =
            ["2026-01-02T03:04:05Z", "2026-01-02T03:04:06Z", "2026-10-01T00:00:00Z", "2027-01-01T00:00:00Z"];
        let keys: Vec<String> = times.iter().map(|t| bkey("p", "n", "a", at(t))).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn keys_round_trip_and_sort_by_time() {
        let f = folder("/counterstack/", "prod", "demo");
        assert_eq!(f, "counterstack/prod/demo");
        assert_eq!(folder("", "prod", "demo"), "prod/demo");
        let t1: Timestamp = "2026-12-03T16:22:00Z".parse().unwrap();
        let t2: Timestamp = "2026-12-03T16:22:01Z".parse().unwrap();
        let k1 = key(&f, &name_at(t1));
        assert_eq!(k1, "counterstack/prod/demo/20261203T162200Z.rdb");
        let k2 = key(&f, &name_at(t2));
        assert!(k1 < k2);
        assert_eq!(parse(&f, &k1), Some(("20261203T162200Z".to_string(), t1)));
    }

    #[test]
    fn foreign_objects_are_not_backups() {
        let f = "counterstack/prod/demo";
        assert_eq!(parse(f, "counterstack/prod/demo/notes.txt"), None);
        assert_eq!(parse(f, "counterstack/prod/demo2/20261203T162200Z.rdb"), None);
        assert_eq!(parse(f, "counterstack/prod/demo/x/20261203T162200Z.rdb"), None);
        assert_eq!(parse(f, "counterstack/prod/demo/20261399T162200Z.rdb"), None);
    }
}
