//! The committed CRD must equal the generated one.

#[test]
fn committed_crd_matches_generated() {
    let generated = counterstack::crd::yaml().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/counterapp.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/counterapp.yaml differs from the CRD generated from src/api; \
         run `cargo run -- crd > crds/counterapp.yaml` and commit the result"
    );
}

#[test]
fn crd_has_the_fixed_names_and_subresources() {
    let crd: serde_json::Value = serde_yaml_ng::from_str(&counterstack::crd::yaml().unwrap()).unwrap();
    assert_eq!(crd["metadata"]["name"], "counterapps.counterstack.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "capp");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert!(v["subresources"]["status"].is_object());
    assert_eq!(v["subresources"]["scale"]["specReplicasPath"], ".spec.web.replicas");
    assert_eq!(v["subresources"]["scale"]["statusReplicasPath"], ".status.web.replicas");
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Ready", "Web", "Primary", "Age"]);
}

/// Every spec field has a description (it is what `kubectl explain` prints).
#[test]
fn every_spec_field_is_documented() {
    fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (k, s) in props {
                let p = format!("{path}.{k}");
                if s.get("description").and_then(|d| d.as_str()).is_none_or(str::is_empty) {
                    missing.push(p.clone());
                }
                walk(s, &p, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let crd: serde_json::Value = serde_yaml_ng::from_str(&counterstack::crd::yaml().unwrap()).unwrap();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    walk(&root["properties"]["spec"], "spec", &mut missing);
    walk(&root["properties"]["status"], "status", &mut missing);
    assert!(missing.is_empty(), "fields without a doc comment: {missing:?}");
}
