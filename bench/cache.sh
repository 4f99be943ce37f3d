#!/usr/bin/env bash
# Cache benchmark: prints a markdown table of our figures against the
# limits measured in the same run on this machine.
#
#   1. L2 cache hit latency p50/p99 vs a raw Redis GET of the same size
#      (same client library, same shared connection)      goal <= 1.3x
#   2. requests/s of a cached /item/{id} page vs nginx serving the same
#      bytes as a static file (wrk, same threads and connections) goal >= 0.6x
#   3. cross-instance invalidation p99                     goal <= 10 ms
#   4. cross-process: an update answered on kernel A until kernel B serves
#      it, vs a raw PUBLISH->message round trip plus one cached GET on B
#      (the integration test checks only that it happens)
#
# Needs PostgreSQL and Redis: DATABASE_ADMIN_URL (a database to create the
# bench database from; default postgres://postgres@127.0.0.1:5432/postgres)
# and REDIS_URL (default redis://127.0.0.1:6379). Installs nginx-light and
# wrk with apt-get when missing. Uses a release build.
set -euo pipefail

cd "$(dirname "$0")/.."
ADMIN_URL=${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}

need_install=()
command -v nginx >/dev/null 2>&1 || need_install+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_install+=(wrk)
if ((${#need_install[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d /tmp/trovato-bench.XXXXXX)
DB=trovato_bench_$(date +%s)_$$
PREFIX="trovato-bench-http:$$:"
TROVATO_PID=""
TROVATO_B_PID=""
NGINX_PID=""
cleanup() {
    [[ -n "$TROVATO_PID" ]] && kill "$TROVATO_PID" 2>/dev/null && wait "$TROVATO_PID" 2>/dev/null
    [[ -n "$TROVATO_B_PID" ]] && kill "$TROVATO_B_PID" 2>/dev/null && wait "$TROVATO_B_PID" 2>/dev/null
    [[ -n "$NGINX_PID" ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}*" 2>/dev/null | xargs -r redis-cli -u "$REDIS_URL" unlink >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building (release)..." >&2
cargo build -q --release -p trovato-kernel --bin trovato
cargo bench -q -p trovato-kernel --bench cache --no-run 2>/dev/null
BIN="${CARGO_TARGET_DIR:-target}/release/trovato"

echo "| measure | ours | limit | ratio |"
echo "| --- | --- | --- | --- |"

# ---- 2: cached item page vs nginx.
psql -q "$ADMIN_URL" -c "CREATE DATABASE $DB" >/dev/null
DB_URL="${ADMIN_URL%/*}/$DB"
export DATABASE_URL="$DB_URL" REDIS_URL TROVATO_REDIS_PREFIX="$PREFIX" TROVATO_LOG_FORMAT=json RUST_LOG=warn
echo "bench-password-long-enough" | "$BIN" user create admin --email admin@example.com --admin --password-stdin >/dev/null
TOKEN=$("$BIN" user token admin --label bench | tail -n1)
PORT=$(free_port)
TROVATO_LISTEN="127.0.0.1:$PORT" "$BIN" serve 2>"$WORK/trovato.log" &
TROVATO_PID=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 0.1
done
api() { curl -fsS -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
api -X POST "http://127.0.0.1:$PORT/api/item-types" -d '{"type":"article","label":"Article","description":"","has_title":true,"title_label":"Title","plugin":"kernel","fields":[{"name":"field_body","label":"Body","kind":"text","max_length":2000}]}' >/dev/null

# ---- 1, 3 and 4: the cache itself (bench binary, release profile); 4 runs
# against kernel A above and a second kernel B on the same database and
# Redis namespace.
PORT_B=$(free_port)
TROVATO_LISTEN="127.0.0.1:$PORT_B" "$BIN" serve 2>"$WORK/trovato-b.log" &
TROVATO_B_PID=$!
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT_B/health" >/dev/null 2>&1 && break
    sleep 0.1
done
REDIS_URL="$REDIS_URL" BENCH_CROSS_A="http://127.0.0.1:$PORT" BENCH_CROSS_B="http://127.0.0.1:$PORT_B" \
    BENCH_CROSS_TOKEN="$TOKEN" cargo bench -q -p trovato-kernel --bench cache 2>"$WORK/bench.err" || {
    cat "$WORK/bench.err" >&2
    exit 1
}
kill "$TROVATO_B_PID" 2>/dev/null && wait "$TROVATO_B_PID" 2>/dev/null || true
TROVATO_B_PID=""
BODY=$(python3 -c 'print("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20)')
ID=$(api -X POST "http://127.0.0.1:$PORT/api/items" -d "{\"type\":\"article\",\"title\":\"Benchmark item\",\"fields\":{\"field_body\":{\"value\":\"$BODY\"}}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
mkdir -p "$WORK/www"
# nginx workers run unprivileged: the served tree must be readable by all.
chmod 755 "$WORK"
curl -fsS "http://127.0.0.1:$PORT/item/$ID" -o "$WORK/www/item.html"
chmod 755 "$WORK/www" && chmod 644 "$WORK/www/item.html"
SIZE=$(stat -c %s "$WORK/www/item.html")

NGINX_PORT=$(free_port)
cat >"$WORK/nginx.conf" <<CONF
daemon off;
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx-tmp;
    proxy_temp_path $WORK/nginx-tmp;
    fastcgi_temp_path $WORK/nginx-tmp;
    uwsgi_temp_path $WORK/nginx-tmp;
    scgi_temp_path $WORK/nginx-tmp;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
        default_type text/html;
    }
}
CONF
mkdir -p "$WORK/nginx-tmp"
nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$NGINX_PORT/item.html" >/dev/null 2>&1 && break; sleep 0.1; done
cmp -s <(curl -fsS "http://127.0.0.1:$NGINX_PORT/item.html") <(curl -fsS "http://127.0.0.1:$PORT/item/$ID") || {
    echo "nginx and trovato do not serve the same bytes" >&2
    exit 1
}

rps() { wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$1" | awk '/Requests\/sec/ {print $2}'; }
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PORT/item/$ID" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$NGINX_PORT/item.html" >/dev/null
# Alternate the two, ROUNDS times, and compare medians: the machine may be
# shared, and load that comes and goes then hits both alike.
OURS_RUNS=()
NGINX_RUNS=()
for _ in $(seq 1 "$ROUNDS"); do
    OURS_RUNS+=("$(rps "http://127.0.0.1:$PORT/item/$ID")")
    NGINX_RUNS+=("$(rps "http://127.0.0.1:$NGINX_PORT/item.html")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
OURS=$(median "${OURS_RUNS[@]}")
NGINX=$(median "${NGINX_RUNS[@]}")
echo "item page req/s runs: ours ${OURS_RUNS[*]}; nginx ${NGINX_RUNS[*]}" >&2
if [[ -n "${BENCH_PERF_OUT:-}" ]]; then
    # One more run of ours under perf (call graphs), for bench/README.md's
    # profile of the cached page: perf report -i "$BENCH_PERF_OUT".
    wrk -t"$THREADS" -c"$CONNECTIONS" -d12s "http://127.0.0.1:$PORT/item/$ID" >/dev/null &
    WRK_PID=$!
    sleep 1
    perf record -F 499 --call-graph "${BENCH_PERF_CALL_GRAPH:-fp}" -o "$BENCH_PERF_OUT" \
        -p "$TROVATO_PID" -- sleep 8 >/dev/null 2>&1 || echo "perf record failed" >&2
    wait "$WRK_PID" || true
fi
python3 - "$OURS" "$NGINX" "$SIZE" "$THREADS" "$CONNECTIONS" "$DURATION" <<'PY'
import sys
ours, nginx, size, t, c, d = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
print(f"| cached /item/{{id}} requests/s ({size} B page; limit: nginx static file; wrk -t{t} -c{c} -d{d}, median of alternating runs) | {ours:.0f} req/s | {nginx:.0f} req/s | {ours / nginx:.2f}x |")
PY
grep -h "cross-instance" "$WORK/bench.err" >&2 || true
