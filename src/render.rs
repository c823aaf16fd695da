//! `counterstack render` (the CLI side of the builders): read a CounterApp from a file,
//! check it the way the API server would (schema: unknown fields and types; bounds; CEL
//! rules), build every child with the operator's builders and print them as one YAML
//! stream.

use std::io::Read;
use std::path::PathBuf;

use kube::Resource;
use serde_json::Value;

use crate::acl::{password_problem, random_password};
use crate::api::CounterApp;
use crate::children::{self, Children, Inputs, Passwords, UserPassword, all, validate, validate_cel};

/// Errors of `counterstack render`: reading and parsing its input, then the builders'.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The input is not YAML, or not a mapping.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// The CounterApp is refused (each message names its field), or cannot be built.
    #[error(transparent)]
    Children(#[from] children::Error),
}

impl Error {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Children(children::Error::invalid(field, message))
    }
}

/// `counterstack render` arguments.
#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// CounterApp YAML file (`-` for stdin).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Web image used when the CR sets none (the operator's --default-web-image).
    #[arg(long, default_value = crate::api::DEFAULT_WEB_IMAGE)]
    pub default_web_image: String,
    /// Password to put in every Redis user's Secret (default: a random 32-character one
    /// per user, as the operator generates on first reconcile). Set it for reproducible
    /// output.
    #[arg(long, env = "COUNTERSTACK_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Namespace the operator runs in, which the Redis NetworkPolicy admits.
    #[arg(long, default_value = "counterstack-system")]
    pub operator_namespace: String,
}

/// Entry point of `counterstack render`.
pub fn command(args: &RenderArgs) -> Result<String, Error> {
    let source = args.file.display().to_string();
    let text = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::Read { path: source.clone(), source: e })?;
        s
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| Error::Read { path: source.clone(), source: e })?
    };
    let cr = parse(&text)?;
    if let Some(problem) = args.redis_password.as_deref().and_then(password_problem) {
        return Err(Error::invalid("--redis-password", problem));
    }
    // Render is not the operator: fresh passwords per run, like the operator's first
    // reconcile. `--redis-password` makes the output reproducible.
    let passwords = Passwords::from_fn(|_| {
        UserPassword::settled(args.redis_password.clone().unwrap_or_else(random_password))
    });
    let inputs = Inputs {
        default_web_image: args.default_web_image.clone(),
        passwords,
        // Render reads no cluster: the TLS Secret's content only moves pod template
        // hashes, which render leaves as without it.
        tls: None,
        operator_namespace: Some(args.operator_namespace.clone()),
    };
    to_yaml(&all(&cr, &inputs)?)
}

/// Parse and check a CounterApp YAML document: YAML syntax, apiVersion/kind, unknown
/// fields (against the CRD schema), types, then `validate` and the CEL rules.
pub fn parse(text: &str) -> Result<CounterApp, Error> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| Error::Yaml(e.to_string()))?;
    if !value.is_object() {
        return Err(Error::Yaml("expected a CounterApp object (a YAML mapping)".to_string()));
    }
    let api_version = CounterApp::api_version(&());
    let kind = CounterApp::kind(&());
    for (field, want) in [("apiVersion", api_version.as_ref()), ("kind", kind.as_ref())] {
        match value.get(field).and_then(Value::as_str) {
            Some(v) if v == want => {}
            got => {
                return Err(Error::invalid(
                    field,
                    format!("must be {want:?}, got {:?}", got.unwrap_or("nothing")),
                ));
            }
        }
    }
    let mut value = value;
    check_unknown_fields(&mut value)?;
    let cr: CounterApp = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let missing = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`'));
        match (path.as_str(), missing) {
            (".", Some("spec")) => Error::invalid("spec", "is required (`spec: {}` takes every default)"),
            (".", Some(field)) => Error::invalid(field, "is required"),
            (parent, Some(field)) => Error::invalid(format!("{parent}.{field}"), "is required"),
            (".", None) => Error::invalid("(root)", message),
            (_, None) => Error::invalid(path.clone(), message),
        }
    })?;
    validate(&cr)?;
    validate_cel(&cr, None)?;
    Ok(cr)
}

/// Reject fields the CRD schema does not define (the API server would prune them
/// silently, so a typo such as `replica:` would otherwise be ignored). Also turns
/// numbers where the schema says int-or-string (quantities such as `cpu: 1`) into
/// strings, as the API server accepts both.
fn check_unknown_fields(value: &mut Value) -> Result<(), Error> {
    let schema = crate::crd::open_api_schema()
        .ok_or_else(|| children::Error::Cel("the generated CRD has no openAPIV3Schema".to_string()))?;
    let schema = serde_json::to_value(schema)
        .map_err(|e| children::Error::Serialize { kind: "CRD schema", source: e })?;
    let mut unknown = Vec::new();
    walk(&schema, value, "", &mut unknown);
    match unknown.into_iter().next() {
        None => Ok(()),
        Some((path, known)) => Err(Error::invalid(
            path,
            if known.is_empty() {
                "unknown field".to_string()
            } else {
                format!("unknown field (known fields here: {})", known.join(", "))
            },
        )),
    }
}

fn walk(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<(String, Vec<String>)>) {
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true)
        && let Value::Number(n) = value
    {
        *value = Value::String(n.to_string());
        return;
    }
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if path == "metadata" || (props.is_none() && additional.is_none()) {
                // An open object: metadata is checked by the API server's ObjectMeta
                // rules, not by the CRD schema.
                return;
            }
            for (key, child) in map.iter_mut() {
                // The CRD schema leaves out the fields every object has.
                if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match (props.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => walk(s, child, &join(key), unknown),
                    (None, None) => {
                        let known = props.map(|p| p.keys().cloned().collect()).unwrap_or_default();
                        unknown.push((join(key), known));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(s, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// The YAML stream of every child, in a stable order: config first (Secret,
/// ConfigMap), then Services, workloads, disruption budgets.
pub fn to_yaml(c: &Children) -> Result<String, Error> {
    fn doc<T: serde::Serialize>(out: &mut String, kind: &'static str, obj: &T) -> Result<(), Error> {
        let y = serde_yaml_ng::to_string(obj)
            .map_err(|e| Error::Yaml(format!("cannot serialize {kind}: {e}")))?;
        out.push_str("---\n");
        out.push_str(&y);
        Ok(())
    }
    let mut out = String::new();
    for secret in &c.redis_user_secrets {
        doc(&mut out, "Secret", secret)?;
    }
    doc(&mut out, "ConfigMap", &c.redis_config)?;
    doc(&mut out, "Service", &c.redis_headless_service)?;
    doc(&mut out, "Service", &c.redis_primary_service)?;
    doc(&mut out, "Service", &c.redis_replicas_service)?;
    doc(&mut out, "Service", &c.web_service)?;
    doc(&mut out, "StatefulSet", &c.redis_statefulset)?;
    doc(&mut out, "Deployment", &c.web_deployment)?;
    doc(&mut out, "PodDisruptionBudget", &c.web_pdb)?;
    doc(&mut out, "PodDisruptionBudget", &c.redis_pdb)?;
    if let Some(hpa) = &c.web_hpa {
        doc(&mut out, "HorizontalPodAutoscaler", hpa)?;
    }
    if let Some(np) = &c.redis_network_policy {
        doc(&mut out, "NetworkPolicy", np)?;
    }
    if let Some(cert) = &c.redis_certificate {
        doc(&mut out, "Certificate", cert)?;
    }
    Ok(out)
}
