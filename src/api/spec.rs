//! `CounterApp.spec`. Every doc comment becomes `kubectl explain` text.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::backup::{BackupSpec, BootstrapSpec};
use super::pod_options::PodOptions;
use super::status::CounterAppStatus;
use super::{bounds, defaults, redis_config};

/// A counter stack: a stateless counter web service (a Deployment behind a Service) in
/// front of Redis with one primary and `redis.replicas` replicas on persistent volumes.
/// The operator keeps replication healthy and fails over automatically.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "counterstack.io",
    version = "v1alpha1",
    kind = "CounterApp",
    plural = "counterapps",
    singular = "counterapp",
    shortname = "capp",
    category = "all",
    namespaced,
    status = "CounterAppStatus",
    derive = "PartialEq",
    doc = "A counter stack: web Deployment + Service in front of a replicated Redis, kept healthy by the counterstack operator.",
    scale(
        spec_replicas_path = ".spec.web.replicas",
        status_replicas_path = ".status.web.replicas",
        label_selector_path = ".status.web.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the whole stack serves requests"),
    printcolumn(name = "Web", type_ = "string", json_path = ".status.web.ready", description = "Ready/desired web replicas"),
    printcolumn(name = "Primary", type_ = "string", json_path = ".status.redis.primary", description = "Pod that is the Redis primary"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must start with a lowercase letter and contain only lowercase letters, digits and '-' (it names Services, which must be DNS-1035 labels)"),
    validation = Rule::new(format!("size(self.metadata.name) <= {}", bounds::MAX_NAME_LEN))
        .message(format!("metadata.name must be at most {} characters so that derived names such as NAME-redis-headless stay valid DNS labels; choose a shorter name", bounds::MAX_NAME_LEN).as_str()),
)]
#[x_kube(
    validation = Rule::new("!has(self.web.syncReplicas) || self.web.syncReplicas <= self.redis.replicas")
        .message("must not exceed spec.redis.replicas: a write cannot be confirmed by more replicas than exist; lower syncReplicas or add Redis replicas")
        .field_path(".web.syncReplicas"),
    validation = Rule::new("has(self.bootstrap) == has(oldSelf.bootstrap) && (!has(self.bootstrap) || self.bootstrap == oldSelf.bootstrap)")
        .message("can be set only when the CounterApp is created, and not changed or removed later: restoring over a running stack is not offered; create a new CounterApp with spec.bootstrap.fromBackup")
        .field_path(".bootstrap")
)]
#[serde(rename_all = "camelCase")]
pub struct CounterAppSpec {
    /// The counter web service.
    #[serde(default)]
    pub web: WebSpec,

    /// Redis: one primary plus `replicas` replicas, each on its own PersistentVolumeClaim.
    #[serde(default)]
    pub redis: RedisSpec,

    /// Secrets used to pull the web and Redis images from private registries (for
    /// example a registry with TLS and basic auth). Each names a Secret of type
    /// kubernetes.io/dockerconfigjson in the CounterApp's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Who may connect to Redis.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Stop changing the stack's objects. The operator still reports status (with a
    /// `Paused` reason) but applies nothing and performs no failover while true.
    #[serde(default)]
    pub paused: bool,

    /// Hibernate the stack: scale the web Deployment and the Redis StatefulSet to zero
    /// pods, keeping every Redis PersistentVolumeClaim (and so the counter). Nothing
    /// serves meanwhile; `Ready` is True with reason `Hibernated` once every pod is gone.
    /// Set it back to false to wake the stack: the Redis pods start from their volumes,
    /// the last primary is chosen again, the replicas resync from it and the web serves
    /// the counter it had.
    #[serde(default)]
    pub hibernate: bool,

    /// Scheduled and on-demand backups of the Redis data to an S3-compatible object
    /// store, taken from an in-sync replica without pausing writes (docs/backup.md).
    // Boxed here and below: every cached CounterApp would otherwise carry their
    // ~600 bytes inline, set or not (bench/scale.sh measured 3 MiB at 1,000 stacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Box<BackupSpec>>,

    /// Start a new stack from a backup. Only at creation; immutable afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Box<BootstrapSpec>>,
}

