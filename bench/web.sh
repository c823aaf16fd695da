#!/usr/bin/env bash
# Web service benchmark: builds the release binary, starts its own redis-server(s) and
# `counterstack web` on free loopback ports, and prints throughput, latency and peak RSS
# next to redis-benchmark's INCR figures from the same run.
#
# Redis runs as deployed: ACL users (`default` off; the web connects as `web` with only
# the counter commands, its password from a file), then once more TLS-only (port 0,
# tls-port, certificates made here with openssl; the web verifies the CA and the host
# name). redis-benchmark authenticates as `admin` (its -t incr keys, counter:rand, are
# outside the web user's key patterns) and uses TLS in that run.
#
#   bench/web.sh                 # 10 s per wrk run
#   DURATION=5 bench/web.sh      # shorter
#   BIN=/path/to/counterstack bench/web.sh   # measure that binary (no build)
#
# Writes are coalesced (COALESCE_WRITES, docs/web.md): each phase also runs increments
# with COALESCE_WRITES=false, one Redis command per write, for comparison. Redis CPU per
# 1,000 requests comes from redis-server's utime+stime (/proc) around each run.
#
# Needs: cargo, redis-server, redis-benchmark, wrk, python3 (free ports), curl, openssl,
# GNU time (/usr/bin/time: the load generators' CPU per request).
# Targets (issue 22, 2-core machine, 64 connections, same run): increments with
# SYNC_REPLICAS=0 >= 1.3 x redis-benchmark INCR; with SYNC_REPLICAS=1 (every answer on a
# replica) >= 1.0 x redis-benchmark INCR (no WAIT) against the same primary; p99 <= 3 ms;
# peak RSS <= 32 MiB.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-64}"
# One load-generator thread, like redis-benchmark (single-threaded), so both sides of
# the ratio get the same client budget on a 2-core machine.
WRK_THREADS="${WRK_THREADS:-1}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BUILD=1
[ -n "${BIN:-}" ] && BUILD=""
BIN="${BIN:-$TARGET_DIR/release/counterstack}"
WORK="$(mktemp -d)"
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in redis-server redis-benchmark wrk python3 curl openssl /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

if [ -n "$BUILD" ]; then
  echo "== building release binary"
  (cd "$ROOT" && cargo build --release --quiet)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The web user's ACL as the operator configures it; the bench's own admin and
# replication users. Passwords live in files, as in a Secret volume.
WEB_ACL='on resetchannels resetkeys ~counter:value ~counter:idempotency:* -@all +get +set +incr +incrby +decr +eval +wait +ping +role'
ADMIN_PW="admin-$RANDOM$RANDOM"; REPL_PW="repl-$RANDOM$RANDOM"; WEB_PW="web-$RANDOM$RANDOM"
printf '%s\n' "$WEB_PW" >"$WORK/web-password"

# TLS material: a CA and a server certificate for 127.0.0.1 / localhost.
make_certs() {
  local d="$WORK/tls"; mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$d/ca.key" -out "$d/ca.crt" -subj /CN=bench-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/server.key" -out "$d/server.csr" -subj /CN=bench-redis 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/server.crt" -days 2 -extfile "$d/server.ext" 2>/dev/null
}

TLS=""  # set to 1 for the TLS run: servers listen TLS-only, clients use --tls
tls_args() { [ -n "$TLS" ] && echo --tls --cacert "$WORK/tls/ca.crt"; true; }
# shellcheck disable=SC2046
rcli() { redis-cli --no-auth-warning --user admin --pass "$ADMIN_PW" $(tls_args) "$@"; }

start_redis() { # port [extra config lines...]
  local port=$1; shift
  local dir="$WORK/redis-$port"
  mkdir -p "$dir"
  {
    echo "bind 127.0.0.1"
    echo "save \"\""
    echo "appendonly no"
    echo "dir $dir"
    echo "logfile $dir/log"
    echo "user default off"
    echo "user admin on >$ADMIN_PW ~* &* +@all"
    echo "user replication on >$REPL_PW -@all +psync +replconf +ping"
    echo "user web $WEB_ACL >$WEB_PW"
    echo "masteruser replication"
    echo "masterauth $REPL_PW"
    if [ -n "$TLS" ]; then
      echo "port 0"
      echo "tls-port $port"
      echo "tls-cert-file $WORK/tls/server.crt"
      echo "tls-key-file $WORK/tls/server.key"
      echo "tls-ca-cert-file $WORK/tls/ca.crt"
      echo "tls-auth-clients no"
      echo "tls-replication yes"
    else
      echo "port $port"
    fi
    for line in "$@"; do echo "$line"; done
  } >"$dir/redis.conf"
  redis-server "$dir/redis.conf" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do rcli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis on $port did not start" >&2; exit 1
}

