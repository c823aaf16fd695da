//! ConfigMap `NAME-redis`: `redis.conf`, the start script of the Redis container, and
//! `pods`, the number of Redis pods (the peers the start script asks for the primary).
//!
//! It names no primary: a Redis pod never learns its role from the cluster's objects
//! (a failover would otherwise rewrite them) but from its peers, and never starts as a
//! master (see [`START_SCRIPT`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::meta;
use crate::api::{CounterApp, REDIS_PORT, redis_config};
use crate::labels::Component;
use crate::{acl, names};

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

/// Where the start script writes the ACL file, the credentials include and the
/// pod-local monitor password (an emptyDir: mode 0600 files, gone with the pod).
pub const RUN_PATH: &str = "/run/redis";
/// Where each user's Secret is mounted (`USER/password`, `USER/previous`).
pub const AUTH_PATH: &str = "/etc/redis-auth";
/// Where the TLS Secret is mounted (`tls.crt`, `tls.key`, `ca.crt`).
pub const TLS_PATH: &str = "/etc/redis-tls";
/// Key of the ACL rules (`acl::rules_file`).
pub const ACL_RULES_KEY: &str = "acl-rules";
/// File in [`RUN_PATH`] the readiness probe and preStop hook source: the monitor
/// user's password (`REDISCLI_AUTH`) and redis-cli's TLS flags (`CLI_TLS`).
pub const MONITOR_ENV: &str = "monitor.env";

/// Start script. It runs with `POD_NAME` (`NAME-redis-K`) and `HEADLESS_SERVICE` in its
/// environment, reads `pods` and `acl-rules` from the mounted ConfigMap and every user's
/// password from the mounted Secrets (never from arguments or the environment).
///
/// Credentials: it writes, in the `run` emptyDir with mode 0600, the ACL file
/// (`users.acl`: every user of `acl-rules` with the SHA-256 of its `password`, and of
/// its `previous` one while a rotation runs) and `auth.conf` (`aclfile`, `masteruser
/// replication`, `masterauth`), which redis-server includes. The pod-local `monitor`
/// user gets a random password per start, in `monitor.env` for the probe and the
/// preStop hook and in `exporter.json` for the metrics sidecar.
///
/// Redis always starts as a replica, never as a master: a primary that restarts (its
/// last second of AOF possibly missing, or empty after losing its volume) would
/// otherwise be full-synced by its replicas, which follow it by DNS name, before the
/// operator's next pass, wiping acknowledged writes. So the script asks every other
/// pod `ROLE` (2 s timeout each, as the `replication` user) and follows the one peer
/// that answers `master`. With none, or more than one (a stale primary not yet fenced),
/// it follows `127.0.0.1:1`, where nobody answers: the node keeps its data, takes no
/// writes and waits for the replication manager to promote or repoint it (pod 0 of a
/// fresh stack within one pass).
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
/// The mounts are whole-directory volumes (not subPath), so updates reach running pods.
pub const START_SCRIPT: &str = r##"#!/bin/sh
# Start Redis as a replica of the peer that says it is master, else of 127.0.0.1:1
# (nobody answers) until the operator decides. Never as a master. Credentials come from
# the mounted Secrets and go into 0600 files, never into arguments or the environment.
# See the ConfigMap's builder in counterstack (src/build/configmap.rs).
set -eu
umask 077
run=/run/redis
auth=/etc/redis-auth
tls=/etc/redis-tls
secret() { cat "$auth/$1/$2" 2>/dev/null || true; } # $(...) strips trailing newlines
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
cli_tls=""
if [ -f "$tls/ca.crt" ]; then cli_tls="--tls --cacert $tls/ca.crt"; fi
monitor="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
: > "$run/users.acl.new"
while read -r user rules; do
  [ -n "$user" ] || continue
  case "$user" in
    default) echo "user default $rules" >> "$run/users.acl.new"; continue ;;
    monitor) hashes="#$(sha "$monitor")" ;;
    *)
      pw="$(secret "$user" password)"
      if [ -z "$pw" ]; then echo "start.sh: no password for Redis user $user in $auth/$user" >&2; exit 1; fi
      hashes="#$(sha "$pw")"
      prev="$(secret "$user" previous)"
      if [ -n "$prev" ] && [ "$prev" != "$pw" ]; then hashes="$hashes #$(sha "$prev")"; fi ;;
  esac
  echo "user $user on $hashes $rules" >> "$run/users.acl.new"
