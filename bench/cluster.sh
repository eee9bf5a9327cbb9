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
#     is "within 5 %". Needs (a) (it uploads the hit targets).
# (d) writes (issue 20): WRITERS (12) concurrent writers upload small distinct
#     PNGs to distinct identities for WRITE_DUR (10) s, spread over the three
#     nodes, then the same against the embedded node; WRITE_ROUNDS (2) rounds
#     alternating cluster / embedded. Uploads/s, p50/p99 of acknowledged
#     uploads, 503s, and cluster / embedded. Targets: >= 0.5x the embedded
#     uploads/s, p99 <= 100 ms, no 503. WRITE_REPLACE=1: each writer keeps
#     one identity and replaces its avatar (every write unbinds a master:
#     the unlisting and collection path).
# (f) binds of one content (issue 20): SAME_WRITERS (36) writers for
#     WRITE_DUR s over the three nodes, each upload a new identity; rounds
#     alternate distinct images / one image for all (WRITE_ROUNDS each).
#     Every bind pins its master's m. entry by compare-and-set, so one
#     image is a hot key (an adoption wave of one default); the peer is the
#     distinct round of the same run. Prints p50 / p99 / max and 503s.
# (e) replica memory and look-ups (issue 20): imports IDENTITIES (100,000)
#     identities through the public API (IMPORT_CONCURRENCY concurrent PUTs
#     over the three nodes, 503s retried), in two halves on 16 shared
#     contents, then DISTINCT (IDENTITIES/10) identities each on its own
#     content (DISTINCT_SIDE px square, 16); every node's VmRSS after each
#     step gives the replica's bytes per identity (second half: marginal, free
#     of fixed costs) and per master; KV and object-store bytes from /jsz;
#     node 3 restarted: time to ready (and, bounded, until its background
#     read of master entries ends), its RSS with a freshly loaded replica,
#     and what it read from NATS (/varz out_bytes, start-up prefetch included). Then look-ups, node 1 vs the
#     embedded node (which gets EMBEDDED_IDENTITIES, default IDENTITIES, of
#     the same shared-content identities), LOOKUP_ROUNDS (2) rounds of LOOKUPS
#     (2,000) alternating: a hot identity URL and cold ones
#     (identities never requested there, variants cached), and the KV direct
#     get a bounded replica's cold look-up would make. Projection to 1 M and
#     10 M identities. Long: at 250-400 imports/s (2 shared cores), 100 k
#     takes ~10-15 min. The model these figures feed: docs/scaling.md.
#     DEFAULT_NODES=1: all three nodes start without --nats-index-mb, as
#     an operator's would (in the new, marked bucket: bounded at 64 MiB);
#     INDEX_MB is then ignored.
#     INDEX_MB=N (default 0): node 3 holds a bounded replica
#     (`--nats-index-mb N`, issue 20): its RSS against the whole-index nodes
#     1 and 2 at every step, and its look-ups (hot: memory; cold: read from
#     the stream leader) next to node 1's and the embedded node's; then
#     look-ups of identities on their own contents on node 1 and node 3
#     ("own": a cold one also reads its master's entry on node 3, and
#     renders 16 px on both; needs DISTINCT >= 4 x LOOKUPS + 1).
# (c) failover, always last (it kills a nats-server): SIGKILL the nats-server
#     leading the index stream (the worst case: writes wait for a new leader),
#     then upload through node 2 every 100 ms: the time until the first upload
#     is accepted, the longest any upload waited for its answer (503 +
#     Retry-After meanwhile), and the time until nodes 1 and 3 serve that
#     first accepted change. Targets (issue 15): accepted within 5 s, no
#     answer slower than 5 s, served within 2 s.
# Bounded: every loop has a count and a deadline; all processes are killed
# on exit. Timing figures are only meaningful as ratios against the embedded
# node of the same run (print `uptime` with them); memory figures hold under
# load.
#
#   bench/cluster.sh                         # all sections: a b d f e c
#   CHANGES=50 DUR=5 bench/cluster.sh
#   SECTIONS="d e" IDENTITIES=200000 bench/cluster.sh
#   AVATAR_EDGE_BIN=/path/to/avatar-edge SECTIONS=d bench/cluster.sh   # no build
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${CHANGES:-200}
DUR=${DUR:-10}
SECTIONS=" ${SECTIONS:-a b d f e c} "
WRITERS=${WRITERS:-12}
WRITE_DUR=${WRITE_DUR:-10}
WRITE_ROUNDS=${WRITE_ROUNDS:-2}
IDENTITIES=${IDENTITIES:-100000}
DISTINCT=${DISTINCT:-$((IDENTITIES / 10))}
DISTINCT_SIDE=${DISTINCT_SIDE:-16}
IMPORT_CONCURRENCY=${IMPORT_CONCURRENCY:-36}
LOOKUP_ROUNDS=${LOOKUP_ROUNDS:-2}
LOOKUPS=${LOOKUPS:-2000}
INDEX_MB=${INDEX_MB:-0}
section() { [[ $SECTIONS == *" $1 "* ]]; }
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
if ((${#need_apt[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

NATS_SERVER=$(scripts/nats-server)
if [ -n "${AVATAR_EDGE_BIN:-}" ]; then
  BIN=$AVATAR_EDGE_BIN
else
  cargo build --release --locked --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/avatar-edge
fi
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
declare -a AP APID
for i in 1 2 3 4; do AP[$i]=$(port); done
start_node() { # I: node I on NATS (1-3); node 3 bounded when INDEX_MB > 0, the others whole
  local bounded=(--nats-index-mb 0) # (unset, a node in a new bucket would be bounded at 64 MiB)
  if [ "$1" = 3 ] && [ "$INDEX_MB" -gt 0 ]; then bounded=(--nats-index-mb "$INDEX_MB"); fi
  if [ "${DEFAULT_NODES:-0}" = 1 ]; then bounded=(); fi
  AVATAR_EDGE_TOKEN=$TOKEN RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:${AP[$1]}" \
    --data "$work/node$1" --nats "$URLS" --nats-replicas 3 "${bounded[@]}" >>"$work/node$1.log" 2>&1 &
  PIDS+=($!)
  APID[$1]=$!
}
for i in 1 2 3; do
  start_node "$i"
  wait_http "http://127.0.0.1:${AP[$i]}/healthz" 60
done
AVATAR_EDGE_TOKEN=$TOKEN RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:${AP[4]}" \
  --data "$work/embedded" >"$work/embedded.log" 2>&1 &
PIDS+=($!)
APID[4]=$!
wait_http "http://127.0.0.1:${AP[4]}/healthz" 60
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; } # kB
rss_all() { echo "$(rss "${APID[1]}") $(rss "${APID[2]}") $(rss "${APID[3]}") $(rss "${APID[4]}")"; }
RSS_START=$(rss_all)
CLIENT=(python3 bench/cluster_client.py)
echo "load average at start: $(uptime | sed 's/.*load average: //')"

# --- (a) propagation.
if section a; then
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
fi

# --- (b) hits.
if section b; then
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
fi

# --- (d) writes (issue 20): cluster vs embedded, alternating rounds.
if section d; then
  echo "running (d) writes: $WRITERS writers, ${WRITE_DUR} s, $WRITE_ROUNDS rounds cluster / embedded ..." >&2
  : >"$work/writes.jsonl"
  for r in $(seq 1 "$WRITE_ROUNDS"); do
    for target in "cluster:${AP[1]},${AP[2]},${AP[3]}" "embedded:${AP[4]}"; do
      timeout "$((${WRITE_DUR%.*} + 60))" "${CLIENT[@]}" writes --ports "${target#*:}" --token "$TOKEN" \
        --tag "${target%%:*}$r" --writers "$WRITERS" --duration "$WRITE_DUR" \
        ${WRITE_REPLACE:+--replace} >>"$work/writes.jsonl"
    done
  done
  python3 - "$work/writes.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda k, side: statistics.median(r[k] for r in rows if r["name"].startswith(side))
for r in rows:
    print("writes %-10s %7.0f uploads/s  p50 %7.2f ms  p99 %7.2f ms  503s %d  other failures %d %s"
          % (r["name"], r["per_s"], r["p50_ms"], r["p99_ms"], r["s503"], r["other"], " ".join(r["example"])))
ratios = [c["per_s"] / e["per_s"] for c, e in zip((r for r in rows if r["name"].startswith("cluster")),
                                                  (r for r in rows if r["name"].startswith("embedded")))]
c, e = med("per_s", "cluster"), med("per_s", "embedded")
print("writes medians: cluster %.0f uploads/s (p50 %.2f, p99 %.2f ms, 503s %d) vs embedded %.0f uploads/s "
      "(p50 %.2f, p99 %.2f ms): cluster/embedded %.2f (rounds: %s); targets >= 0.50, p99 <= 100 ms, no 503"
      % (c, med("p50_ms", "cluster"), med("p99_ms", "cluster"),
         sum(r["s503"] for r in rows if r["name"].startswith("cluster")),
         e, med("p50_ms", "embedded"), med("p99_ms", "embedded"), c / e, ", ".join("%.2f" % x for x in ratios)))
PY
fi

# --- (f) binds of one content (issue 20): distinct / same, alternating.
if section f; then
  echo "running (f) binds of one content: ${SAME_WRITERS:-36} writers, ${WRITE_DUR} s, $WRITE_ROUNDS rounds distinct / same ..." >&2
  : >"$work/same.jsonl"
  for r in $(seq 1 "$WRITE_ROUNDS"); do
    for kind in distinct same; do
      timeout "$((${WRITE_DUR%.*} + 60))" "${CLIENT[@]}" writes --ports "${AP[1]},${AP[2]},${AP[3]}" --token "$TOKEN" \
        --tag "$kind$r" --writers "${SAME_WRITERS:-36}" --duration "$WRITE_DUR" \
        $([ "$kind" = same ] && echo --same) >>"$work/same.jsonl"
    done
  done
  python3 - "$work/same.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    print("binds %-10s %7.0f uploads/s  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  503s %d  other %d %s"
          % (r["name"], r["per_s"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["s503"], r["other"], " ".join(r["example"])))
med = lambda k, kind: statistics.median(r[k] for r in rows if r["name"].startswith(kind))
print("binds medians: one content p99 %.1f ms, max %.1f ms, %.0f uploads/s vs distinct p99 %.1f ms, max %.1f ms, %.0f uploads/s"
      " (p99 ratio %.2f)" % (med("p99_ms", "same"), med("max_ms", "same"), med("per_s", "same"),
                             med("p99_ms", "distinct"), med("max_ms", "distinct"), med("per_s", "distinct"),
                             med("p99_ms", "same") / med("p99_ms", "distinct")))
PY
fi

# --- (e) replica memory and look-ups (issue 20).
if section e; then
  jsz() { # -> "index_bytes index_msgs blob_bytes" (summed over the stream's replicas: one server's view)
    python3 - "${MP[@]}" <<'PY'
import json, sys, urllib.request
for port in sys.argv[1:]:
    try:
        j = json.load(urllib.request.urlopen("http://127.0.0.1:%s/jsz?streams=true" % port, timeout=2))
    except Exception:
        continue
    got = {}
    for acc in j.get("account_details", []):
        for st in acc.get("stream_detail", []):
            got[st["name"]] = st["state"]
    if "KV_avatar_edge_index" in got:
        kv, obj = got["KV_avatar_edge_index"], got.get("OBJ_avatar_edge_blobs", {"bytes": 0})
        print(kv["bytes"], kv["messages"], obj["bytes"]); sys.exit(0)
print("0 0 0")
PY
  }
  replica_len() { curl -fs "http://127.0.0.1:$1/metrics" | awk '/^avatar_edge_replica_identities / {print $2}'; }
  WHOLE="1 2 3"
  [ "$INDEX_MB" -gt 0 ] && WHOLE="1 2"
  wait_replicas() { # N: every whole-index node's replica holds at least N identities
    local deadline=$((SECONDS + 300)) i
    for i in $WHOLE; do
      until [ "$(replica_len "${AP[$i]}")" -ge "$1" ] 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "cluster.sh: node $i's replica did not reach $1 identities" >&2; exit 1; }
        sleep 0.2
      done
    done
  }
  bulk() { # PREFIX START COUNT CONTENTS PORTS CONCURRENCY [SIDE]
    timeout 7200 "${CLIENT[@]}" import --prefix "$1" --start "$2" --count "$3" --contents "$4" --ports "$5" \
      --concurrency "$6" --side "${7:-16}" --token "$TOKEN"
  }
  NODES="${AP[1]},${AP[2]},${AP[3]}"
  half=$((IDENTITIES / 2))
  base=$(replica_len "${AP[1]}")
  echo "running (e) replica memory: $IDENTITIES identities on 16 contents + $DISTINCT on their own ..." >&2
  {
    echo "start $RSS_START 0 0 0"
    sleep 1
    echo "before $(rss_all) $(jsz)"
    # Each step waits for the identities it did import (a PUT answered 503
    # 200 times in a row is given up and reported with the step).
    imported() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])["imported"])' "$1"; }
    got=$(bulk s- 0 "$half" 16 "$NODES" "$IMPORT_CONCURRENCY" || true)
    echo "import1 $got"
    have=$((base + $(imported "$got")))
    wait_replicas "$have"; sleep 1
    echo "half $(rss_all) $(jsz)"
    got=$(bulk s- "$half" $((IDENTITIES - half)) 16 "$NODES" "$IMPORT_CONCURRENCY" || true)
    echo "import2 $got"
    have=$((have + $(imported "$got")))
    wait_replicas "$have"; sleep 1
    echo "shared $(rss_all) $(jsz)"
    got=$(bulk d- 0 "$DISTINCT" 0 "$NODES" "$IMPORT_CONCURRENCY" "$DISTINCT_SIDE" || true)
    echo "import3 $got"
    have=$((have + $(imported "$got")))
    wait_replicas "$have"; sleep 1
    echo "distinct $(rss_all) $(jsz)"
    # A fresh replica: node 3 restarted, loads everything from the bucket.
    nats_out() { # bytes the three nats-servers have sent so far
      python3 - "${MP[@]}" <<'PY'
import json, sys, urllib.request
print(sum(json.load(urllib.request.urlopen("http://127.0.0.1:%s/varz" % p, timeout=2))["out_bytes"] for p in sys.argv[1:]))
PY
    }
    out0=$(nats_out)
    kill -9 "${APID[3]}"; wait "${APID[3]}" 2>/dev/null || true
    t0=$(date +%s.%N)
    start_node 3
    # serve listens only once the replica is loaded; it exits if loading stalls for 30 s.
    deadline=$((SECONDS + 600))
    until curl -fs -o /dev/null "http://127.0.0.1:${AP[3]}/readyz"; do
      ((SECONDS < deadline)) || { echo "cluster.sh: restarted node 3 not ready in 600 s" >&2; exit 1; }
      kill -0 "${APID[3]}" 2>/dev/null || { echo "cluster.sh: restarted node 3 exited: $(tail -c 300 "$work/node3.log")" >&2; exit 1; }
      sleep 0.1
    done
    echo "ready_s $(python3 -c "print(round($(date +%s.%N) - $t0, 2))")"
    # A bounded node reads the master entries after ready, in the background
    # (a release without the gauge read them before ready).
    until loading=$(curl -fs "http://127.0.0.1:${AP[3]}/metrics" | awk '/^avatar_edge_replica_masters_loading / {print $2}') \
        && [ "${loading:-0}" = 0 ]; do
      ((SECONDS < deadline)) || { echo "cluster.sh: restarted node 3 did not read its masters in 600 s" >&2; exit 1; }
      sleep 0.1
    done
    echo "masters_read_s $(python3 -c "print(round($(date +%s.%N) - $t0, 2))")"
    # What the restart read from NATS, once it settles (the start-up prefetches run after ready).
    prev=$(nats_out)
    for _ in $(seq 60); do
      sleep 1; now=$(nats_out)
      ((now - prev < 200000)) && break
      prev=$now
    done
    echo "restart_read $((now - out0))"
    echo "restarted $(rss_all) $(jsz)"
    echo "import_embedded $(bulk s- 0 "${EMBEDDED_IDENTITIES:-$IDENTITIES}" 16 "${AP[4]}" 12)"
    for r in $(seq 1 "$LOOKUP_ROUNDS"); do
      off=$(((r - 1) * LOOKUPS))
      echo "lookups $("${CLIENT[@]}" lookups --port "${AP[1]}" --name "node$r" --prefix s- --offset "$off" --count "$LOOKUPS")"
      echo "lookups $("${CLIENT[@]}" lookups --port "${AP[4]}" --name "embedded$r" --prefix s- --offset "$off" --count "$LOOKUPS")"
      if [ "$INDEX_MB" -gt 0 ]; then
        echo "lookups $("${CLIENT[@]}" lookups --port "${AP[3]}" --name "bounded$r" --prefix s- --offset "$off" --count "$LOOKUPS")"
        # Identities on their own contents: a cold one is its look-up, its
        # master's entry (a bounded node reads it too) and a 16 px render.
        echo "lookups $("${CLIENT[@]}" lookups --port "${AP[1]}" --name "ownnode$r" --prefix d- --contents 1 --offset "$off" --count "$LOOKUPS")"
        echo "lookups $("${CLIENT[@]}" lookups --port "${AP[3]}" --name "ownbounded$r" --prefix d- --contents 1 --offset "$((off + LOOKUPS * LOOKUP_ROUNDS))" --count "$LOOKUPS")"
      fi
      echo "kvget $("${CLIENT[@]}" kvget --port "${NP[0]}" --prefix s- --start "$off" --count "$LOOKUPS")"
    done
    hot_bytes=$(curl -fs "http://127.0.0.1:${AP[3]}/metrics" | awk '/^avatar_edge_index_hot_bytes / {print $2}')
    echo "hot_bytes ${hot_bytes:-0}"
    echo "load $(uptime | sed 's/.*load average: //')"
  } >"$work/replica.txt"
  python3 - "$work/replica.txt" "$base" "$IDENTITIES" "$DISTINCT" "$INDEX_MB" <<'PY'