/// The NetworkPolicy `NAME-redis`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create a NetworkPolicy that lets into the Redis pods only this CounterApp's web
    /// pods, its other Redis pods and pods of the operator's namespace; the web port
    /// stays open to all. Enforced only by CNIs that implement NetworkPolicy (k3s'
    /// default flannel setup does, through its embedded policy controller; plain
    /// flannel does not).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The counter web service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.autoscaling) || !has(oldSelf.autoscaling) || self.replicas == oldSelf.replicas")
        .message("is managed by the HorizontalPodAutoscaler while spec.web.autoscaling is set (kubectl scale is refused); change autoscaling.minReplicas/maxReplicas, or remove spec.web.autoscaling first")
        .field_path(".replicas"),
)]
pub struct WebSpec {
    /// Container image of the web service (it runs `counterstack web`). Empty means the
    /// operator's `--default-web-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Number of web pods (1 to 100). `kubectl scale capp NAME --replicas N` sets this.
    #[serde(default = "defaults::web_replicas")]
    #[schemars(range(min = bounds::MIN_WEB_REPLICAS, max = bounds::MAX_WEB_REPLICAS))]
    pub replicas: i32,

    /// Container port the web service listens on (1 to 65535).
    #[serde(default = "defaults::web_port")]
    #[schemars(range(min = bounds::MIN_PORT, max = bounds::MAX_PORT))]
    pub port: i32,

    /// CPU and memory requests and limits of the web container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Where reads (`GET /api/counter`) go: `primary` (always the latest value) or
    /// `replicas` (spreads load; may lag by the replication delay).
    #[serde(default)]
    pub read_from: ReadFrom,

    /// Writes are acknowledged only after this many Redis replicas confirmed them
    /// (`WAIT`). Defaults to 1 when Redis has replicas, else 0. Cannot exceed
    /// `spec.redis.replicas`. The Redis primary also refuses writes while fewer than
    /// this many replicas are connected (`min-replicas-to-write`), so an acknowledged
    /// increment survives the loss of the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = bounds::MAX_REDIS_REPLICAS))]
    pub sync_replicas: Option<i32>,

    /// The Service in front of the web pods.
    #[serde(default)]
    pub service: WebServiceSpec,

    /// Scale the web pods with a HorizontalPodAutoscaler (autoscaling/v2) on CPU. While
    /// set, the operator no longer writes the Deployment's `replicas` (the HPA does) and
    /// `spec.web.replicas` cannot be changed (`kubectl scale capp` is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Scheduling and metadata of the web pods.
    #[serde(flatten)]
    pub pod: PodOptions,
}

/// HorizontalPodAutoscaler of the web Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas")
        .message("minReplicas must not exceed maxReplicas")
        .field_path(".minReplicas"),
)]
pub struct AutoscalingSpec {
    /// Fewest web pods (1 to 100).
    #[serde(default = "defaults::autoscaling_min_replicas")]
    #[schemars(range(min = bounds::MIN_WEB_REPLICAS, max = bounds::MAX_WEB_REPLICAS))]
    pub min_replicas: i32,

    /// Most web pods (1 to 100).
    #[schemars(range(min = bounds::MIN_WEB_REPLICAS, max = bounds::MAX_WEB_REPLICAS))]
    pub max_replicas: i32,

    /// Average CPU use, in percent of the web container's CPU request, that the
    /// autoscaler aims for (1 to 100). Needs `spec.web.resources.requests.cpu` and a
    /// metrics server in the cluster.
    #[serde(default = "defaults::autoscaling_cpu_percent", rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = bounds::MIN_CPU_PERCENT, max = bounds::MAX_CPU_PERCENT))]
    pub target_cpu_utilization_percentage: i32,
}

impl Default for WebSpec {
    fn default() -> Self {
        Self {
            image: None,
            replicas: defaults::web_replicas(),
            port: defaults::web_port(),
            resources: None,
            read_from: ReadFrom::default(),
            sync_replicas: None,
            service: WebServiceSpec::default(),
            autoscaling: None,
            pod: PodOptions::default(),
        }
    }
}

/// Where the web service sends reads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// Read from the primary.
    #[default]
    Primary,
    /// Read from the replicas Service, falling back to the primary.
    Replicas,
}

/// Kind of Kubernetes Service in front of the web pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also reachable on a port of every node.
    NodePort,
    /// Also reachable through the cloud provider's (or k3s' ServiceLB) load balancer.
    LoadBalancer,
}

/// The Service in front of the web pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebServiceSpec {
    /// Service type: ClusterIP, NodePort or LoadBalancer.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Port the Service exposes (1 to 65535); it forwards to `spec.web.port`.
    #[serde(default = "defaults::service_port")]
    #[schemars(range(min = bounds::MIN_PORT, max = bounds::MAX_PORT))]
    pub port: i32,
}

