#!/usr/bin/env bash
# Several nodes on NATS JetStream, on loopback: a three-server JetStream
# cluster (own store directories, free ports) and three avatar-edge nodes
# (release build) on it, plus one embedded single-node server for comparison.
#
# (a) propagation: CHANGES uploads acknowledged by node 1 (new content each
#     time, spread over 20 identities); for each, the time until nodes 2 and 3
#     both serve the new bytes at s=64 (polled over keep-alive connections
#     every 0.5 ms). Reports p50/p99/max.
# (b) hits: wrk -t2 -c64 for DUR s on an identity URL and a content URL, on
#     node 1 (NATS behind it) and on the embedded server. Hits never touch
#     NATS (identity look-ups answer from the node's replica), so the target
#     is "within 5 %".
# (c) failover: SIGKILL the nats-server leading the index stream (the worst
#     case: writes wait for a new leader), then upload through node 2 every
#     100 ms: the time until the first upload is accepted, the longest any
#     upload waited for its answer (503 + Retry-After meanwhile), and the time
#     until nodes 1 and 3 serve that first accepted change. Targets (issue
#     15): accepted within 5 s, no answer slower than 5 s, served within 2 s.
# Bounded: every loop has a count and a deadline; all processes are killed
# on exit.
#
#   bench/cluster.sh                  # CHANGES=200 DUR=10
#   CHANGES=50 DUR=5 bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-200}
DUR=${DUR:-10}
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
if ((${#need_apt[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

NATS_SERVER=$(scripts/nats-server)
cargo build --release --locked --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/avatar-edge
TOKEN=cluster-bench-token-0123456789
work=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- NATS: three servers, one cluster.
declare -a NP CP MP
for i in 0 1 2; do NP[$i]=$(port); CP[$i]=$(port); MP[$i]=$(port); done
routes="nats://127.0.0.1:${CP[0]},nats://127.0.0.1:${CP[1]},nats://127.0.0.1:${CP[2]}"
for i in 0 1 2; do
  "$NATS_SERVER" -a 127.0.0.1 -p "${NP[$i]}" -m "${MP[$i]}" -n "bench-$i" -js -sd "$work/nats$i" \
    --cluster_name avatar-edge-bench --cluster "nats://127.0.0.1:${CP[$i]}" --routes "$routes" \
    >"$work/nats$i.log" 2>&1 &
  PIDS+=($!)
done
wait_http() { # URL SECONDS
  local deadline=$((SECONDS + $2))
  until curl -fs -o /dev/null "$1"; do
    ((SECONDS < deadline)) || { echo "cluster.sh: $1 did not answer in $2 s" >&2; exit 1; }
    sleep 0.1
  done
}
for i in 0 1 2; do wait_http "http://127.0.0.1:${MP[$i]}/healthz" 30; done
URLS="nats://127.0.0.1:${NP[0]},nats://127.0.0.1:${NP[1]},nats://127.0.0.1:${NP[2]}"

# --- avatar-edge: three nodes on NATS, one embedded.
declare -a AP
for i in 1 2 3 4; do AP[$i]=$(port); done
for i in 1 2 3; do
  AVATAR_EDGE_TOKEN=$TOKEN RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:${AP[$i]}" \
    --data "$work/node$i" --nats "$URLS" --nats-replicas 3 >"$work/node$i.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:${AP[$i]}/healthz" 60
done
AVATAR_EDGE_TOKEN=$TOKEN RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:${AP[4]}" \
  --data "$work/embedded" >"$work/embedded.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:${AP[4]}/healthz" 60

# --- (a) propagation.
echo "running (a) propagation, $CHANGES changes ..." >&2
timeout 300 python3 - "$CHANGES" "$TOKEN" "${AP[1]}" "${AP[2]}" "${AP[3]}" "${AP[4]}" >"$work/prop.txt" <<'PY'
import hashlib, http.client, json, struct, sys, threading, time, zlib
changes, token = int(sys.argv[1]), sys.argv[2]
n1, n2, n3, emb = (int(p) for p in sys.argv[3:7])

def png(seed):
    w = h = 96
    rows = b"".join(b"\0" + bytes(((x * 3) ^ seed) & 255 if c == 0 else ((y * 5) ^ (seed >> 8)) & 255 if c == 1 else ((x + y) ^ (seed >> 3)) & 255
                                  for x in range(w) for c in range(3)) for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")

def put(port, key, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("PUT", "/v1/avatars/" + key, body, {"Authorization": "Bearer " + token})
    r = c.getresponse(); data = r.read(); c.close()
    if r.status != 200:
        raise SystemExit("upload failed: %d %s" % (r.status, data[:200]))
    return json.loads(data)["hash"]

def wait_served(port, md5, digest, t0, out, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = t0 + 10
    while time.perf_counter() < deadline:
        c.request("GET", "/avatar/%s?s=64&d=404" % md5)
        r = c.getresponse(); r.read()
        if r.status == 200 and digest in (r.getheader("content-location") or ""):
            out[i] = time.perf_counter() - t0
            c.close(); return
        time.sleep(0.0005)
    c.close()

lat = []
bodies = [png(s) for s in range(changes)]
for n in range(changes):
    email = "bench%d@example.org" % (n % 20)
    md5 = hashlib.md5(email.encode()).hexdigest()
    digest = put(n1, email, bodies[n])
    t0 = time.perf_counter()
    out = [None, None]
    ts = [threading.Thread(target=wait_served, args=(p, md5, digest, t0, out, i)) for i, p in enumerate((n2, n3))]
    for t in ts: t.start()
    for t in ts: t.join()
    if None in out:
        raise SystemExit("change %d not served by nodes 2 and 3 within 10 s" % n)
    lat.append(max(out))
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3
print("propagation_ms p50 %.2f p99 %.2f max %.2f n %d" % (q(0.50), q(0.99), lat[-1] * 1e3, len(lat)))
# Hit targets for (b): the same avatar on node 1 and on the embedded server.
body = bodies[0]
digest = put(n1, "hit@example.org", body)
assert put(emb, "hit@example.org", body) == digest
print("hit_md5 %s" % hashlib.md5(b"hit@example.org").hexdigest())
print("hit_hash %s" % digest)
PY
cat "$work/prop.txt" | head -1
MD5=$(awk '/^hit_md5/ {print $2}' "$work/prop.txt")
HASH=$(awk '/^hit_hash/ {print $2}' "$work/prop.txt")

# --- (b) hits.
run_wrk() { # NAME URL -> req/s and p99 on one line
  wrk -t2 -c64 -d"${DUR}s" --latency "$2" >"$work/$1.wrk"
  python3 - "$work/$1.wrk" "$1" <<'PY'
import re, sys
txt = open(sys.argv[1]).read()
m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", txt, re.M)
p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
print("%-16s %10.0f req/s  p99 %6.2f ms  non-2xx %s" % (sys.argv[2], rps, p99, errs.group(1) if errs else 0))
PY
}
echo "running (b) hits, ${DUR} s each ..." >&2
for base in "nats:${AP[1]}" "embedded:${AP[4]}"; do
  name=${base%%:*}; p=${base#*:}
  curl -fs -o /dev/null "http://127.0.0.1:$p/avatar/$MD5?s=128"  # warm
  curl -fs -o /dev/null "http://127.0.0.1:$p/c/$HASH.png?s=128"
  run_wrk "$name-identity" "http://127.0.0.1:$p/avatar/$MD5?s=128" | tee -a "$work/hits.txt"
  run_wrk "$name-content" "http://127.0.0.1:$p/c/$HASH.png?s=128" | tee -a "$work/hits.txt"
done
python3 - "$work/hits.txt" <<'PY'
import sys
rows = {l.split()[0]: float(l.split()[1]) for l in open(sys.argv[1]) if l.strip()}
for kind in ("identity", "content"):
    n, e = rows["nats-" + kind], rows["embedded-" + kind]
    print("%-8s hits: NATS node %.0f req/s vs embedded %.0f req/s (%+.1f %%)" % (kind, n, e, (n / e - 1) * 100))
PY

# --- (c) failover, last: it kills a nats-server.
echo "running (c) failover ..." >&2
leader=$(python3 - "${MP[0]}" "${MP[1]}" "${MP[2]}" <<'PY'
import json, sys, urllib.request
for port in sys.argv[1:]:
    try:
        j = json.load(urllib.request.urlopen("http://127.0.0.1:%s/jsz?streams=true" % port, timeout=2))
    except Exception:
        continue
    for acc in j.get("account_details", []):
        for st in acc.get("stream_detail", []):
            if st.get("name") == "KV_avatar_edge_index" and st.get("cluster", {}).get("leader"):
                print(st["cluster"]["leader"].rsplit("-", 1)[1]); sys.exit(0)
print(0)
PY
)
kill -9 "${PIDS[$leader]}"
timeout 120 python3 - "$TOKEN" "${AP[1]}" "${AP[2]}" "${AP[3]}" <<'PY'
import hashlib, http.client, json, sys, threading, time
token = sys.argv[1]
n1, n2, n3 = (int(p) for p in sys.argv[2:5])
def png_of(seed):
    import struct, zlib
    w = h = 64
    rows = b"".join(b"\0" + bytes(((x * 7) ^ seed ^ y) & 255 for x in range(w) for c in range(3)) for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
killed = time.perf_counter()
email = "failover@example.org"
md5 = hashlib.md5(email.encode()).hexdigest()
worst, n, digest = 0.0, 0, None
while time.perf_counter() - killed < 60:
    n += 1
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection("127.0.0.1", n2, timeout=30)
        c.request("PUT", "/v1/avatars/" + email, png_of(5000 + n), {"Authorization": "Bearer " + token})
        r = c.getresponse(); data = r.read(); c.close()
        status = r.status
    except Exception:
        status = 0
    worst = max(worst, time.perf_counter() - t)
    if status == 200:
        digest = json.loads(data)["hash"]; break
    time.sleep(0.1)
if digest is None:
    raise SystemExit("failover: no upload accepted within 60 s")
accepted = time.perf_counter()
def served(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.perf_counter() - accepted < 30:
        c.request("GET", "/avatar/%s?s=64&d=404" % md5)
        r = c.getresponse(); r.read()
        if r.status == 200 and digest in (r.getheader("content-location") or ""):
            return time.perf_counter() - accepted
        time.sleep(0.001)
    return float("inf")
print("failover_s first_upload_accepted %.2f longest_answer %.2f attempts %d served_by_nodes_1_3 %.2f"
      % (accepted - killed, worst, n, max(served(n1), served(n3))))
PY
