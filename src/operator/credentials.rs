//! The stack's secrets as the reconcile needs them: every Redis user's passwords (read
//! back from its Secret, generated once, moved on by a `counterstack.io/rotate`
//! request), and the TLS Secret of `spec.redis.tls`.
//!
//! A rotation lives in the user's Secret: `password` is what clients use, `previous`
//! what Redis must still accept. It starts when the two differ (someone wrote a new
//! `password`, or the operator did for the annotation) and ends when the operator
//! settles it (`previous` := `password`) after every client moved (see
//! [`rotation_done`]); `redis::acl_sync` keeps the nodes in line with both steps.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};

use super::{Context, Error, apply, cache};
use crate::acl::random_password;
use crate::acl::{RedisUser, password_problem};
use crate::api::{CounterApp, ROTATE_ANNOTATION};
use crate::children::statefulset::tls_secret_name;
use crate::children::{Passwords, TlsInputs, UserPassword};
use crate::dial::TlsCa;
use crate::names;

/// What [`read`] found.
pub struct StackSecrets {
    pub passwords: Passwords,
    /// Each user's Secret metadata as cached (None: it does not exist yet).
    pub live: BTreeMap<RedisUser, Option<ObjectMeta>>,
    /// Users whose rotation the annotation started in this reconcile.
    pub started: Vec<RedisUser>,
    /// Users whose Secret this reconcile created (with a new password).
    pub created: Vec<RedisUser>,
    /// The annotation's value, when present (removed once the Secrets are applied).
    pub rotate_request: Option<String>,
    /// Entries of the annotation that name no user.
    pub unknown_targets: Vec<String>,
}

/// Read every user's Secret from the cache; one the cache does not have is created with
/// a new password by a `POST` the API server refuses when it exists (then it is read):
/// a cache that merely lags must never replace a password. A new stack so costs one
/// request per Secret, not a read and an apply. Then apply a rotation request.
pub async fn read(app: &CounterApp, ctx: &Context, ns: &str, name: &str) -> Result<StackSecrets, Error> {
    let mut live = BTreeMap::new();
    let mut found = BTreeMap::new();
    let mut created = vec![];
    // The cached ones first: a bad one ends the pass before anything is created.
    let mut missing = vec![];
    for user in RedisUser::ALL {
        match cache::get(&ctx.caches.secrets, ns, &names::redis_user_secret(name, user.name())) {
            Some(s) => {
                found.insert(user, read_user_password(&s)?);
                live.insert(user, Some(s.metadata.clone()));
            }
            None => missing.push(user),
        }
    }
    // A new stack has none of them cached: the three requests go out together.
    let reads = missing.into_iter().map(|user| async move {
        let new =
            crate::children::secret::redis_user_with(app, user, &UserPassword::settled(random_password()));
        if let Some(made) = apply::create_new(&ctx.client, &ctx.applied, name, new).await? {
            return Ok::<_, Error>((user, Some(made), true));
        }
        let secret_name = names::redis_user_secret(name, user.name());
        Ok((user, apply::get::<Secret>(&ctx.client, ns, &secret_name).await?, false))
    });
    for (user, secret, made) in futures::future::try_join_all(reads).await? {
        let Some(secret) = secret else {
            // Deleted between the refused create and the read: the next pass creates it.
            return Err(Error::SecretVanished(names::redis_user_secret(name, user.name())));
        };
        found.insert(user, read_user_password(&secret)?);
        if made {
            created.push(user);
        }
        live.insert(user, Some(secret.metadata));
    }
    // Every user was read above; the fallback only keeps this total.
    let mut passwords =
        Passwords::from_fn(|u| found.remove(&u).unwrap_or_else(|| UserPassword::settled(random_password())));
    let rotate_request = app.annotations().get(ROTATE_ANNOTATION).cloned();
    let (targets, unknown_targets) = rotate_targets(rotate_request.as_deref().unwrap_or_default());
    let mut started = vec![];
    for user in targets {
        let pw = passwords.get_mut(user);
        // One rotation at a time per user: a request during one is already served; a
        // Secret created just now has nothing to rotate from.
        if !pw.rotating() && !created.contains(&user) {
            *pw = UserPassword { password: random_password(), previous: pw.password.clone() };
            started.push(user);
        }
    }
    Ok(StackSecrets { passwords, live, started, created, rotate_request, unknown_targets })
}

/// The users a `counterstack.io/rotate` value names, and the entries naming none.
pub fn rotate_targets(value: &str) -> (Vec<RedisUser>, Vec<String>) {
    let mut users = vec![];
    let mut unknown = vec![];
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match RedisUser::from_rotate_target(entry) {
            Some(us) => users.extend(us),
            None => unknown.push(entry.to_string()),
        }
    }
    users.sort();
    users.dedup();
    (users, unknown)
}

/// A user's passwords from its Secret: `password` must be there and valid; a missing
/// `previous` means no rotation is running.
fn read_user_password(secret: &Secret) -> Result<UserPassword, Error> {
    let key = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8(b.0.clone()).map(|s| s.trim_end_matches(['\r', '\n']).to_string()))
    };
    let bad = |problem: String| Error::BadSecret { name: secret.name_any(), problem };
    let password = match key(names::PASSWORD_KEY) {
        None => return Err(bad("is missing".into())),
        Some(Err(_)) => return Err(bad("is not UTF-8".into())),
        Some(Ok(p)) => p,
    };
    if let Some(problem) = password_problem(&password) {
        return Err(bad(problem));
    }
    let previous = match key(names::PREVIOUS_KEY) {
        Some(Ok(p)) if password_problem(&p).is_none() => p,
        // Missing or unusable: nothing older to keep accepting.
        _ => password.clone(),
    };
    Ok(UserPassword { password, previous })
}

