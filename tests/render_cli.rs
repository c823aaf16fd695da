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
    assert_eq!(stdout.lines().filter(|l| *l == "---").count(), 10);
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
