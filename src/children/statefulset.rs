//! StatefulSet `NAME-redis`: 1 + `redis.replicas` Redis pods, each with its own
//! PersistentVolumeClaim `data-NAME-redis-K`.
//!
//! Pods carry no `counterstack.io/role` label from the template: the operator labels
//! each pod `primary` or `replica` after it has checked its actual role, which is what
//! the primary and replicas Services select on.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, SecretProjection,
    SecretVolumeSource, TCPSocketAction, Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::service::REDIS_PORT_NAME;
use super::{Inputs, configmap, meta};
use crate::api::{CounterApp, EXPORTER_PORT, REDIS_PORT, redis_config};
use crate::labels::{self, Component};
use crate::{acl, names};

/// UID/GID of the `redis` user in the official image.
pub const REDIS_UID: i64 = 999;
/// Name of the volumeClaimTemplate (PVCs are `data-NAME-redis-K`).
pub const DATA_VOLUME: &str = "data";
const CONFIG_VOLUME: &str = "config";
const CONTAINER: &str = "redis";

const AUTH_VOLUME: &str = "auth";
const RUN_VOLUME: &str = "run";
const TLS_VOLUME: &str = "tls";

/// `redis-cli PING` must answer PONG (fails while the node loads its dataset), as the
/// pod-local `monitor` user; `monitor.env` (written by the start script) holds its
/// password as `REDISCLI_AUTH`, off the command line, and redis-cli's TLS flags.
/// `MISCONF` counts as ready too: a primary that cannot persist (a full volume) refuses
/// PING like a write, but it serves reads and its replicas, and the web answers writes
/// with the cause only while the primary Service still reaches it.
const PING: &str = r#". /run/redis/monitor.env && redis-cli $CLI_TLS --user monitor -h 127.0.0.1 -p 6379 ping | grep -qE '^(PONG|MISCONF)'"#;