WEB_PID=""
start_web() { # port redis_port [VAR=value...]
  local port=$1 rport=$2; shift 2
  # WEB_ENV: extra settings for every run, e.g. WEB_ENV="WORKER_THREADS=2 REDIS_CLIENT=manager".
  # shellcheck disable=SC2086
  local tls_env=()
  [ -n "$TLS" ] && tls_env=(REDIS_TLS_CA_FILE="$WORK/tls/ca.crt")
  env -i PATH="$PATH" LISTEN_ADDR="127.0.0.1:$port" REDIS_URL="redis://127.0.0.1:$rport" \
    REDIS_USERNAME=web REDIS_PASSWORD_FILE="$WORK/web-password" "${tls_env[@]}" ${WEB_ENV:-} "$@" \
    "$BIN" web >"$WORK/web-$port.log" 2>&1 &
  WEB_PID=$!
  PIDS+=("$WEB_PID")
  for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && return
    sleep 0.05
  done
  echo "web on $port never became ready" >&2; cat "$WORK/web-$port.log" >&2; exit 1
}

stop_web() {
  kill -TERM "$WEB_PID" 2>/dev/null || true
  wait "$WEB_PID" 2>/dev/null || true
}

peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# CPU time (user + system) a process has used so far, in milliseconds.
CLK_TCK="$(getconf CLK_TCK)"
cpu_ms() { awk -v hz="$CLK_TCK" '{printf "%d", ($14 + $15) * 1000 / hz}' "/proc/$1/stat"; }

# The load generator's own CPU (user + system, from /usr/bin/time) per request, in us:
# shows whether wrk or redis-benchmark, single-threaded, is what limits a run.
client_us() { awk -v n="$1" '{printf "%.1f", ($1 + $2) * 1e6 / n}' "$WORK/client-cpu"; }

# wrk latency figures in ms (wrk prints us/ms/s units).
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}'; }

run_wrk() { # label url [script] -> prints a line, sets RPS, P99, REDIS_CPU (ms per 1,000 requests)
  local label=$1 url=$2 script=${3:-} out
  local r0 w0 r1 w1 reqs
  r0="$(cpu_ms "$REDIS_PID")"; w0="$(cpu_ms "$WEB_PID")"
  out="$(/usr/bin/time -f '%U %S' -o "$WORK/client-cpu" \
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency ${script:+-s "$script"} "$url")"
  r1="$(cpu_ms "$REDIS_PID")"; w1="$(cpu_ms "$WEB_PID")"
  RPS="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
  local p50 p99 errors
  p50="$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)"
  errors="$(awk '/Non-2xx/ {print $5}' <<<"$out")"
  P99=$p99
  REDIS_CPU="$(awk -v c=$((r1 - r0)) -v n="$reqs" 'BEGIN {printf "%.1f", c * 1000 / n}')"
  local web_us
  web_us="$(awk -v c=$((w1 - w0)) -v n="$reqs" 'BEGIN {printf "%.1f", c * 1000 / n}')"
  printf '%-40s %8.0f req/s  p50 %5s ms  p99 %5s ms  non-2xx %s  redis CPU %s ms/1k  web CPU %s us/req  wrk CPU %s us/req\n' \
    "$label" "$RPS" "$p50" "$p99" "${errors:-0}" "$REDIS_CPU" "$web_us" "$(client_us "$reqs")"
}

