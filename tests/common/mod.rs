//! Shared helpers of the integration tests. Each test binary uses a subset.
#![allow(dead_code)]

pub mod failover_driver;
pub mod redis_server;
pub mod tcp_proxy;
pub mod web;
