#!/usr/bin/env bash
# The operator at scale, against the cluster KUBECONFIG points at: create N CounterApps
# (default 1000) in a fresh namespace, with the operator (release build) running as its
# own process, and print
#   - seconds from the first create until every CounterApp has all its children (13 by
#     default: CHILDREN) and a status for its generation (target <= 120 s at 1000),
#   - the operator's peak RSS (target <= 64 MiB),
#   - API requests the operator sends over REST_SECONDS (60) at rest, by verb and
#     resource (its own counterstack_api_requests_total; target <= 1 per second for the
#     whole operator), and their total as a count: the line
#     `scale: at rest: N requests in S s` is what scripts/scale-guard.sh checks.
#
#   bench/scale.sh                 # N=1000
#   N=100 REST_SECONDS=30 bench/scale.sh
#   BIN=path/to/counterstack bench/scale.sh   # that binary instead of a release build
#   OPERATOR_ARGS=--leader-election=false bench/scale.sh   # extra operator flags
#   CONVERGE_ONLY=1 bench/scale.sh # stop once converged (A/B runs of convergence)
#   OP_RUST_LOG=warn,counterstack::operator::reconcile=debug OP_LOG=/tmp/op.log bench/scale.sh
#                                  # why each status is written (its changed fields)
#
# Exits non-zero when the CounterApps do not converge within 900 s.
#
# Measure it as a user with a full cluster would meet it: no pod runs, so every Redis
# pod stays Pending (on ../shared/k8s: `local-k8s up` without `local-k8s pods up`, or
# `local-k8s pods down` first). The namespace is deleted at the end (KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000}"
REST_SECONDS="${REST_SECONDS:-60}"
NS="${NS:-scale-bench}"
PORT="${PORT:-18181}"
[ -n "${KUBECONFIG:-}" ] || [ -f "$HOME/.kube/config" ] || {
  echo "scale: point KUBECONFIG at a cluster (k3s, kind, ../shared/k8s/local-k8s)" >&2; exit 1; }

CHILDREN="${CHILDREN:-13}"
if [ -z "${BIN:-}" ]; then
  cargo build --quiet --release --locked
  BIN="${CARGO_TARGET_DIR:-target}/release/counterstack"
fi
WORK="$(mktemp -d)"
OP_PID=""
cleanup() {
  [ -z "$OP_PID" ] || kill "$OP_PID" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

kubectl apply --server-side -f crds/counterapp.yaml >/dev/null 2>&1 \
  || { [ -x ../shared/k8s/local-k8s ] && ../shared/k8s/local-k8s crd crds/counterapp.yaml >/dev/null; }
for _ in $(seq 1 100); do   # a previous run's namespace may still be going
  [ "$(kubectl get namespace "$NS" -o jsonpath='{.status.phase}' 2>/dev/null)" = Terminating ] || break
  sleep 3
done
if kubectl get namespace "$NS" >/dev/null 2>&1; then
  echo "scale: namespace $NS exists; delete it first (kubectl delete namespace $NS)" >&2; exit 1
fi
kubectl create namespace "$NS" >/dev/null

OP_LOG="${OP_LOG:-$WORK/operator.log}"
# shellcheck disable=SC2086 # OPERATOR_ARGS is a list of flags
RUST_LOG="${OP_RUST_LOG:-warn}" "$BIN" operator --namespace "$NS" --metrics-addr "127.0.0.1:$PORT" ${OPERATOR_ARGS:-} >"$OP_LOG" 2>&1 &
OP_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "scale: operator not ready:" >&2; tail "$OP_LOG" >&2; exit 1; }

# N CounterApps in 8 files, applied by 8 kubectl processes at once.
for i in $(seq 1 "$N"); do
  printf 'apiVersion: counterstack.io/v1alpha1\nkind: CounterApp\nmetadata:\n  name: s%05d\n  namespace: %s\nspec:\n  web: {replicas: 1}\n  redis: {replicas: 1, storage: {size: 64Mi}}\n---\n' "$i" "$NS" \
    >>"$WORK/apps-$((i % 8)).yaml"
done
ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { printf '%d.%01d' $(( $1 / 1000 )) $(( $1 % 1000 / 100 )); }
requests() { curl -sf "http://127.0.0.1:$PORT/metrics" | grep '^counterstack_api_requests_total' || true; }
requests >"$WORK/start"
start=$(ms)
pids=()
for f in "$WORK"/apps-*.yaml; do kubectl apply --server-side --request-timeout=120s -f "$f" >/dev/null & pids+=($!); done
for p in "${pids[@]}"; do wait "$p" || { echo "scale: kubectl apply failed" >&2; exit 1; }; done
echo "scale: created $N CounterApps in $(secs $(( $(ms) - start ))) s"

