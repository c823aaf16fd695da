//! Deployment `NAME-web`: the counter web service (`counterstack web`).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, KeyToPath, PodSpec, PodTemplateSpec, Probe,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::service::WEB_PORT_NAME;
use super::{Inputs, meta, statefulset};
use crate::acl::{self, RedisUser};
use crate::api::{CounterApp, ReadFrom};
use crate::labels::{self, Component};
use crate::names;

/// UID/GID the web container runs as (the distroless "nonroot" user).
pub const WEB_UID: i64 = 65532;
const CONTAINER: &str = "web";

/// Where the web user's Secret is mounted (`password`).
pub const AUTH_PATH: &str = "/etc/counterstack/redis-auth";
/// Where the CA of `spec.redis.tls` is mounted (`ca.crt`).
pub const TLS_PATH: &str = "/etc/counterstack/redis-tls";
const AUTH_VOLUME: &str = "redis-auth";

/// Environment of the web container (the variables of the web-service issue). The
/// password is a file the web service reads at every new connection, so a rotated
/// Secret reaches it without a restart where the kubelet refreshes the volume.
pub fn env(cr: &CounterApp) -> Vec<EnvVar> {
    let app = meta::app_name(cr);
    let tls = cr.spec.redis.tls.is_some();
    let plain =
        |name: &str, value: String| EnvVar { name: name.to_string(), value: Some(value), value_from: None };
    let read_from = match cr.spec.web.read_from {
        ReadFrom::Primary => "primary",
        ReadFrom::Replicas => "replicas",
    };
    vec![
        plain("LISTEN_ADDR", format!("0.0.0.0:{}", cr.spec.web.port)),
        plain("REDIS_URL", names::redis_url(&names::redis_primary(app), tls)),
        plain("REDIS_REPLICA_URL", names::redis_url(&names::redis_replicas(app), tls)),
        plain("REDIS_USERNAME", RedisUser::Web.name().to_string()),
        plain("REDIS_PASSWORD_FILE", format!("{AUTH_PATH}/{}", names::PASSWORD_KEY)),
        plain("READ_FROM", read_from.to_string()),
        plain("SYNC_REPLICAS", cr.spec.sync_replicas().to_string()),
    ]
    .into_iter()
    .chain(tls.then(|| plain("REDIS_TLS_CA_FILE", format!("{TLS_PATH}/ca.crt"))))
    .collect()
}

fn http_probe(path: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(WEB_PORT_NAME.to_string()),
            scheme: Some("HTTP".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

pub fn web(cr: &CounterApp, inputs: &Inputs) -> Deployment {
    let app = meta::app_name(cr);
    let selector = labels::selector(app, Component::Web);
    let env = env(cr);
    let (tmp_volume, tmp_mount) = meta::tmp_volume();

    // Pods read their configuration from env at start. The web password's hash is part
    // of the hash too: a rotation rolls the web pods onto the new password (after Redis
    // accepts it, and before Redis forgets the old one), so it never depends on how soon
    // a kubelet refreshes the mounted file. So is the CA's: a new CA rolls them too.
    // Serializing a Vec<EnvVar> cannot fail; the fallback only keeps this total.
    let env_json = serde_json::to_vec(&env).unwrap_or_default();
    let password = acl::password_hash(&inputs.passwords.web.password);
    let mut parts = vec![("env", env_json.as_slice()), ("password-sha256", password.as_bytes())];
    if let Some(tls) = &inputs.tls {
        parts.push(("ca-sha256", tls.ca_sha256.as_bytes()));
    }
    let hash = meta::config_hash(parts);
    let tls_volume = statefulset::tls_volume(cr, Some("ca.crt"));

    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(cr.spec.web_image(&inputs.default_web_image).to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(vec!["web".to_string()]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(WEB_PORT_NAME.to_string()),
            container_port: cr.spec.web.port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        resources: cr.spec.web.resources.clone(),
        startup_probe: Some(http_probe("/livez", 2, 30)),
        // Readiness follows Redis reachability: a pod without Redis leaves the Service.
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        // Liveness never depends on Redis, or a Redis outage would restart every pod.
        liveness_probe: Some(http_probe("/livez", 10, 3)),
        security_context: Some(meta::container_security_context(WEB_UID)),
        volume_mounts: Some(
            [
                tmp_mount,
                VolumeMount {
                    name: AUTH_VOLUME.to_string(),
                    mount_path: AUTH_PATH.to_string(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            ]
            .into_iter()
            .chain(tls_volume.as_ref().map(|v| VolumeMount {
                name: v.name.clone(),
                mount_path: TLS_PATH.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            }))
            .collect(),
        ),
        ..Container::default()
    };

    let mut pod = PodSpec {
        containers: vec![container],
        image_pull_secrets: meta::image_pull_secrets(cr),
        // fsGroup: the mounted Secrets are readable by the pod's group only.
        security_context: Some(meta::pod_security_context(WEB_UID, Some(WEB_UID))),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // Longer than the web service's drain on SIGTERM.
        termination_grace_period_seconds: Some(30),
        volumes: Some(
            [
                tmp_volume,
                Volume {
                    name: AUTH_VOLUME.to_string(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(names::redis_user_secret(app, RedisUser::Web.name())),
                        default_mode: Some(0o440),
                        optional: Some(false),
                        items: Some(vec![KeyToPath {
                            key: names::PASSWORD_KEY.to_string(),
                            path: names::PASSWORD_KEY.to_string(),
                            mode: None,
                        }]),
                    }),
                    ..Volume::default()
                },
            ]
            .into_iter()
            .chain(tls_volume)
            .collect(),
        ),
        ..PodSpec::default()
    };
    // Spread over nodes, per ReplicaSet (pod-template-hash), so a rollout or a drained
    // node that comes back gets pods again.
    let spread = meta::spread_over_nodes(&selector, Some(vec!["pod-template-hash".to_string()]));
    meta::apply_pod_options(&mut pod, &cr.spec.web.pod, &selector, spread);

    Deployment {
        metadata: meta::object_meta(cr, names::web(app), Component::Web),
        spec: Some(DeploymentSpec {
            // With autoscaling the HPA owns `replicas`: leaving it out of the apply keeps
            // the operator from fighting it (see operator/apply.rs for the hand-off).
            // Hibernated: none, whether or not autoscaling is on (its HPA is removed).
            replicas: if cr.spec.hibernate {
                Some(0)
            } else {
                cr.spec.web.autoscaling.is_none().then_some(cr.spec.web.replicas)
            },
            selector: LabelSelector { match_labels: Some(selector), match_expressions: None },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(meta::pod_template_meta(cr, Component::Web, &cr.spec.web.pod, hash)),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}
