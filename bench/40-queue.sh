# Queues: push + pop + ack of no-op jobs, 8 at a time, per backend, against
# the raw floor of that backend measured the same way in the same run
# (Redis: LPUSH + RPOP through the same client; PostgreSQL: INSERT + the
# bare SKIP LOCKED claim-and-delete, through pgbench -c 8 and through the
# same client); and the cron lock's Redis round trips per pass.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
secs=${BENCH_SECONDS:-10}
command -v pgbench >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null

# The pgbench floor, on a table of its own in the bench database.
psql -q "$BENCH_DATABASE_URL" -c "DROP TABLE IF EXISTS pgbench_queue_floor" \
  -c "CREATE TABLE pgbench_queue_floor (id bigserial PRIMARY KEY, payload jsonb NOT NULL)" >/dev/null
script="$BENCH_OUT/queue-floor.sql"
cat >"$script" <<'SQL'
INSERT INTO pgbench_queue_floor (payload) VALUES (jsonb_build_object('noop', true));
DELETE FROM pgbench_queue_floor WHERE id = (SELECT id FROM pgbench_queue_floor ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING payload;
SQL
tps=$(pgbench -n -c 8 -j 2 -T "$secs" -M prepared -f "$script" "$BENCH_DATABASE_URL" 2>/dev/null \
  | awk '/^tps = / {print $3}')
psql -q "$BENCH_DATABASE_URL" -c "DROP TABLE IF EXISTS pgbench_queue_floor" >/dev/null

BENCH_QUEUE_SECONDS="$secs" BENCH_PGBENCH_TPS="$tps" \
  cargo bench -q -p trovato-kernel --bench queue 2>/dev/null | grep '^|'
