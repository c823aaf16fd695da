//! ConfigMap `NAME-redis`: `redis.conf`, the start script of the Redis container, and
//! `pods`, the number of Redis pods (the peers the start script asks for the primary).
//!
//! It names no primary: a Redis pod never learns its role from the cluster's objects
//! (a failover would otherwise rewrite them) but from its peers, and never starts as a
//! master (see [`START_SCRIPT`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::labels::Component;
use super::{Error, Inputs, meta, names};
use crate::api::{CounterApp, REDIS_PORT, redis_config};

/// Key of the Redis configuration file.
pub const REDIS_CONF_KEY: &str = "redis.conf";
/// Key of the start script.
pub const START_SCRIPT_KEY: &str = "start.sh";
/// Key of the preStop hook's script.
pub const PRESTOP_SCRIPT_KEY: &str = "prestop.sh";
/// Longest a stopping primary waits for the operator's hand-over before it stops anyway
/// (then the replicas fail over as after a crash). Below the pod's grace period.
pub const PRESTOP_WAIT_SECS: i64 = 20;
/// Key holding the number of Redis pods (ordinals `0..pods`).
pub const PODS_KEY: &str = "pods";
/// Where the ConfigMap is mounted in Redis pods.
pub const MOUNT_PATH: &str = "/etc/redis";
/// Where each Redis pod's volume is mounted (Redis `dir`).
pub const DATA_PATH: &str = "/data";
/// Seconds a replica may lag (since its last ack) and still count for min-replicas-to-write.
const MIN_REPLICAS_MAX_LAG: i32 = 10;

/// Start script. It runs with `POD_NAME` (`NAME-redis-K`), `REDIS_PASSWORD` and
/// `HEADLESS_SERVICE` in its environment and reads `pods` from the mounted ConfigMap.
///
/// Redis always starts as a replica, never as a master: a primary that restarts (its
/// last second of AOF possibly missing, or empty after losing its volume) would
/// otherwise be full-synced by its replicas, which follow it by DNS name, before the
/// operator's next pass, wiping acknowledged writes. So the script asks every other
/// pod `ROLE` (2 s timeout each) and follows the one peer that answers `master`. With
/// none, or more than one (a stale primary not yet fenced), it follows `127.0.0.1:1`,
/// where nobody answers: the node keeps its data, takes no writes and waits for the
/// replication manager to promote or repoint it (pod 0 of a fresh stack within one pass).
///
/// The pod count lives in the ConfigMap, not in the pod template, so scaling does not
/// make every Redis pod outdated. A stale count (the volume updates within a minute) is
/// harmless: a pod added by a scale-up is never the primary, and a removed pod's name
/// does not resolve.
///
/// Every node announces its stable name (`replica-announce-ip NAME-redis-K.NAME-redis-headless`,
/// the name the others follow it by): a primary lists its replicas under the announced
/// name, so `FAILOVER TO` can name a replica the way the primary knows it. Without it the
/// primary knows a replica only by the IP it connects from (docs/replication.md).
///
/// `REDIS_PEERS` (space-separated `host:port` list) replaces the discovery and
/// `REDIS_ANNOUNCE` the announced name; both exist for tests on loopback ports and are
/// never set in the StatefulSet.
///
/// The mount is a whole-directory ConfigMap volume (not subPath), so updates reach
/// running pods.
pub const START_SCRIPT: &str = r#"#!/bin/sh
# Start Redis as a replica of the peer that says it is master, else of 127.0.0.1:1
# (nobody answers) until the operator decides. Never as a master: see the ConfigMap's
# builder in counterstack (src/build/configmap.rs).
set -eu
export REDISCLI_AUTH="$REDIS_PASSWORD"
if [ -n "${REDIS_PEERS:-}" ]; then
  peers="$REDIS_PEERS"
else
  me="${POD_NAME##*-}"
  sts="${POD_NAME%-*}"
  pods="$(cat /etc/redis/pods 2>/dev/null || echo 0)"
  peers=""
  j=0
  while [ "$j" -lt "$pods" ]; do
    if [ "$j" != "$me" ]; then
      peers="$peers $sts-$j.$HEADLESS_SERVICE:6379"
    fi
    j=$((j + 1))
  done
