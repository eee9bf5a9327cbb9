#!/usr/bin/env bash
# Bytes on the wire: our JPEG / lossy WebP / AVIF / negotiated variants next to
# Pillow's libwebp (q80) and libavif (q60) encoding the same pixels, with luma
# SSIM against our lossless render; then cold 128 px render times over HTTP.
# Bounded: ~2 minutes after the release build. Loopback only.
#
#   bench/bytes.sh                   # builds release, makes the venv
#   ROUNDS=10 bench/bytes.sh         # more cold-render samples (default 5)
#   SKIP_COLD=1 bench/bytes.sh       # bytes and SSIM only (deterministic)
#   BIN=target/debug/avatar-edge SKIP_COLD=1 bench/bytes.sh   # no release build
#
# Writes target/bytes.json (every row) and docs/bench-bytes.svg (the chart).
# The venv (Pillow, numpy from PyPI; pyjpegli for the JPEG encoder
# evaluation, skipped if it will not install) lives in target/bytes-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
VENV=${BYTES_VENV:-${CARGO_TARGET_DIR:-target}/bytes-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "Pillow>=11.3" numpy
  "$VENV/bin/pip" install -q --disable-pip-version-check pyjpegli 2>/dev/null \
    || echo "bytes.sh: pyjpegli unavailable, JPEG encoder evaluation skipped" >&2
fi

# BIN=<path> skips the build (bytes and SSIM do not depend on the profile;
# the cold-render times do: use a release binary for those).
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/avatar-edge
fi
work=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TOKEN=bytes-bench-token-0123456789

start_edge() { # $1 port, $2 data dir, $3 cache MiB
  AVATAR_EDGE_TOKEN=$TOKEN RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$1" --data "$2" \
    --cache-mb "$3" ${EDGE_ARGS:-} >/dev/null 2>"$2.log" &
  PIDS+=($!); EDGE_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.1; done
  echo "avatar-edge did not start" >&2; cat "$2.log" >&2; exit 1
}

PORT=$(free_port)
start_edge "$PORT" "$work/data" 256
echo "== bytes and SSIM (deterministic)"
timeout 600 "$VENV/bin/python" bench/bytes.py "127.0.0.1:$PORT" "$TOKEN" \
  "${CARGO_TARGET_DIR:-target}/bytes.json" docs/bench-bytes.svg

if [ -z "${SKIP_COLD:-}" ]; then
  COLD=$(free_port)
  start_edge "$COLD" "$work/cold" 0
  echo
  echo "== cold 128 px renders over HTTP (zero cache; $ROUNDS rounds, formats alternating)"
  echo "   load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  timeout 600 "$VENV/bin/python" bench/bytes.py --cold "127.0.0.1:$COLD" "$TOKEN" "$ROUNDS" "$EDGE_PID"
  echo "   load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
fi
