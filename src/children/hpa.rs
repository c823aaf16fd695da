//! HorizontalPodAutoscaler `NAME-web` (autoscaling/v2), only with `spec.web.autoscaling`.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::meta;
use crate::api::CounterApp;
use crate::labels::Component;
use crate::names;

/// The web Deployment's autoscaler on CPU utilisation; `None` without autoscaling.
pub fn web(cr: &CounterApp) -> Option<HorizontalPodAutoscaler> {
    // A hibernated stack has no web pod for an autoscaler to scale (its minimum would
    // wake it).
    let a = cr.spec.web.autoscaling.as_ref().filter(|_| !cr.spec.hibernate)?;
    let app = meta::app_name(cr);
    Some(HorizontalPodAutoscaler {
        metadata: meta::object_meta(cr, names::web(app), Component::Web),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: "Deployment".to_string(),
                name: names::web(app),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_string(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_string(),
                    target: MetricTarget {
                        type_: "Utilization".to_string(),
                        average_utilization: Some(a.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    })
}