fi
# shellcheck disable=SC2086 # one word per peer
echo "start.sh: asking" $peers >&2
master="127.0.0.1:1"
masters=0
for peer in $peers; do
  role="$(timeout 2 redis-cli -h "${peer%:*}" -p "${peer##*:}" ROLE 2>/dev/null | head -n 1)" || role=""
  if [ "$role" = "master" ]; then
    master="$peer"
    masters=$((masters + 1))
  fi
done
if [ "$masters" -ne 1 ]; then
  echo "start.sh: $masters peers answer as master; waiting for the operator" >&2
  master="127.0.0.1:1"
fi
announce="${REDIS_ANNOUNCE:-$POD_NAME.$HEADLESS_SERVICE}"
echo "start.sh: replica of $master, announced as $announce" >&2
exec redis-server /etc/redis/redis.conf --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" \
  --replica-announce-ip "$announce" --replicaof "${master%:*}" "${master##*:}"
"#;

/// The Redis container's preStop hook. A pod that is stopped on purpose (`kubectl delete
/// pod`, an eviction by `kubectl drain`, the operator's own planned restart) gets a
/// deletionTimestamp first; the operator sees it and hands the primary over with
/// `FAILOVER TO` (a pause of milliseconds). This script holds the stop while this node is
/// a primary with replicas, until it is a replica or `PRESTOP_WAIT` seconds passed; a
/// replica, or a primary without replicas, stops at once.
pub const PRESTOP_SCRIPT: &str = r#"#!/bin/sh
# Hold a stopping primary until the operator has handed it over (see the ConfigMap's
# builder in counterstack, src/build/configmap.rs).
export REDISCLI_AUTH="$REDIS_PASSWORD"
end=$(( $(date +%s) + ${PRESTOP_WAIT:-20} ))
while [ "$(date +%s)" -lt "$end" ]; do
  info="$(timeout 2 redis-cli -h 127.0.0.1 -p 6379 INFO replication 2>/dev/null)" || exit 0
  case "$info" in
    *role:master*) ;;
    *) echo "prestop: a replica now; stopping" >&2; exit 0 ;;
  esac
  case "$info" in
    *connected_slaves:0*) echo "prestop: a primary without replicas; stopping" >&2; exit 0 ;;
  esac
  sleep 0.2
done
echo "prestop: still the primary after ${PRESTOP_WAIT:-20}s; stopping anyway" >&2
"#;

/// The Redis configuration: [`redis_conf_base`], then the user's `spec.redis.config`
/// (a later directive wins, so a user's `appendfsync` replaces ours). A pod that starts
/// reads every setting from here; running pods get the live ones with `CONFIG SET` from
/// the replication manager (`src/redis/live_config.rs`).
pub fn redis_conf(cr: &CounterApp) -> String {
    let mut conf = redis_conf_base(cr);
    let user = &cr.spec.redis.config;
    if !user.is_empty() {
        conf.push_str("# spec.redis.config\n");
        for (key, value) in user {
            conf.push_str(&redis_config::conf_line(key, value));
        }
    }
    conf
}

/// The operator's part of redis.conf: durable (AOF), diskless full syncs, and a primary
/// that refuses writes when fewer than `syncReplicas` replicas are connected (consistent
/// with the web service's `WAIT syncReplicas`). The pod template hashes this, plus only
/// those user settings that need a restart (`redis_config::restart_lines`).
pub fn redis_conf_base(cr: &CounterApp) -> String {
    let sync = cr.spec.sync_replicas();
    format!(
        "# Generated by counterstack; edit the CounterApp, not this file.\n\
         port {REDIS_PORT}\n\
         bind * -::*\n\
         protected-mode no\n\
         dir {DATA_PATH}\n\
         appendonly yes\n\
         appendfsync everysec\n\
         repl-diskless-sync yes\n\
         repl-diskless-sync-delay 0\n\
         replica-read-only yes\n\
         replica-serve-stale-data yes\n\
         min-replicas-to-write {sync}\n\
         min-replicas-max-lag {MIN_REPLICAS_MAX_LAG}\n"
    )
}

/// Pod name of the primary: `inputs.primary` when it names a pod of this CounterApp
/// that exists at the spec's size, else pod 0. No builder uses it (no child names the
/// primary); it is kept for callers that compare the primary they built with.
pub fn primary_pod(cr: &CounterApp, inputs: &Inputs) -> Result<String, Error> {
    let app = meta::app_name(cr);
    match inputs.primary.as_deref() {
        None => Ok(names::redis_pod(app, 0)),
        Some(pod) => match names::redis_ordinal(app, pod) {
            Some(k) if i64::from(k) < i64::from(cr.spec.redis_pods()) => Ok(pod.to_string()),
            // Never silently fall back to pod 0: that could start a second primary.
            _ => Err(Error::Primary { pod: pod.to_string(), pods: cr.spec.redis_pods() }),
        },
    }
}

pub fn redis(cr: &CounterApp) -> ConfigMap {
    let name = names::redis(meta::app_name(cr));
    ConfigMap {
        metadata: meta::object_meta(cr, name, Component::Redis),
        data: Some(BTreeMap::from([
            (REDIS_CONF_KEY.to_string(), redis_conf(cr)),
            (START_SCRIPT_KEY.to_string(), START_SCRIPT.to_string()),
            (PRESTOP_SCRIPT_KEY.to_string(), PRESTOP_SCRIPT.to_string()),
            (PODS_KEY.to_string(), cr.spec.redis_pods().to_string()),
        ])),
        ..ConfigMap::default()
    }
}
