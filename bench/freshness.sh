#!/usr/bin/env bash
# Freshness behind a real CDN: 200 avatar changes behind Varnish (xkey purges),
# reporting p50/p99 of "upload answered → every size through Varnish serves
# the new bytes". Loopback only; bounded (200 changes, 2 s per change at most).
#
#   bench/freshness.sh            # builds release, installs varnish if missing
#   CHANGES=50 bench/freshness.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-200}

for pair in "varnishd:varnish" "/usr/lib/*/varnish/vmods/libvmod_xkey.so:varnish-modules"; do
  check=${pair%%:*}; pkg=${pair#*:}
  if [[ $check == /* ]]; then compgen -G "$check" >/dev/null && continue; else command -v "$check" >/dev/null && continue; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq --no-install-recommends "$pkg"
done

cargo build --release --locked --quiet
work=$(mktemp -d)
cleanup() { kill "${VPID:-}" "${APID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN=$(free_port); CDN=$(free_port)
sed "s/\.port = \"8080\";/.port = \"$ORIGIN\";/" examples/varnish.vcl > "$work/avatar.vcl"
varnishd -F -j none -T none -s malloc,128m -a "127.0.0.1:$CDN" -f "$work/avatar.vcl" -n "$work/varnish" >/dev/null 2>&1 &
VPID=$!
AVATAR_EDGE_TOKEN=freshness-bench-token-0123 RUST_LOG=warn ./target/release/avatar-edge serve \
  --listen "127.0.0.1:$ORIGIN" --data "$work/data" --purge-endpoint "http://127.0.0.1:$CDN/" &
APID=$!

python3 - "$ORIGIN" "$CDN" "$CHANGES" <<'PY'
import hashlib, statistics, sys, time, urllib.request
origin, cdn, changes = f"http://127.0.0.1:{sys.argv[1]}", f"http://127.0.0.1:{sys.argv[2]}", int(sys.argv[3])
token = "freshness-bench-token-0123"
email = "freshness@example.org"
md5 = hashlib.md5(email.encode()).hexdigest()
sizes = [32, 256]
images = [open("fixtures/photo_grace_hopper_512x600.jpg", "rb").read(), open("fixtures/logo_alpha_disc_512.png", "rb").read()]

def req(url, method="GET", data=None, headers=None):
    r = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(r, timeout=10) as resp:
        return resp.status, resp.headers, resp.read()

deadline = time.time() + 30
while True:
    try:
        req(origin + "/healthz"); req(cdn + "/healthz"); break
    except Exception:
        if time.time() > deadline: raise
        time.sleep(0.05)

def upload(i):
    return req(f"{origin}/v1/avatars/{email}", "PUT", images[i % 2], {"Authorization": f"Bearer {token}"})

# The ETag each size must show for each of the two images.
want = []
for i in range(2):
    upload(i)
    want.append([req(f"{origin}/avatar/{md5}?s={s}")[1]["ETag"] for s in sizes])

lags, stale = [], 0
for n in range(changes):
    i = n % 2
    for s in sizes:  # make sure the CDN holds the current version first
        req(f"{cdn}/avatar/{md5}?s={s}")
    upload(i)
    t0 = time.perf_counter()
    limit = t0 + 2.0
    while True:
        if all(req(f"{cdn}/avatar/{md5}?s={s}")[1]["ETag"] == want[i][k] for k, s in enumerate(sizes)):
            lags.append((time.perf_counter() - t0) * 1000)
            break
        if time.perf_counter() > limit:
            stale += 1
            break
lags.sort()
p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
print(f"changes: {changes}  fresh: {len(lags)}  still stale after 2 s: {stale}")
print(f"upload answered -> both sizes fresh through Varnish: p50 {p(0.50):.1f} ms  p99 {p(0.99):.1f} ms  max {lags[-1]:.1f} ms")
PY
