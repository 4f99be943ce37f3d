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
