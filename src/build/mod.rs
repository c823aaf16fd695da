//! PURE builders: CounterApp -> desired child objects, one file per kind. No I/O, no
//! clock, no randomness: what `counterstack render` prints is what the operator applies.
//!
//! (Interface fixed; bodies are being filled in by the builders work.)

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::api::CounterApp;

pub mod labels;
pub mod names;

/// Errors of building and rendering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not implemented yet")]
    NotImplemented,
}

/// What the builders need besides the CR. Everything non-deterministic (the password,
/// the current primary) is decided outside and passed in.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// Image for `spec.web.image` when the CR sets none (`--default-web-image`).
    pub default_web_image: String,
    /// The Redis password: read back from the existing auth Secret, or generated once
    /// by the caller when there is none.
    pub redis_password: String,
    /// Pod name of the current primary (`status.redis.primary`), if any; pod 0 otherwise.
    pub primary: Option<String>,
}

/// Every child object of one CounterApp, typed.
#[derive(Clone, Debug)]
pub struct Children {
    pub web_deployment: Deployment,
    pub web_service: Service,
    pub web_pdb: PodDisruptionBudget,
    pub redis_statefulset: StatefulSet,
    pub redis_headless_service: Service,
    pub redis_primary_service: Service,
    pub redis_replicas_service: Service,
    pub redis_config: ConfigMap,
    pub redis_auth: Secret,
    pub redis_pdb: PodDisruptionBudget,
}

/// Build every child of `cr`.
pub fn all(_cr: &CounterApp, _inputs: &Inputs) -> Result<Children, Error> {
    Err(Error::NotImplemented)
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
}

/// Entry point of `counterstack render`.
pub fn render_command(_args: &RenderArgs) -> Result<String, Error> {
    Err(Error::NotImplemented)
}
