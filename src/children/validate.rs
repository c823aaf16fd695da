//! Validation the builders can check offline, with messages that name the field and
//! say what to change. The CRD enforces the same rules in the API server (schema bounds
//! and CEL rules); `validate_cel` runs the CRD's CEL rules client-side too.

use std::fmt;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::core::cel::CompiledSchema;

use super::Error;
use crate::api::{self, CounterApp, MAX_NAME_LEN, redis_config};

/// One failed check: the field (a path such as `spec.web.replicas`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every failed check, in field order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

#[derive(Default)]
struct Checks(Vec<FieldError>);

impl Checks {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }

    fn range(&mut self, field: &str, value: i32, min: i32, max: i32) {
        if !(min..=max).contains(&value) {
            self.fail(field, format!("must be between {min} and {max}, got {value}"));
        }
    }
}

/// Pod labels and the priority class: what the API server would refuse in the pod
/// template (the CounterApp itself would be accepted, and the StatefulSet apply fail).
fn check_pod_options(c: &mut Checks, at: &str, opts: &crate::api::PodOptions) {
    for (k, v) in &opts.pod_labels {
        if !is_label_key(k) {
            c.fail(
                format!("{at}.podLabels"),
                format!("key {k:?} is not a valid label key (an optional DNS-subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.')"),
            );
        }
        if !is_label_value(v) {
            c.fail(
                format!("{at}.podLabels.{k}"),
                format!("must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, got {v:?}"),
            );
        }
    }
    for k in opts.pod_annotations.keys() {
        if !is_label_key(k) {
            c.fail(format!("{at}.podAnnotations"), format!("key {k:?} is not a valid annotation key"));
        }
    }
    if let Some(p) = opts.priority_class_name.as_deref().filter(|p| !p.is_empty())
        && !is_dns1123_subdomain(p)
    {
        c.fail(format!("{at}.priorityClassName"), format!("must be a DNS subdomain, got {p:?}"));
    }
}

/// A label or annotation key: `[prefix/]name`, prefix a DNS subdomain, name at most 63
/// characters of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` starting and
/// ending alphanumeric.
pub fn is_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    v.len() <= 63
        && v.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && v.starts_with(alnum)
        && v.ends_with(alnum)
}

