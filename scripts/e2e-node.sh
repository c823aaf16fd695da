#!/usr/bin/env bash
# The e2e suite on a real node: ../shared/k8s (Kubernetes v1.33.3 control plane, and a node
# with containerd + runc, kubelet, kube-proxy, cluster DNS and local-path volumes), the
# operator in-cluster from the Helm chart, every namespace Pod Security `restricted`.
#
#   scripts/e2e-node.sh [BIN]        # BIN: the counterstack binary the images are built
#                                    # from (default target/debug/counterstack)
#
# 1. brings up the control plane and the node when they are not up (and stops at exit
#    exactly what it started), builds the node's images from BIN (counterstack, the Redis
#    exporter, and the Valkey 8.1 / Redis 8.0 images of E2E_REDIS_VERSIONS),
# 2. runs the whole suite with the default Redis image (`make e2e`),
# 3. runs E2E_VERSION_TESTS (a subset: replication and failover under load, live config,
#    backup and restore)
#    once more per image of E2E_REDIS_VERSIONS
#    (default "valkey/valkey:8.1 redis:8.0"; empty: none),
# 4. runs scripts/registry-e2e.sh, the private-registry round trip (E2E_REGISTRY=0: not).
#
# Needs root (the node runs containers). Users run `make e2e` against k3s or kind instead
# (docs/install.md).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCAL_K8S="${LOCAL_K8S:-../shared/k8s/local-k8s}"
BIN="$(realpath "${1:-${CARGO_TARGET_DIR:-target}/debug/counterstack}")"
NODE_HOME="${LOCAL_K8S_NODE_HOME:-/var/lib/local-k8s/node}"
IMAGES="$(dirname "$LOCAL_K8S")/node/images/build-images.sh"
E2E_REDIS_VERSIONS="${E2E_REDIS_VERSIONS-valkey/valkey:8.1 redis:8.0}"
E2E_VERSION_TESTS="${E2E_VERSION_TESTS-a_hung_killed_or_partitioned_primary_fails_over_under_load redis_config a_backup_under_load}"
export E2E_TIMEOUT_SECS="${E2E_TIMEOUT_SECS:-180}"
[ -x "$LOCAL_K8S" ] || { echo "e2e-node: no $LOCAL_K8S" >&2; exit 1; }
[ -x "$BIN" ] || { echo "e2e-node: no binary $BIN (cargo build first)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "e2e-node: the node needs root" >&2; exit 1; }

STOP=()   # what to stop at exit, in order
cleanup() {
  local what
  if [ -n "${S3_PID:-}" ]; then kill "$S3_PID" 2>/dev/null || true; fi
  for what in "${STOP[@]}"; do
    # shellcheck disable=SC2086 # "node down" is two arguments
    "$LOCAL_K8S" $what >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

t0=$SECONDS
# Not `status | grep -q`: grep stops reading, status dies of SIGPIPE, and pipefail would
# take a running control plane for a stopped one.
status_text="$("$LOCAL_K8S" status 2>/dev/null || true)"
if [[ "$status_text" == *"control plane: up"* ]]; then
  echo "e2e-node: the control plane is already up; leaving it up"
else
  # State a killed session left behind (containers, mounts, iptables) goes first.
  "$LOCAL_K8S" down >/dev/null 2>&1 || true
  "$LOCAL_K8S" up
  STOP+=("down")
fi
if "$LOCAL_K8S" node status >/dev/null 2>&1; then
  echo "e2e-node: the node already runs; refreshing its counterstack image from $BIN"
else
  "$LOCAL_K8S" node up --counterstack "$BIN"
  [ "${#STOP[@]}" -gt 0 ] || STOP+=("node down")
fi
extra=(counterstack exporter)
for image in $E2E_REDIS_VERSIONS; do
  case "$image" in
    valkey/*) extra+=(valkey) ;;
    redis:8*) extra+=(redis8) ;;
  esac
done
echo "e2e-node: images ${extra[*]} (log $NODE_HOME/images/e2e-node.log)"
NODE_HOME="$NODE_HOME" COUNTERSTACK_BIN="$BIN" "$IMAGES" "${extra[@]}" >"$NODE_HOME/images/e2e-node.log" 2>&1 \
  || { tail -20 "$NODE_HOME/images/e2e-node.log" >&2; exit 1; }
grep 'build-images: .*imported' "$NODE_HOME/images/e2e-node.log" | sed 's/^/e2e-node:   /' || true
KUBECONFIG="$("$LOCAL_K8S" kubeconfig admin --direct)"
export KUBECONFIG
kubectl get nodes -o wide
echo "e2e-node: cluster ready after $((SECONDS - t0)) s"

# The object store of the backup tests (tests/e2e/backup.rs): moto from the venv
# scripts/setup.sh made, on the host; pods reach it at the node's bridge address.
S3_PORT="${E2E_S3_PORT:-19000}"
s3_env="$(mktemp)"; s3_log="$(mktemp)"
rm -f "$s3_env"
"${VENV:-.venv}/bin/python" scripts/s3-server.py "$S3_PORT" "$s3_env" >"$s3_log" 2>&1 &
S3_PID=$!
for _ in $(seq 100); do [ -s "$s3_env" ] && break; sleep 0.2; done
[ -s "$s3_env" ] || { echo "e2e-node: the S3 server did not start:" >&2; tail -20 "$s3_log" >&2; exit 1; }
set -a
# shellcheck disable=SC1090 # written by s3-server.py
. "$s3_env"
set +a
export E2E_S3_ENDPOINT="http://10.88.0.1:$S3_PORT" E2E_S3_HOST_ENDPOINT="http://127.0.0.1:$S3_PORT"
echo "e2e-node: S3 server (moto) on :$S3_PORT, bucket $E2E_S3_BUCKET (log $s3_log)"

# What the cluster looked like, for a failed run.
diagnose() {
  echo "e2e-node: --- pods ---"; kubectl get pods -A -o wide || true
  echo "e2e-node: --- operator log (tail) ---"
  kubectl -n counterstack-e2e logs -l app.kubernetes.io/component=operator --tail 60 --prefix || true
}
status=0
t1=$SECONDS
make e2e || { status=$?; diagnose; }
echo "e2e-node: the suite (default Redis image) took $((SECONDS - t1)) s"
for image in $E2E_REDIS_VERSIONS; do
  t1=$SECONDS
  echo "e2e-node: E2E_REDIS_IMAGE=$image: $E2E_VERSION_TESTS"
  # shellcheck disable=SC2086 # the test names are separate filters
  E2E_REDIS_IMAGE="$image" cargo test --locked --test e2e -- --ignored --test-threads 1 --nocapture $E2E_VERSION_TESTS \
    || { status=$?; diagnose; }
  echo "e2e-node: E2E_REDIS_IMAGE=$image took $((SECONDS - t1)) s"
done
# The private registry round trip (issue 19): chart and image pushed to a registry with
# TLS and htpasswd, installed from oci:// with a pull secret, a wrong password visible in
# the CounterApp's status. E2E_REGISTRY=0 skips it.
if [ "${E2E_REGISTRY:-1}" = 1 ]; then
  t1=$SECONDS
  scripts/registry-e2e.sh || status=$?
  echo "e2e-node: the registry round trip took $((SECONDS - t1)) s"
fi
echo "e2e-node: done in $((SECONDS - t0)) s (status $status)"
exit "$status"
