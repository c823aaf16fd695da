//! The alerts and the dashboard name only metrics that really exist.
//!
//! Metric names come from the code: every `registry.register("name", "help", x.clone())`
//! under `src/`, with the file's `Registry::with_prefix("...")` if it has one, and the
//! prometheus-client suffix rules (Counter: `_total`; Histogram: `_bucket`, `_sum`,
//! `_count`; Gauge: as is). The parser is checked against what the operator's real
//! registry encodes. `redis_*` names must be in the pinned redis_exporter list
//! (`tests/data/redis_exporter_metrics.txt`). The rules and the dashboard are read from
//! `helm template` output with the PrometheusRule and the dashboard enabled.
//!
//! Needs `helm` (HELM, else .tools/bin/helm, else PATH: `scripts/install-helm.sh`
//! installs it). A missing helm fails these tests with instructions; it never skips
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::packaging::{helm, repo};
use serde_json::Value;

/// `helm template` with the PrometheusRule and the dashboard on, every document.
fn rendered() -> Vec<Value> {
    let out = Command::new(helm())
        .args(["template", "counterstack", "charts/counterstack", "--namespace", "counterstack-system"])
        .args(["--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.dashboard.enabled=true"])
        .current_dir(repo())
        .output()
        .expect("run helm");
    assert!(out.status.success(), "helm template failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("helm output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

// --- metric names in the code ----------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The kind of a metric from the text of its type or constructor.
fn kind_of(type_text: &str) -> Option<Kind> {
    let words: Vec<&str> = type_text.split(|c: char| !c.is_alphanumeric() && c != '_').collect();
    if words.contains(&"Histogram") {
        Some(Kind::Histogram)
    } else if words.contains(&"Counter") {
        Some(Kind::Counter)
    } else if words.contains(&"Gauge") {
        Some(Kind::Gauge)
    } else {
        None
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The string literal at the start of `s` (after whitespace) and the rest after it.
fn string_literal(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start().strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => return Some((out, &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// `let IDENT = ...;` in `text`: the initialiser.
fn let_binding<'a>(text: &'a str, ident: &str) -> Option<&'a str> {
    let at = text.find(&format!("let {ident} ="))?;
    let rest = &text[at..];
    Some(&rest[..rest.find(';')?])
}

/// A struct field `IDENT: TYPE,` in `text`: the type (possibly over several lines).
fn field_type<'a>(text: &'a str, ident: &str) -> Option<&'a str> {
    text.match_indices(&format!("{ident}:")).find_map(|(at, pat)| {
        let before = text[..at].trim_end_matches(' ');
        let starts_field = before.ends_with('\n') || before.ends_with("pub");
        let rest = &text[at + pat.len()..];
        if !starts_field || rest.starts_with(':') {
            return None;
        }
        let end = rest.find(",\n").or_else(|| rest.find('\n'))?;
        Some(&rest[..end])
    })
}

/// Every metric the code registers: full exposed name -> kind.
fn code_metrics() -> BTreeMap<String, Kind> {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    files.sort();
    let texts: Vec<(PathBuf, String)> =
        files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).expect("read source"))).collect();
    let mut found = BTreeMap::new();
    for (path, text) in &texts {
        let prefix = text
            .split("Registry::with_prefix(")
            .nth(1)
            .map(|rest| string_literal(rest).expect("with_prefix takes a string literal").0);
        for call in text.split(".register(").skip(1) {
            let Some((name, rest)) = string_literal(call) else { continue };
            let rest = rest.trim_start().strip_prefix(',').expect("register(name, help, metric)");
            let (_help, rest) = string_literal(rest).expect("help is a string literal");
            let rest = rest.trim_start().strip_prefix(',').expect("register(name, help, metric)");
            let metric = rest.split(".clone()").next().expect("metric.clone()").trim();
            let ident = metric.rsplit('.').next().expect("an identifier");
            let kind = let_binding(text, ident)
                .or_else(|| field_type(text, ident))
                .and_then(kind_of)
                .or_else(|| {
                    let kinds: BTreeSet<_> = texts
                        .iter()
                        .filter_map(|(_, t)| field_type(t, ident).and_then(kind_of))
                        .map(|k| format!("{k:?}"))
                        .collect();
                    assert!(kinds.len() <= 1, "{ident} ({name}) has several kinds: {kinds:?}");
                    texts.iter().find_map(|(_, t)| field_type(t, ident).and_then(kind_of))
                })
                .unwrap_or_else(|| panic!("cannot tell the kind of {name} ({ident}) in {}", path.display()));
            let full = match &prefix {
                Some(p) => format!("{p}_{name}"),
                None => name,
            };
            let exposed: Vec<String> = match kind {
                Kind::Counter => vec![format!("{full}_total")],
                Kind::Gauge => vec![full.clone()],
                Kind::Histogram => {
                    ["_bucket", "_sum", "_count"].iter().map(|s| format!("{full}{s}")).collect()
                }
            };
            for n in exposed {
                assert!(found.insert(n.clone(), kind).is_none(), "{n} registered twice");
            }
        }
    }
    found
}

