//! Version gaps of validation: what API servers older than the project's floor (1.30) do
//! not check. The local control plane runs 1.24: it cannot compile some CEL rules of the
//! CRD (its crd-compat drops them on install) and ignores `fieldValidation=Strict`, so an
//! invalid example caught only by such a rule, or an unknown field, is accepted there.
//! Tests skip those examples, with the reason, where the server is older than the
//! feature, and nowhere else.

use counterstack::api::CounterApp;
use kube::{Client, CustomResourceExt};

/// A CEL feature, how a rule uses it, and the first Kubernetes minor that has it.
pub struct Feature {
    pub what: &'static str,
    needle: &'static str,
    pub since_minor: u32,
}

/// From the CEL availability table of kubernetes.io/docs/reference/using-api/cel: the
/// quantity library is 1.29+; validation rules, transition rules (oldSelf) included, are
/// on by default from 1.25.
const FEATURES: [Feature; 2] = [
    Feature { what: "the CEL quantity() library", needle: "quantity(", since_minor: 29 },
    Feature { what: "CEL transition rules (oldSelf)", needle: "oldSelf", since_minor: 25 },
];

/// Server-side field validation (`fieldValidation=Strict` refuses unknown fields) is on
/// by default from 1.25 (beta; kubernetes/enhancements#2885).
const STRICT_FIELDS_SINCE_MINOR: u32 = 25;

/// A rule's `fieldPath` (where its error is reported) exists from 1.28 (kubernetes#118041);
/// older servers report the error at the field that carries the rule.
const FIELD_PATH_SINCE_MINOR: u32 = 28;

/// The API server's version string and minor number (`24+` counts as 24).
pub async fn server_version(client: &Client) -> (String, u32) {
    let info = client.apiserver_version().await.expect("GET /version");
    (info.git_version.clone(), parse_minor(&info.minor))
}

fn parse_minor(minor: &str) -> u32 {
    let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("unexpected minor version {minor:?}"))
}

/// A CRD rule that can reject a field, and the path of the schema node that carries it.
struct Rule {
    at: String,
    rule: String,
    field_path: Option<String>,
}

/// CRD rules that can reject `field` (`spec.redis.storage.size`): those on its schema node
/// and those on an ancestor that name the rest of its path (`self.size`). Transition rules
/// only run on updates (`update`).
fn rules_for(field: &str, update: bool) -> Vec<Rule> {
    let crd = serde_json::to_value(CounterApp::crd()).unwrap();
    let mut node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let parts: Vec<&str> = field.split('.').collect();
    let mut rules = Vec::new();
    for depth in 0..=parts.len() {
        let rest = parts[depth..].join(".");
        for rule in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
            let text = rule["rule"].as_str().unwrap_or_default();
            if (rest.is_empty() || text.contains(&rest)) && (update || !text.contains("oldSelf")) {
                rules.push(Rule {
                    at: parts[..depth].join("."),
                    rule: text.to_string(),
                    field_path: rule["fieldPath"].as_str().map(str::to_string),
                });
            }
        }
        match parts.get(depth) {
            Some(p) if node["properties"].get(*p).is_some() => node = &node["properties"][*p],
            _ => break,
        }
    }
    rules
}

/// The field a server of `minor` names when a rule rejects `field`: the rule's own node
/// where the server predates `fieldPath`.
pub fn reported_field(field: &str, update: bool, minor: u32) -> String {
    if minor >= FIELD_PATH_SINCE_MINOR {
        return field.to_string();
    }
    rules_for(field, update)
        .into_iter()
        .find(|r| r.field_path.as_ref().is_some_and(|p| format!("{}{p}", r.at) == field) && !r.at.is_empty())
        .map_or(field.to_string(), |r| r.at)
}

/// Features the rules that catch an invalid `field` need and a server of `minor` lacks.
fn missing(field: &str, update: bool, minor: u32) -> Vec<&'static Feature> {
    let rules = rules_for(field, update);
    FEATURES
        .iter()
        .filter(|f| minor < f.since_minor && rules.iter().any(|r| r.rule.contains(f.needle)))
        .collect()
}

