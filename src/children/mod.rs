//! PURE builders: CounterApp + [`Inputs`] -> the child objects ([`Children`]), one file
//! per kind. No I/O, no clock, no randomness: what `counterstack render` prints is what
//! the operator applies.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use kube::api::DynamicObject;

use crate::acl::RedisUser;
use crate::api::CounterApp;

pub mod backup_job;
pub mod certificate;
pub mod configmap;
pub mod deployment;
pub mod hpa;
pub mod meta;
pub mod networkpolicy;
pub mod pdb;
pub mod restore;
pub mod secret;
pub mod service;
pub mod statefulset;
mod validate;

pub use validate::{
    FieldError, FieldErrors, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_quantity,
    is_storage_size, validate, validate_cel,
};

/// Errors of building.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fields failed validation (each names its field).
    #[error("{0}")]
    Invalid(FieldErrors),
    /// The CRD's CEL rules rejected the CounterApp (each line names its field).
    #[error("{0}")]
    Cel(String),
    #[error("cannot serialize {kind}: {source}")]
    Serialize { kind: &'static str, source: serde_json::Error },
}

impl Error {
    /// A single field error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid(FieldErrors(vec![FieldError { field: field.into(), message: message.into() }]))
    }
}

/// What the builders need besides the CR. Everything non-deterministic (passwords) or
/// read from other objects (the TLS Secret) is decided outside and passed in.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// Image for `spec.web.image` when the CR sets none (`--default-web-image`).
    pub default_web_image: String,
    /// The Redis users' passwords: read back from their Secrets, or generated once by
    /// the caller when a Secret does not exist yet.
    pub passwords: Passwords,
    /// What the TLS Secret holds now (with `spec.redis.tls`): its content decides when
    /// pods restart for a renewed certificate.
    pub tls: Option<TlsInputs>,
    /// Namespace the operator runs in (its `POD_NAMESPACE`): the Redis NetworkPolicy
    /// admits it. `None` (an operator outside the cluster) admits no extra namespace.
    pub operator_namespace: Option<String>,
}

/// One Redis user's passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPassword {
    /// What clients use.
    pub password: String,
    /// What a running rotation moves away from; equal to `password` otherwise.
    pub previous: String,
}

impl UserPassword {
    /// A password with no rotation running.
    pub fn settled(password: impl Into<String>) -> Self {
        let password = password.into();
        Self { previous: password.clone(), password }
    }

    /// A rotation is running: Redis must still accept `previous`.
    pub fn rotating(&self) -> bool {
        self.password != self.previous
    }
}

impl std::fmt::Debug for UserPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password.
        f.debug_struct("UserPassword").field("rotating", &self.rotating()).finish_non_exhaustive()
    }
}

/// Every Redis user's passwords.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passwords {
    pub web: UserPassword,
    pub replication: UserPassword,
    pub operator: UserPassword,
}

impl Passwords {
    /// Each user's passwords as `f` gives them.
    pub fn from_fn(mut f: impl FnMut(RedisUser) -> UserPassword) -> Self {
        Self {
            web: f(RedisUser::Web),
            replication: f(RedisUser::Replication),
            operator: f(RedisUser::Operator),
        }
    }

    /// The same settled password for every user (tests and examples).
    pub fn same(password: &str) -> Self {
        Self::from_fn(|_| UserPassword::settled(password))
    }

    pub fn get(&self, user: RedisUser) -> &UserPassword {
        match user {
            RedisUser::Web => &self.web,
            RedisUser::Replication => &self.replication,
            RedisUser::Operator => &self.operator,
        }
    }

    pub fn get_mut(&mut self, user: RedisUser) -> &mut UserPassword {
        match user {
            RedisUser::Web => &mut self.web,
            RedisUser::Replication => &mut self.replication,
            RedisUser::Operator => &mut self.operator,
        }
    }
}

/// The TLS Secret's content, as far as pod templates depend on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInputs {
    /// SHA-256 of `ca.crt`: the web pods restart when the CA changes.
    pub ca_sha256: String,
    /// SHA-256 of `tls.crt` and `ca.crt`: the Redis pods restart (one by one, the
    /// primary handed over) when the certificate is renewed.
    pub cert_sha256: String,
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
    /// One Secret per Redis user, in `RedisUser::ALL` order.
    pub redis_user_secrets: Vec<Secret>,
    pub redis_pdb: PodDisruptionBudget,
    /// With `spec.web.autoscaling` only.
    pub web_hpa: Option<HorizontalPodAutoscaler>,
    /// With `spec.networkPolicy.enabled` only.
    pub redis_network_policy: Option<NetworkPolicy>,
    /// With `spec.redis.tls.issuerRef` only: a cert-manager Certificate.
    pub redis_certificate: Option<DynamicObject>,
}

/// Build every child of `cr`. Runs `validate` first, so every builder may rely on a
/// valid spec (name present and short enough, bounds respected).
///
/// Children are namespaced like the CR; a CR without a namespace (rendered offline
/// from a file without one) gives children without one. A CR without a uid gives
/// children without an owner reference (see `meta::object_meta`).
pub fn all(cr: &CounterApp, inputs: &Inputs) -> Result<Children, Error> {
    validate(cr)?;
    Ok(Children {
        web_deployment: deployment::web(cr, inputs),
        web_service: service::web(cr),
        web_pdb: pdb::web(cr),
        redis_statefulset: statefulset::redis(cr, inputs),
        redis_headless_service: service::redis_headless(cr),
        redis_primary_service: service::redis_primary(cr),
        redis_replicas_service: service::redis_replicas(cr),
        redis_config: configmap::redis(cr),
        redis_user_secrets: RedisUser::ALL.iter().map(|u| secret::redis_user(cr, inputs, *u)).collect(),
        redis_pdb: pdb::redis(cr),
        web_hpa: hpa::web(cr),
        redis_network_policy: networkpolicy::redis(cr, inputs),
        redis_certificate: certificate::redis(cr),
    })
}
