//! counterstack: a Kubernetes operator for the counter stack and the counter web service
//! it runs. One crate, one binary (`counterstack operator | web | render | crd | version | kubectl`), which also runs
//! as the kubectl plugin `kubectl counterstack` ([`plugin`]).

pub mod acl;
pub mod api;
pub mod backoff;
pub mod backup;
pub mod children;
pub mod crd;
pub mod dial;
pub mod failpoint;
pub mod labels;
pub mod locked;
pub mod names;
pub mod operator;
pub mod plugin;
pub mod render;
pub mod replication;
pub mod signals;
pub mod telemetry;
pub mod web;
