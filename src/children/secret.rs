//! Secrets `NAME-redis-auth-USER`: one per Redis ACL user (`web`, `replication`,
//! `operator`), each with the password clients use (`password`) and the one a running
//! rotation moves away from (`previous`, equal to `password` otherwise).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{Inputs, meta};
use crate::acl::RedisUser;
use crate::api::CounterApp;
use crate::labels::Component;
use crate::names;

/// One user's Secret. Built with `data`, never `stringData`: a Secret applied with
/// `stringData` is rewritten on every server-side apply. The passwords come from
/// `inputs` (read back from the existing Secret, generated once by the caller, or moved
/// on by a rotation), so building never rotates anything by itself.
pub fn redis_user(cr: &CounterApp, inputs: &Inputs, user: RedisUser) -> Secret {
    redis_user_with(cr, user, inputs.passwords.get(user))
}

/// [`redis_user`] from one user's passwords alone (the operator creates a missing Secret
/// before it has every input).
pub fn redis_user_with(cr: &CounterApp, user: RedisUser, pw: &super::UserPassword) -> Secret {
    let name = names::redis_user_secret(meta::app_name(cr), user.name());
    Secret {
        metadata: meta::object_meta(cr, name, Component::Redis),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([
            (names::PASSWORD_KEY.to_string(), ByteString(pw.password.as_bytes().to_vec())),
            (names::PREVIOUS_KEY.to_string(), ByteString(pw.previous.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    }
}