/// Exposed names from a Prometheus text encoding's `# TYPE` lines.
fn encoded_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut parts = l.split(' ');
            let name = parts.next().unwrap_or_default().to_string();
            match parts.next().unwrap_or_default() {
                "counter" => vec![format!("{name}_total")],
                "histogram" => vec![format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")],
                _ => vec![name],
            }
        })
        .collect()
}

#[test]
fn the_source_parser_finds_exactly_what_the_operator_registry_exposes() {
    use counterstack::operator::metrics::{Metrics, Role};
    use counterstack::replication::metrics::{FailoverLabels, PodLabels};
    use counterstack::replication::monitor::CheckLabels;

    let mut metrics = Metrics::default();
    let redis = counterstack::replication::Manager::new();
    redis.metrics().register(&redis.monitor().metrics, metrics.registry_mut());
    // prometheus-client encodes a family only once it has a series: give every labelled
    // family one (a new family must be touched here too, or this test fails).
    metrics.set_role(Role::Leader);
    metrics.reconcile_failed(&counterstack::operator::Error::CrdNotInstalled);
    metrics.reconcile_result(true);
    metrics.applied("Deployment");
    metrics.cache_size("Pod", 1);
    metrics
        .api_requests
        .get_or_create(&counterstack::operator::metrics::ApiRequestLabels {
            verb: "get".into(),
            resource: "secrets".into(),
        })
        .inc();
    metrics.record_app("ns", "demo", &Default::default(), false, 1);
    metrics.record_backup("ns", "demo", &Default::default(), None);
    metrics.backup_finished("ns", "demo", true);
    let app = counterstack::replication::AppKey::new("ns", "demo");
    let failover = FailoverLabels::new(&app, "automatic");
    redis.metrics().failovers.get_or_create(&failover).inc();
    redis.metrics().failover_duration.get_or_create(&failover).observe(1.0);
    redis.metrics().replication_lag.get_or_create(&PodLabels::new(&app, "demo-redis-1")).set(0);
    redis.metrics().persistence_failing.get_or_create(&PodLabels::new(&app, "demo-redis-1")).set(0);
    redis.monitor().metrics.checks.get_or_create(&CheckLabels { result: "up".into() }).inc();
    let encoded = encoded_names(&metrics.encode().expect("encode"));
    let parsed: BTreeSet<String> =
        code_metrics().into_keys().filter(|n| !n.starts_with("counterstack_web_")).collect();
    assert_eq!(parsed, encoded, "names parsed from src/ differ from the operator's registry");
    // The web service's registry is private to its module: the parser must still see it,
    // prefix included.
    let all = code_metrics();
    for web in
        ["counterstack_web_http_requests_total", "counterstack_web_http_request_duration_seconds_bucket"]
    {
        assert!(all.contains_key(web), "{web} not found in {:?}", all.keys().collect::<Vec<_>>());
    }
}

// --- metric names in the rules and the dashboard ---------------------------------------

/// Metric names in a PromQL expression: identifiers outside string literals that start
/// with `counterstack_` or `redis_`, except label names (in matchers and in
/// `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` lists).
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank out string literals.
    let mut plain = String::with_capacity(expr.len());
    let mut quote = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                plain.push(' ');
            }
            None if matches!(c, '"' | '\'' | '`') => {
                quote = Some(c);
                plain.push(' ');
            }
            None => plain.push(c),
        }
    }
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut tokens: Vec<(String, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in plain.char_indices().chain(std::iter::once((plain.len(), ' '))) {
        match (start, is_ident(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                tokens.push((plain[s..i].to_string(), i));
                start = None;
            }
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    let mut in_label_list = false;
    let mut depth = 0usize;
    let mut list_depth = 0usize;
    let mut last = 0;
    for (tok, end) in tokens {
        // Track parentheses between the previous token and this one.
        let begin = end - tok.len();
        for c in plain[last..begin].chars() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    if in_label_list && depth < list_depth {
                        in_label_list = false;
                    }
                }
                _ => {}
            }
        }
        last = end;
        if matches!(tok.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right") {
            in_label_list = true;
            list_depth = depth + 1;
            continue;
        }
        let next = plain[end..].trim_start();
        let is_label_matcher = next.starts_with('=') && !next.starts_with("==") || next.starts_with("!=");
        if in_label_list || is_label_matcher {
            continue;
        }
        if tok.starts_with("counterstack_") || tok.starts_with("redis_") {
            names.insert(tok);
        }
    }
    names
}

