#!/usr/bin/env bash
# The seed lab's private registry, on Kubernetes, for real (issue 19): Debian's
# docker-registry with TLS (a CA made here) and htpasswd, the chart pushed with
# `helm push` and the counterstack image with `skopeo copy` (the OCI archive
# ../shared/k8s's build-images.sh made from the binary), the node told to trust the CA
# (containerd's certs.d/HOST:PORT/hosts.toml), the chart installed from oci:// with
# image.repository pointing at the registry and an imagePullSecrets Secret. Then:
#   - the operator pod and a CounterApp's web pod must run images pulled from the registry
#     (containerStatuses[].imageID is REGISTRY/counterstack@sha256:..., and the registry's
#     log has the authenticated manifest GETs);
#   - a CounterApp whose pull Secret has a wrong password must say so in its status:
#     Stalled=True, reason ImagePullFailed, "401 Unauthorized" in the message.
#
#   scripts/registry-e2e.sh          # as root, with ../shared/k8s's node up
#                                    # (make e2e-node runs it after the suite)
#
# Env: LOCAL_K8S (../shared/k8s/local-k8s), LOCAL_K8S_NODE_HOME (/var/lib/local-k8s/node),
# REGISTRY_PORT (5443), REGISTRY_TIMEOUT (seconds per wait, 120), KEEP=1 keeps the
# namespaces, the registry and its files for inspection.
# Needs: docker-registry, skopeo, htpasswd (apache2-utils), openssl (scripts/setup.sh),
# helm (.tools/bin), kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
LOCAL_K8S="${LOCAL_K8S:-../shared/k8s/local-k8s}"
NODE_HOME="${LOCAL_K8S_NODE_HOME:-/var/lib/local-k8s/node}"
PORT="${REGISTRY_PORT:-5443}"
HOST="127.0.0.1:$PORT"     # containerd pulls from the host's network namespace
TIMEOUT="${REGISTRY_TIMEOUT:-120}"
VERSION="$(scripts/version.sh)"
ARCHIVE="$NODE_HOME/images/out/counterstack.tar"
NS_OP=registry-e2e-system
NS_APP=registry-e2e
USER_NAME=counterstack
PASSWORD="$(openssl rand -hex 16)"
DENIED_TAG="$VERSION-denied"   # pushed, never pulled: only the wrong password stands in the way
CTR=(ctr -a "$NODE_HOME/run/containerd.sock" -n k8s.io)
t0=$SECONDS
log() { echo "registry-e2e: $*"; }
fail() { echo "registry-e2e: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (the node's containerd configuration)"
for tool in docker-registry skopeo htpasswd openssl helm kubectl ctr curl; do
  command -v "$tool" >/dev/null || fail "$tool missing (scripts/setup.sh installs it)"
done
"$LOCAL_K8S" node status >/dev/null 2>&1 || fail "the node of $LOCAL_K8S is not up (make e2e-node, or local-k8s node up --counterstack BIN)"
[ -f "$ARCHIVE" ] || fail "no $ARCHIVE (local-k8s node up --counterstack BIN builds it)"
KUBECONFIG="${KUBECONFIG:-$("$LOCAL_K8S" kubeconfig admin --direct)}"
export KUBECONFIG

WORK="$(mktemp -d /tmp/registry-e2e.XXXXXX)"
CERTS_D="$NODE_HOME/certs.d/$HOST"
REGISTRY_PID=""
E2E_OPERATOR_REPLICAS=""
cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    echo "registry-e2e: --- pods ---"; kubectl get pods -n "$NS_OP" -o wide 2>/dev/null || true
    kubectl get pods -n "$NS_APP" -o wide 2>/dev/null || true
    echo "registry-e2e: --- operator log (tail) ---"
    kubectl -n "$NS_OP" logs -l app.kubernetes.io/instance=registry-e2e --tail 20 --previous 2>/dev/null \
      || kubectl -n "$NS_OP" logs -l app.kubernetes.io/instance=registry-e2e --tail 20 2>/dev/null || true
    echo "registry-e2e: --- CounterApps ---"; kubectl get capp -n "$NS_APP" -o yaml 2>/dev/null | grep -A4 "type: Stalled" || true
    echo "registry-e2e: --- registry log (tail) ---"; tail -20 "$WORK/registry.log" 2>/dev/null || true
  fi
  [ "${KEEP:-}" = 1 ] && { log "KEEP=1: left $WORK, the registry (pid $REGISTRY_PID) and the namespaces"; return; }
  kubectl -n "$NS_APP" delete capp --all --wait=true --timeout=60s >/dev/null 2>&1 || true
  helm -n "$NS_OP" uninstall registry-e2e --wait >/dev/null 2>&1 || true
  kubectl delete namespace "$NS_APP" "$NS_OP" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
  kubectl delete clusterrole,clusterrolebinding -l app.kubernetes.io/instance=registry-e2e --ignore-not-found >/dev/null 2>&1 || true
  if [ -n "$E2E_OPERATOR_REPLICAS" ]; then
    kubectl -n counterstack-e2e scale deployment/counterstack-operator --replicas "$E2E_OPERATOR_REPLICAS" >/dev/null 2>&1 || true
  fi
  [ -n "$REGISTRY_PID" ] && kill "$REGISTRY_PID" 2>/dev/null || true
  rm -rf "$CERTS_D"
  # The next run must pull again, not find these on the node.
  "${CTR[@]}" images rm "$HOST/counterstack:$VERSION" "$HOST/counterstack:$DENIED_TAG" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- 1. the registry: CA, server certificate, htpasswd, TLS --------------------------
log "CA and server certificate for $HOST (openssl), htpasswd user $USER_NAME"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=registry-e2e CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$WORK/san.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 1 -extfile "$WORK/san.ext" -out "$WORK/server.crt" 2>/dev/null
htpasswd -Bbn "$USER_NAME" "$PASSWORD" > "$WORK/htpasswd" 2>/dev/null
cat > "$WORK/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $WORK/data
http:
  addr: $HOST
  tls:
    certificate: $WORK/server.crt
    key: $WORK/server.key
auth:
  htpasswd:
    realm: registry-e2e
    path: $WORK/htpasswd
EOF
docker-registry serve "$WORK/config.yml" > "$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 50); do
  code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/ca.crt" "https://$HOST/v2/" || true)"
  [ "$code" = 401 ] && break
  kill -0 "$REGISTRY_PID" 2>/dev/null || fail "docker-registry exited: $(tail -3 "$WORK/registry.log")"
  sleep 0.2
done
[ "$code" = 401 ] || fail "the registry does not answer 401 without credentials on https://$HOST/v2/ (got $code)"
log "docker-registry $(docker-registry --version 2>/dev/null | awk '{print $NF}') on https://$HOST (TLS, htpasswd): 401 without credentials"

# --- 2. push the chart and the image ----------------------------------------------------
echo "$PASSWORD" | helm registry login "$HOST" --username "$USER_NAME" --password-stdin --ca-file "$WORK/ca.crt" >/dev/null
helm package charts/counterstack --destination "$WORK" >/dev/null
helm push "$WORK/counterstack-$VERSION.tgz" "oci://$HOST/charts" --ca-file "$WORK/ca.crt" 2>&1 | sed 's/^/registry-e2e:   helm push: /'
mkdir -p "$WORK/skopeo-certs"
cp "$WORK/ca.crt" "$WORK/skopeo-certs/ca.crt"
echo "$PASSWORD" | skopeo login --cert-dir "$WORK/skopeo-certs" --username "$USER_NAME" --password-stdin "$HOST" >/dev/null
for tag in "$VERSION" "$DENIED_TAG"; do
  skopeo copy --quiet --dest-cert-dir "$WORK/skopeo-certs" "oci-archive:$ARCHIVE:$VERSION" "docker://$HOST/counterstack:$tag"
done
digest="$(skopeo inspect --cert-dir "$WORK/skopeo-certs" --format '{{.Digest}}' "docker://$HOST/counterstack:$VERSION")"
log "pushed oci://$HOST/charts/counterstack:$VERSION and $HOST/counterstack:{$VERSION,$DENIED_TAG} ($digest)"

# --- 3. the node trusts the CA ------------------------------------------------------
mkdir -p "$CERTS_D"
cp "$WORK/ca.crt" "$CERTS_D/ca.crt"
cat > "$CERTS_D/hosts.toml" <<EOF
server = "https://$HOST"

[host."https://$HOST"]
  capabilities = ["pull", "resolve"]
  ca = "$CERTS_D/ca.crt"
EOF
# Images a previous run pulled must be pulled again.
"${CTR[@]}" images rm "$HOST/counterstack:$VERSION" "$HOST/counterstack:$DENIED_TAG" >/dev/null 2>&1 || true

# --- 4. install from oci:// with a pull secret ---------------------------------------------
# The e2e suite's operator (if installed) would reconcile our CounterApps too: pause it.
E2E_OPERATOR_REPLICAS="$(kubectl -n counterstack-e2e get deployment counterstack-operator -o jsonpath='{.spec.replicas}' 2>/dev/null || true)"
if [ -n "$E2E_OPERATOR_REPLICAS" ]; then
  kubectl -n counterstack-e2e scale deployment/counterstack-operator --replicas 0 >/dev/null
fi
for ns in "$NS_OP" "$NS_APP"; do
  kubectl create namespace "$ns" >/dev/null
  kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
  kubectl -n "$ns" create secret docker-registry regcred --docker-server="$HOST" \
    --docker-username="$USER_NAME" --docker-password="$PASSWORD" >/dev/null
done
kubectl -n "$NS_APP" create secret docker-registry regcred-wrong --docker-server="$HOST" \
  --docker-username="$USER_NAME" --docker-password="not-the-password" >/dev/null
helm install registry-e2e "oci://$HOST/charts/counterstack" --version "$VERSION" --ca-file "$WORK/ca.crt" \
  -n "$NS_OP" --set image.repository="$HOST/counterstack" --set image.pullPolicy=Always \
  --set 'imagePullSecrets[0].name=regcred' --set operator.replicas=1 \
  --set operator.watchNamespace="$NS_APP" >/dev/null
# Namespaced (a Role in NS_APP, the Lease's Role in NS_OP): the install that crash-looped
# on the first run of this script, when the chart had no Role for the Lease.
log "helm install from oci://$HOST/charts/counterstack --version $VERSION (image.repository=$HOST/counterstack, imagePullSecrets regcred, watchNamespace $NS_APP)"
kubectl -n "$NS_OP" rollout status deployment -l app.kubernetes.io/instance=registry-e2e --timeout "${TIMEOUT}s" >/dev/null \
  || fail "the operator did not become ready"

# image and imageID of the first container of the pods matching $2 in namespace $1
pulled_from_registry() {
  local ns=$1 selector=$2 what=$3 line image image_id
  line="$(kubectl -n "$ns" get pods -l "$selector" \
    -o jsonpath='{range .items[*]}{.status.containerStatuses[0].image}{" "}{.status.containerStatuses[0].imageID}{" "}{.status.containerStatuses[0].state.running.startedAt}{"\n"}{end}' | head -1)"
  read -r image image_id started <<< "$line"
  [ -n "${started:-}" ] || return 1
  [[ "$image" == "$HOST/counterstack:$VERSION" ]] || fail "$what runs $image, not $HOST/counterstack:$VERSION"
  [[ "$image_id" == "$HOST/counterstack@sha256:"* ]] || fail "$what's imageID $image_id is not from $HOST"
  log "$what runs $image, imageID $image_id"
}
pulled_from_registry "$NS_OP" app.kubernetes.io/instance=registry-e2e "the operator pod" \
  || fail "the operator pod is not running"

# --- 5. a CounterApp whose web pods pull with its own pull secret ----------------------
kubectl -n "$NS_APP" apply -f - >/dev/null <<EOF
apiVersion: counterstack.io/v1alpha1
kind: CounterApp
metadata:
  name: pulled
spec:
  imagePullSecrets: [{name: regcred}]
  web: {replicas: 1}
  redis: {replicas: 0}
EOF
deadline=$((SECONDS + TIMEOUT))
until pulled_from_registry "$NS_APP" app.kubernetes.io/instance=pulled,app.kubernetes.io/component=web \
    "CounterApp pulled's web pod"; do
  [ "$SECONDS" -lt "$deadline" ] || fail "CounterApp pulled's web pod is not running after ${TIMEOUT}s"
  sleep 2
done
# What the registry saw: containerd's authenticated manifest requests.
pulls="$(grep "/v2/counterstack/manifests/" "$WORK/registry.log" | grep -c "containerd" || true)"
[ "$pulls" -ge 2 ] || fail "the registry log has $pulls containerd manifest requests (want the operator's and the web pod's)"
log "the registry's log has $pulls manifest requests of counterstack by containerd"
"${CTR[@]}" images ls -q | grep -qx "$HOST/counterstack:$VERSION" || fail "containerd has no $HOST/counterstack:$VERSION"

# --- 6. a wrong password shows in the CounterApp's status ------------------------------------
kubectl -n "$NS_APP" apply -f - >/dev/null <<EOF
apiVersion: counterstack.io/v1alpha1
kind: CounterApp
metadata:
  name: denied
spec:
  imagePullSecrets: [{name: regcred-wrong}]
  web: {replicas: 1, image: "$HOST/counterstack:$DENIED_TAG"}
  redis: {replicas: 0}
EOF
deadline=$((SECONDS + TIMEOUT))
t1=$SECONDS
while :; do
  reason="$(kubectl -n "$NS_APP" get capp denied -o jsonpath='{.status.conditions[?(@.type=="Stalled")].reason}')"
  message="$(kubectl -n "$NS_APP" get capp denied -o jsonpath='{.status.conditions[?(@.type=="Stalled")].message}')"
  [ "$reason" = ImagePullFailed ] && [[ "$message" == *"401 Unauthorized"* ]] && break
  [ "$SECONDS" -lt "$deadline" ] || fail "CounterApp denied: Stalled reason '$reason' message '$message' after ${TIMEOUT}s (want ImagePullFailed, 401 Unauthorized)"
  sleep 2
done
log "CounterApp denied after $((SECONDS - t1)) s: Stalled=True ImagePullFailed: $message"
ready="$(kubectl -n "$NS_APP" get capp denied -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Ready")].reason}')"
[ "$ready" = "False/ImagePullFailed" ] || fail "CounterApp denied: Ready is $ready"
kubectl -n "$NS_APP" get capp
grep -q "manifests/$DENIED_TAG.*401\|401.*manifests/$DENIED_TAG\|$DENIED_TAG.*authentication\|authentication.*$DENIED_TAG" "$WORK/registry.log" \
  && log "the registry log has the refused request for $DENIED_TAG"
log "passed in $((SECONDS - t0)) s"