done < /etc/redis/acl-rules
mv "$run/users.acl.new" "$run/users.acl"
printf 'aclfile %s\nmasteruser replication\nmasterauth %s\n' "$run/users.acl" "$(secret replication password)" > "$run/auth.conf"
printf "REDISCLI_AUTH='%s'\nexport REDISCLI_AUTH\nCLI_TLS='%s'\n" "$monitor" "$cli_tls" > "$run/monitor.env"
(umask 027; printf '{"redis://127.0.0.1:6379":"%s","rediss://127.0.0.1:6379":"%s"}\n' "$monitor" "$monitor" > "$run/exporter.json")
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
replication="$(secret replication password)"
for peer in $peers; do
  # shellcheck disable=SC2086 # cli_tls is empty or two flags
  role="$(REDISCLI_AUTH="$replication" timeout 2 redis-cli $cli_tls --user replication -h "${peer%:*}" -p "${peer##*:}" ROLE 2>/dev/null | head -n 1)" || role=""
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
exec redis-server /etc/redis/redis.conf --include "$run/auth.conf" \
  --replica-announce-ip "$announce" --replicaof "${master%:*}" "${master##*:}"
"##;

/// The Redis container's preStop hook. A pod that is stopped on purpose (`kubectl delete
/// pod`, an eviction by `kubectl drain`, the operator's own planned restart) gets a
/// deletionTimestamp first; the operator sees it and hands the primary over with
/// `FAILOVER TO` (a pause of milliseconds). This script holds the stop while this node is
/// a primary with replicas, until it is a replica or `PRESTOP_WAIT` seconds passed; a
/// replica, or a primary without replicas, stops at once.
pub const PRESTOP_SCRIPT: &str = r#"#!/bin/sh
# Hold a stopping primary until the operator has handed it over (see the ConfigMap's
# builder in counterstack, src/build/configmap.rs).
. /run/redis/monitor.env || exit 0
end=$(( $(date +%s) + ${PRESTOP_WAIT:-20} ))
while [ "$(date +%s)" -lt "$end" ]; do
  # shellcheck disable=SC2086 # CLI_TLS is empty or two flags
  info="$(timeout 2 redis-cli $CLI_TLS --user monitor -h 127.0.0.1 -p 6379 INFO replication 2>/dev/null)" || exit 0
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
/// the replication manager (`src/replication/live_config.rs`).
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
    let listen = if cr.spec.redis.tls.is_some() {
        // TLS only: no plain-text port at all. Clients prove who they are with ACL
        // passwords, not certificates; replicas replicate over TLS.
        format!(
            "port 0\n\
             tls-port {REDIS_PORT}\n\
             tls-cert-file {TLS_PATH}/tls.crt\n\
             tls-key-file {TLS_PATH}/tls.key\n\
             tls-ca-cert-file {TLS_PATH}/ca.crt\n\
             tls-auth-clients no\n\
             tls-replication yes\n"
        )
    } else {
        format!("port {REDIS_PORT}\n")
    };
    format!(
        "# Generated by counterstack; edit the CounterApp, not this file.\n\
         {listen}\
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

pub fn redis(cr: &CounterApp) -> ConfigMap {
    let name = names::redis(meta::app_name(cr));
    ConfigMap {
        metadata: meta::object_meta(cr, name, Component::Redis),
        data: Some(BTreeMap::from([
            (REDIS_CONF_KEY.to_string(), redis_conf(cr)),
            (START_SCRIPT_KEY.to_string(), START_SCRIPT.to_string()),
            (PRESTOP_SCRIPT_KEY.to_string(), PRESTOP_SCRIPT.to_string()),
            (ACL_RULES_KEY.to_string(), acl::rules_file()),
            (PODS_KEY.to_string(), cr.spec.redis_pods().to_string()),
        ])),
        ..ConfigMap::default()
    }
}