impl Default for WebServiceSpec {
    fn default() -> Self {
        Self { type_: ServiceType::default(), port: defaults::service_port() }
    }
}

/// Redis: one primary and `replicas` replicas.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.tls) == has(oldSelf.tls)")
        .message("cannot be turned on or off on an existing CounterApp: pods restarted with TLS could not replicate from a primary without it (docs/security.md); create a new CounterApp")
        .field_path(".tls"),
)]
pub struct RedisSpec {
    /// Redis container image (official `redis` image, 7.x). It must provide `sh`,
    /// `redis-server` and `redis-cli` and run as UID 999, as the official image does.
    #[serde(default = "defaults::redis_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// Number of replicas besides the primary (0 to 8). With 0 there is no failover.
    #[serde(default = "defaults::redis_replicas")]
    #[schemars(range(min = 0, max = bounds::MAX_REDIS_REPLICAS))]
    pub replicas: i32,

    /// Persistent storage of each Redis pod.
    #[serde(default)]
    pub storage: StorageSpec,

    /// CPU and memory requests and limits of the Redis container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Automatic failover when the primary is lost.
    #[serde(default)]
    pub failover: FailoverSpec,

    /// Redis settings, by directive name (`maxmemory: 256mb`, `maxmemory-policy:
    /// allkeys-lru`). Only these are allowed: active-defrag-cycle-max,
    /// active-defrag-cycle-min, active-defrag-ignore-bytes, active-defrag-max-scan-fields,
    /// active-defrag-threshold-lower, active-defrag-threshold-upper, active-expire-effort,
    /// activedefrag, appendfsync, dynamic-hz, hash-max-listpack-entries,
    /// hash-max-listpack-value, hz, io-threads, io-threads-do-reads,
    /// latency-monitor-threshold, latency-tracking, lazyfree-lazy-eviction,
    /// lazyfree-lazy-expire, lazyfree-lazy-server-del, lazyfree-lazy-user-del,
    /// lazyfree-lazy-user-flush, lfu-decay-time, lfu-log-factor, list-compress-depth,
    /// list-max-listpack-size, loglevel, maxclients, maxmemory, maxmemory-policy,
    /// maxmemory-samples, notify-keyspace-events, set-max-intset-entries,
    /// slowlog-log-slower-than, slowlog-max-len, stream-node-max-bytes,
    /// stream-node-max-entries, tcp-keepalive, timeout, zset-max-listpack-entries,
    /// zset-max-listpack-value. Replication, persistence, paths, ports and security
    /// settings are the operator's and are refused. A change is applied to the running
    /// pods with CONFIG SET, without a restart, except io-threads and io-threads-do-reads,
    /// which Redis reads only at start: changing those restarts the Redis pods one at a
    /// time (replicas first, the primary handed over). Removing a key keeps the running
    /// value until the pod next restarts (then the Redis default applies). A value Redis
    /// refuses is reported as a ConfigRejected Warning Event and the Degraded condition.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "redis_config::schema")]
    #[x_kube(
        validation = Rule::new(redis_config::cel_rule()).message(redis_config::cel_message().as_str()),
        validation = Rule::new(redis_config::cel_value_rule()).message(redis_config::cel_value_message().as_str()),
    )]
    pub config: BTreeMap<String, String>,

    /// Redis metrics: a redis_exporter sidecar in every Redis pod.
    #[serde(default)]
    pub metrics: RedisMetricsSpec,

    /// TLS for every Redis connection (clients, replication, the operator's checks).
    /// Off when absent. Changing it restarts the Redis pods (one by one, the primary
    /// handed over last) and the web pods. docs/security.md describes the wiring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTlsSpec>,

    /// Scheduling and metadata of the Redis pods.
    #[serde(flatten)]
    pub pod: PodOptions,
}

/// Where Redis' certificate comes from: an existing Secret, or cert-manager.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.secretName) != has(self.issuerRef)")
        .message("set exactly one of secretName (an existing Secret) or issuerRef (cert-manager issues one)"),
)]
pub struct RedisTlsSpec {
    /// An existing Secret in the CounterApp's namespace with `tls.crt`, `tls.key` and
    /// `ca.crt` (the type cert-manager writes). The certificate must name
    /// `*.NAME-redis-headless` and `NAME-redis-primary` (docs/security.md lists every
    /// name). A renewed certificate restarts the Redis pods one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = bounds::MAX_DNS_SUBDOMAIN_LEN))]
    pub secret_name: Option<String>,

