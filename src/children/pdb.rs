//! PodDisruptionBudgets `NAME-web` and `NAME-redis`: voluntary disruptions (node
//! drains) take at most one pod of each component at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use crate::api::CounterApp;
use crate::labels::{self, Component};
use crate::names;

pub fn web(cr: &CounterApp) -> PodDisruptionBudget {
    build(cr, names::web(meta::app_name(cr)), Component::Web)
}

pub fn redis(cr: &CounterApp) -> PodDisruptionBudget {
    build(cr, names::redis(meta::app_name(cr)), Component::Redis)
}

fn build(cr: &CounterApp, name: String, component: Component) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta::object_meta(cr, name, component),
        spec: Some(PodDisruptionBudgetSpec {
            // maxUnavailable (not minAvailable) so that a single-pod component can still
            // be drained instead of blocking the node forever.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(meta::app_name(cr), component)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
