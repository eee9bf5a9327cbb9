#!/usr/bin/env bash
# avatar-edge side by side with nginx (static + image_filter), pyvips and Pillow,
# on the same 1024² JPEG (fixtures/photo_retina_baseline_1024.jpg), loopback only.
# Prints ONE table whose ratios all come from this run. Bounded: ~3 minutes.
#
#   bench/compare.sh                 # builds release, installs missing tools
#   DUR=5 bench/compare.sh           # shorter wrk runs (default 10 s for hits)
#   BIN=/tmp/a/avatar-edge bench/compare.sh   # that binary, no build (A-B-A-B)
#   EDGE_ARGS="--raw-rungs-up-to 512" bench/compare.sh   # extra flags for avatar-edge
#   SKIP_RSS=1 bench/compare.sh      # (a)-(c) only, ~1.5 minutes
#   HIT_ROUNDS=8 DUR=6 bench/compare.sh   # (a) only, alternating avatar-edge
#                                    # and nginx N times (order flipped every
#                                    # round): per-round ratios and medians
#
# (a) hits: wrk -t2 -c64 -d${DUR}s, req/s, p99, server CPU per request from
#     /proc/<pid>/stat utime+stime deltas (nginx: master + workers);
# (b) cold 128 px renders: avatar-edge with a zero cache (every request renders
#     from the stored ladder) vs nginx image_filter (resizes the 1024 original
#     per request) vs pyvips thumbnail_buffer and Pillow draft()+LANCZOS on the
#     original, in-process, one core;
# (b0) the floor under the -c1 rows: nginx serving the static 128 px JPEG,
#     -t1 -c1, p50 (one loopback round trip on this machine, now);
# (b2) cold renders across the size matrix (issue 19): p50 over HTTP (-t1 -c1,
#     3 s per size) of a JPEG at each of COLD_SIZES (default 32 64 128 256
#     512) from the zero-cache server, vs Pillow draft()+LANCZOS+JPEG Q85 on
#     the 1024² original at the same size, in-process; targets: p50 <= 0.25 /
#     0.5 / 1.5 ms at 128 / 256 / 512 px, faster than Pillow by >= 5x at 32-128,
#     >= 3x at 256, >= 2x at 512;
# (c) upload normalization of photo_large_4032x3024.jpg (PUT, p50 of 5) vs
#     pyvips thumbnail_buffer to 1024 (p50 of 5);
# (d) peak RSS (VmHWM) of a 256 MiB-budget server after 100,000 distinct
#     variants (131 96-px noise masters × sizes 1..256 × 3 formats, via
#     curl --parallel; noise makes the variants overflow the budget).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10}
COLD_SIZES=${COLD_SIZES:-32 64 128 256 512}
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx-light)
compgen -G "/usr/lib/nginx/modules/ngx_http_image_filter_module.so" >/dev/null || need_apt+=(libnginx-mod-http-image-filter)
command -v vips >/dev/null || need_apt+=(libvips-tools)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
python3 -c 'import pyvips, PIL' 2>/dev/null || pip install -q pyvips Pillow

if [[ -z "${BIN:-}" ]]; then # BIN=path/to/avatar-edge: measure that binary (A-B runs)
  cargo build --release --locked --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/avatar-edge
fi
work=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TOKEN=compare-bench-token-0123456789
SRC=fixtures/photo_retina_baseline_1024.jpg
BIG=fixtures/photo_large_4032x3024.jpg

# --- servers ---------------------------------------------------------------
mkdir -p "$work/www" "$work/ngx"
chmod 755 "$work"  # nginx workers run as www-data
vips thumbnail "$SRC" "$work/www/a128.jpg[Q=85]" 128
cp "$SRC" "$work/www/a1024.jpg"
NGX=$(free_port)
cat > "$work/ngx/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_http_image_filter_module.so;
worker_processes 2;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on; keepalive_requests 1000000;
  client_body_temp_path $work/ngx/body; proxy_temp_path $work/ngx/proxy;
  fastcgi_temp_path $work/ngx/fcgi; uwsgi_temp_path $work/ngx/uwsgi; scgi_temp_path $work/ngx/scgi;
  server {
    listen 127.0.0.1:$NGX;
    root $work/www;
    location /static/ { alias $work/www/; }
    location /resize/ { alias $work/www/; image_filter resize 128 128; image_filter_jpeg_quality 85; image_filter_buffer 10M; }
  }
}
NGINX
nginx -c "$work/ngx/nginx.conf" -g 'daemon off;' &
PIDS+=($!); NGX_MASTER=$!