/// Whether `field` is declared in the CRD schema (an unknown field is not).
fn in_schema(field: &str) -> bool {
    let crd = serde_json::to_value(CounterApp::crd()).unwrap();
    let mut node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for part in field.split('.') {
        match node["properties"].get(part) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// Why a server of `minor` (`version`) cannot refuse an example that breaks `field` and is
/// `caught_by` schema, cel or cel-transition; None when it can.
pub fn skip_reason(field: &str, caught_by: &str, minor: u32, version: &str) -> Option<String> {
    let needs: Vec<String> = if caught_by.starts_with("cel") {
        let gaps = missing(field, caught_by == "cel-transition", minor);
        gaps.iter().map(|f| format!("{} (1.{}+)", f.what, f.since_minor)).collect()
    } else if !in_schema(field) && minor < STRICT_FIELDS_SINCE_MINOR {
        vec![format!(
            "server-side strict field validation of unknown fields (1.{STRICT_FIELDS_SINCE_MINOR}+)"
        )]
    } else {
        Vec::new()
    };
    (!needs.is_empty()).then(|| {
        format!("the API server {version} cannot refuse it on {field}: that needs {}", needs.join(" and "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_versions_parse_with_a_provider_suffix() {
        assert_eq!(parse_minor("24+"), 24);
        assert_eq!(parse_minor("31"), 31);
    }

    #[test]
    fn rules_needing_newer_cel_are_found_from_the_crd() {
        let names = |v: Vec<&Feature>| v.iter().map(|f| f.needle).collect::<Vec<_>>();
        // storage-size-zero.yaml: only the quantity() rule on the field catches 0Gi.
        assert_eq!(names(missing("spec.redis.storage.size", false, 24)), ["quantity("]);
        // The transition examples: shrink (quantity + oldSelf), storage class (oldSelf).
        assert_eq!(names(missing("spec.redis.storage.size", true, 24)), ["quantity(", "oldSelf"]);
        assert_eq!(names(missing("spec.redis.storage.storageClassName", true, 24)), ["oldSelf"]);
        // Plain rules run on 1.24; on the project's floor and later nothing is missing.
        assert!(missing("spec.web.syncReplicas", false, 24).is_empty());
        assert!(missing("metadata.name", false, 24).is_empty());
        assert!(!rules_for("spec.web.syncReplicas", false).is_empty());
        assert!(!rules_for("metadata.name", false).is_empty());
        for field in ["spec.redis.storage.size", "spec.redis.storage.storageClassName"] {
            assert!(missing(field, true, 30).is_empty(), "{field}");
        }
    }

    #[test]
    fn unknown_fields_need_strict_field_validation() {
        assert!(skip_reason("spec.web.replica", "schema", 24, "v1.24").unwrap().contains("unknown fields"));
        assert_eq!(skip_reason("spec.web.replica", "schema", 25, "v1.25"), None);
        assert_eq!(skip_reason("spec.web.replicas", "schema", 24, "v1.24"), None);
        assert!(skip_reason("spec.redis.storage.size", "cel", 24, "v1.24").unwrap().contains("quantity"));
        assert_eq!(skip_reason("spec.redis.storage.size", "cel", 30, "v1.30"), None);
        // A schema-caught example does not depend on the CEL rules of its field.
        assert_eq!(skip_reason("spec.redis.storage.size", "schema", 24, "v1.24"), None);
    }

    #[test]
    fn servers_without_field_path_name_the_node_of_the_rule() {
        assert_eq!(reported_field("spec.web.syncReplicas", false, 24), "spec");
        assert_eq!(reported_field("spec.web.syncReplicas", false, 28), "spec.web.syncReplicas");
        assert_eq!(reported_field("metadata.name", false, 24), "metadata.name");
        assert_eq!(reported_field("spec.web.port", false, 24), "spec.web.port");
    }
}
