#!/usr/bin/env bash
# Failover benchmark: 20 kill -9 runs and 20 planned rolling restarts against real
# redis-server processes driven by the replication manager under INCR + WAIT 1 load.
# Prints p50/p99 of the write-unavailability window, acknowledged writes lost, and the
# planned-switchover write pause.
#
#   bench/failover.sh                 # RUNS=20 AFTER_SECONDS=1 CLIENTS=4
#   RUNS=5 PROFILE=release bench/failover.sh
#
# Needs redis-server (Debian package redis-server, 7.x) on PATH. Timing is dominated by
# Redis and failover.afterSeconds, so the default dev profile is fine; PROFILE=release
# builds optimised.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }
profile_flag=()
[[ "${PROFILE:-dev}" == "release" ]] && profile_flag=(--release)
cargo build --quiet "${profile_flag[@]}" --example failover_bench
cargo run --quiet "${profile_flag[@]}" --example failover_bench
