#!/usr/bin/env bash
# The one version of the project: Cargo.toml's [package] version (tests/it/versions.rs
# fails when the chart, the image tags or the kustomize base say another).
set -euo pipefail
awk '/^\[package\]/ {p = 1; next} /^\[/ {p = 0} p && /^version *=/ {gsub(/[" ]/, "", $0); sub(/^version=/, "", $0); print; exit}' \
  "$(dirname "$0")/../Cargo.toml"
