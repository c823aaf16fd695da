#!/usr/bin/env bash
# Render both example CounterApps with the counterstack binary, split the output into
# one file per object, and validate every object against the Kubernetes 1.30 and 1.37
# schemas (K8S_VERSIONS) with `kubernetes-validate --strict` (PyPI). Fails on any
# invalid object.
#
# Usage: scripts/validate-render.sh [path/to/counterstack]   (default target/debug/counterstack)
# Needs kubernetes-validate (PyPI): from $VENV/bin (default .venv, as scripts/setup.sh
# installs it) or from PATH.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/debug/counterstack}"
[[ "$bin" == /* ]] || bin="$PWD/$bin"
k8s_versions="${K8S_VERSIONS:-1.30.0 1.37.0}"
cd "$root"

if [[ ! -x "$bin" ]]; then
  echo "error: $bin is not an executable counterstack binary (build it first)" >&2
  exit 2
fi
# The venv of scripts/setup.sh ($VENV, default .venv) first, then PATH.
venv="${VENV:-.venv}"
[[ "$venv" == /* ]] || venv="$root/$venv"
if [[ -x "$venv/bin/kubernetes-validate" ]]; then
  kv="$venv/bin/kubernetes-validate"
elif command -v kubernetes-validate >/dev/null; then
  kv="$(command -v kubernetes-validate)"
else
  echo "error: kubernetes-validate not found in $venv/bin or on PATH (scripts/setup.sh installs it)" >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

total=0
for example in manifests/examples/counterapp.yaml manifests/examples/counterapp-full.yaml manifests/examples/counterapp-redis-config.yaml manifests/examples/counterapp-tls.yaml; do
  stem="$(basename "$example" .yaml)"
  "$bin" render -f "$example" --redis-password validate-render-password > "$work/$stem.yaml"
  # One file per object: split on the `---` document separators.
  awk -v dir="$work" -v stem="$stem" '
    /^---$/ { n++; next }
    { print > sprintf("%s/%s-%02d.yaml", dir, stem, n) }
  ' "$work/$stem.yaml"
  rm "$work/$stem.yaml"
  count="$(ls "$work"/"$stem"-*.yaml | wc -l)"
  # Twelve children (one Secret per Redis user), plus the optional ones each example
  # turns on: the Redis NetworkPolicy (on by default), in the full example the web
  # autoscaler, in the TLS example cert-manager's Certificate.
  expected=13
  [[ "$stem" == counterapp-full || "$stem" == counterapp-tls ]] && expected=14
  if [[ "$count" -ne "$expected" ]]; then
    echo "error: $example rendered $count objects, expected $expected" >&2
    exit 1
  fi
  total=$((total + count))
done

# cert-manager's Certificate is no Kubernetes kind: kubernetes-validate has no schema
# for it. Check its shape here (tests/it/render.rs checks its fields), validate the rest.
for f in "$work"/*.yaml; do
  if grep -q '^kind: Certificate$' "$f"; then
    grep -q '^apiVersion: cert-manager.io/v1$' "$f" || { echo "error: $f: not cert-manager.io/v1" >&2; exit 1; }
    mv "$f" "$f.certificate"
    total=$((total - 1))
  fi
done

# kubernetes-validate exits non-zero when any file fails; --strict rejects unknown fields.
for v in $k8s_versions; do
  "$kv" --strict --kubernetes-version "$v" "$work"/*.yaml
  echo "validate-render: $total objects valid against Kubernetes $v (strict)"
done
