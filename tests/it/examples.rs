//! The example CounterApps: valid ones pass every check `render` and the CRD make;
//! every invalid one fails with an error that names the field its header declares
//! (`# field: ...`). Rules the header marks `caught-by: cel` are also checked against
//! the CRD's own CEL rules alone (kube's client-side CEL), so the API server rejects
//! them too, not just `render`.

use std::path::{Path, PathBuf};

use counterstack::api::CounterApp;
use counterstack::children::validate_cel;
use counterstack::render;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Value of a `# key: value` header line.
fn header(text: &str, key: &str) -> Option<String> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("# {key}:")).map(|v| v.trim().to_string()))
}

#[test]
fn valid_examples_pass_every_check() {
    let files = yaml_files(&examples_dir());
    assert!(files.len() >= 2, "expected counterapp.yaml and counterapp-full.yaml");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let cr = render::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        validate_cel(&cr, None).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // An unchanged object must pass the transition rules too.
        validate_cel(&cr, Some(&cr)).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn every_invalid_example_fails_naming_its_field() {
    let files = yaml_files(&examples_dir().join("invalid"));
    assert!(files.len() >= 6, "at least six invalid examples, found {}", files.len());
    let mut fields = std::collections::BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.display();
        let field = header(&text, "field").unwrap_or_else(|| panic!("{name}: no `# field:` header"));
        let caught_by =
            header(&text, "caught-by").unwrap_or_else(|| panic!("{name}: no `# caught-by:` header"));
        fields.insert(field.clone());

        let err = render::parse(&text).expect_err(&format!("{name} should be rejected")).to_string();
        assert!(err.contains(&field), "{name}: error does not name {field}: {err}");

        if caught_by == "cel" {
            // The CRD's CEL rules alone must reject it.
            let cr: CounterApp = serde_yaml_ng::from_str(&text).unwrap();
            let err =
                validate_cel(&cr, None).expect_err(&format!("{name}: CRD CEL rules accept it")).to_string();
            assert!(err.contains(&field), "{name}: CEL error does not name {field}: {err}");
        } else {
            assert_eq!(caught_by, "schema", "{name}: caught-by must be schema or cel");
        }
    }
    assert!(fields.len() >= 6, "the invalid examples cover too few different fields: {fields:?}");
}

#[test]
fn every_invalid_transition_fails_naming_its_field() {
    let dir = examples_dir().join("invalid/transitions");
    let news: Vec<PathBuf> =
        yaml_files(&dir).into_iter().filter(|p| p.to_string_lossy().ends_with(".new.yaml")).collect();
    assert!(news.len() >= 2, "expected storage-shrink and storage-class-change");
    for new_path in news {
        let old_path = PathBuf::from(new_path.to_string_lossy().replace(".new.yaml", ".old.yaml"));
        let new_text = std::fs::read_to_string(&new_path).unwrap();
        let field = header(&new_text, "field").unwrap();
        let name = new_path.display();
        // Both are valid on their own: only the change is wrong.
        let old = render::parse(&std::fs::read_to_string(&old_path).unwrap()).unwrap();
        let new = render::parse(&new_text).unwrap();
        validate_cel(&new, Some(&new)).unwrap();
        let err = validate_cel(&new, Some(&old)).expect_err(&format!("{name}: update accepted")).to_string();
        assert!(err.contains(&field), "{name}: error does not name {field}: {err}");
    }
}

#[test]
fn storage_may_grow() {
    let old = render::parse(
        "apiVersion: counterstack.io/v1alpha1\nkind: CounterApp\nmetadata: {name: demo}\n\
         spec: {redis: {storage: {size: 1Gi, storageClassName: standard}}}",
    )
    .unwrap();
    let mut new = old.clone();
    new.spec.redis.storage.size = "1536Mi".to_string();
    validate_cel(&new, Some(&old)).unwrap();
}

/// The CRD's CEL rules on `spec.redis.config` and the offline check (`render`, the
/// operator) are generated from one allowlist; they must accept and refuse alike.
#[test]
fn redis_config_cel_rules_and_offline_check_agree() {
    use counterstack::api::redis_config;
    let cases = [
        ("maxmemory", "256mb"),
        ("maxmemory", "1GB"),
        ("maxmemory", "lots"),
        ("maxmemory-policy", "allkeys-lru"),
        ("maxmemory-policy", "bogus"),
        ("appendfsync", "always"),
        ("appendfsync", "sometimes"),
        ("slowlog-log-slower-than", "-1"),
        ("slowlog-log-slower-than", "1.5"),
        ("activedefrag", "yes"),
        ("activedefrag", "true"),
        ("notify-keyspace-events", "Ex"),
        ("notify-keyspace-events", "Q"),
        ("io-threads", "4"),
        ("requirepass", "hunter2"),
        ("replicaof", "evil 6379"),
        ("dir", "/tmp"),
    ];
    for (key, value) in cases {
        let mut cr = render::parse(
            "apiVersion: counterstack.io/v1alpha1\nkind: CounterApp\nmetadata: {name: demo}\nspec: {}",
        )
        .unwrap();
        cr.spec.redis.config.insert(key.to_string(), value.to_string());
        let offline = counterstack::children::validate(&cr);
        let cel = validate_cel(&cr, None);
        assert_eq!(offline.is_ok(), cel.is_ok(), "{key}={value}: offline {offline:?}, CEL {cel:?}");
        assert_eq!(offline.is_ok(), redis_config::check(key, value).is_ok(), "{key}={value}");
        if let Err(e) = cel {
            let e = e.to_string();
            assert!(e.contains("spec.redis.config"), "{key}={value}: {e}");
            if redis_config::setting(key).is_none() {
                assert!(e.contains(&redis_config::allowed_list()), "the message lists the allowed keys: {e}");
            }
        }
    }
}