# The polling stays light (it shares the machine with what it measures): generations
# only, and the children are counted once every status is there.
converged() {
  kubectl get capp -n "$NS" \
    -o jsonpath='{range .items[*]}{.metadata.generation} {.status.observedGeneration}{"\n"}{end}' |
    awk '$1 == $2 { ok++ } END { print ok + 0 }'
}
children() {
  kubectl get deploy,sts,svc,cm,secret,pdb,networkpolicy -n "$NS" \
    -l app.kubernetes.io/managed-by=counterstack-operator -o name 2>/dev/null | wc -l
}
converged_ok=1
while :; do
  ok=$(converged); kids=0
  if [ "$ok" -ge "$N" ]; then
    kids=$(children)
    [ "$kids" -lt $((N * CHILDREN)) ] || break
  fi
  if [ $(( $(ms) - start )) -gt 900000 ]; then
    echo "scale: not converged after 900 s: $ok statuses, $kids children" >&2; converged_ok=""; break
  fi
  sleep 3
done
echo "scale: converged (every CounterApp has its $CHILDREN children and a status for its generation) after $(secs $(( $(ms) - start ))) s"
requests >"$WORK/converged"
converged_secs=$(secs $(( $(ms) - start )))
# CPU seconds the operator used (user + system), from /proc.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$OP_PID/stat"; }
cpu_converged=$(cpu)
# Requests between two snapshots of counterstack_api_requests_total, by verb and resource.
diff_requests() {
  python3 - "$@" <<'PY'
import re, sys
def read(p):
    out = {}
    for line in open(p):
        m = re.match(r'counterstack_api_requests_total\{(.*)\} (\S+)', line)
        if not m: continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        key = (labels.get("verb", "?"), labels.get("resource", "-"))
        out[key] = out.get(key, 0) + float(m.group(2))
    return out
before, after, label, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
b, a = read(before), read(after)
total = 0
for key in sorted(set(a) | set(b)):
    n = int(a.get(key, 0) - b.get(key, 0))
    if n:
        total += n
        print(f"scale: {label}: {key[0]:7s} {key[1]:24s} {n:6d} requests  {n / secs:.3f}/s")
target = " (target <= 1)" if label == "at rest" else ""
print(f"scale: {label}: {total} requests in {secs:.0f} s = {total / secs:.3f} requests/s{target}")
PY
}
diff_requests "$WORK/start" "$WORK/converged" "to converge" "$converged_secs"
if [ -n "${CONVERGE_ONLY:-}" ]; then
  echo "scale: operator peak RSS $(( $(awk '/VmHWM/ {print $2}' "/proc/$OP_PID/status") / 1024 )) MiB until converged, CPU $cpu_converged s"
  [ -n "$converged_ok" ] || exit 3
  exit 0
fi

# At rest means the cluster's own controllers are done too: the StatefulSet controller
# creates every Redis pod (each one wakes its CounterApp), at its own pace.
metric() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
while [ "$(kubectl get pods -n "$NS" -l app.kubernetes.io/component=redis --no-headers 2>/dev/null | wc -l)" -lt $((N * 2)) ]; do
  [ $(( $(ms) - start )) -gt 900000 ] && break
  sleep 3
done
last=""
while :; do
  now="$(metric counterstack_status_patches_total)"
  [ "$now" = "$last" ] && break
  last="$now"
  [ $(( $(ms) - start )) -gt 900000 ] && break
  sleep 10
done
echo "scale: settled (every Redis pod created, no status written for 10 s) after $(secs $(( $(ms) - start ))) s"
requests >"$WORK/before"
sleep "$REST_SECONDS"
requests >"$WORK/after"
diff_requests "$WORK/before" "$WORK/after" "at rest" "$REST_SECONDS"
rss=$(awk '/VmHWM/ {print $2}' "/proc/$OP_PID/status")
echo "scale: operator peak RSS $((rss / 1024)) MiB (target <= 64 MiB), RSS at rest $(( $(awk '/VmRSS/ {print $2}' "/proc/$OP_PID/status") / 1024 )) MiB"
echo "scale: operator CPU $cpu_converged s until converged, $(cpu) s in all"
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^counterstack_(cache_objects|reconcile_queue_depth|reconciles_in_flight|reconcile_results_total|leader)' || true
[ -n "$converged_ok" ] || exit 3
