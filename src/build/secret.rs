//! Secret `NAME-redis-auth`: the Redis password.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::labels::Component;
use super::{Inputs, meta, names};
use crate::api::CounterApp;

/// The auth Secret. Built with `data`, never `stringData`: a Secret applied with
/// `stringData` is rewritten on every server-side apply. The password comes from
/// `inputs` (read back from the existing Secret or generated once by the caller), so
/// building never rotates it.
pub fn redis_auth(cr: &CounterApp, inputs: &Inputs) -> Secret {
    let name = names::redis_auth(meta::app_name(cr));
    Secret {
        metadata: meta::object_meta(cr, name, Component::Redis),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            names::PASSWORD_KEY.to_string(),
            ByteString(inputs.redis_password.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}