/// The pinned redis_exporter names.
fn exporter_names() -> BTreeSet<String> {
    std::fs::read_to_string(repo().join("tests/data/redis_exporter_metrics.txt"))
        .expect("read tests/data/redis_exporter_metrics.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn rules(objs: &[Value]) -> Vec<Value> {
    let rule: Vec<_> = objs.iter().filter(|o| o["kind"] == "PrometheusRule").collect();
    assert_eq!(rule.len(), 1, "one PrometheusRule");
    rule[0]["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

fn dashboard(objs: &[Value]) -> Value {
    let cm: Vec<_> = objs
        .iter()
        .filter(|o| o["kind"] == "ConfigMap" && o["data"]["counterstack.json"].is_string())
        .collect();
    assert_eq!(cm.len(), 1, "one dashboard ConfigMap");
    serde_json::from_str(cm[0]["data"]["counterstack.json"].as_str().unwrap_or_default())
        .expect("the dashboard is valid JSON")
}

/// Every `expr` (panel targets) and variable query in the dashboard, recursively.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => dashboard_queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, out)),
        _ => {}
    }
}

/// Names the expressions use that neither the code nor the pinned exporter list has.
fn unknown_names(
    what: &str,
    exprs: &[String],
    code: &BTreeMap<String, Kind>,
    exporter: &BTreeSet<String>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for e in exprs {
        for n in metric_names(e) {
            let known =
                if n.starts_with("counterstack_") { code.contains_key(&n) } else { exporter.contains(&n) };
            if !known {
                bad.push(format!("{what}: {n} in `{e}`"));
            }
        }
    }
    bad
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_name_is_exported() {
    let objs = rendered();
    let code = code_metrics();
    let exporter = exporter_names();
    let exprs: Vec<String> = rules(&objs)
        .iter()
        .map(|r| r["expr"].as_str().expect("every rule has an expr").to_string())
        .collect();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(&objs), &mut queries);

    let mut bad = unknown_names("PrometheusRule", &exprs, &code, &exporter);
    bad.extend(unknown_names("dashboard", &queries, &code, &exporter));
    assert!(
        bad.is_empty(),
        "metric names that the code does not register (src/**/metrics.rs) and that are not in \
         tests/data/redis_exporter_metrics.txt:\n{}",
        bad.join("\n")
    );

    // Not vacuous: the rules and the dashboard use the series the alerts are about.
    let used: BTreeSet<String> = exprs.iter().chain(&queries).flat_map(|e| metric_names(e)).collect();
    for n in [
        "counterstack_redis_primary_available",
        "counterstack_redis_failovers_total",
        "counterstack_redis_replicas",
        "counterstack_redis_replication_lag_bytes",
        "counterstack_redis_persistence_failing",
        "counterstack_web_http_requests_total",
        "counterstack_reconcile_errors_total",
        "counterstack_reconcile_queue_depth",
        "redis_up",
        "redis_memory_used_bytes",
    ] {
        assert!(used.contains(n), "{n} is used by no alert or panel; used: {used:?}");
    }
}

#[test]
fn every_alert_has_for_severity_and_a_runbook_section() {
    let objs = rendered();
    let runbook =
        std::fs::read_to_string(repo().join("docs/observability.md")).expect("read docs/observability.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase().replace(' ', "-"))
        .collect();
    let alerts = rules(&objs);
    let names: BTreeSet<&str> = alerts.iter().filter_map(|r| r["alert"].as_str()).collect();
    for a in [
        "CounterstackNoPrimary",
        "CounterstackFailover",
        "CounterstackReplicasDegraded",
        "CounterstackReplicationLagHigh",
        "CounterstackWeb5xxRatio",
        "CounterstackReconcileErrors",
        "CounterstackQueueDepth",
        "CounterstackOperatorDown",
        "CounterstackRedisDown",
        "CounterstackRedisCannotPersist",
    ] {
        assert!(names.contains(a), "alert {a} missing; have {names:?}");
    }
    for r in &alerts {
        let name = r["alert"].as_str().expect("only alerting rules");
        assert!(
            matches!(r["labels"]["severity"].as_str(), Some("critical" | "warning" | "info")),
            "{name}: severity"
        );
        // Event-like alerts fire at once; conditions must hold for a while.
        if name != "CounterstackFailover" {
            assert!(r["for"].is_string(), "{name}: no `for:`");
        }
        for a in ["summary", "description", "runbook_url"] {
            assert!(r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()), "{name}: no {a}");
        }
        let url = r["annotations"]["runbook_url"].as_str().unwrap_or_default();
        let anchor = url.rsplit_once('#').map(|(_, a)| a).unwrap_or_default();
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook_url {url}");
        assert!(anchors.contains(anchor), "{name}: docs/observability.md has no `### {name}` section");
    }
}

#[test]
fn dashboard_panel_ids_are_unique() {
    let dash = dashboard(&rendered());
    let mut ids = Vec::new();
    fn walk(panels: &Value, ids: &mut Vec<i64>) {
        for p in panels.as_array().into_iter().flatten() {
            ids.push(p["id"].as_i64().expect("every panel has a numeric id"));
            walk(&p["panels"], ids);
        }
    }
    walk(&dash["panels"], &mut ids);
    let unique: BTreeSet<_> = ids.iter().collect();
    assert!(ids.len() > 10, "the dashboard has panels");
    assert_eq!(unique.len(), ids.len(), "duplicate panel ids: {ids:?}");
}

#[test]
fn metric_name_extraction() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (redis_role) (rate(counterstack_x_total{redis_y="redis_z", a!="b"}[5m])) / on(redis_w) redis_up"#
        ),
        ["counterstack_x_total", "redis_up"]
    );
    assert_eq!(
        names(r#"counterstack_a < ignoring(state) counterstack_b{state="desired"}"#),
        ["counterstack_a", "counterstack_b"]
    );
    assert_eq!(names("absent(counterstack_leader == 1)"), ["counterstack_leader"]);
    assert_eq!(
        names(r#"label_values(counterstack_app_condition{namespace=~"$namespace"}, app)"#),
        ["counterstack_app_condition"]
    );
    assert!(metric_names("histogram_quantile(0.99, sum by (le) (rate(foo_bucket[5m])))").is_empty());
}

// --- the scrape targets ------------------------------------------------------------------

/// Whether `labels` match a Prometheus Operator / Kubernetes label selector.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let eq = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let exprs = selector["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> =
            e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        match e["operator"].as_str() {
            Some("In") => labels.get(key).is_some_and(|v| values.contains(&v.as_str())),
            other => panic!("operator {other:?} not handled here"),
        }
    });
    eq && exprs
}

