//! `counterstack render` as a user runs it: exit codes and messages.

use assert_cmd::Command;

fn render() -> Command {
    let mut cmd = Command::cargo_bin("counterstack").unwrap();
    cmd.arg("render").env_remove("COUNTERSTACK_REDIS_PASSWORD");
    cmd
}

fn example(path: &str) -> String {
    format!("{}/manifests/examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn stderr_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "expected failure, got success with {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "nothing may be printed on stdout on failure");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn good_file_renders_every_object() {
    let out = render().args(["-f", &example("counterapp.yaml")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Twelve children (one Secret per Redis user) plus the Redis NetworkPolicy (on by default).
    assert_eq!(stdout.lines().filter(|l| *l == "---").count(), 13);
    for kind in ["Deployment", "StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"] {
        assert!(stdout.contains(&format!("kind: {kind}\n")), "{kind} missing");
    }
}

#[test]
fn generated_password_is_random_and_fixed_password_is_reproducible() {
    let run = |extra: &[&str]| {
        let out = render().args(["-f", &example("counterapp-full.yaml")]).args(extra).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert_ne!(run(&[]), run(&[]), "each render generates a new password");
    let fixed = ["--redis-password", "fixed-password-for-tests"];
    assert_eq!(run(&fixed), run(&fixed));
}

#[test]
fn stdin_is_accepted() {
    let text = std::fs::read_to_string(example("counterapp.yaml")).unwrap();
    render().args(["-f", "-"]).write_stdin(text).assert().success();
}

#[test]
fn missing_file_fails() {
    let err = stderr_of(render().args(["-f", "/nonexistent/capp.yaml"]));
    assert!(err.contains("/nonexistent/capp.yaml"), "{err}");
}

#[test]
fn bad_yaml_fails() {
    let err = stderr_of(render().args(["-f", "-"]).write_stdin("apiVersion: [unclosed\nkind: CounterApp\n"));
    assert!(err.contains("invalid YAML"), "{err}");
}

#[test]
fn unknown_field_fails_naming_it() {
    let err = stderr_of(render().args(["-f", &example("invalid/unknown-field.yaml")]));
    assert!(err.contains("spec.web.replica"), "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn invalid_value_fails_naming_the_field() {
    let err = stderr_of(render().args(["-f", &example("invalid/web-replicas-zero.yaml")]));
    assert!(err.contains("spec.web.replicas: must be between 1 and 100, got 0"), "{err}");
}

#[test]
fn wrong_kind_fails() {
    let err = stderr_of(
        render().args(["-f", "-"]).write_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
    );
    assert!(err.contains("apiVersion"), "{err}");
}

#[test]
fn every_invalid_example_fails_on_the_command_line() {
    let dir = format!("{}/manifests/examples/invalid", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let err = stderr_of(render().arg("-f").arg(&path));
            assert!(err.starts_with("error: "), "{}: {err}", path.display());
        }
    }
}

/// `kubectl get capp demo -o yaml | counterstack render -f -`: server-side metadata
/// and status are accepted, the uid gives owner references, and the current primary
/// from the status reaches no child (Redis pods ask their peers for it).
#[test]
fn live_object_from_kubectl_renders_with_owner_and_current_primary() {
    let live = r#"
apiVersion: counterstack.io/v1alpha1
kind: CounterApp
metadata:
  name: demo
  namespace: apps
  uid: 2f1c8a52-6a55-4c3e-9d0c-0b1e2f3a4b5c
  resourceVersion: "12345"
  generation: 3
  creationTimestamp: "2026-01-01T00:00:00Z"
  labels:
    argocd.argoproj.io/instance: demo
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
spec:
  web:
    replicas: 4
status:
  observedGeneration: 3
  conditions:
    - type: Ready
      status: "True"
      reason: Ready
      message: all good
      lastTransitionTime: "2026-01-01T00:00:00Z"
  redis:
    primary: demo-redis-2
    epoch: 2
"#;
    let out = render()
        .args(["-f", "-", "--redis-password", "xxxxxxxxxxxxxxxxxxxx"])
        .write_stdin(live)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("uid: 2f1c8a52-6a55-4c3e-9d0c-0b1e2f3a4b5c").count(), 13);
    assert!(!stdout.contains("demo-redis-2"), "no child names the primary: {stdout}");
    assert!(!stdout.contains("argocd"), "the CR's labels must not reach the children");
    assert!(!stdout.contains("last-applied"), "the CR's annotations must not reach the children");
}

#[test]
fn missing_spec_and_required_fields_are_named() {
    let head = "apiVersion: counterstack.io/v1alpha1\nkind: CounterApp\n";
    let err = stderr_of(render().args(["-f", "-"]).write_stdin(format!("{head}metadata: {{name: demo}}\n")));
    assert!(err.contains("spec: is required"), "{err}");
    let err = stderr_of(render().args(["-f", "-"]).write_stdin(format!("{head}spec: {{}}\n")));
    assert!(err.contains("metadata: is required"), "{err}");
    let err = stderr_of(
        render()
            .args(["-f", "-"])
            .write_stdin(format!("{head}metadata: {{name: demo}}\nspec: {{imagePullSecrets: [{{}}]}}\n")),
    );
    assert!(err.contains("spec.imagePullSecrets[0].name: "), "{err}");
}