pub fn redis(cr: &CounterApp, inputs: &Inputs) -> StatefulSet {
    let app = meta::app_name(cr);
    let spec = &cr.spec.redis;
    let selector = labels::selector(app, Component::Redis);
    let (tmp_volume, tmp_mount) = meta::tmp_volume();

    let env = vec![
        EnvVar {
            name: "POD_NAME".to_string(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_string(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            name: "HEADLESS_SERVICE".to_string(),
            value: Some(names::redis_headless(app)),
            ..EnvVar::default()
        },
        EnvVar {
            name: "PRESTOP_WAIT".to_string(),
            value: Some(configmap::PRESTOP_WAIT_SECS.to_string()),
            ..EnvVar::default()
        },
    ];

    // Everything a Redis process reads at start except the pod count (scaling must not
    // make every pod outdated) and the user settings the replication manager applies
    // with CONFIG SET (a live setting must not restart anything); nothing names the
    // primary (nor may: a failover would restart every pod). A change gives the template
    // a new revision, which the replication manager rolls replicas-first (updateStrategy
    // OnDelete).
    //
    // Passwords are not part of it: a rotation changes them live (ACL SETUSER, CONFIG
    // SET masterauth), and a restarting pod reads the current ones from its Secrets. A
    // renewed TLS certificate is (Redis reads it at start): the pods restart one by one.
    let base = configmap::redis_conf_base(cr);
    let restart = redis_config::restart_lines(&cr.spec.redis.config);
    let rules = acl::rules_file();
    let mut parts = vec![
        ("redis.conf", base.as_bytes()),
        ("start.sh", configmap::START_SCRIPT.as_bytes()),
        ("acl-rules", rules.as_bytes()),
    ];
    // Only when present, so that a CounterApp without such settings keeps its hash.
    if !restart.is_empty() {
        parts.push(("restart-settings", restart.as_bytes()));
    }
    if let Some(tls) = &inputs.tls {
        parts.push(("tls", tls.cert_sha256.as_bytes()));
    }
    let hash = meta::config_hash(parts);
    let tls = cr.spec.redis.tls.is_some();

    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec![
            "sh".to_string(),
            format!("{}/{}", configmap::MOUNT_PATH, configmap::START_SCRIPT_KEY),
        ]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(REDIS_PORT_NAME.to_string()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        resources: spec.resources.clone(),
        // Loading a large AOF can take minutes: the startup probe only needs the port.
        startup_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(REDIS_PORT_NAME.to_string()),
                host: None,
            }),
            period_seconds: Some(5),
            failure_threshold: Some(60),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["sh".to_string(), "-c".to_string(), PING.to_string()]),
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(2),
            ..Probe::default()
        }),
        // tcp, not PING: a node that is busy loading or syncing must not be killed.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(REDIS_PORT_NAME.to_string()),
                host: None,
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(3),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        // A stopping primary waits for the operator's hand-over (FAILOVER TO).
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "sh".to_string(),
                        format!("{}/{}", configmap::MOUNT_PATH, configmap::PRESTOP_SCRIPT_KEY),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(meta::container_security_context(REDIS_UID)),
        volume_mounts: Some(
            [
                VolumeMount {
                    name: DATA_VOLUME.to_string(),
                    mount_path: configmap::DATA_PATH.to_string(),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: CONFIG_VOLUME.to_string(),
                    mount_path: configmap::MOUNT_PATH.to_string(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
                read_only_mount(AUTH_VOLUME, configmap::AUTH_PATH),
                VolumeMount {
                    name: RUN_VOLUME.to_string(),
                    mount_path: configmap::RUN_PATH.to_string(),
                    ..VolumeMount::default()
                },
                tmp_mount,
            ]
            .into_iter()
            .chain(tls.then(|| read_only_mount(TLS_VOLUME, configmap::TLS_PATH)))
            .collect(),
        ),
        ..Container::default()
    };

    let mut containers = vec![container];
    if spec.metrics.enabled {
        containers.push(exporter(cr));
    }
    let restore = super::restore::init_container(cr, inputs, REDIS_UID);
    let mut pod = PodSpec {
        init_containers: restore.as_ref().map(|(c, _)| vec![c.clone()]),
        containers,
        image_pull_secrets: meta::image_pull_secrets(cr),
        security_context: Some(meta::pod_security_context(REDIS_UID, Some(REDIS_UID))),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // The preStop wait plus Redis' own shutdown (AOF fsync).
        termination_grace_period_seconds: Some(configmap::PRESTOP_WAIT_SECS + 10),
        volumes: Some(
            [
                Volume {
                    name: CONFIG_VOLUME.to_string(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: names::redis(app),
                        default_mode: Some(0o444),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                auth_volume(app),
                Volume {
                    name: RUN_VOLUME.to_string(),
                    empty_dir: Some(Default::default()),
                    ..Volume::default()
                },
                tmp_volume,
            ]
            .into_iter()
            .chain(tls.then(|| tls_volume(cr, None)).flatten())
            .chain(restore.map(|(_, v)| v).unwrap_or_default())
            .collect(),
        ),
        ..PodSpec::default()
    };

    meta::apply_pod_options(&mut pod, &spec.pod, &selector, meta::spread_over_nodes_and_zones(&selector));

    let mut storage_request = BTreeMap::new();
    storage_request.insert("storage".to_string(), Quantity(spec.storage.size.clone()));
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(labels::labels(app, Component::Redis)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements { requests: Some(storage_request), limits: None }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };

    StatefulSet {
        metadata: meta::object_meta(cr, names::redis(app), Component::Redis),
        spec: Some(StatefulSetSpec {
            // Hibernated: no pod, every claim kept (the retention policy below).
            replicas: Some(if cr.spec.hibernate { 0 } else { cr.spec.redis_pods() }),
            // Immutable after creation: only the stable selector labels, never the role.
            selector: LabelSelector { match_labels: Some(selector), match_expressions: None },
            service_name: Some(names::redis_headless(app)),
            // Pods start together, every one as a replica; the operator picks the primary.
            pod_management_policy: Some("Parallel".to_string()),
            // The replication manager restarts pods itself, replicas first, handing over
            // the primary before it restarts.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                rolling_update: None,
            }),
            // The operator never deletes data: PVCs outlive scale-down and deletion.
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".to_string()),
                when_scaled: Some("Retain".to_string()),
            }),
            template: PodTemplateSpec {
                metadata: Some(meta::pod_template_meta(cr, Component::Redis, &spec.pod, hash)),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// UID the redis_exporter image runs as.
pub const EXPORTER_UID: i64 = 59000;
/// Name of the exporter sidecar and of its port.
pub const EXPORTER_CONTAINER: &str = "redis-exporter";
pub const EXPORTER_PORT_NAME: &str = "metrics";

/// The redis_exporter sidecar of `spec.redis.metrics`: scrapes its own pod's Redis over
/// loopback and serves `/metrics` on port `metrics`.
fn exporter(cr: &CounterApp) -> Container {
    let m = &cr.spec.redis.metrics;
    let plain =
        |name: &str, value: String| EnvVar { name: name.to_string(), value: Some(value), value_from: None };
    let tls = cr.spec.redis.tls.is_some();
    let scheme = if tls { "rediss" } else { "redis" };
    let mut env = vec![
        plain("REDIS_ADDR", format!("{scheme}://127.0.0.1:{REDIS_PORT}")),
        // The pod-local monitor user; the start script writes its password file.
        plain("REDIS_USER", acl::MONITOR_USER.to_string()),
        plain("REDIS_PASSWORD_FILE", format!("{}/exporter.json", configmap::RUN_PATH)),
        plain("REDIS_EXPORTER_WEB_LISTEN_ADDRESS", format!(":{EXPORTER_PORT}")),
        // The monitor user may not run CONFIG (CONFIG GET * would show masterauth).
        plain("REDIS_EXPORTER_CONFIG_COMMAND", "-".to_string()),
    ];
    if tls {
        // Loopback inside the pod: the certificate names the pod's DNS names, not
        // 127.0.0.1, so only the chain is checked (against the CA).
        env.push(plain("REDIS_EXPORTER_TLS_CA_CERT_FILE", format!("{}/ca.crt", configmap::TLS_PATH)));
        env.push(plain("REDIS_EXPORTER_SKIP_TLS_VERIFICATION", "true".to_string()));
    }
    Container {
        name: EXPORTER_CONTAINER.to_string(),
        image: Some(m.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(EXPORTER_PORT_NAME.to_string()),
            container_port: EXPORTER_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        resources: m.resources.clone(),
        // No readiness probe: the exporter's health must never make a Redis pod unready
        // (the replication manager reads pod readiness).
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".to_string()),
                port: IntOrString::String(EXPORTER_PORT_NAME.to_string()),
                scheme: Some("HTTP".to_string()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(3),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        security_context: Some(meta::container_security_context(EXPORTER_UID)),
        volume_mounts: Some(
            [read_only_mount(RUN_VOLUME, configmap::RUN_PATH)]
                .into_iter()
                .chain(tls.then(|| read_only_mount(TLS_VOLUME, configmap::TLS_PATH)))
                .collect(),
        ),
        ..Container::default()
    }
}

fn read_only_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_string(),
        mount_path: path.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Every user's Secret in one volume: `USER/password` and `USER/previous`, readable by
/// the pod's group only (fsGroup), as the start script reads them.
fn auth_volume(app: &str) -> Volume {
    let sources = acl::RedisUser::ALL
        .iter()
        .map(|u| VolumeProjection {
            secret: Some(SecretProjection {
                name: names::redis_user_secret(app, u.name()),
                optional: Some(false),
                items: Some(
                    [names::PASSWORD_KEY, names::PREVIOUS_KEY]
                        .iter()
                        .map(|k| KeyToPath { key: k.to_string(), path: format!("{u}/{k}"), mode: None })
                        .collect(),
                ),
            }),
            ..VolumeProjection::default()
        })
        .collect();
    Volume {
        name: AUTH_VOLUME.to_string(),
        projected: Some(ProjectedVolumeSource { sources: Some(sources), default_mode: Some(0o440) }),
        ..Volume::default()
    }
}

/// The TLS Secret as volume `tls`: every key for Redis pods, only `ca.crt` for the web
/// pods (`only`), which need no private key. None without `spec.redis.tls`.
pub fn tls_volume(cr: &CounterApp, only: Option<&str>) -> Option<Volume> {
    Some(Volume {
        name: TLS_VOLUME.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(tls_secret_name(cr)?),
            default_mode: Some(0o440),
            optional: Some(false),
            items: only.map(|k| vec![KeyToPath { key: k.to_string(), path: k.to_string(), mode: None }]),
        }),
        ..Volume::default()
    })
}

/// The Secret holding Redis' certificate: `spec.redis.tls.secretName`, or the one
/// cert-manager writes for `issuerRef`. None without `spec.redis.tls`.
pub fn tls_secret_name(cr: &CounterApp) -> Option<String> {
    let tls = cr.spec.redis.tls.as_ref()?;
    Some(tls.secret_name.clone().unwrap_or_else(|| names::redis_tls(meta::app_name(cr))))
}