#[test]
fn stack_monitors_select_the_stack_pods_and_not_the_operator() {
    use counterstack::labels::{Component, labels};

    for toggle in ["metrics.stacks.podMonitor.enabled=true", "metrics.stacks.serviceMonitor.enabled=true"] {
        let objs = {
            let out = Command::new(helm())
                .args(["template", "counterstack", "charts/counterstack", "--set", toggle])
                .current_dir(repo())
                .output()
                .expect("run helm");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_yaml_ng::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
                .map(|d| Value::deserialize(d).expect("YAML"))
                .filter(|v| !v.is_null())
                .collect::<Vec<_>>()
        };
        let monitor: Vec<_> = objs
            .iter()
            .filter(|o| matches!(o["kind"].as_str(), Some("PodMonitor" | "ServiceMonitor")))
            .collect();
        assert_eq!(monitor.len(), 1, "{toggle}: exactly one monitor");
        let spec = &monitor[0]["spec"];
        for c in [Component::Web, Component::Redis] {
            assert!(selects(&spec["selector"], &labels("demo", c)), "{toggle}: {c:?} pods not selected");
        }
        let operator = objs.iter().find(|o| o["kind"] == "Deployment").expect("the operator Deployment");
        let op_labels: BTreeMap<String, String> =
            serde_json::from_value(operator["spec"]["template"]["metadata"]["labels"].clone())
                .expect("labels");
        assert!(!selects(&spec["selector"], &op_labels), "{toggle}: the operator pods are selected too");
        let endpoints =
            spec["podMetricsEndpoints"].as_array().or(spec["endpoints"].as_array()).expect("endpoints");
        let ports: BTreeSet<&str> = endpoints.iter().filter_map(|e| e["port"].as_str()).collect();
        assert_eq!(
            ports,
            BTreeSet::from([counterstack::children::service::WEB_PORT_NAME, "metrics"]),
            "{toggle}"
        );
        for e in endpoints {
            let targets: BTreeSet<&str> = e["relabelings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["targetLabel"].as_str())
                .collect();
            assert!(targets.contains("app"), "{toggle}: endpoint {} gets no `app` label", e["port"]);
        }
    }
}
