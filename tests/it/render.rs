//! `render` output: snapshots (insta) of the minimal and the full example, and the
//! shape issue 2 requires of the minimal one.

use std::collections::BTreeMap;

use counterstack::api::CounterApp;
use counterstack::children::{self, Inputs, Passwords};
use counterstack::render;
use serde_json::Value;

const PASSWORD: &str = "0123456789abcdefghijABCDEFGHIJxy";

fn inputs() -> Inputs {
    Inputs {
        default_web_image: "ghcr.io/counterstack/counterstack:test".to_string(),
        passwords: Passwords::same(PASSWORD),
        tls: None,
        operator_namespace: Some("counterstack-system".to_string()),
    }
}

fn example(name: &str) -> CounterApp {
    let path = format!("{}/manifests/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    render::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn render_yaml(cr: &CounterApp) -> String {
    render::to_yaml(&children::all(cr, &inputs()).unwrap()).unwrap()
}

/// The YAML stream as JSON values.
fn objects(yaml: &str) -> Vec<Value> {
    yaml.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect()
}

#[test]
fn snapshot_minimal() {
    insta::assert_snapshot!("minimal", render_yaml(&example("counterapp.yaml")));
}

#[test]
fn snapshot_full() {
    insta::assert_snapshot!("full", render_yaml(&example("counterapp-full.yaml")));
}

#[test]
fn minimal_renders_exactly_the_required_objects() {
    let objs = objects(&render_yaml(&example("counterapp.yaml")));
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &objs {
        *kinds.entry(o["kind"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("ConfigMap", 1),
            ("Deployment", 1),
            ("NetworkPolicy", 1),
            ("PodDisruptionBudget", 2),
            ("Secret", 3),
            ("Service", 4),
            ("StatefulSet", 1),
        ])
    );

    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(deploy["spec"]["replicas"], 4);
    let web = &deploy["spec"]["template"]["spec"]["containers"][0];
    let probes: Vec<&str> = ["startupProbe", "readinessProbe", "livenessProbe"]
        .into_iter()
        .filter(|p| web[p]["httpGet"]["path"].is_string())
        .collect();
    assert_eq!(probes.len(), 3);
    assert_eq!(web["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(web["livenessProbe"]["httpGet"]["path"], "/livez");

    let sts = objs.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    assert_eq!(sts["spec"]["replicas"], 3);
    let claims = sts["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["spec"]["resources"]["requests"]["storage"], "1Gi");

    let names: Vec<&str> = objs.iter().map(|o| o["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "demo-redis-auth-web",
            "demo-redis-auth-replication",
            "demo-redis-auth-operator",
            "demo-redis",
            "demo-redis-headless",
            "demo-redis-primary",
            "demo-redis-replicas",
            "demo-web",
            "demo-redis",
            "demo-web",
            "demo-web",
            "demo-redis",
            "demo-redis"
        ]
    );
}

#[test]
fn web_env_points_at_the_redis_services() {
    let objs = objects(&render_yaml(&example("counterapp.yaml")));
    let deploy = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let env: BTreeMap<String, Value> = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(env["LISTEN_ADDR"]["value"], "0.0.0.0:8080");
    assert_eq!(env["REDIS_URL"]["value"], "redis://demo-redis-primary:6379");
    assert_eq!(env["REDIS_REPLICA_URL"]["value"], "redis://demo-redis-replicas:6379");
    assert_eq!(env["READ_FROM"]["value"], "primary");
    assert_eq!(env["SYNC_REPLICAS"]["value"], "1");
    assert_eq!(env["REDIS_USERNAME"]["value"], "web");
    assert_eq!(env["REDIS_PASSWORD_FILE"]["value"], "/etc/counterstack/redis-auth/password");
    assert!(!env.contains_key("REDIS_PASSWORD"), "no password in the environment");
    assert!(!env.contains_key("REDIS_TLS_CA_FILE"), "no TLS unless spec.redis.tls");
}

#[test]
fn one_secret_per_redis_user_with_data_not_string_data() {
    let children = children::all(&example("counterapp.yaml"), &inputs()).unwrap();
    let names: Vec<_> =
        children.redis_user_secrets.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["demo-redis-auth-web", "demo-redis-auth-replication", "demo-redis-auth-operator"]);
    for secret in children.redis_user_secrets {
        assert!(secret.string_data.is_none());
        let data = secret.data.unwrap();
        assert_eq!(data["password"].0, PASSWORD.as_bytes());
        assert_eq!(data["previous"].0, PASSWORD.as_bytes(), "no rotation running: previous = password");
    }
}

/// A CR read from the API server (with a uid) gives every child a controller owner
/// reference; the CR's own labels and annotations are never copied.
#[test]
fn every_child_is_owned_and_labelled_without_copying_cr_metadata() {
    let mut cr = example("counterapp.yaml");
    cr.metadata.namespace = Some("apps".to_string());
    cr.metadata.uid = Some("7c0a4e2e-1111-2222-3333-444455556666".to_string());
    cr.metadata.labels = Some(BTreeMap::from([("argocd.argoproj.io/instance".to_string(), "x".to_string())]));
    cr.metadata.annotations =
        Some(BTreeMap::from([("argocd.argoproj.io/tracking-id".to_string(), "x".to_string())]));
    for o in objects(&render_yaml(&cr)) {
        let meta = &o["metadata"];
        let what = format!("{} {}", o["kind"], meta["name"]);
        assert_eq!(meta["namespace"], "apps", "{what}");
        let owners = meta["ownerReferences"].as_array().unwrap();
        assert_eq!(owners.len(), 1, "{what}");
        let owner = &owners[0];
        assert_eq!(owner["apiVersion"], "counterstack.io/v1alpha1", "{what}");
        assert_eq!(owner["kind"], "CounterApp", "{what}");
        assert_eq!(owner["name"], "demo", "{what}");
        assert_eq!(owner["uid"], "7c0a4e2e-1111-2222-3333-444455556666", "{what}");
        assert_eq!(owner["controller"], true, "{what}");
        assert_eq!(owner["blockOwnerDeletion"], true, "{what}");
        let labels = meta["labels"].as_object().unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "counterstack", "{what}");
        assert_eq!(labels["app.kubernetes.io/instance"], "demo", "{what}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "counterstack-operator", "{what}");
        assert!(!labels.contains_key("argocd.argoproj.io/instance"), "{what}");
        assert!(meta.get("annotations").is_none(), "{what}");
        let text = serde_json::to_string(&o).unwrap();
        assert!(!text.contains("argocd"), "{what} carries the CR's GitOps metadata");
    }
}

/// A CR rendered offline (no uid) gives children without owner references rather
/// than ones with an empty uid, which the API server would reject.
#[test]
fn offline_render_omits_owner_references() {
    for o in objects(&render_yaml(&example("counterapp.yaml"))) {
        assert!(o["metadata"].get("ownerReferences").is_none());
    }
}

/// The Pod Security Standard "restricted", on a pod spec as JSON.
fn assert_restricted(pod: &serde_json::Map<String, Value>, what: &str) {
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none(), "{what}");
    let init = pod.get("initContainers").and_then(Value::as_array).cloned().unwrap_or_default();
    for c in pod["containers"].as_array().unwrap().iter().chain(&init) {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{what}");
        assert!(sc["capabilities"].get("add").is_none(), "{what}");
        assert_eq!(sc["runAsNonRoot"], true, "{what}");
        assert_ne!(sc["runAsUser"], 0, "{what}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    }
    // Only volume types the restricted profile allows.
    for v in pod["volumes"].as_array().unwrap() {
        let kind: Vec<&String> = v.as_object().unwrap().keys().filter(|k| *k != "name").collect();
        assert!(
            kind.iter().all(|k| ["emptyDir", "configMap", "secret", "projected", "persistentVolumeClaim"]
                .contains(&k.as_str())),
            "{what}: volume {kind:?}"
        );
    }
}

#[test]
fn every_pod_meets_the_restricted_pod_security_standard() {
    for name in [
        "counterapp.yaml",
        "counterapp-full.yaml",
        "counterapp-restore.yaml",
        "counterapp-backup-volume.yaml",
    ] {
        for o in objects(&render_yaml(&example(name))) {
            let Some(pod) = o["spec"]["template"]["spec"].as_object() else { continue };
            let what = format!("{name}: {} {}", o["kind"], o["metadata"]["name"]);
            assert_restricted(pod, &what);
        }
    }
}

/// A stack with `spec.backup.volume`: its backup Job (created per backup, not rendered).
fn backup_job(cr: &CounterApp, tls: bool) -> Value {
    let mut cr = cr.clone();
    if tls {
        cr.spec.redis.tls = serde_json::from_value(serde_json::json!({"secretName": "demo-tls"})).unwrap();
    }
    let spec = cr.spec.backup.clone().unwrap();
    let source = children::backup_job::JobSource {
        pod: "demo-redis-2",
        ordinal: 2,
        host: "demo-redis-2.demo-redis-headless",
        port: 6379,
    };
    let job = children::backup_job::job(
        &cr,
        "ghcr.io/counterstack/counterstack:test",
        spec.volume.as_ref().unwrap(),
        &spec.retention,
        &source,
        "2026-12-03T11:00:00Z".parse().unwrap(),
    );
    serde_json::to_value(job).unwrap()
}

#[test]
fn a_backup_job_is_restricted_reaches_redis_and_is_no_endpoint_of_it() {
    let mut cr = example("counterapp-backup-volume.yaml");
    cr.metadata.namespace = Some("shop".into());
    // As read from the API server (owner references need the uid).
    cr.metadata.uid = Some("5c0ffee0-0000-4000-8000-000000000001".into());
    let job = backup_job(&cr, false);
    assert_eq!(job["metadata"]["name"], "demo-backup-20261203t110000z");
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CounterApp", "{job}");
    assert_eq!(job["spec"]["backoffLimit"], 0, "the operator retries itself");
    let pod = job["spec"]["template"]["spec"].as_object().unwrap();
    assert_restricted(pod, "backup Job");
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "counterstack-backups");
    let c = &pod["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["backup-job"]));
    let env: BTreeMap<String, Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e.get("value").cloned().unwrap_or_else(|| e["valueFrom"].clone()),
            )
        })
        .collect();
    assert_eq!(env["BACKUP_FOLDER"], "counterstack/shop/demo");
    assert_eq!(env["BACKUP_STARTED"], "2026-12-03T11:00:00Z");
    assert_eq!(env["BACKUP_KEEP_LAST"], "4");
    assert_eq!(env["BACKUP_USER"], "replication");
    assert_eq!(env["BACKUP_PASSWORD"]["secretKeyRef"]["name"], "demo-redis-auth-replication");
    assert!(!env.contains_key("BACKUP_TLS_CA_FILE"));
    // Its pod carries the backup component: no Redis or web Service selects it, the
    // stack's NetworkPolicy admits it.
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/component"], "backup");
    let objs = objects(&render_yaml(&cr));
    for svc in objs.iter().filter(|o| o["kind"] == "Service") {
        let sel = svc["spec"]["selector"].as_object().unwrap();
        assert!(
            sel.iter().any(|(k, v)| &labels[k] != v),
            "{} selects the backup pod",
            svc["metadata"]["name"]
        );
    }
    let np = objs.iter().find(|o| o["kind"] == "NetworkPolicy").unwrap();
    let from = np["spec"]["ingress"][0]["from"].as_array().unwrap();
    assert!(
        from.iter().any(|p| p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "backup"),
        "{np}"
    );
    // Without spec.backup.volume the policy admits no backup pods.
    let np = objects(&render_yaml(&example("counterapp-backup.yaml")))
        .into_iter()
        .find(|o| o["kind"] == "NetworkPolicy")
        .unwrap();
    assert!(!np.to_string().contains("\"backup\""), "{np}");
    // With TLS: Redis' CA alone, and the source's name to check its certificate by.
    let job = backup_job(&cr, true);
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let env = c["env"].to_string();
    assert!(env.contains("BACKUP_TLS_CA_FILE") && env.contains("demo-redis-2.demo-redis-headless"), "{env}");
    let tls = pod["volumes"].as_array().unwrap().iter().find(|v| v.get("secret").is_some()).unwrap();
    assert_eq!(tls["secret"]["items"], serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}]), "{tls}");
}

