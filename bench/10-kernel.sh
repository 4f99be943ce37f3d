# The kernel foundation: /healthz throughput against nginx serving the same
# bytes as a static file, idle memory, and the shared Redis/PostgreSQL paths
# against raw client round trips.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$BENCH_KERNEL_PID/status")
echo "| idle RSS of trovato serve, no plugins (MiB) | $(python3 -c "print(f'{$rss_kb/1024:.1f}')") | — | — |"

docroot="$BENCH_OUT/static"
mkdir -p "$docroot"
curl -fs "$BENCH_KERNEL/healthz" -o "$docroot/healthz.json"
nport=$(start_static_nginx "$docroot")
for c in 64; do
  limit=$(wrk_rps "http://127.0.0.1:$nport/healthz.json" "$c")
  ours=$(wrk_rps "$BENCH_KERNEL/healthz" "$c")
  echo "| GET /healthz req/s (wrk, $c conns) vs nginx static file | $ours | $limit | $(ratio "$ours" "$limit") |"
done
stop_static_nginx "$nport"

cargo bench -q -p trovato-kernel --bench kernel 2>/dev/null | grep '^|'
