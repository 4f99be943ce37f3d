# Helpers shared by the bench/*.sh scripts (sourced, not run).

# wrk requests/s for URL at the given concurrency, for DURATION seconds.
wrk_rps() {
  local url=$1 conns=${2:-64} secs=${BENCH_SECONDS:-10}
  wrk -t2 -c"$conns" -d"${secs}s" --latency "$url" 2>/dev/null | awk '/Requests\/sec/ {print $2}'
}

# Starts nginx serving directory $1 on a free port; prints the port and
# leaves the pid in $BENCH_OUT/nginx-<port>/nginx.pid.
start_static_nginx() {
  local docroot=$1
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local dir="$BENCH_OUT/nginx-$port"
  mkdir -p "$dir"
  local user=""
  [ "$(id -u)" -eq 0 ] && user="user root;"
  cat >"$dir/nginx.conf" <<CONF
$user
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  types { application/json json; text/html html; }
  server {
    listen 127.0.0.1:$port;
    root $docroot;
  }
}
CONF
  /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" >&2
  for _ in $(seq 1 50); do
    curl -fs "http://127.0.0.1:$port/" -o /dev/null 2>/dev/null && break
    [ -s "$dir/nginx.pid" ] && break
    sleep 0.1
  done
  echo "$port"
}

stop_static_nginx() {
  local port=$1
  local pidfile="$BENCH_OUT/nginx-$port/nginx.pid"
  [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
}

# ratio a/b with 2 decimals.
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }

# Private PostgreSQL on 127.0.0.1:$2 with data in $1 (run as the postgres
# user when we are root: PostgreSQL refuses to run as root).
start_private_postgres() {
  local dir=$1 port=$2 bindir
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -x "$bindir/initdb" ] || { echo "PostgreSQL binaries missing: apt-get install postgresql" >&2; exit 1; }
  local as=()
  if [ "$(id -u)" -eq 0 ]; then as=(runuser -u postgres --); fi
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    "${as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync >/dev/null
  fi
  "${as[@]}" "$bindir/pg_ctl" start -D "$dir/data" -w -l "$dir/postgres.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300" >/dev/null
  PRIVATE_PG=("${as[@]}" "$bindir/pg_ctl" stop -D "$dir/data" -m fast)
}

start_private_redis() {
  local dir=$1 port=$2
  command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install redis-server" >&2; exit 1; }
  mkdir -p "$dir"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  PRIVATE_REDIS_PID="$dir/redis.pid"
}

stop_private_services() {
  if [ -n "${PRIVATE_PG:-}" ]; then "${PRIVATE_PG[@]}" >/dev/null 2>&1 || true; fi
  if [ -n "${PRIVATE_REDIS_PID:-}" ] && [ -s "$PRIVATE_REDIS_PID" ]; then
    kill "$(cat "$PRIVATE_REDIS_PID")" 2>/dev/null || true
  fi
}