import json, statistics, sys
lines = [l.split(" ", 1) for l in open(sys.argv[1]).read().splitlines()]
base, n, d, index_mb = (int(x) for x in sys.argv[2:6])
# The whole-index nodes (node 3 holds a bounded replica when INDEX_MB > 0).
whole = [0, 1] if index_mb else [0, 1, 2]
snap = {k: [int(x) for x in v.split()] for k, v in lines if k in ("start", "before", "half", "shared", "distinct", "restarted")}
js = {k: json.loads(v) for k, v in lines if k.startswith("import")}
look = [json.loads(v) for k, v in lines if k == "lookups"]
kv = [json.loads(v) for k, v in lines if k == "kvget"]
ready = dict(lines)["ready_s"]
med = statistics.median
for k, v in js.items():
    print("%-16s %7d identities in %6.1f s: %6.0f uploads/s, %d retried (503), %d failed"
          % (k, v["imported"], v["seconds"], v["per_s"], v["retried"], v["failed"]))
mib = lambda kb: kb / 1024
for k in ("start", "before", "half", "shared", "distinct", "restarted"):
    s = snap[k]
    print("RSS %-9s node1 %6.1f  node2 %6.1f  node3 %6.1f  embedded %6.1f MiB   index stream %7.1f MiB / %d msgs, blobs %6.1f MiB"
          % ((k,) + tuple(mib(x) for x in s[:4]) + (s[4] / 2**20, s[5], s[6] / 2**20)))