/// Remove the annotation once its rotations started (their new passwords are in the
/// Secrets), so that the same request can be made again later.
pub async fn clear_rotate_request(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let api: Api<CounterApp> = Api::namespaced(ctx.client.clone(), ns);
    let body = serde_json::json!({ "metadata": { "annotations": { ROTATE_ANNOTATION: null } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|e| Error::kube(format!("remove {ROTATE_ANNOTATION} from CounterApp {ns}/{name}"), e))?;
    Ok(())
}

/// Every client of `user` uses the new password. Redis nodes are checked by the caller
/// (every node accepts it); here only what else uses it: the web pods must all run the
/// template built with it (the Deployment rolled out at its current generation).
/// Replicas get the new `masterauth` live and the operator uses the new password first,
/// so for those users the nodes are all there is.
pub fn rotation_done(user: RedisUser, web: Option<&Deployment>) -> bool {
    match user {
        RedisUser::Web => web.is_some_and(deployment_rolled_out),
        RedisUser::Replication | RedisUser::Operator => true,
    }
}

fn deployment_rolled_out(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (d.spec.as_ref(), d.status.as_ref()) else { return false };
    let want = spec.replicas.unwrap_or(1);
    let generation = d.metadata.generation.unwrap_or_default();
    status.observed_generation.unwrap_or_default() >= generation
        && status.updated_replicas.unwrap_or_default() >= want
        && status.replicas.unwrap_or_default() == status.updated_replicas.unwrap_or_default()
        && status.available_replicas.unwrap_or_default() >= want
}

/// The TLS Secret's content: the CA for the operator's connections, hashes for the pod
/// templates.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    pub ca: TlsCa,
    pub inputs: TlsInputs,
}

/// Read the TLS Secret of `spec.redis.tls` (cache first: cert-manager's carries our
/// labels; a user's own Secret does not, so it is read live). `Ok(None)` without TLS;
/// `Err(message)` while it is missing or incomplete (cert-manager not done yet).
pub async fn read_tls(
    app: &CounterApp,
    ctx: &Context,
    ns: &str,
) -> Result<Option<Result<TlsMaterial, String>>, Error> {
    let Some(secret_name) = tls_secret_name(app) else { return Ok(None) };
    let secret = match cache::get(&ctx.caches.secrets, ns, &secret_name) {
        Some(s) => Some((*s).clone()),
        None => apply::get::<Secret>(&ctx.client, ns, &secret_name).await?,
    };
    let Some(secret) = secret else {
        return Ok(Some(Err(format!("waiting for the TLS Secret {secret_name}"))));
    };
    let data = secret.data.unwrap_or_default();
    let get = |k: &str| data.get(k).map(|b| b.0.clone()).filter(|b| !b.is_empty());
    let (Some(crt), Some(key), Some(ca)) = (get("tls.crt"), get("tls.key"), get("ca.crt")) else {
        return Ok(Some(Err(format!("TLS Secret {secret_name} needs tls.crt, tls.key and ca.crt"))));
    };
    let sha = |parts: &[&[u8]]| {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        hex::encode(h.finalize())
    };
    Ok(Some(Ok(TlsMaterial {
        inputs: TlsInputs { ca_sha256: sha(&[&ca]), cert_sha256: sha(&[&crt, &key, &ca]) },
        ca: TlsCa::from_pem(ca),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta { name: Some("demo-redis-auth-web".into()), ..Default::default() },
            data: Some(
                data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn targets_of_the_annotation() {
        assert_eq!(rotate_targets("redis-web"), (vec![RedisUser::Web], vec![]));
        assert_eq!(
            rotate_targets("redis-operator, redis-web,bogus"),
            (vec![RedisUser::Web, RedisUser::Operator], vec!["bogus".to_string()])
        );
        assert_eq!(rotate_targets("redis-all").0, RedisUser::ALL.to_vec());
        assert_eq!(rotate_targets(""), (vec![], vec![]));
    }

    #[test]
    fn a_secret_reads_as_settled_or_rotating() {
        let p = "A".repeat(32);
        let q = "B".repeat(32);
        assert_eq!(
            read_user_password(&secret(&[("password", &p)])).unwrap(),
            UserPassword::settled(p.clone())
        );
        let with_newline = format!("{p}\n");
        assert_eq!(read_user_password(&secret(&[("password", &with_newline)])).unwrap().password, p);
        let r = read_user_password(&secret(&[("password", &q), ("previous", &p)])).unwrap();
        assert!(r.rotating() && r.password == q && r.previous == p);
    }

    #[test]
    fn a_bad_password_names_the_secret_and_the_problem() {
        let e = read_user_password(&secret(&[("password", "short")])).unwrap_err().to_string();
        assert!(e.contains("demo-redis-auth-web") && e.contains("16 to 256"), "{e}");
        let e = read_user_password(&secret(&[])).unwrap_err().to_string();
        assert!(e.contains("is missing"), "{e}");
    }
}
