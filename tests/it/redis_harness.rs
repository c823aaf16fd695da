//! The test harness itself works: real processes, replication, restart with and without data.

use crate::common;

use common::redis_server::{RedisServer, cluster};

#[test]
fn replicas_follow_and_restart_keeps_data() {
    let (mut primary, replicas) = cluster(2, Some("s3cret"));
    let v: i64 = primary.cmd(&["INCRBY", "counter:value", "5"]).unwrap();
    assert_eq!(v, 5);
    let _: i64 = primary.cmd(&["WAIT", "2", "2000"]).unwrap();
    for r in &replicas {
        assert_eq!(r.cmd::<String>(&["GET", "counter:value"]).unwrap(), "5");
        assert_eq!(r.info_field("role").as_deref(), Some("slave"));
    }
    primary.restart();
    assert_eq!(primary.cmd::<String>(&["GET", "counter:value"]).unwrap(), "5", "AOF keeps data");
    primary.restart_empty();
    assert_eq!(primary.cmd::<Option<String>>(&["GET", "counter:value"]).unwrap(), None);
    let mut lone = RedisServer::start();
    lone.kill9();
    assert!(!lone.is_running());
}