half = n // 2
per_id = [(snap["shared"][i] - snap["half"][i]) * 1024 / (n - half) for i in whole]
per_id_all = [(snap["shared"][i] - snap["before"][i]) * 1024 / n for i in whole]
per_own = [(snap["distinct"][i] - snap["shared"][i]) * 1024 / d for i in whole]
pi, pa, po = med(per_id), med(per_id_all), med(per_own)
pm = po - pi
fresh_total = base + n + d
fresh = (snap["restarted"][2] - snap["start"][2]) * 1024 / fresh_total
if index_mb:
    b = [mib(snap[k][2]) for k in ("start", "before", "half", "shared", "distinct", "restarted")]
    print("bounded node 3 (--nats-index-mb %d): RSS %s MiB at start / before / half / shared / distinct / restarted;"
          " %+.1f MiB over the %d shared-content identities, %+.1f MiB over the %d with their own masters;"
          " hot set %.1f MiB at the end"
          % (index_mb, " / ".join("%.1f" % x for x in b), b[3] - b[1], n, b[4] - b[3], d,
             int(dict(lines).get("hot_bytes", 0)) / 2**20))
    print("target: a bounded node's RSS <= 256 MiB with %d identities in the index: %s (highest %.1f MiB)"
          % (base + n + d, "met" if max(b) <= 256 else "NOT met", max(b)))
