//! Property tests of the builders: for any valid spec and any valid name up to the
//! allowed length, building never fails or panics, every generated name is a valid
//! DNS label, and every selector matches its pod template.

use std::collections::BTreeMap;

use counterstack::api::{CounterApp, CounterAppSpec, MAX_NAME_LEN, ReadFrom, ServiceType};
use counterstack::children::{self, Inputs, Passwords, is_dns1035_label, is_dns1123_label, validate_cel};
use counterstack::labels;
use counterstack::{names, render};
use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    // DNS-1035 labels of 1..=MAX_NAME_LEN characters.
    let max_middle = MAX_NAME_LEN - 2;
    let re = |r: String| proptest::string::string_regex(&r).unwrap();
    prop_oneof![
        re("[a-z]".to_string()),
        re(format!("[a-z][-a-z0-9]{{0,{max_middle}}}[a-z0-9]")),
        // Bias towards the longest names, where limits are hit.
        re(format!("[a-z][a-z0-9]{{{max_middle}}}[a-z0-9]")),
    ]
}

fn size() -> impl Strategy<Value = String> {
    (
        1u32..100_000,
        prop::option::of(0u32..100),
        prop::sample::select(vec!["", "Ki", "Mi", "Gi", "Ti", "k", "M", "G"]),
    )
        .prop_map(|(n, frac, suffix)| match frac {
            Some(f) => format!("{n}.{f}{suffix}"),
            None => format!("{n}{suffix}"),
        })
}

fn resources() -> impl Strategy<Value = Option<ResourceRequirements>> {
    prop::option::of((1u32..4000, 1u32..4096).prop_map(|(cpu, mem)| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(format!("{cpu}m"))),
            ("memory".to_string(), Quantity(format!("{mem}Mi"))),
        ])),
        ..ResourceRequirements::default()
    }))
}

prop_compose! {
    fn spec()(
        web_replicas in 1..=100i32,
        web_port in 1..=65535i32,
        svc_port in 1..=65535i32,
        svc_type in prop::sample::select(vec![ServiceType::ClusterIP, ServiceType::NodePort, ServiceType::LoadBalancer]),
        read_from in prop::sample::select(vec![ReadFrom::Primary, ReadFrom::Replicas]),
        redis_replicas in 0..=8i32,
        sync_frac in prop::option::of(0.0f64..=1.0),
        size in size(),
        class in prop::option::of("[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10})?"),
        web_res in resources(),
        redis_res in resources(),
        pull in prop::collection::vec("[a-z][-a-z0-9]{0,30}[a-z0-9]", 0..3),
        failover in any::<bool>(),
        after in 1..=300i32,
        paused in any::<bool>(),
        hibernate in any::<bool>(),
        web_image in prop::option::of("[a-z]{1,10}(\\.[a-z]{2,5}(:[0-9]{2,5})?)?/[a-z]{1,10}:[a-z0-9.]{1,8}"),
        network_policy in any::<bool>(),
        scaling in prop::option::of((1..=50i32, 0..=50i32, 1..=100i32)),
        exporter in any::<bool>(),
        pod_labels in prop::collection::btree_map("[a-z]{1,10}(/[a-z]{1,10})?", "[a-z0-9]{0,10}", 0..3),
    ) -> CounterAppSpec {
        let mut s = CounterAppSpec {
            web: Default::default(),
            redis: Default::default(),
            image_pull_secrets: pull.into_iter().map(|name| LocalObjectReference { name }).collect(),
            network_policy: counterstack::api::NetworkPolicySpec { enabled: network_policy },
            paused,
            hibernate,
            backup: None,
            bootstrap: None,
        };
        s.web.autoscaling = scaling.map(|(min, extra, cpu)| counterstack::api::AutoscalingSpec {
            min_replicas: min,
            max_replicas: min + extra,
            target_cpu_utilization_percentage: cpu,
        });
        s.redis.metrics.enabled = exporter;
        s.web.pod.pod_labels = pod_labels.clone();
        s.redis.pod.pod_labels = pod_labels;
        s.web.image = web_image;
        s.web.replicas = web_replicas;
        s.web.port = web_port;
        s.web.service.port = svc_port;
        s.web.service.type_ = svc_type;
        s.web.read_from = read_from;
        s.web.resources = web_res;
        // syncReplicas <= redis.replicas
        s.web.sync_replicas = sync_frac.map(|f| (f * f64::from(redis_replicas)).floor() as i32);
        s.redis.replicas = redis_replicas;
        s.redis.storage.size = size;
        s.redis.storage.storage_class_name = class;
        s.redis.resources = redis_res;
        s.redis.failover.enabled = failover;
        s.redis.failover.after_seconds = after;
        s
    }
}

