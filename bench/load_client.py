"""Load client for bench/load.sh (stdlib only: asyncio + raw HTTP/1.1).

Phases: wait for /healthz, upload a few avatars, open and hold IDLE idle
keep-alive connections (each does one GET /healthz, then stays silent), then
DURATION seconds of mixed traffic on persistent connections:
  hot    GET /c/<hash>.png?s=64|128 of two avatars (cache hits)
  cold   GET /c/<hash>.<fmt>?s=<random 1..2048> of all avatars (renders)
  upload PUT /v1/avatars/<random key> of the fixtures
Prints answers by status, p50/p99 per kind, idle connections still open, the
server's VmHWM; exits 1 if a check fails.
"""

import argparse
import asyncio
import random
import statistics
import sys
import time

FIXTURES = [
    "fixtures/photo_grace_hopper_512x600.jpg",
    "fixtures/logo_alpha_disc_512.png",
    "fixtures/photo_retina_baseline_1024.jpg",
    "fixtures/gif_static_hopper.gif",
    "fixtures/webp_lossy_alpha.webp",
]
WORKERS = {"hot": 48, "cold": 96, "upload": 4}  # cold > render queue (64): overload


class Conn:
    def __init__(self, port):
        self.port = port
        self.r = self.w = None

    async def open(self):
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, method, path, body=b"", headers=None):
        """One request on the keep-alive connection; reconnects if closed."""
        if self.w is None or self.w.is_closing():
            await self.open()
        head = f"{method} {path} HTTP/1.1\r\nHost: load\r\nContent-Length: {len(body)}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        self.w.write(head.encode() + b"\r\n" + body)
        await self.w.drain()
        raw = await self.r.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            data = await self.r.readexactly(int(hdrs["content-length"]))
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int((await self.r.readuntil(b"\r\n")).split(b";")[0], 16)
                data += await self.r.readexactly(size + 2)
                if size == 0:
                    break
        else:
            data = b""
        if hdrs.get("connection", "").lower() == "close":
            self.w.close()
            self.w = None
        return status, hdrs, data

    def close(self):
        if self.w is not None:
            self.w.close()


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    return 0


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000


