#!/usr/bin/env bash
# Overload on loopback: 10,000 idle keep-alive connections held open while
# ~20 s of mixed traffic runs (hot cache hits, cold renders at random sizes,
# concurrent uploads). Reports answers by status, p50/p99 per kind, the
# server's peak RSS (VmHWM), and checks that the only errors are 503 with
# Retry-After and that peak RSS stays under the cache budget + 64 MiB.
# Bounded: the client stops itself (DURATION s of traffic, 180 s hard cap),
# the server is killed on exit. Needs only CPython 3 (stdlib asyncio).
#
#   bench/load.sh                        # builds release first
#   IDLE=2000 DURATION=10 COLD=24 bench/load.sh
#   MALLOC_ARENA_MAX=2 bench/load.sh     # glibc: fewer malloc arenas, less RSS
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-10000}
DURATION=${DURATION:-20}
CACHE_MB=${CACHE_MB:-64}

cargo build --release --locked --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/avatar-edge"
# Each side holds IDLE + ~100 sockets: raise the soft limit up to the hard one.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi
if [ "$(ulimit -n)" -lt $((IDLE + 1000)) ]; then
  echo "load.sh: open-file limit $(ulimit -n) is too low for IDLE=$IDLE" >&2; exit 1
fi
work=$(mktemp -d)
cleanup() { kill "${APID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Idle connections must outlive the run: header timeout > DURATION; room for
# IDLE + traffic connections.
AVATAR_EDGE_TOKEN=load-bench-token-0123456789 RUST_LOG=warn "$BIN" serve \
  --listen "127.0.0.1:$PORT" --data "$work/data" --cache-mb "$CACHE_MB" \
  --header-timeout 120 --max-connections $((IDLE + 1000)) &
APID=$!

timeout 180 python3 bench/load_client.py --port "$PORT" --pid "$APID" --idle "$IDLE" \
  --duration "$DURATION" --cache-mb "$CACHE_MB" --token load-bench-token-0123456789 \
  --hot "${HOT:-48}" --cold "${COLD:-96}" --upload "${UPLOADS:-4}"
