//! Versions come from one place, Cargo.toml: the chart's `version` and `appVersion`, the
//! chart's default image tag (as `helm template` renders it), the kustomize base's image
//! and `--default-web-image`, the operator's built-in default web image, the image
//! Artifact Hub lists and Cargo.lock's entry must all say the crate version. A release
//! bumps Cargo.toml and these files together; this test names each one left behind.
//!
//! The check is a function over the files' text so that the second test can show it
//! fails on a wrong value of each source.

use serde_json::Value;

use super::packaging::{helm, repo};

const REPOSITORY: &str = "ghcr.io/counterstack/counterstack";

/// The text of every place that carries the version.
#[derive(Clone)]
struct Sources {
    chart_yaml: String,
    values_yaml: String,
    /// The operator image of `helm template` with default values.
    chart_image: String,
    base_deployment: String,
    base_kustomization: String,
    /// `counterstack::api::DEFAULT_WEB_IMAGE`.
    default_web_image: String,
    cargo_lock: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn rendered_operator_image() -> String {
    let out = std::process::Command::new(helm())
        .args(["template", "counterstack", "charts/counterstack", "-n", "counterstack-system"])
        .current_dir(repo())
        .output()
        .expect("run helm");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let deployments: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| v["kind"] == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 1, "one operator Deployment");
    deployments[0]["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

impl Sources {
    fn of_repo() -> Self {
        Sources {
            chart_yaml: read("charts/counterstack/Chart.yaml"),
            values_yaml: read("charts/counterstack/values.yaml"),
            chart_image: rendered_operator_image(),
            base_deployment: read("manifests/base/deployment.yaml"),
            base_kustomization: read("manifests/base/kustomization.yaml"),
            default_web_image: counterstack::api::DEFAULT_WEB_IMAGE.to_string(),
            cargo_lock: read("Cargo.lock"),
        }
    }
}

/// Every place whose version is not `version`, as `"where: found"`.
fn disagreements(s: &Sources, version: &str) -> Vec<String> {
    let image = format!("{REPOSITORY}:{version}");
    let mut bad = Vec::new();
    let mut expect = |what: &str, found: &str, want: &str| {
        if found != want {
            bad.push(format!("{what}: {found:?} (want {want:?})"));
        }
    };

    let chart: Value = serde_yaml_ng::from_str(&s.chart_yaml).unwrap_or_default();
    expect("Chart.yaml version", chart["version"].as_str().unwrap_or("<none>"), version);
    expect("Chart.yaml appVersion", chart["appVersion"].as_str().unwrap_or("<none>"), version);
    let listed: Value = chart["annotations"]["artifacthub.io/images"]
        .as_str()
        .and_then(|y| serde_yaml_ng::from_str(y).ok())
        .unwrap_or_default();
    let listed: Vec<&str> =
        listed.as_array().into_iter().flatten().filter_map(|i| i["image"].as_str()).collect();
    if listed.is_empty() {
        expect("Chart.yaml artifacthub.io/images", "<none>", &image);
    }
    for l in listed {
        expect("Chart.yaml artifacthub.io/images", l, &image);
    }

    // An empty tag means appVersion (checked above); a set one must be the version.
    let values: Value = serde_yaml_ng::from_str(&s.values_yaml).unwrap_or_default();
    match values["image"]["tag"].as_str() {
        Some("") => {}
        other => expect("values.yaml image.tag", other.unwrap_or("<none>"), version),
    }
    expect(
        "values.yaml image.repository",
        values["image"]["repository"].as_str().unwrap_or("<none>"),
        REPOSITORY,
    );
    expect("helm template: the operator's image", &s.chart_image, &image);

    let base: Value = serde_yaml_ng::from_str(&s.base_deployment).unwrap_or_default();
    let c = &base["spec"]["template"]["spec"]["containers"][0];
    expect("manifests/base/deployment.yaml image", c["image"].as_str().unwrap_or("<none>"), &image);
    let args: Vec<&str> = c["args"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let web = args.iter().position(|a| *a == "--default-web-image").and_then(|i| args.get(i + 1));
    expect("manifests/base/deployment.yaml --default-web-image", web.copied().unwrap_or("<none>"), &image);
    // The overlay example in the kustomization's comment.
    for line in s.base_kustomization.lines().filter(|l| l.contains("newTag:")) {
        expect(
            "manifests/base/kustomization.yaml newTag",
            line.split(':').nth(1).unwrap_or("").trim(),
            version,
        );
    }

    expect("counterstack::api::DEFAULT_WEB_IMAGE", &s.default_web_image, &image);

    let locked = s
        .cargo_lock
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == "name = \"counterstack\""))
        .and_then(|p| p.lines().find_map(|l| l.trim().strip_prefix("version = ")))
        .map(|v| v.trim_matches('"'));
    expect("Cargo.lock counterstack", locked.unwrap_or("<none>"), version);
    bad
}

#[test]
fn every_version_is_the_crate_version() {
    let bad = disagreements(&Sources::of_repo(), env!("CARGO_PKG_VERSION"));
    assert!(
        bad.is_empty(),
        "versions that differ from Cargo.toml's {}:\n{}",
        env!("CARGO_PKG_VERSION"),
        bad.join("\n")
    );
}

#[test]
fn a_wrong_version_in_any_source_is_named() {
    let good = Sources::of_repo();
    let v = env!("CARGO_PKG_VERSION");
    let wrong = "9.9.9";
    // Each source with the version replaced, and the name the failure must carry.
    type Field = fn(&mut Sources) -> &mut String;
    let cases: [(&str, Field, &str); 7] = [
        ("Chart.yaml appVersion", |s| &mut s.chart_yaml, "appVersion: \"{v}\""),
        ("Chart.yaml version", |s| &mut s.chart_yaml, "version: {v}"),
        ("Chart.yaml artifacthub.io/images", |s| &mut s.chart_yaml, "counterstack:{v}"),
        ("helm template: the operator's image", |s| &mut s.chart_image, "{v}"),
        (
            "manifests/base/deployment.yaml image",
            |s| &mut s.base_deployment,
            "image: ghcr.io/counterstack/counterstack:{v}",
        ),
        (
            "manifests/base/deployment.yaml --default-web-image",
            |s| &mut s.base_deployment,
            "- ghcr.io/counterstack/counterstack:{v}",
        ),
        ("counterstack::api::DEFAULT_WEB_IMAGE", |s| &mut s.default_web_image, "{v}"),
    ];
    for (name, field, pattern) in cases {
        let mut s = good.clone();
        let text = field(&mut s);
        let from = pattern.replace("{v}", v);
        assert!(text.contains(&from), "{name}: {from:?} not found");
        // Only the first occurrence: `version: X` also matches inside `appVersion`.
        let at = text.find(&from).unwrap();
        text.replace_range(at..at + from.len(), &pattern.replace("{v}", wrong));
        let bad = disagreements(&s, v);
        assert!(bad.iter().any(|b| b.starts_with(name) && b.contains(wrong)), "{name} not reported: {bad:?}");
    }
    let mut tagged = good.clone();
    tagged.values_yaml = tagged.values_yaml.replacen("tag: \"\"", &format!("tag: \"{wrong}\""), 1);
    assert!(disagreements(&tagged, v).iter().any(|b| b.starts_with("values.yaml image.tag")));
    assert!(!disagreements(&good, "0.0.0-other").is_empty(), "a crate version bump alone must fail");
}
