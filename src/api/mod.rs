//! The `CounterApp` custom resource (`counterstack.io/v1alpha1`): spec, status, defaults
//! and the CEL rules the API server enforces. Nothing else lives here.

mod backup;
mod bounds;
mod defaults;
mod pod_options;
pub mod redis_config;
mod spec;
mod status;

pub use backup::*;
pub use bounds::*;
pub use defaults::*;
pub use pod_options::PodOptions;
pub use spec::*;
pub use status::*;

/// API group of every counterstack resource.
pub const GROUP: &str = "counterstack.io";
/// Annotation on a CounterApp requesting a planned hand-over of the Redis primary: any
/// non-empty token (`kubectl counterstack switchover` writes an RFC 3339 timestamp). The
/// operator acts on each token once and answers in `status.redis.switchover`; it never
/// removes the annotation (GitOps-safe).
pub const SWITCHOVER_ANNOTATION: &str = "counterstack.io/switchover";
/// Optional annotation naming the Redis pod to hand the primary over to; empty or absent:
/// the most advanced replica in sync with the primary.
pub const SWITCHOVER_TO_ANNOTATION: &str = "counterstack.io/switchover-to";
/// Field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "counterstack-operator";