print("whole replica per identity on shared content: %.0f B marginal (second half; nodes %s), %.0f B over all %d"
      % (pi, ", ".join("%.0f" % x for x in per_id), pa, n))
print("replica per identity on its own content: %.0f B (nodes %s) -> per master %.0f B, including its rungs"
      " prefetched into the node's blob cache (bounded at 64 MiB) while that fills" % (po, ", ".join("%.0f" % x for x in per_own), pm))
print("node 3 restarted: ready in %s s with %d identities (master entries read by %s s); RSS %.1f MiB = start %.1f MiB + %.0f B per identity"
      % (ready, fresh_total, dict(lines)["masters_read_s"], mib(snap["restarted"][2]), mib(snap["start"][2]), fresh))
print("node 3 restarted: read %.1f MiB from NATS (index stream %.1f MiB, object store %.1f MiB per replica)"
      % (int(dict(lines)["restart_read"]) / 2**20, snap["restarted"][4] / 2**20, snap["restarted"][6] / 2**20))
kvb = (snap["shared"][4] - snap["half"][4]) / (n - half)
kvm = (snap["distinct"][4] - snap["shared"][4]) / d
blob = (snap["distinct"][6] - snap["shared"][6]) / d
print("index stream per identity %.0f B (shared content), per identity with own master %.0f B; blobs per master %.0f B"
      % (kvb, kvm, blob))
