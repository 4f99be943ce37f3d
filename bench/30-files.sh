# Files: a 1 GiB upload through the kernel to local storage against dd
# writing (and fsyncing) the same size to the same disk, with the kernel's
# peak RSS growth during the upload; a 100 MB private download through the
# kernel against nginx serving the same file statically.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

run_trovato() {
  DATABASE_URL="$BENCH_DATABASE_URL" REDIS_URL="$BENCH_REDIS_URL" TROVATO_REDIS_PREFIX="trovato-bench:" \
    TROVATO_DATA_DIR="$BENCH_OUT/var" RUST_LOG=error "$BENCH_BIN" "$@"
}
run_trovato user create bench-files --email bench-files@example.com --admin --password-stdin \
  <<<"bench-files-password-$(date +%s%N)" >/dev/null 2>&1 || true
token=$(run_trovato user token bench-files --label bench)
work="$BENCH_OUT/files"
mkdir -p "$work"

# Text, so the upload passes the default allowlist and takes the whole
# inline-type path (sniffing, SHA-256, the markup scan).
big="$work/upload-1g.txt"
if [ ! -s "$big" ] || [ "$(stat -c %s "$big")" -ne 1073741824 ]; then
  # (yes ends on SIGPIPE when head has enough: not a failure.)
  head -c 1073741824 < <(yes "The quick brown fox jumps over the lazy dog, again and again.") >"$big"
fi

# Limit: dd writing 1 GiB to the disk the kernel stores on, fsynced at the end.
t0=$(date +%s.%N)
dd if=/dev/zero of="$work/dd.bin" bs=1M count=1024 conv=fsync status=none
t1=$(date +%s.%N)
dd_secs=$(python3 -c "print($t1 - $t0)")
rm -f "$work/dd.bin"
sync

rss() { awk '/VmRSS/ {print $2}' "/proc/$BENCH_KERNEL_PID/status"; }
rss_before=$(rss)
peak="$work/peak"
echo "$rss_before" >"$peak"
( while :; do r=$(rss); [ "$r" -gt "$(cat "$peak")" ] && echo "$r" >"$peak"; sleep 0.05; done ) &
sampler=$!
up_secs=$(curl -fsS -o "$work/upload.json" -w '%{time_total}' -H "Authorization: Bearer $token" \
  -F "file=@$big;type=text/plain" "$BENCH_KERNEL/file/upload")
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
growth_mib=$(python3 -c "print(f'{($(cat "$peak") - $rss_before)/1024:.1f}')")
up_mbs=$(python3 -c "print(f'{1073.741824/$up_secs:.0f}')")
dd_mbs=$(python3 -c "print(f'{1073.741824/$dd_secs:.0f}')")
echo "| upload 1 GiB through the kernel to local storage (MB/s) vs dd + fsync, same disk | $up_mbs | $dd_mbs | $(ratio "$up_mbs" "$dd_mbs") |"
echo "| kernel peak RSS growth during the 1 GiB upload (MiB, goal ≤ 32) | $growth_mib | — | — |"
id=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$work/upload.json")
curl -fsS -o /dev/null -X DELETE -H "Authorization: Bearer $token" "$BENCH_KERNEL/api/files/$id"

# 100 MB private file: through the kernel (/file/{id}) and from nginx.
head -c 100000000 "$big" >"$work/private-100m.txt"
curl -fsS -o "$work/private.json" -H "Authorization: Bearer $token" \
  -F "scheme=private" -F "file=@$work/private-100m.txt;type=text/plain" "$BENCH_KERNEL/file/upload"
pid=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$work/private.json")
docroot="$work/static"
mkdir -p "$docroot"
cp "$work/private-100m.txt" "$docroot/f.txt"
nport=$(start_static_nginx "$docroot")
best() { sort -g | tail -n1; }
ours=$(for _ in 1 2 3 4 5; do curl -fsS -o /dev/null -w '%{speed_download}\n' -H "Authorization: Bearer $token" "$BENCH_KERNEL/file/$pid"; done | best)
limit=$(for _ in 1 2 3 4 5; do curl -fsS -o /dev/null -w '%{speed_download}\n' "http://127.0.0.1:$nport/f.txt"; done | best)
stop_static_nginx "$nport"
echo "| download 100 MB private file through the kernel (MB/s, best of 5) vs nginx static | $(python3 -c "print(f'{$ours/1e6:.0f}')") | $(python3 -c "print(f'{$limit/1e6:.0f}')") | $(ratio "$ours" "$limit") |"
curl -fsS -o /dev/null -X DELETE -H "Authorization: Bearer $token" "$BENCH_KERNEL/api/files/$pid"
rm -f "$work/private-100m.txt" "$docroot/f.txt"