/// Check everything about `cr` that needs no API server. Returns all failures at once.
pub fn validate(cr: &CounterApp) -> Result<(), Error> {
    let mut c = Checks::default();
    let spec = &cr.spec;

    match cr.metadata.name.as_deref() {
        None | Some("") => c.fail("metadata.name", "is required"),
        Some(name) => {
            if name.len() > MAX_NAME_LEN {
                c.fail(
                    "metadata.name",
                    format!(
                        "must be at most {MAX_NAME_LEN} characters so that derived names such as \
                         {name}-redis-headless stay valid DNS labels, got {} characters; choose a shorter name",
                        name.len()
                    ),
                );
            }
            if !is_dns1035_label(name) {
                c.fail(
                    "metadata.name",
                    format!(
                        "must start with a lowercase letter and contain only lowercase letters, digits \
                         and '-', and end with a letter or digit, got {name:?}"
                    ),
                );
            }
        }
    }

    if let Some(image) = spec.web.image.as_deref() {
        check_image(&mut c, "spec.web.image", image, true);
    }
    c.range("spec.web.replicas", spec.web.replicas, api::MIN_WEB_REPLICAS, api::MAX_WEB_REPLICAS);
    c.range("spec.web.port", spec.web.port, api::MIN_PORT, api::MAX_PORT);
    c.range("spec.web.service.port", spec.web.service.port, api::MIN_PORT, api::MAX_PORT);
    check_resources(&mut c, "spec.web.resources", spec.web.resources.as_ref());

    check_image(&mut c, "spec.redis.image", &spec.redis.image, false);
    c.range("spec.redis.replicas", spec.redis.replicas, 0, api::MAX_REDIS_REPLICAS);
    if let Some(sync) = spec.web.sync_replicas {
        c.range("spec.web.syncReplicas", sync, 0, api::MAX_REDIS_REPLICAS);
        if sync > spec.redis.replicas && (0..=api::MAX_REDIS_REPLICAS).contains(&sync) {
            c.fail(
                "spec.web.syncReplicas",
                format!(
                    "cannot exceed spec.redis.replicas ({}), got {sync}: a write cannot be confirmed by more \
                     replicas than exist; lower syncReplicas or add Redis replicas",
                    spec.redis.replicas
                ),
            );
        }
    }
    let size = &spec.redis.storage.size;
    if !is_storage_size(size) {
        c.fail(
            "spec.redis.storage.size",
            format!("must be a quantity such as 1Gi or 500Mi (a number with an optional Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P or E suffix), got {size:?}"),
        );
    } else if split_number(size).0.chars().all(|d| d == '0' || d == '.') {
        c.fail(
            "spec.redis.storage.size",
            format!("must be greater than zero, for example 1Gi, got {size:?}"),
        );
    }
    if let Some(class) = spec.redis.storage.storage_class_name.as_deref()
        && !is_dns1123_subdomain(class)
    {
        c.fail(
            "spec.redis.storage.storageClassName",
            format!("must be a DNS subdomain (lowercase letters, digits, '-' and '.'), got {class:?}"),
        );
    }
    check_resources(&mut c, "spec.redis.resources", spec.redis.resources.as_ref());
    c.range(
        "spec.redis.failover.afterSeconds",
        spec.redis.failover.after_seconds,
        api::MIN_FAILOVER_AFTER_SECONDS,
        api::MAX_FAILOVER_AFTER_SECONDS,
    );
    if spec.redis.config.len() > redis_config::SETTINGS.len() {
        c.fail(
            "spec.redis.config",
            format!(
                "must have at most {} entries, got {}",
                redis_config::SETTINGS.len(),
                spec.redis.config.len()
            ),
        );
    }
    for (key, value) in &spec.redis.config {
        if redis_config::setting(key).is_none() {
            // The same words as the CRD's CEL rule, so both paths read alike.
            c.fail("spec.redis.config", format!("{} (got {key:?})", redis_config::cel_message()));
        } else if let Err(message) = redis_config::check(key, value) {
            c.fail(format!("spec.redis.config.{key}"), message);
        }
    }

    if let Some(a) = &spec.web.autoscaling {
        c.range(
            "spec.web.autoscaling.minReplicas",
            a.min_replicas,
            api::MIN_WEB_REPLICAS,
            api::MAX_WEB_REPLICAS,
        );
        c.range(
            "spec.web.autoscaling.maxReplicas",
            a.max_replicas,
            api::MIN_WEB_REPLICAS,
            api::MAX_WEB_REPLICAS,
        );
        c.range(
            "spec.web.autoscaling.targetCPUUtilizationPercentage",
            a.target_cpu_utilization_percentage,
            api::MIN_CPU_PERCENT,
            api::MAX_CPU_PERCENT,
        );
        if a.min_replicas > a.max_replicas {
            c.fail(
                "spec.web.autoscaling.minReplicas",
                format!("must not exceed maxReplicas ({}), got {}", a.max_replicas, a.min_replicas),
            );
        }
    }
    check_pod_options(&mut c, "spec.web", &spec.web.pod);
    if spec.redis.metrics.enabled {
        check_image(&mut c, "spec.redis.metrics.image", &spec.redis.metrics.image, false);
    }
    check_resources(&mut c, "spec.redis.metrics.resources", spec.redis.metrics.resources.as_ref());
    check_pod_options(&mut c, "spec.redis", &spec.redis.pod);

    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        if !is_dns1123_subdomain(&secret.name) {
            c.fail(
                format!("spec.imagePullSecrets[{i}].name"),
                format!("must name a Secret (a DNS subdomain), got {:?}", secret.name),
            );
        }
    }

    if let Some(b) = &spec.backup {
        check_backup(&mut c, b);
    }
    if let Some(b) = &spec.bootstrap {
        let from = &b.from_backup;
        check_destination(
            &mut c,
            "spec.bootstrap.fromBackup",
            "source",
            from.s3.as_ref(),
            from.volume.as_ref(),
        );
        if !is_dns1123_subdomain(&from.counter_app) {
            c.fail(
                "spec.bootstrap.fromBackup.counterApp",
                format!("must name a CounterApp, got {:?}", from.counter_app),
            );
        }
        if from.backup != "latest" && crate::backup::keys::parse_name(&from.backup).is_none() {
            c.fail(
                "spec.bootstrap.fromBackup.backup",
                format!(
                    "must be `latest` or a backup's name, its UTC start time YYYYMMDDTHHMMSSZ (kubectl counterstack backups lists them), got {:?}",
                    from.backup
                ),
            );
        }
    }

    if c.0.is_empty() { Ok(()) } else { Err(Error::Invalid(FieldErrors(c.0))) }
}

