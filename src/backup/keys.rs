//! Object names: `PREFIX/NAMESPACE/NAME/YYYYMMDDTHHMMSSZ.rdb`. The backup's name is its
//! UTC start time to the second, so names sort by time and one CounterApp cannot take
//! two backups under one name (the operator starts at most one a second per stack).

use jiff::Timestamp;

/// File extension of a backup object.
const SUFFIX: &str = ".rdb";
/// `strftime` format of a backup's name.
const NAME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The folder holding one CounterApp's backups (no leading or trailing slash).
pub fn folder(prefix: &str, namespace: &str, name: &str) -> String {
    [prefix.trim_matches('/'), namespace, name]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
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
    dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

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