start = med(snap["start"][:3]) * 1024
for N in (10**6, 10**7):
    print("projection %5.0e identities, own contents: %6.0f MiB per node (start %.0f MiB + %.0f B each); shared: %6.0f MiB"
          % (N, (start + N * po) / 2**20, start / 2**20, po, (start + N * pi) / 2**20))
print("targets: 1 M in <= 256 MiB per node, 10 M in <= 1 GiB: %s"
      % ("met" if start + 10**6 * po <= 256 * 2**20 and start + 10**7 * po <= 2**30 else "NOT met by the whole-index replica"))
for name in ("node", "embedded", "bounded", "ownnode", "ownbounded")[: 5 if index_mb else 2]:
    rows = [l for l in look if l["name"].startswith(name)]
    print("look-ups %-8s hot p50 %.3f p99 %.3f ms, cold p50 %.3f p99 %.3f ms (%d rounds of %d; medians)"
          % (name, med(r["hot_p50_ms"] for r in rows), med(r["hot_p99_ms"] for r in rows),
             med(r["cold_p50_ms"] for r in rows), med(r["cold_p99_ms"] for r in rows), len(rows), rows[0]["n"]))
nh = med(r["hot_p50_ms"] for r in look if r["name"].startswith("node"))
eh = med(r["hot_p50_ms"] for r in look if r["name"].startswith("embedded"))
print("hot look-up p50 node / embedded %.2f" % (nh / eh))
if index_mb:
    bh = med(r["hot_p50_ms"] for r in look if r["name"].startswith("bounded"))
    print("hot look-up p50 bounded node / embedded %.2f, bounded / whole node %.2f" % (bh / eh, bh / nh))
print("KV direct get (what a bounded replica's cold look-up adds): one get p50 %.3f p99 %.3f ms; alias then record p50 %.3f p99 %.3f ms"
      % (med(r["get_p50_ms"] for r in kv), med(r["get_p99_ms"] for r in kv),
         med(r["alias_then_record_p50_ms"] for r in kv), med(r["alias_then_record_p99_ms"] for r in kv)))
print("load average at the end of (e): %s" % dict(lines)["load"])
PY
fi

# --- (c) failover, last: it kills a nats-server.
if section c; then
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
fi
