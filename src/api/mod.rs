//! The `CounterApp` custom resource (`counterstack.io/v1alpha1`): spec, status, defaults
//! and the CEL rules the API server enforces. Nothing else lives here.

mod defaults;
mod pod_options;
pub mod redis_config;
mod spec;
mod status;

pub use defaults::*;
pub use pod_options::PodOptions;
pub use spec::*;
pub use status::*;

/// API group of every counterstack resource.
pub const GROUP: &str = "counterstack.io";
/// Field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "counterstack-operator";