/// `spec.backup`: the schema's rules, and a schedule cron accepts (the CRD only checks
/// that it has five fields).
fn check_backup(c: &mut Checks, b: &crate::api::BackupSpec) {
    if let Some(expr) = b.schedule.as_deref()
        && let Err(message) = crate::backup::schedule::Schedule::parse(expr)
    {
        c.fail("spec.backup.schedule", message);
    }
    c.range("spec.backup.retention.keepLast", b.retention.keep_last, 1, 1000);
    if b.retention.max_age.is_some() && b.retention.max_age_seconds().is_none_or(|s| s <= 0) {
        c.fail(
            "spec.backup.retention.maxAge",
            format!("must be a number of hours or days such as 72h or 30d, got {:?}", b.retention.max_age),
        );
    }
    check_destination(c, "spec.backup", "destination", b.s3.as_ref(), b.volume.as_ref());
}

/// Exactly one of `s3` and `volume` (the CRD's rule), each valid.
fn check_destination(
    c: &mut Checks,
    at: &str,
    what: &str,
    s3: Option<&crate::api::S3Destination>,
    volume: Option<&crate::api::VolumeDestination>,
) {
    match (s3, volume) {
        (Some(s3), None) => check_s3(c, &format!("{at}.s3"), s3),
        (None, Some(v)) => {
            if !is_dns1123_subdomain(&v.claim_name) {
                c.fail(
                    format!("{at}.volume.claimName"),
                    format!("must name a PersistentVolumeClaim, got {:?}", v.claim_name),
                );
            }
            // Empty is the volume's root; otherwise relative parts, none hidden (the
            // schema's pattern, which also refuses `.` and `..`).
            let bad_part = |s: &str| s.is_empty() || s.starts_with('.');
            if !v.prefix.is_empty() && v.prefix.split('/').any(bad_part) {
                c.fail(
                    format!("{at}.volume.prefix"),
                    format!(
                        "must be a relative path whose parts do not start with a dot, got {:?}",
                        v.prefix
                    ),
                );
            }
        }
        _ => c.fail(
            at.to_string(),
            format!("set exactly one {what}: s3 (an object store) or volume (a PersistentVolumeClaim)"),
        ),
    }
}

fn check_s3(c: &mut Checks, at: &str, s3: &crate::api::S3Destination) {
    if let Some(e) = s3.endpoint.as_deref() {
        let host = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://"));
        if host.is_none_or(|h| {
            h.trim_end_matches('/').is_empty() || h.trim_end_matches('/').contains(['/', '?', '#'])
        }) {
            c.fail(
                format!("{at}.endpoint"),
                format!("must be an http:// or https:// URL of the endpoint alone (host and optional port), got {e:?}"),
            );
        }
    }
    let bucket = &s3.bucket;
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '.' || ch == '-')
        && bucket.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        && bucket.ends_with(|ch: char| ch.is_ascii_alphanumeric());
    if !bucket_ok {
        c.fail(
            format!("{at}.bucket"),
            format!(
                "must be an S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-'), got {bucket:?}"
            ),
        );
    }
    let prefix_ok = s3.prefix.len() <= 256
        && (s3.prefix.is_empty()
            || s3.prefix.split('/').all(|part| {
                !part.is_empty()
                    && part.chars().all(|ch| ch.is_ascii_alphanumeric() || "!_.*'()-".contains(ch))
            }));
    if !prefix_ok {
        c.fail(
            format!("{at}.prefix"),
            format!(
                "must be words of letters, digits and !_.*'()- separated by single '/', got {:?}",
                s3.prefix
            ),
        );
    }
    if !is_dns1123_subdomain(&s3.credentials.secret_name) {
        c.fail(
            format!("{at}.credentials.secretName"),
            format!("must name a Secret, got {:?}", s3.credentials.secret_name),
        );
    }
    if let Some(ca) = &s3.ca_bundle
        && !is_dns1123_subdomain(&ca.secret_name)
    {
        c.fail(format!("{at}.caBundle.secretName"), format!("must name a Secret, got {:?}", ca.secret_name));
    }
}

