//! Shared helpers of the integration tests (real redis-server processes, the failover
//! driver, a TCP proxy, the web service in-process). `examples/failover_bench.rs` includes
//! this module too.

pub mod failover_driver;
pub mod payload;
pub mod pki;
pub mod redis_info;
pub mod redis_server;
pub mod s3_server;
pub mod small_disk;
pub mod tcp_proxy;
pub mod web;
