# Search at 1 000 000 items: /api/search against its SQL run directly,
# GIN against RUM for ranked top-20, tantivy against PostgreSQL, the cost
# of indexed fields on a save, reindex throughput (see
# crates/kernel/benches/search.rs). Installs the word list and the RUM
# extension it needs (Debian packages; idempotent).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need=()
[ -f /usr/share/dict/words ] || need+=(wamerican)
pg_major=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -n "$pg_major" ] && [ ! -f "/usr/share/postgresql/$pg_major/extension/rum.control" ]; then
  need+=("postgresql-$pg_major-rum")
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo bench -q -p trovato-kernel --bench search 2>"$BENCH_OUT/search-bench.log" | grep '^|'