start_edge() { # $1 port, $2 data dir, $3 cache MiB
  AVATAR_EDGE_TOKEN=$TOKEN RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$1" --data "$2" --cache-mb "$3" \
    --max-connections 4096 ${EDGE_ARGS:-} >/dev/null 2>"$2.log" &
  PIDS+=($!); echo $! > "$2.pid"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.1; done
  echo "avatar-edge did not start" >&2; cat "$2.log" >&2; exit 1
}
HOT=$(free_port); COLD=$(free_port)
start_edge "$HOT" "$work/hot" 256; HOT_PID=$(cat "$work/hot.pid")
start_edge "$COLD" "$work/cold" 0; COLD_PID=$(cat "$work/cold.pid")
upload() { curl -sf -X PUT -H "authorization: Bearer $TOKEN" --data-binary "@$2" "http://127.0.0.1:$1/v1/avatars/$3"; }
HASH=$(upload "$HOT" "$SRC" bench@example.org | python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])')
upload "$COLD" "$SRC" bench@example.org >/dev/null
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$NGX/static/a128.jpg" && break; sleep 0.1; done

# --- helpers -----------------------------------------------------------------
cpu_ticks() { # sum utime+stime of the given pids and their children threads
  local t=0 p; for p in "$@"; do read -r -a f < "/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo $t; }
ngx_pids() { echo "$NGX_MASTER" $(pgrep -P "$NGX_MASTER"); }
HZ=$(getconf CLK_TCK)
# run_wrk NAME URL THREADS CONNS SECONDS PIDS... -> "$work/NAME.{rps,p50,p99,cpu}"
run_wrk() {
  local name=$1 url=$2 t=$3 c=$4 d=$5; shift 5
  local before after; before=$(cpu_ticks "$@")
  wrk -t"$t" -c"$c" -d"${d}s" --latency "$url" > "$work/$name.wrk"
  after=$(cpu_ticks "$@")
  python3 - "$work/$name" $((after - before)) "$HZ" <<'PY'
import re, sys
base, ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
txt = open(base + ".wrk").read()
def lat(p):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, txt, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
reqs = int(re.search(r"(\d+) requests in", txt).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
open(base + ".res", "w").write("%f %f %f %f %d\n" % (rps, lat(50), lat(99), ticks / hz / max(reqs, 1) * 1e6, int(errs.group(1)) if errs else 0))
PY
}

# The machine while this run measures: load average and CPU steal (another
# tenant's share of our cores), printed under the table.
head -1 /proc/stat > "$work/stat0"; cut -d' ' -f1 /proc/loadavg > "$work/load0"

if [[ -n "${HIT_ROUNDS:-}" ]]; then # (a) as an A-B-A-B run: the hit targets' own measure
  for r in $(seq "$HIT_ROUNDS"); do
    echo "running (a) hits, round $r of $HIT_ROUNDS ..." >&2
    load=$(cut -d' ' -f1 /proc/loadavg)
    if ((r % 2)); then order="ngx edge"; else order="edge ngx"; fi
    for who in $order; do
      if [[ $who = ngx ]]; then run_wrk "ngx_hit$r" "http://127.0.0.1:$NGX/static/a128.jpg" 2 64 "$DUR" $(ngx_pids)
      else run_wrk "edge_hit$r" "http://127.0.0.1:$HOT/c/$HASH.jpg?s=128" 2 64 "$DUR" "$HOT_PID"; fi
    done
    echo "$load" > "$work/load$r"
  done
  python3 - "$work" "$HIT_ROUNDS" <<'PY'
import statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
res = lambda n: [float(x) for x in open(f"{work}/{n}.res").read().split()]
rows = []
print("| round | load | avatar-edge req/s | nginx req/s | ratio (>= 1.1x) | CPU/hit edge | nginx | ratio (<= 0.8x) |")
print("|---|---|---|---|---|---|---|---|")
for r in range(1, rounds + 1):
    e, n = res(f"edge_hit{r}"), res(f"ngx_hit{r}")
    rows.append((e[0] / n[0], e[3] / n[3]))
    load = open(f"{work}/load{r}").read().strip()
    print(f"| {r} | {load} | {e[0]:,.0f} | {n[0]:,.0f} | {rows[-1][0]:.2f}x | {e[3]:.1f} us | {n[3]:.1f} us | {rows[-1][1]:.2f}x |")
both = sum(1 for q, c in rows if q >= 1.1 and c <= 0.8)
print(f"\nmedians over {rounds} rounds: req/s {statistics.median(q for q, _ in rows):.2f}x nginx, "
      f"CPU per hit {statistics.median(c for _, c in rows):.2f}x; both targets met in {both} of {rounds} rounds")
PY
  exit 0
fi
echo "running (a) hits ..." >&2
run_wrk ngx_hit "http://127.0.0.1:$NGX/static/a128.jpg" 2 64 "$DUR" $(ngx_pids)
run_wrk edge_hit "http://127.0.0.1:$HOT/c/$HASH.jpg?s=128" 2 64 "$DUR" "$HOT_PID"
echo "running (b) cold renders ..." >&2
run_wrk ngx_cold "http://127.0.0.1:$NGX/resize/a1024.jpg" 2 4 5 $(ngx_pids)
run_wrk edge_cold "http://127.0.0.1:$COLD/c/$HASH.jpg?s=128" 2 4 5 "$COLD_PID"
run_wrk edge_cold1 "http://127.0.0.1:$COLD/c/$HASH.jpg?s=128" 1 1 5 "$COLD_PID"
# The floor under every -c1 row: one loopback round trip of a static file.
run_wrk ngx_floor "http://127.0.0.1:$NGX/static/a128.jpg" 1 1 3 $(ngx_pids)
for s in $COLD_SIZES; do
  run_wrk "edge_cold_$s" "http://127.0.0.1:$COLD/c/$HASH.jpg?s=$s" 1 1 3 "$COLD_PID"
done

echo "running (c) upload normalization ..." >&2
for i in 1 2 3 4 5; do
  curl -sf -o /dev/null -w '%{time_total}\n' -X PUT -H "authorization: Bearer $TOKEN" \
    --data-binary "@$BIG" "http://127.0.0.1:$COLD/v1/avatars/big$i@example.org"
done > "$work/upload.times"

python3 - "$SRC" "$BIG" $COLD_SIZES > "$work/py.res" <<'PY'
import io, statistics, sys, time
import pyvips
from PIL import Image
src, big = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
pyvips.cache_set_max(0)
def per_op(fn, secs=3.0):
    fn(); n = 0; t0 = time.perf_counter()
    while time.perf_counter() - t0 < secs:
        fn(); n += 1
    return (time.perf_counter() - t0) / n
def vips128():
    pyvips.Image.thumbnail_buffer(src, 128, height=128, crop="centre").write_to_buffer(".jpg[Q=85]")
def pil(side):
    im = Image.open(io.BytesIO(src)); im.draft("RGB", (side, side))
    im = im.convert("RGB").resize((side, side), Image.LANCZOS)
    out = io.BytesIO(); im.save(out, "JPEG", quality=85)
def pil128():
    pil(128)
def vips1024():
    pyvips.Image.thumbnail_buffer(big, 1024, height=1024, crop="centre").write_to_memory()
big_times = []
for _ in range(5):
    t0 = time.perf_counter(); vips1024(); big_times.append(time.perf_counter() - t0)
print(per_op(vips128), per_op(pil128), statistics.median(big_times))
print(" ".join(f"{s}:{per_op(lambda: pil(int(s)), 1.5)}" for s in sys.argv[3:]))
PY

HWM=0 RSS_SECS=0 METRICS=""; : > "$work/rss.codes"
if [[ -z "${SKIP_RSS:-}" ]]; then
echo "running (d) 100,000 distinct variants against 256 MiB ..." >&2
RSS=$(free_port)
start_edge "$RSS" "$work/rss" 256; RSS_PID=$(cat "$work/rss.pid")
python3 - "$RSS" "$TOKEN" "$work/urls.cfg" <<'PY'
import io, sys, urllib.request
from PIL import Image
port, token, cfg = sys.argv[1:]
hashes = []
import os
for i in range(131):
    # 96 px noise: variants are large enough to overflow the budget (evictions).
    im = Image.frombytes("RGB", (96, 96), os.urandom(96 * 96 * 3))
    buf = io.BytesIO(); im.save(buf, "PNG")
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/avatars/rss{i}@example.org", data=buf.getvalue(), method="PUT",
                                 headers={"authorization": "Bearer " + token})
    import json; hashes.append(json.load(urllib.request.urlopen(req))["hash"])
n = 0
with open(cfg, "w") as f:
    for h in hashes:
        for s in range(1, 257):
            for ext in ("png", "jpg", "webp"):
                if n < 100_000:
                    f.write(f'url = "http://127.0.0.1:{port}/c/{h}.{ext}?s={s}"\noutput = "/dev/null"\n'); n += 1
PY
RSS_START=$(date +%s.%N)
curl -s -Z --parallel-max 16 -K "$work/urls.cfg" -w '%{http_code}\n' > "$work/rss.codes" 2>/dev/null || true
RSS_SECS=$(python3 -c "import time; print(round(time.time() - $RSS_START, 1))")
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$RSS_PID/status")
METRICS=$(curl -sf "http://127.0.0.1:$RSS/metrics" | grep -E '^avatar_edge_cache_(bytes|entries|evictions)' | tr '\n' ' ' || true)
fi

head -1 /proc/stat > "$work/stat1"; cut -d' ' -f1 /proc/loadavg > "$work/load1"
python3 - "$work" "$HWM" "$RSS_SECS" "$METRICS" $COLD_SIZES <<'PY'
import statistics, sys
w, hwm_kib, rss_secs, metrics = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def res(n):
    rps, p50, p99, cpu, errs = open(f"{w}/{n}.res").read().split()
    return float(rps), float(p50), float(p99), float(cpu), int(errs)
nh, eh = res("ngx_hit"), res("edge_hit")
nc, ec, ec1 = res("ngx_cold"), res("edge_cold"), res("edge_cold1")
py_lines = open(f"{w}/py.res").read().splitlines()
vips128, pil128, vips1024 = map(float, py_lines[0].split())
pil_at = {int(k): float(v) for k, v in (kv.split(":") for kv in py_lines[1].split())} if len(py_lines) > 1 else {}
p50_target = {128: 0.25, 256: 0.5, 512: 1.5}
pil_target = lambda side: 5 if side <= 128 else 3 if side <= 256 else 2
up = statistics.median(float(x) for x in open(f"{w}/upload.times").read().split())
codes = open(f"{w}/rss.codes").read().split()
ok = sum(c == "200" for c in codes)
budget = 256
rows = [
 ("(a) hit 128px jpg req/s", f"{eh[0]:,.0f}", f"nginx static {nh[0]:,.0f}", f"{eh[0]/nh[0]:.2f}x", ">= 1.1x (issue 19)"),
 ("(a) hit p99", f"{eh[2]:.2f} ms", f"nginx static {nh[2]:.2f} ms", f"{eh[2]/nh[2]:.2f}x", "<= 1.0x"),
 ("(a) server CPU / request", f"{eh[3]:.1f} us", f"nginx static {nh[3]:.1f} us", f"{eh[3]/nh[3]:.2f}x", "<= 0.8x (issue 19)"),
 ("(b0) round trip floor p50 (-c1)", f"{res('ngx_floor')[1]:.3f} ms", "nginx static 128px jpg", "", "under every -c1 row"),
 ("(b) cold 128px renders/s (-c4)", f"{ec[0]:,.0f}", f"nginx image_filter {nc[0]:,.1f}", f"{ec[0]/nc[0]:.0f}x", ""),
 ("(b) cold 128px p50 (-c1)", f"{ec1[1]:.3f} ms", "target 0.25 ms (issue 19)", f"{ec1[1]/0.25:.2f}x", "<= 1.0x"),
 ("(b) cold 128px per op vs Pillow draft", f"{ec1[1]:.3f} ms", f"Pillow draft+LANCZOS {pil128*1e3:.2f} ms", f"{pil128*1e3/ec1[1]:.1f}x faster", ">= 5x"),
 ("(b) cold 128px per op vs pyvips", f"{ec1[1]:.3f} ms", f"pyvips thumbnail_buffer {vips128*1e3:.2f} ms", f"{vips128*1e3/ec1[1]:.1f}x faster", ">= 18x"),
 *[(f"(b2) cold {side}px jpg p50 (-c1)", f"{res(f'edge_cold_{side}')[1]:.3f} ms",
    f"Pillow draft+LANCZOS {pil_at[side]*1e3:.2f} ms", f"{pil_at[side]*1e3/res(f'edge_cold_{side}')[1]:.1f}x faster",
    f">= {pil_target(side)}x" + (f", p50 <= {p50_target[side]} ms" if side in p50_target else ""))
   for side in map(int, sys.argv[5:]) if side in pil_at],
 ("(c) normalize 4032x3024 upload p50", f"{up*1e3:.0f} ms", f"pyvips thumbnail 1024 {vips1024*1e3:.0f} ms", f"{up/vips1024:.2f}x", "<= 1.0x"),
 ("(d) peak RSS, 100k variants", f"{hwm_kib/1024:.0f} MiB", f"budget {budget} + 64 MiB", f"{hwm_kib/1024/(budget+64):.2f}x", "<= 1.0x"),
]
if not hwm_kib:  # SKIP_RSS=1
    rows.pop()
print(f"| measure | avatar-edge | reference | ratio | target |")
print(f"|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
print(f"errors (non-2xx): edge hit {eh[4]}, nginx hit {nh[4]}, edge cold {ec[4]}, nginx resize {nc[4]}; "
      f"(d) {ok:,}/{len(codes):,} variants answered 200 in {rss_secs} s; {metrics}")
cpu = [[int(x) for x in open(f"{w}/stat{i}").read().split()[1:9]] for i in (0, 1)]
d = [b - a for a, b in zip(*cpu)]
load = [open(f"{w}/load{i}").read().strip() for i in (0, 1)]
print(f"machine: load average {load[0]} -> {load[1]}; CPU steal {100 * d[7] / max(sum(d), 1):.1f} % of the run")
PY