#[test]
fn a_restore_from_a_volume_mounts_the_claim_read_only_in_the_restore_container_only() {
    let mut cr = example("counterapp-restore.yaml");
    let mut from = cr.spec.bootstrap.clone().unwrap();
    from.from_backup.s3 = None;
    from.from_backup.volume =
        serde_json::from_value(serde_json::json!({"claimName": "counterstack-backups"})).unwrap();
    cr.spec.bootstrap = Some(from);
    let objs = objects(&render_yaml(&cr));
    let sts = objs.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    let pod = &sts["spec"]["template"]["spec"];
    let claim =
        pod["volumes"].as_array().unwrap().iter().find(|v| v.get("persistentVolumeClaim").is_some()).unwrap();
    assert_eq!(
        claim["persistentVolumeClaim"],
        serde_json::json!({"claimName": "counterstack-backups", "readOnly": true})
    );
    let init = &pod["initContainers"][0];
    let mount = init["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == claim["name"]).unwrap();
    assert_eq!(mount["readOnly"], true);
    let env = init["env"].to_string();
    assert!(env.contains("RESTORE_SOURCE_DIR") && !env.contains("RESTORE_S3_BUCKET"), "{env}");
    assert!(env.contains("counterstack/default/demo") || env.contains("counterstack/"), "{env}");
    for c in pod["containers"].as_array().unwrap() {
        let mounts = c["volumeMounts"].to_string();
        assert!(
            !mounts.contains(claim["name"].as_str().unwrap()),
            "{}: Redis never sees the backup claim",
            c["name"]
        );
    }
}

#[test]
fn full_example_sets_every_field_on_the_children() {
    let objs = objects(&render_yaml(&example("counterapp-full.yaml")));
    let get = |kind: &str| objs.iter().find(|o| o["kind"] == kind).unwrap();
    let deploy = get("Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    // With autoscaling the HPA owns replicas: the operator leaves the field out.
    assert!(deploy["spec"].get("replicas").is_none(), "{deploy}");
    assert_eq!(pod["containers"][0]["image"], "registry.example.com:5000/counterstack:0.1.0");
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 9090);
    assert_eq!(pod["containers"][0]["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "registry-credentials");
    let sts = get("StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 4);
    assert_eq!(sts["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"], "registry-credentials");
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"], "fast-ssd");
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "5Gi");
    let web_svc =
        objs.iter().find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "shop-counter-web").unwrap();
    assert_eq!(web_svc["spec"]["type"], "LoadBalancer");
    assert_eq!(web_svc["spec"]["ports"][0]["port"], 8000);
    assert_eq!(web_svc["spec"]["ports"][0]["targetPort"], 9090);
    let conf = get("ConfigMap")["data"]["redis.conf"].as_str().unwrap();
    assert!(conf.contains("min-replicas-to-write 2\n"), "{conf}");

    // Day-two knobs.
    let hpa = get("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "shop-counter-web");
    assert_eq!(hpa["spec"]["minReplicas"], 4);
    assert_eq!(hpa["spec"]["maxReplicas"], 12);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["priorityClassName"], "counters-high");
    let web_meta = &deploy["spec"]["template"]["metadata"];
    assert_eq!(web_meta["annotations"]["prometheus.io/scrape"], "true");
    assert_eq!(web_meta["labels"]["team"], "shop");
    assert_eq!(web_meta["labels"]["app.kubernetes.io/component"], "web");
    // Web pods keep the default spread (nodes, per ReplicaSet).
    assert_eq!(pod["topologySpreadConstraints"][0]["topologyKey"], "kubernetes.io/hostname");
    let redis_pod = &sts["spec"]["template"]["spec"];
    assert_eq!(
        redis_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "node-role.example.com/storage"
    );
    // The user's spread replaces the default, and gets the Redis pod selector.
    let spread = redis_pod["topologySpreadConstraints"].as_array().unwrap();
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0]["whenUnsatisfiable"], "DoNotSchedule");
    assert_eq!(spread[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"], "redis");
    // The exporter sidecar, its port on the headless Service, and the policy opening it.
    let exporter = &redis_pod["containers"][1];
    assert_eq!(exporter["name"], "redis-exporter");
    assert_eq!(exporter["image"], "registry.example.com:5000/redis_exporter:v1.67.0");
    assert_eq!(exporter["ports"][0]["containerPort"], 9121);
    assert!(exporter.get("readinessProbe").is_none(), "the exporter must never make Redis unready");
    let headless = objs
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "shop-counter-redis-headless")
        .unwrap();
    assert_eq!(headless["spec"]["ports"][1]["name"], "metrics");
    let np = get("NetworkPolicy");
    let rules = np["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "Redis port from the stack and the operator, metrics port from anywhere");
    assert_eq!(rules[1]["ports"][0]["port"], "metrics");
}

/// Redis pods spread over nodes and zones by default (both preferred), so one node or
/// zone lost never takes the primary and all replicas where the cluster has room.
#[test]
fn redis_pods_spread_over_nodes_and_zones_by_default() {
    let objs = objects(&render_yaml(&example("counterapp.yaml")));
    let sts = objs.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    let spread = sts["spec"]["template"]["spec"]["topologySpreadConstraints"].as_array().unwrap();
    let keys: Vec<&str> = spread.iter().map(|c| c["topologyKey"].as_str().unwrap()).collect();
    assert_eq!(keys, ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]);
    assert!(spread.iter().all(|c| c["whenUnsatisfiable"] == "ScheduleAnyway"));
    // No sidecar, no metrics port without spec.redis.metrics.
    assert_eq!(sts["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
}

/// The NetworkPolicy admits the stack's web and Redis pods and the operator's namespace
/// on the Redis port; turning it off removes it from the children.
#[test]
fn network_policy_admits_only_the_stack_and_the_operator() {
    let objs = objects(&render_yaml(&example("counterapp.yaml")));
    let np = objs.iter().find(|o| o["kind"] == "NetworkPolicy").unwrap();
    assert_eq!(np["metadata"]["name"], "demo-redis");
    assert_eq!(np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "redis");
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let rule = &np["spec"]["ingress"][0];
    assert_eq!(rule["ports"][0]["port"], 6379);
    let from = rule["from"].as_array().unwrap();
    assert_eq!(from.len(), 3);
    assert_eq!(from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "web");
    assert_eq!(from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "redis");
    assert_eq!(
        from[2]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "counterstack-system"
    );
    let mut off = example("counterapp.yaml");
    off.spec.network_policy.enabled = false;
    assert!(children::all(&off, &inputs()).unwrap().redis_network_policy.is_none());
}

/// `counterstack.io/restartedAt` on the CounterApp reaches both pod templates (a new value
/// restarts the pods); other CR annotations still do not.
#[test]
fn restarted_at_annotation_changes_both_pod_templates() {
    let template_annotations = |cr: &CounterApp| {
        let c = children::all(cr, &inputs()).unwrap();
        let a = |m: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| {
            m.unwrap().annotations.unwrap()
        };
        (
            a(c.web_deployment.spec.unwrap().template.metadata),
            a(c.redis_statefulset.spec.unwrap().template.metadata),
        )
    };
    let cr = example("counterapp.yaml");
    let (web, redis) = template_annotations(&cr);
    assert!(
        !web.contains_key("counterstack.io/restartedAt")
            && !redis.contains_key("counterstack.io/restartedAt")
    );
    let mut restarted = cr.clone();
    restarted.metadata.annotations = Some(BTreeMap::from([
        ("counterstack.io/restartedAt".to_string(), "2026-11-29T23:00:00Z".to_string()),
        ("note".to_string(), "not copied".to_string()),
    ]));
    let (web, redis) = template_annotations(&restarted);
    assert_eq!(web["counterstack.io/restartedAt"], "2026-11-29T23:00:00Z");
    assert_eq!(redis["counterstack.io/restartedAt"], "2026-11-29T23:00:00Z");
    assert!(!web.contains_key("note") && !redis.contains_key("note"));
}

/// User pod labels never replace ours (Services and the operator select on them), and a
/// label value the API server would refuse is caught offline, naming the field.
#[test]
fn pod_labels_cannot_override_ours_and_bad_values_are_refused() {
    let mut cr = example("counterapp.yaml");
    cr.spec.redis.pod.pod_labels = BTreeMap::from([
        ("app.kubernetes.io/component".to_string(), "web".to_string()),
        ("team".to_string(), "a".to_string()),
    ]);
    let c = children::all(&cr, &inputs()).unwrap();
    let labels = c.redis_statefulset.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], "redis");
    assert_eq!(labels["team"], "a");
    cr.spec.redis.pod.pod_labels = BTreeMap::from([("team".to_string(), "shop floor".to_string())]);
    let err = children::all(&cr, &inputs()).unwrap_err().to_string();
    assert!(err.contains("spec.redis.podLabels.team"), "{err}");
}

#[test]
fn config_hash_changes_with_what_the_pods_depend_on() {
    let hash = |cr: &CounterApp, password: &str| {
        let mut i = inputs();
        i.passwords = Passwords::same(password);
        let c = children::all(cr, &i).unwrap();
        let ann = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| {
            t.as_ref().unwrap().annotations.as_ref().unwrap()["counterstack.io/config-hash"].clone()
        };
        (
            ann(&c.web_deployment.spec.unwrap().template.metadata),
            ann(&c.redis_statefulset.spec.unwrap().template.metadata),
        )
    };
    let cr = example("counterapp.yaml");
    let base = hash(&cr, PASSWORD);
    assert_eq!(base, hash(&cr, PASSWORD), "the hash is deterministic");
    let other_pw = hash(&cr, "another-password-0123456789");
    assert_ne!(base.0, other_pw.0, "a new web password rolls the web pods");
    assert_eq!(base.1, other_pw.1, "passwords change live: no Redis pod restarts for a rotation");
    let mut sync0 = cr.clone();
    sync0.spec.web.sync_replicas = Some(0);
    let h = hash(&sync0, PASSWORD);
    assert_ne!(base.0, h.0, "SYNC_REPLICAS is in the web env");
    assert_ne!(base.1, h.1, "min-replicas-to-write is in redis.conf");
    // Scaling changes neither pod template.
    let mut scaled = cr.clone();
    scaled.spec.web.replicas = 7;
    assert_eq!(base, hash(&scaled, PASSWORD));
}

#[test]
fn zero_redis_replicas_means_no_sync_and_no_min_replicas() {
    let mut cr = example("counterapp.yaml");
    cr.spec.redis.replicas = 0;
    let c = children::all(&cr, &inputs()).unwrap();
    assert_eq!(c.redis_statefulset.spec.unwrap().replicas, Some(1));
    assert!(c.redis_config.data.unwrap()["redis.conf"].contains("min-replicas-to-write 0\n"));
    let env = c.web_deployment.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let sync = env.iter().find(|e| e.name == "SYNC_REPLICAS").unwrap();
    assert_eq!(sync.value.as_deref(), Some("0"));
}

#[test]
fn snapshot_redis_config() {
    insta::assert_snapshot!("redis_config", render_yaml(&example("counterapp-redis-config.yaml")));
}

/// `spec.redis.config` reaches redis.conf (after the operator's own lines, so a user's
/// setting wins); only the settings that need a restart change the Redis pod template.
#[test]
fn redis_config_rolls_the_pods_only_for_settings_that_need_a_restart() {
    let redis_hash = |cr: &CounterApp| {
        let c = children::all(cr, &inputs()).unwrap();
        let t = c.redis_statefulset.spec.unwrap().template.metadata.unwrap();
        (t.annotations.unwrap()["counterstack.io/config-hash"].clone(), c.redis_config.data.unwrap())
    };
    let cr = example("counterapp.yaml");
    let (base, base_data) = redis_hash(&cr);
    assert!(!base_data["redis.conf"].contains("spec.redis.config"), "nothing added without settings");

    let mut live = cr.clone();
    live.spec.redis.config.insert("maxmemory-policy".into(), "allkeys-lru".into());
    live.spec.redis.config.insert("maxmemory".into(), "256mb".into());
    let (h, data) = redis_hash(&live);
    assert_eq!(h, base, "a live setting changes no pod template");
    let conf = &data["redis.conf"];
    assert!(conf.starts_with(&base_data["redis.conf"]), "{conf}");
    assert!(conf.ends_with("maxmemory \"256mb\"\nmaxmemory-policy \"allkeys-lru\"\n"), "{conf}");

    let mut restart = live.clone();
    restart.spec.redis.config.insert("io-threads".into(), "2".into());
    let (h2, _) = redis_hash(&restart);
    assert_ne!(h2, base, "io-threads is read only at start: the pods must restart");
    let mut restart_other = restart.clone();
    restart_other.spec.redis.config.insert("maxmemory-policy".into(), "noeviction".into());
    assert_eq!(redis_hash(&restart_other).0, h2, "a live change next to it still rolls nothing");
}

#[test]
fn tls_from_cert_manager_wires_redis_the_web_and_a_certificate() {
    let mut cr = example("counterapp-tls.yaml");
    cr.metadata.namespace = Some("shop".into());
    let c = children::all(&cr, &inputs()).unwrap();
    let cert = c.redis_certificate.expect("a Certificate for issuerRef");
    let spec = &cert.data["spec"];
    assert_eq!(spec["secretName"], "demo-redis-tls");
    assert_eq!(
        spec["issuerRef"],
        serde_json::json!({"name": "counterstack-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    let names: Vec<&str> = spec["dnsNames"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for n in [
        "demo-redis-0.demo-redis-headless",
        "demo-redis-8.demo-redis-headless",
        "*.demo-redis-headless.shop.svc",
        "demo-redis-primary",
        "demo-redis-primary.shop.svc.cluster.local",
        "demo-redis-replicas",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(spec["secretTemplate"]["labels"]["app.kubernetes.io/managed-by"], "counterstack-operator");

    let conf = &c.redis_config.data.as_ref().unwrap()["redis.conf"];
    for line in [
        "port 0\n",
        "tls-port 6379\n",
        "tls-auth-clients no\n",
        "tls-replication yes\n",
        "tls-ca-cert-file /etc/redis-tls/ca.crt\n",
    ] {
        assert!(conf.contains(line), "redis.conf lacks {line:?}:\n{conf}");
    }
    let pod = c.redis_statefulset.spec.unwrap().template.spec.unwrap();
    let tls = pod.volumes.unwrap().into_iter().find(|v| v.name == "tls").expect("tls volume");
    assert_eq!(tls.secret.unwrap().secret_name.as_deref(), Some("demo-redis-tls"));

    let web = c.web_deployment.spec.unwrap().template.spec.unwrap();
    let env: BTreeMap<String, String> =
        web.containers[0].env.clone().unwrap().into_iter().filter_map(|e| Some((e.name, e.value?))).collect();
    assert_eq!(env["REDIS_URL"], "rediss://demo-redis-primary:6379");
    assert_eq!(env["REDIS_TLS_CA_FILE"], "/etc/counterstack/redis-tls/ca.crt");
    // The web pods get the CA only, never the private key.
    let web_tls = web.volumes.unwrap().into_iter().find(|v| v.name == "tls").unwrap().secret.unwrap();
    let items: Vec<String> = web_tls.items.unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(items, ["ca.crt"]);
}

#[test]
fn a_renewed_certificate_restarts_redis_and_a_new_ca_restarts_the_web() {
    let cr = example("counterapp-tls.yaml");
    let hashes = |ca: &str, cert: &str| {
        let mut i = inputs();
        i.tls = Some(children::TlsInputs { ca_sha256: ca.into(), cert_sha256: cert.into() });
        let c = children::all(&cr, &i).unwrap();
        let ann = |m: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| {
            m.unwrap().annotations.unwrap()["counterstack.io/config-hash"].clone()
        };
        (
            ann(c.web_deployment.spec.unwrap().template.metadata),
            ann(c.redis_statefulset.spec.unwrap().template.metadata),
        )
    };
    let base = hashes("ca1", "cert1");
    let renewed = hashes("ca1", "cert2");
    assert_eq!(base.0, renewed.0, "a renewed leaf certificate leaves the web pods alone");
    assert_ne!(base.1, renewed.1, "a renewed certificate restarts the Redis pods (one by one)");
    let new_ca = hashes("ca2", "cert3");
    assert_ne!(base.0, new_ca.0, "a new CA restarts the web pods");
}

#[test]
fn no_pod_gets_a_service_account_token_or_a_writable_root() {
    for file in
        ["counterapp.yaml", "counterapp-full.yaml", "counterapp-tls.yaml", "counterapp-redis-config.yaml"]
    {
        let mut cr = example(file);
        cr.spec.redis.metrics.enabled = true;
        let c = children::all(&cr, &inputs()).unwrap();
        let templates = [
            ("web", c.web_deployment.spec.unwrap().template.spec.unwrap()),
            ("redis", c.redis_statefulset.spec.unwrap().template.spec.unwrap()),
        ];
        for (what, pod) in templates {
            assert_eq!(
                pod.automount_service_account_token,
                Some(false),
                "{file} {what}: no API access needed"
            );
            for ctr in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
                let sc = ctr.security_context.as_ref().unwrap();
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{file} {what}/{}", ctr.name);
                assert!(
                    ctr.env
                        .iter()
                        .flatten()
                        .all(|e| e.value_from.as_ref().is_none_or(|v| v.secret_key_ref.is_none())),
                    "{file} {what}/{}: a secret in the environment",
                    ctr.name
                );
                assert!(
                    ctr.args.iter().chain(ctr.command.iter()).flatten().all(|a| !a.contains(PASSWORD)),
                    "{file} {what}/{}: a password in the command line",
                    ctr.name
                );
            }
        }
    }
}
