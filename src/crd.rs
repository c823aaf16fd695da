//! The generated CustomResourceDefinition (`counterstack crd`, `crds/counterapp.yaml`).

use kube::CustomResourceExt;

use crate::api::CounterApp;

/// The CRD as YAML, exactly what `crds/counterapp.yaml` holds.
pub fn yaml() -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&CounterApp::crd())
}