    /// A cert-manager Issuer or ClusterIssuer: the operator creates the Certificate
    /// `NAME-redis-tls` (Secret `NAME-redis-tls`) with every name Redis is reached by.
    /// cert-manager must be installed in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// A cert-manager issuer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the Issuer (in the CounterApp's namespace) or ClusterIssuer.
    #[schemars(length(min = 1, max = bounds::MAX_DNS_SUBDOMAIN_LEN))]
    pub name: String,

    /// `Issuer` (default) or `ClusterIssuer`.
    #[serde(default = "defaults::issuer_kind")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,

    /// API group of the issuer (default `cert-manager.io`; external issuers have their own).
    #[serde(default = "defaults::issuer_group")]
    #[schemars(length(min = 1, max = bounds::MAX_DNS_SUBDOMAIN_LEN))]
    pub group: String,
}

/// A Prometheus exporter next to every Redis server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RedisMetricsSpec {
    /// Run a `redis-exporter` sidecar in every Redis pod. It serves Prometheus metrics
    /// on container port `metrics` (9121), also exposed by the `NAME-redis-headless`
    /// Service; the chart's PodMonitor/ServiceMonitor scrape it.
    #[serde(default)]
    pub enabled: bool,

    /// Exporter image (oliver006/redis_exporter or a compatible one).
    #[serde(default = "defaults::exporter_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// CPU and memory requests and limits of the exporter container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for RedisMetricsSpec {
    fn default() -> Self {
        Self { enabled: false, image: defaults::exporter_image(), resources: None }
    }
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            image: defaults::redis_image(),
            replicas: defaults::redis_replicas(),
            storage: StorageSpec::default(),
            resources: None,
            failover: FailoverSpec::default(),
            config: BTreeMap::new(),
            metrics: RedisMetricsSpec::default(),
            tls: None,
            pod: PodOptions::default(),
        }
    }
}

/// Persistent storage of each Redis pod (one PersistentVolumeClaim per pod).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0")
        .message("may grow but never shrink (volumes cannot shrink); set it to at least its current value")
        .field_path(".size"),
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("is immutable; create a new CounterApp to move to another storage class")
        .field_path(".storageClassName"),
)]
pub struct StorageSpec {
    /// Size of each Redis volume, as a Kubernetes quantity such as `1Gi` or `500Mi`.
    /// May grow (when the storage class allows expansion), never shrink.
    #[serde(default = "defaults::storage_size")]
    // maxLength keeps the CEL cost estimate of quantity() within the API server's
    // budget; without it the server rejects the CRD ("estimated rule cost exceeds budget").
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    #[x_kube(validation = Rule::new("quantity(self).isGreaterThan(quantity('0'))").message("must be greater than zero, for example 1Gi"))]
    pub size: String,

    /// StorageClass of the volumes; empty means the cluster's default class. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::MAX_DNS_SUBDOMAIN_LEN))]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self { size: defaults::storage_size(), storage_class_name: None }
    }
}

/// Automatic failover settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Promote a replica automatically when the primary is lost.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,

    /// Seconds the primary must be unreachable or not ready before a replica is
    /// promoted (1 to 300).
    #[serde(default = "defaults::failover_after_seconds")]
    #[schemars(range(min = bounds::MIN_FAILOVER_AFTER_SECONDS, max = bounds::MAX_FAILOVER_AFTER_SECONDS))]
    pub after_seconds: i32,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self { enabled: true, after_seconds: defaults::failover_after_seconds() }
    }
}

impl CounterAppSpec {
    /// `web.syncReplicas` with its default resolved: 1 when Redis has replicas, else 0.
    pub fn sync_replicas(&self) -> i32 {
        self.web.sync_replicas.unwrap_or(if self.redis.replicas > 0 { 1 } else { 0 })
    }

    /// Web image with the operator's default applied.
    pub fn web_image<'a>(&'a self, default_image: &'a str) -> &'a str {
        match self.web.image.as_deref() {
            Some(img) if !img.is_empty() => img,
            _ => default_image,
        }
    }

    /// Number of Redis pods (primary + replicas).
    pub fn redis_pods(&self) -> i32 {
        1 + self.redis.replicas
    }
}
