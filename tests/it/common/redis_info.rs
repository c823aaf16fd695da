//! Reading Redis `INFO` text. Shared by the integration tests and (through `#[path]`)
//! the e2e suite, which reads the same sections from pods.

/// `calls` of `command` in `INFO commandstats` text (0 when never called).
pub fn command_calls(info: &str, command: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls="))?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}
