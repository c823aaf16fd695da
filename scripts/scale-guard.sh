#!/usr/bin/env bash
# The CI guard of issue 18: a hundred CounterApps at rest must leave the API server
# alone. Runs bench/scale.sh with N=100 against the cluster KUBECONFIG points at (no
# node: every pod stays Pending, the state that once cost two status patches a minute per
# CounterApp), then counts the requests the operator sent during REST_SECONDS at rest
# (its own counterstack_api_requests_total) and fails when the count exceeds
# MAX_PER_SECOND x REST_SECONDS. A count, not a timing: convergence time and memory are
# printed, never checked (they are benchmark figures).
#
# The operator runs without leader election: a leader renews its Lease every 9 s (a GET
# and a PATCH, 0.2 requests/s), whatever the number of stacks; that is not what this
# guards. The bound, 0.2 requests/s at N=100 (24 requests in 120 s): an idle operator
# re-establishes each of its 11 watches every ~290 s (the API server ends a watch after
# its timeout), 0 or 11 requests in a window of 120 s; that leaves the hundred stacks at
# least 13 requests in 120 s, about one per CounterApp per 15 minutes. The regression of
# issue 18 was ~200 (two status patches a minute per waiting CounterApp); a resync of
# every stack every 5 minutes with one request each would be 40.
#
#   scripts/scale-guard.sh                       # N=100, the debug binary of `cargo build`
#   BIN=target/release/counterstack scripts/scale-guard.sh
#
# Env: N (100), REST_SECONDS (120), MAX_PER_SECOND (0.2), BIN (target/debug/counterstack,
# built when missing), NS (scale-guard), PORT (18182).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100}"
REST_SECONDS="${REST_SECONDS:-120}"
MAX_PER_SECOND="${MAX_PER_SECOND:-0.2}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/debug/counterstack}"
[ -x "$BIN" ] || cargo build --locked --quiet

# Pods that run change what "at rest" means (Redis answers, links come up): refuse a
# cluster with a node rather than measure something else.
nodes="$(kubectl get nodes --no-headers 2>/dev/null | wc -l)"
if [ "$nodes" -gt 0 ] && [ -z "${ALLOW_NODES:-}" ]; then
  echo "scale-guard: the cluster has $nodes node(s); run it where no pod runs (local-k8s up without" \
    "pods/node up), or set ALLOW_NODES=1" >&2
  exit 2
fi

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
start=$SECONDS
N="$N" REST_SECONDS="$REST_SECONDS" BIN="$BIN" NS="${NS:-scale-guard}" PORT="${PORT:-18182}" \
  OPERATOR_ARGS="--leader-election=false" bench/scale.sh | tee "$out"
count="$(sed -n 's/^scale: at rest: \([0-9][0-9]*\) requests in .*/\1/p' "$out")"
[ -n "$count" ] || { echo "scale-guard: no request count in the output of bench/scale.sh" >&2; exit 1; }
bound="$(awk -v r="$MAX_PER_SECOND" -v s="$REST_SECONDS" 'BEGIN { printf "%d", r * s }')"
echo "scale-guard: $count requests at rest in $REST_SECONDS s with $N CounterApps (bound $bound:" \
  "$MAX_PER_SECOND/s); took $((SECONDS - start)) s"
if [ "$count" -gt "$bound" ]; then
  echo "scale-guard: FAILED: the operator is not quiet at rest; see the requests by verb and resource above" >&2
  exit 1
fi