/// Run the CRD's CEL rules (`x-kubernetes-validations`) client-side, as the API server
/// would on create (`old` None) or update (`old` Some: transition rules such as "size
/// never shrinks" and "storageClassName is immutable" apply).
pub fn validate_cel(cr: &CounterApp, old: Option<&CounterApp>) -> Result<(), Error> {
    let compiled = crd_cel_rules().as_ref().map_err(|e| Error::Cel(e.clone()))?;
    let to_value = |v: &CounterApp| {
        serde_json::to_value(v).map_err(|e| Error::Serialize { kind: "CounterApp", source: e })
    };
    let object = to_value(cr)?;
    let old = old.map(to_value).transpose()?;
    kube::core::cel::Validator::new()
        .validate_compiled(compiled, &object, old.as_ref())
        .map_err(|errs| Error::Cel(errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))
}

/// The CRD's CEL rules, compiled once per process (compiling dominates the cost).
fn crd_cel_rules() -> &'static Result<CompiledSchema, String> {
    static RULES: OnceLock<Result<CompiledSchema, String>> = OnceLock::new();
    RULES.get_or_init(|| {
        let schema = crate::crd::open_api_schema()
            .ok_or_else(|| "the generated CRD has no openAPIV3Schema".to_string())?;
        let schema =
            serde_json::to_value(&schema).map_err(|e| format!("cannot serialize the CRD schema: {e}"))?;
        let compiled = kube::core::cel::compile_schema(&schema);
        if compiled.has_errors() {
            let errs: Vec<String> = compiled.compilation_errors().iter().map(|e| e.to_string()).collect();
            return Err(format!("the CRD's CEL rules do not compile: {}", errs.join("; ")));
        }
        Ok(compiled)
    })
}

fn check_image(c: &mut Checks, field: &str, image: &str, allow_empty: bool) {
    if image.is_empty() && !allow_empty {
        c.fail(field, "must not be empty");
    } else if image.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        c.fail(field, format!("must be an image reference without spaces, got {image:?}"));
    }
}

fn check_resources(c: &mut Checks, field: &str, res: Option<&ResourceRequirements>) {
    let Some(res) = res else { return };
    for (part, map) in [("limits", &res.limits), ("requests", &res.requests)] {
        for (name, q) in map.iter().flatten() {
            if !is_quantity(&q.0) {
                c.fail(
                    format!("{field}.{part}.{name}"),
                    format!("must be a Kubernetes quantity such as 500m, 2 or 256Mi, got {:?}", q.0),
                );
            }
        }
    }
}

/// RFC 1035 label: what Service names need (`NAME-web` etc. start with NAME).
pub fn is_dns1035_label(s: &str) -> bool {
    // Indexing is safe: a DNS-1123 label is never empty (checked first).
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// RFC 1123 label: what every other object name (and pod hostname) needs.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == b'-')
}

/// RFC 1123 subdomain (Secret and StorageClass names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= api::MAX_DNS_SUBDOMAIN_LEN && s.split('.').all(is_dns1123_label)
}

/// The CRD's pattern for `spec.redis.storage.size`:
/// `^([0-9]+(\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$`.
pub fn is_storage_size(s: &str) -> bool {
    let (number, suffix) = split_number(s);
    is_plain_decimal(number)
        && matches!(suffix, "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E")
}

/// A Kubernetes resource quantity: `[+-]number` with a binary-SI, decimal-SI
/// (including `m`, `u`, `n`) or exponent (`e3`, `E-2`) suffix.
pub fn is_quantity(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (number, suffix) = split_number(unsigned);
    let number_ok = !number.is_empty()
        && number != "."
        && number.chars().filter(|ch| *ch == '.').count() <= 1
        && number.chars().all(|ch| ch.is_ascii_digit() || ch == '.');
    let suffix_ok = match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P"
        | "E" => true,
        exp => exp
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|digits| !digits.is_empty() && digits.chars().all(|ch| ch.is_ascii_digit())),
    };
    number_ok && suffix_ok
}

fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|ch: char| !(ch.is_ascii_digit() || ch == '.')).unwrap_or(s.len());
    s.split_at(end)
}

/// `[0-9]+(\.[0-9]+)?`
fn is_plain_decimal(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let digits = |p: &str| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_digit());
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_cel_rules_compile() {
        if let Err(e) = crd_cel_rules() {
            panic!("{e}");
        }
    }

    #[test]
    fn a_backup_schedule_cron_refuses_is_an_invalid_spec_naming_the_field() {
        let mut cr = CounterApp::new("demo", Default::default());
        let yaml = "schedule: '0 25 * * *'\nretention: {keepLast: 0, maxAge: 0d}\ns3: {bucket: B, credentials: {secretName: s}}";
        cr.spec.backup = Some(serde_yaml_ng::from_str(yaml).unwrap());
        let err = validate(&cr).unwrap_err().to_string();
        for field in [
            "spec.backup.schedule",
            "spec.backup.retention.keepLast",
            "spec.backup.retention.maxAge",
            "spec.backup.s3.bucket",
        ] {
            assert!(err.contains(field), "{field} not named: {err}");
        }
        cr.spec.backup = Some(
            serde_yaml_ng::from_str(
                "schedule: '*/5 * * * *'\ns3: {bucket: b-1, credentials: {secretName: s}}",
            )
            .unwrap(),
        );
        validate(&cr).unwrap();
    }

    #[test]
    fn a_backup_has_exactly_one_valid_destination() {
        let mut cr = CounterApp::new("demo", Default::default());
        let verdict = |cr: &mut CounterApp, yaml: &str| {
            cr.spec.backup = Some(serde_yaml_ng::from_str(yaml).unwrap());
            validate(cr).err().map(|e| e.to_string())
        };
        let both = "s3: {bucket: b-1, credentials: {secretName: s}}\nvolume: {claimName: backups}";
        let err = verdict(&mut cr, both).expect("two destinations are refused");
        assert!(err.contains("spec.backup") && err.contains("exactly one destination"), "{err}");
        let err = verdict(&mut cr, "retention: {keepLast: 3}").expect("no destination is refused");
        assert!(err.contains("exactly one destination"), "{err}");
        for bad in ["../x", "/abs", "a//b", "a/.hidden"] {
            let err = verdict(&mut cr, &format!("volume: {{claimName: backups, prefix: '{bad}'}}"))
                .unwrap_or_else(|| panic!("prefix {bad:?} accepted"));
            assert!(err.contains("spec.backup.volume.prefix"), "{err}");
        }
        let err = verdict(&mut cr, "volume: {claimName: Backups_1}").expect("not a claim name");
        assert!(err.contains("spec.backup.volume.claimName"), "{err}");
        for ok in [
            "volume: {claimName: backups}",
            "volume: {claimName: backups, prefix: ''}",
            "volume: {claimName: b, prefix: a/b-c/d.e}",
        ] {
            assert_eq!(verdict(&mut cr, ok), None, "{ok}");
        }
    }

    #[test]
    fn storage_sizes() {
        for ok in ["1Gi", "500Mi", "1.5Gi", "10", "2T", "1k"] {
            assert!(is_storage_size(ok), "{ok}");
        }
        for bad in ["", "Gi", "1GB", "1gi", "-1Gi", "1.Gi", ".5Gi", "1 Gi", "1e3", "500m"] {
            assert!(!is_storage_size(bad), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        for ok in ["500m", "2", "0.5", "256Mi", "1e3", "1E-2", "+1", "100u", ".5"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1mb", "1 Gi", "1..2", "1e", "Gi", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn dns_names() {
        assert!(is_dns1035_label("demo-web"));
        assert!(!is_dns1035_label("1demo"));
        assert!(is_dns1123_label("1demo"));
        assert!(!is_dns1123_label("demo-"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("fast.ssd"));
        assert!(!is_dns1123_subdomain("Fast"));
    }
}