run_redis_benchmark() { # port -> prints a line, sets REDIS_RPS and REDIS_BENCH_CPU (ms per 1,000 INCR)
  local out n="${REDIS_N:-500000}" r0 r1
  r0="$(cpu_ms "$REDIS_PID")"
  # shellcheck disable=SC2046
  out="$(/usr/bin/time -f '%U %S' -o "$WORK/client-cpu" \
    redis-benchmark -p "$1" --user admin -a "$ADMIN_PW" $(tls_args) -t incr -c "$CONNS" -n "$n" \
    2>/dev/null | tr '\r' '\n')"
  r1="$(cpu_ms "$REDIS_PID")"
  REDIS_RPS="$(awk '/throughput summary/ {print $3}' <<<"$out" | tail -1)"
  REDIS_BENCH_CPU="$(awk -v c=$((r1 - r0)) -v n="$n" 'BEGIN {printf "%.1f", c * 1000 / n}')"
  local lat
  lat="$(awk '/latency summary/ {getline; getline; print $3, $5}' <<<"$out" | tail -1)"
  printf '%-40s %8.0f req/s  p50 %5s ms  p99 %5s ms             redis CPU %s ms/1k  client CPU %s us/req\n' \
    "redis-benchmark INCR (-c $CONNS)${TLS:+ TLS}" "$REDIS_RPS" \
    "$(cut -d' ' -f1 <<<"$lat")" "$(cut -d' ' -f2 <<<"$lat")" "$REDIS_BENCH_CPU" "$(client_us "$n")"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $(nproc) cores, ${DURATION}s per wrk run, $CONNS connections, wrk -t$WRK_THREADS; load $LOAD_BEFORE"

# One measurement phase against the running service: redis-benchmark on the same
# Redis, wrk for increment alone, the Locust mix and (FULL=1) GET alone and keyed
# increments, peak RSS, and the ratio against redis-benchmark with its target.
# Sets INC_RPS INC_P99 INC_CPU MIX_RPS MIX_P99 RSS RATIO for the summary.
measure() { # label-suffix url mix-label target-ratio [full]
  run_redis_benchmark "$RPORT"
  run_wrk "web POST increment$1" "$2/api/counter/increment" "$ROOT/bench/wrk_increment.lua"
  INC_RPS=$RPS; INC_P99=$P99; INC_CPU=$REDIS_CPU
  run_wrk "web Locust mix $3" "$2/" "$ROOT/bench/wrk_mix.lua"
  MIX_RPS=$RPS; MIX_P99=$P99
  if [ -n "${5:-}" ]; then
    run_wrk "web GET counter$1" "$2/api/counter"
    run_wrk "web POST increment, Idempotency-Key$1" "$2/api/counter/increment" "$ROOT/bench/wrk_idempotent.lua"
  fi
  RSS="$(peak_rss_mib "$WEB_PID")"
  echo "peak RSS of the service: $RSS MiB (VmHWM; target <= 32)"
  RATIO="$(awk -v a="$INC_RPS" -v b="$REDIS_RPS" 'BEGIN {printf "%.2f", a/b}')"
  echo "ratio web increment$1 / redis-benchmark INCR: $RATIO (target >= $4); p99 $INC_P99 ms (target <= 3)"
}

# Increments, the Locust mix and GET once more with one command per write
# (COALESCE_WRITES=false), same Redis: what coalescing changes, and that the rest did not
# get worse.
uncoalesced() { # web-port redis-port label-suffix [VAR=value...]
  local port=$1 rport=$2 label=$3; shift 3
  start_web "$port" "$rport" COALESCE_WRITES=false "$@"
  run_wrk "web POST increment$label, not coalesced" "http://127.0.0.1:$port/api/counter/increment" \
    "$ROOT/bench/wrk_increment.lua"
  run_wrk "web Locust mix$label, not coalesced" "http://127.0.0.1:$port/" "$ROOT/bench/wrk_mix.lua"
  run_wrk "web GET counter$label, not coalesced" "http://127.0.0.1:$port/api/counter"
  stop_web
}

SUMMARY=()
summarize() { # label
  SUMMARY+=("$(printf '%-22s %10.0f %6s %6s %10.0f %6s %10.0f %8s %8s %6s' "$1" "$INC_RPS" "$INC_P99" "$RATIO" \
    "$MIX_RPS" "$MIX_P99" "$REDIS_RPS" "$INC_CPU" "$REDIS_BENCH_CPU" "$RSS")")
}

RPORT="$(free_port)"; WPORT="$(free_port)"
start_redis "$RPORT"
PRIMARY_PID=$REDIS_PID
start_web "$WPORT" "$RPORT"
URL="http://127.0.0.1:$WPORT"

echo "== SYNC_REPLICAS=0 (one redis-server; ACL user web, password file)"
measure "" "$URL" "(15/7/4/1)" 1.3 full
summarize "sync 0"
stop_web
uncoalesced "$(free_port)" "$RPORT" ""

echo "== SYNC_REPLICAS=1 (primary + one replica, WAIT 1 per batch)"
R2PORT="$(free_port)"; W2PORT="$(free_port)"
start_redis "$R2PORT" "replicaof 127.0.0.1 $RPORT"
for _ in $(seq 200); do
  rcli -p "$RPORT" info replication | grep -q 'state=online' && break
  sleep 0.05
done
REDIS_PID=$PRIMARY_PID  # CPU figures are the primary's
start_web "$W2PORT" "$RPORT" SYNC_REPLICAS=1 SYNC_TIMEOUT_MS=250
URL="http://127.0.0.1:$W2PORT"
measure " (sync 1)" "$URL" "(sync 1)" 1.0 full
summarize "sync 1"
echo "replica offset check: primary $(rcli -p "$RPORT" get counter:value), replica $(rcli -p "$R2PORT" get counter:value)"
stop_web
uncoalesced "$(free_port)" "$RPORT" " (sync 1)" SYNC_REPLICAS=1 SYNC_TIMEOUT_MS=250

echo "== TLS (redis-server TLS-only: port 0, tls-port; web verifies CA and host name; SYNC_REPLICAS=0)"
make_certs
TLS=1
RPORT="$(free_port)"; W3PORT="$(free_port)"
start_redis "$RPORT"
start_web "$W3PORT" "$RPORT"
measure " (TLS)" "http://127.0.0.1:$W3PORT" "(TLS)" 1.3
summarize "sync 0, TLS"
stop_web

echo "== summary ($(nproc) cores; load average before the run: $LOAD_BEFORE)"
echo "   incr = web POST increment (coalesced); ratio = incr / redis-benchmark INCR of the same phase;"
echo "   p99 in ms; CPU = redis-server ms per 1,000 increments (web incr, redis-benchmark); RSS = peak MiB"
printf '%-22s %10s %6s %6s %10s %6s %10s %8s %8s %6s\n' "" "incr req/s" "p99" "ratio" "mix req/s" "p99" \
  "redis INCR" "CPU web" "CPU rb" "RSS"
printf '%s\n' "${SUMMARY[@]}"
echo "targets: ratio >= 1.3 (sync 0), >= 1.0 (sync 1); p99 <= 3 ms; RSS <= 32 MiB"