fn matches(selector: &LabelSelector, pod_labels: &BTreeMap<String, String>) -> bool {
    assert!(selector.match_expressions.is_none());
    let sel = selector.match_labels.as_ref().unwrap();
    !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_spec_renders_valid_names_and_matching_selectors(
        name in name(),
        namespace in prop::option::of("[a-z]([-a-z0-9]{0,20}[a-z0-9])?"),
        spec in spec(),
    ) {
        let mut cr = CounterApp::new(&name, spec);
        cr.metadata.namespace = namespace;
        children::validate(&cr).unwrap();
        let pods = cr.spec.redis_pods() as usize;
        let inputs = Inputs {
            default_web_image: "ghcr.io/counterstack/counterstack:test".to_string(),
            passwords: Passwords::same(&"p".repeat(32)),
            tls: None,
            operator_namespace: Some("counterstack-system".to_string()),
        };
        let c = children::all(&cr, &inputs).unwrap();

        // Names: every object a DNS label (<= 63), Services DNS-1035 labels.
        let object_names = [
            &c.web_deployment.metadata.name, &c.web_pdb.metadata.name, &c.redis_statefulset.metadata.name,
            &c.redis_config.metadata.name, &c.redis_user_secrets[0].metadata.name, &c.redis_user_secrets[1].metadata.name, &c.redis_user_secrets[2].metadata.name, &c.redis_pdb.metadata.name,
        ];
        for n in object_names {
            let n = n.as_deref().unwrap();
            prop_assert!(is_dns1123_label(n), "{n}");
        }
        for svc in [&c.web_service, &c.redis_headless_service, &c.redis_primary_service, &c.redis_replicas_service] {
            let n = svc.metadata.name.as_deref().unwrap();
            prop_assert!(is_dns1035_label(n), "Service {n}");
        }
        // Names Kubernetes derives from ours: pod names (also hostnames), the
        // StatefulSet's controller-revision-hash label (NAME-redis-<10 chars>), PVCs.
        let sts_name = c.redis_statefulset.metadata.name.clone().unwrap();
        let revision_label = format!("{sts_name}-{}", "a".repeat(10));
        prop_assert!(is_dns1123_label(&revision_label), "{}", revision_label);
        for k in 0..pods {
            let pod = names::redis_pod(&name, k as u32);
            prop_assert!(is_dns1123_label(&pod), "{pod}");
            let pvc = format!("data-{pod}");
            prop_assert!(is_dns1123_label(&pvc), "{}", pvc);
        }
        // ReplicaSet pod names: NAME-web-<10>-<5>.
        let web_pod = format!("{}-{}-{}", c.web_deployment.metadata.name.as_deref().unwrap(), "a".repeat(10), "b".repeat(5));
        prop_assert!(is_dns1123_label(&web_pod), "{}", web_pod);

        // Selectors match their pod templates.
        let deploy = c.web_deployment.spec.as_ref().unwrap();
        let web_pod_labels = deploy.template.metadata.as_ref().unwrap().labels.clone().unwrap();
        prop_assert!(matches(&deploy.selector, &web_pod_labels));
        let sts = c.redis_statefulset.spec.as_ref().unwrap();
        let redis_pod_labels = sts.template.metadata.as_ref().unwrap().labels.clone().unwrap();
        prop_assert!(matches(&sts.selector, &redis_pod_labels));
        prop_assert!(!redis_pod_labels.contains_key(labels::ROLE), "roles are set per pod by the operator");
        prop_assert!(matches(c.web_pdb.spec.as_ref().unwrap().selector.as_ref().unwrap(), &web_pod_labels));
        prop_assert!(matches(c.redis_pdb.spec.as_ref().unwrap().selector.as_ref().unwrap(), &redis_pod_labels));
        // Web and Redis pods are never selected by the other component's selector.
        prop_assert!(!matches(&deploy.selector, &redis_pod_labels));
        prop_assert!(!matches(&sts.selector, &web_pod_labels));

        let svc_selector = |s: &k8s_openapi::api::core::v1::Service| s.spec.as_ref().unwrap().selector.clone().unwrap();
        let subset = |sel: &BTreeMap<String, String>, pod: &BTreeMap<String, String>| {
            !sel.is_empty() && sel.iter().all(|(k, v)| pod.get(k) == Some(v))
        };
        prop_assert!(subset(&svc_selector(&c.web_service), &web_pod_labels));
        prop_assert!(subset(&svc_selector(&c.redis_headless_service), &redis_pod_labels));
        for (svc, role) in [(&c.redis_primary_service, labels::ROLE_PRIMARY), (&c.redis_replicas_service, labels::ROLE_REPLICA)] {
            let mut sel = svc_selector(svc);
            let role_value = sel.remove(labels::ROLE);
            prop_assert_eq!(role_value.as_deref(), Some(role));
            prop_assert!(subset(&sel, &redis_pod_labels), "non-role part of {:?}", svc.metadata.name);
            // Once the operator adds the role label, the pod is selected.
            let mut labelled = redis_pod_labels.clone();
            labelled.insert(labels::ROLE.to_string(), role.to_string());
            prop_assert!(subset(&svc_selector(svc), &labelled));
        }

        // The ConfigMap gives the start script the pod count (no child names the primary).
        let cm_pods = c.redis_config.data.as_ref().unwrap()["pods"].clone();
        prop_assert_eq!(cm_pods, pods.to_string());

        // The output stream parses back and the CR passes the CRD's own rules.
        // Optional children: an autoscaler of the web Deployment, a policy on Redis pods.
        if cr.spec.hibernate {
            // No pod at all: no autoscaler to bring one back, the volumes stay.
            prop_assert!(c.web_hpa.is_none());
            prop_assert_eq!(deploy.replicas, Some(0));
            prop_assert_eq!(c.redis_statefulset.spec.as_ref().unwrap().replicas, Some(0));
            prop_assert_eq!(c.redis_statefulset.spec.as_ref().unwrap().volume_claim_templates.as_ref().map(Vec::len), Some(1));
        } else if let Some(hpa) = &c.web_hpa {
            prop_assert_eq!(&hpa.spec.as_ref().unwrap().scale_target_ref.name, c.web_deployment.metadata.name.as_ref().unwrap());
            prop_assert!(deploy.replicas.is_none(), "the HPA owns replicas");
        } else {
            prop_assert_eq!(deploy.replicas, Some(cr.spec.web.replicas));
        }
        if let Some(np) = &c.redis_network_policy {
            prop_assert!(matches(np.spec.as_ref().unwrap().pod_selector.as_ref().unwrap(), &redis_pod_labels));
            prop_assert!(!matches(np.spec.as_ref().unwrap().pod_selector.as_ref().unwrap(), &web_pod_labels));
        }
        let optional = usize::from(c.web_hpa.is_some())
            + usize::from(c.redis_network_policy.is_some())
            + usize::from(c.redis_certificate.is_some());
        let yaml = render::to_yaml(&c).unwrap();
        prop_assert_eq!(yaml.lines().filter(|l| *l == "---").count(), 12 + optional);
        validate_cel(&cr, None).unwrap();
    }

    /// Names longer than the limit are rejected with a message naming the field,
    /// never rendered into invalid objects.
    #[test]
    fn too_long_names_are_rejected(extra in 1usize..30) {
        let name = format!("a{}", "b".repeat(MAX_NAME_LEN - 1 + extra));
        let cr = CounterApp::new(&name, CounterAppSpec::default());
        let err = children::validate(&cr).unwrap_err().to_string();
        prop_assert!(err.contains("metadata.name"), "{}", err);
        // The CRD's own CEL rule agrees with MAX_NAME_LEN.
        let err = validate_cel(&cr, None).unwrap_err().to_string();
        prop_assert!(err.contains("metadata.name"), "{}", err);
    }
}
