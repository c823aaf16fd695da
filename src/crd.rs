//! The generated CustomResourceDefinition (`counterstack crd`, `crds/counterapp.yaml`).

use kube::CustomResourceExt;

use crate::api::CounterApp;

/// The CRD as YAML, exactly what `crds/counterapp.yaml` holds.
pub fn yaml() -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&CounterApp::crd())
}

/// The generated CRD's `openAPIV3Schema` (render checks unknown fields and CEL rules
/// against it).
pub fn open_api_schema()
-> Option<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps> {
    CounterApp::crd().spec.versions.into_iter().next()?.schema?.open_api_v3_schema
}
