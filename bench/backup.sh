#!/usr/bin/env bash
# Backup and restore benchmark (issue 20): 1 M keys on a real Redis primary + replica,
# a backup as the operator takes it (snapshot from the replica, verified while it
# streams into a multipart upload to moto's S3 server) while a client writes to the
# primary, and a restore as the init container does it, with Redis loading the result.
# Prints time and size of both, the primary's longest write round trip during the
# backup, and references measured in the same run: `redis-cli --rdb` from the same
# replica, and Redis loading the same RDB as a plain dump.rdb.
#
#   bench/backup.sh                      # KEYS=1000000 VALUE_SIZE=32
#   KEYS=100000 bench/backup.sh
#
# Needs redis-server/redis-cli (Debian's) and moto in the venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }
[ -x "${VENV:-.venv}/bin/moto_server" ] || { echo "moto_server not in ${VENV:-.venv} (run scripts/setup.sh)" >&2; exit 1; }
cargo build --quiet --release --example backup_bench
cargo run --quiet --release --example backup_bench