async def main():
    ap = argparse.ArgumentParser()
    for a in ("port", "pid", "idle", "duration", "cache-mb"):
        ap.add_argument("--" + a, type=int, required=True)
    ap.add_argument("--token", required=True)
    for kind in WORKERS:
        ap.add_argument("--" + kind, type=int, default=WORKERS[kind])
    args = ap.parse_args()
    for kind in WORKERS:
        WORKERS[kind] = getattr(args, kind)
    auth = {"Authorization": f"Bearer {args.token}"}

    deadline = time.time() + 60
    while True:
        try:
            c = Conn(args.port)
            await c.open()
            await c.request("GET", "/healthz")
            break
        except OSError:
            if time.time() > deadline:
                raise
            await asyncio.sleep(0.1)

    bodies = [open(f, "rb").read() for f in FIXTURES]
    hashes = []
    for i, b in enumerate(bodies):
        st, _, data = await c.request("PUT", f"/v1/avatars/seed{i}%40example.org", b, auth)
        assert st == 200, (FIXTURES[i], st, data[:200])
        hashes.append(data.split(b'"hash":"')[1].split(b'"')[0].decode())
    for h in hashes[:2]:
        for s in (64, 128):
            await c.request("GET", f"/c/{h}.png?s={s}")
    rss_setup = vm(args.pid, "VmRSS")
    print(f"server RSS after setup: {rss_setup // 1024} MiB", flush=True)

    # Idle keep-alive connections, opened in batches.
    t0 = time.time()
    idle = []
    failed_idle = 0
    for start in range(0, args.idle, 500):
        batch = [Conn(args.port) for _ in range(min(500, args.idle - start))]
        res = await asyncio.gather(
            *(x.request("GET", "/healthz") for x in batch), return_exceptions=True
        )
        for x, r in zip(batch, res):
            if isinstance(r, Exception) or r[0] != 200:
                failed_idle += 1
                x.close()
            else:
                idle.append(x)
    opened = time.time() - t0
    # The server parks a keep-alive connection after 0.5 s of silence.
    await asyncio.sleep(1.0)
    rss_idle = vm(args.pid, "VmRSS")
    print(
        f"idle: {len(idle)} keep-alive connections open ({failed_idle} failed) in {opened:.1f} s, "
        f"server RSS {rss_idle // 1024} MiB once parked (+{(rss_idle - rss_setup) / max(1, len(idle)):.1f} KiB per connection)",
        flush=True,
    )

    lat = {k: [] for k in WORKERS}
    statuses = {k: {} for k in WORKERS}
    bad = []
    stop_at = time.time() + args.duration

    async def worker(kind, n):
        conn = Conn(args.port)
        rnd = random.Random(n * 7919 + hash(kind) % 1000)
        while time.time() < stop_at:
            if kind == "hot":
                method, path, body, hdr = "GET", f"/c/{hashes[n % 2]}.png?s={64 if n % 4 < 2 else 128}", b"", None
            elif kind == "cold":
                fmt = rnd.choice(["png", "webp", "jpg"])
                path = f"/c/{rnd.choice(hashes)}.{fmt}?s={rnd.randint(1, 2048)}"
                method, body, hdr = "GET", b"", None
            else:
                i = rnd.randrange(len(bodies))
                method, path, body, hdr = "PUT", f"/v1/avatars/u{rnd.randrange(50)}%40example.org", bodies[i], auth
            t = time.perf_counter()
            try:
                st, h, _ = await conn.request(method, path, body, hdr)
            except (OSError, asyncio.IncompleteReadError) as e:
                statuses[kind]["conn-error"] = statuses[kind].get("conn-error", 0) + 1
                bad.append(f"{kind} {path}: {e!r}")
                conn.close()
                conn = Conn(args.port)
                continue
            dt = time.perf_counter() - t
            statuses[kind][st] = statuses[kind].get(st, 0) + 1
            if st in (200, 304):
                lat[kind].append(dt)
            elif st == 503:
                if "retry-after" not in h:
                    bad.append(f"{kind} {path}: 503 without Retry-After")
                await asyncio.sleep(0.05)
            else:
                bad.append(f"{kind} {path}: {st}")
        conn.close()

    peak_rss = 0

    async def sampler():
        nonlocal peak_rss
        while time.time() < stop_at:
            peak_rss = max(peak_rss, vm(args.pid, "VmRSS"))
            await asyncio.sleep(0.25)

    t0 = time.time()
    await asyncio.gather(
        sampler(), *(worker(k, n) for k, count in WORKERS.items() for n in range(count))
    )
    elapsed = time.time() - t0

    # Idle connections still open: a closed one reads EOF at once.
    still = 0
    for x in idle:
        try:
            await asyncio.wait_for(x.r.read(1), timeout=0.0005)
        except asyncio.TimeoutError:
            still += 1
        except OSError:
            pass
    hwm = vm(args.pid, "VmHWM")
    for x in idle:
        x.close()

    print(f"\ntraffic: {elapsed:.1f} s, {sum(WORKERS.values())} workers {WORKERS}")
    print(f"{'kind':8} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for k in WORKERS:
        n = sum(statuses[k].values())
        print(
            f"{k:8} {n:9d} {n / elapsed:8.0f} {pct(lat[k], 50):8.2f} {pct(lat[k], 99):8.2f}  "
            + ", ".join(f"{s}: {c}" for s, c in sorted(statuses[k].items(), key=str))
        )
    budget = (args.cache_mb + 64) * 1024
    print(f"idle connections still open after the run: {still} of {len(idle)}")
    print(
        f"server RSS: setup {rss_setup // 1024} MiB, with idle connections {rss_idle // 1024} MiB, "
        f"peak under traffic (sampled) {peak_rss // 1024} MiB, VmHWM {hwm // 1024} MiB; budget {budget // 1024} MiB"
    )
    ok = True
    if bad:
        ok = False
        print(f"FAIL: {len(bad)} answers other than 2xx/304/503+Retry-After, e.g.:")
        for b in bad[:10]:
            print("  " + b)
    if hwm > budget:
        ok = False
        print(f"FAIL: VmHWM {hwm // 1024} MiB over cache budget + 64 MiB ({budget // 1024} MiB)")
    if still < len(idle):
        print(f"note: {len(idle) - still} idle connections were closed by the server during the run")
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
