#!/usr/bin/env bash
# The release notes of one version: its section of CHANGELOG.md (Keep a Changelog), from
# the line after `## [VERSION]` (a date may follow) to the next `## ` heading, without
# the link references at the end. The release workflow passes them to the GitHub
# release; scripts/validate-release.sh tests this script on tests/data/release/.
#
#   scripts/release-notes.sh VERSION [CHANGELOG]     # VERSION: 1.2.3 or v1.2.3
#
# Fails (exit 1, a message on stderr) when the version has no section or an empty one:
# a tag must not be released without notes.
set -euo pipefail
version="${1:?usage: release-notes.sh VERSION [CHANGELOG]}"
version="${version#v}"
changelog="${2:-$(dirname "$0")/../CHANGELOG.md}"
[ -f "$changelog" ] || { echo "release-notes: no $changelog" >&2; exit 1; }
notes="$(awk -v v="$version" '
  /^## / {
    if (found) exit
    # "## [1.2.3]" or "## [1.2.3] - 2025-01-31" or "## 1.2.3"
    h = $2; gsub(/[\[\]]/, "", h)
    if (h == v) { found = 1; next }
  }
  found && /^\[[^]]+\]: / { next }   # link reference definitions
  found { print }
  END { if (!found) exit 2 }
' "$changelog")" || { echo "release-notes: CHANGELOG has no section for $version ($changelog)" >&2; exit 1; }
# Trim leading and trailing blank lines.
notes="$(printf '%s\n' "$notes" | sed -e '/./,$!d' | tac | sed -e '/./,$!d' | tac)"
[ -n "$notes" ] || { echo "release-notes: the section for $version is empty ($changelog)" >&2; exit 1; }
printf '%s\n' "$notes"
