"""Load client for bench/cluster.sh sections (d) writes and (e) replica
memory and look-ups (stdlib only: asyncio + raw HTTP/1.1 and raw NATS).

  writes   W writers for D seconds, each uploading small distinct PNGs to
           distinct identities, writer i on port i % len(ports); prints one
           JSON line: uploads/s, p50/p99 of acknowledged uploads, 503s, other
           failures. With --replace each writer keeps one identity and
           replaces its avatar every time (each upload unbinds a master);
           with --same every upload is one image (binds of one master).
  import   COUNT identities (emails PREFIX<i>@example.org, i from START) on
           CONTENTS shared images (0: each identity its own image), C at a
           time spread over the ports; a 503 is retried (and counted).
  lookups  sequential GETs on one keep-alive connection: a hot identity URL
           (same identity, cached variant) and cold ones (identities never
           requested on that node, on contents whose variant is cached, so
           the figure is the look-up, not a render).
  kvget    the KV reads a bounded replica's cold look-up would make, straight
           to a nats-server: direct get of a.<md5>, then of i.<primary>.

Latencies are taken around each request on the client (asyncio, one
process): the client's own overhead is in every figure, equally for the
cluster and the embedded peer measured in the same run.
"""

import argparse
import asyncio
import hashlib
import json
import struct
import sys
import time
import zlib

from load_client import Conn, pct


def png(seed, side=16):
    """A small RGB PNG whose pixels come from `seed`: distinct seeds,
    distinct contents (after normalization too)."""
    raw = b""
    block = hashlib.blake2b(str(seed).encode(), digest_size=64).digest()
    while len(raw) < side * side * 3:
        block = hashlib.blake2b(block, digest_size=64).digest()
        raw += block
    rows = b"".join(b"\0" + raw[y * side * 3:(y + 1) * side * 3] for y in range(side))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def email(prefix, i):
    return f"{prefix}{i}@example.org"


def md5_of(prefix, i):
    return hashlib.md5(email(prefix, i).encode()).hexdigest()


def upload_path(prefix, i):
    return "/v1/avatars/" + email(prefix, i).replace("@", "%40")


async def writes(a):
    ports = [int(p) for p in a.ports.split(",")]
    auth = {"Authorization": f"Bearer {a.token}"}
    lat, counts, bad = [], {}, []
    stop_at = time.perf_counter() + a.duration
    same = png(f"{a.tag}/same")

    async def writer(n):
        conn = Conn(ports[n % len(ports)])
        j = 0
        while time.perf_counter() < stop_at:
            j += 1
            body = same if a.same else png(f"{a.tag}/{n}/{j}")
            t = time.perf_counter()
            try:
                slot = 0 if a.replace else j
                st, h, data = await conn.request("PUT", upload_path(f"{a.tag}-w{n}-", slot), body, auth)
            except (OSError, asyncio.IncompleteReadError) as e:
                counts["conn-error"] = counts.get("conn-error", 0) + 1
                bad.append(repr(e))
                conn.close()
                conn = Conn(ports[n % len(ports)])
                continue
            dt = time.perf_counter() - t
            counts[st] = counts.get(st, 0) + 1
            if st == 200:
                lat.append(dt)
            elif st == 503:
                await asyncio.sleep(0.05)
            else:
                bad.append(f"{st} {data[:120]!r}")
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(a.writers)))
    elapsed = time.perf_counter() - t0
    print(json.dumps({
        "name": a.tag, "uploads": len(lat), "per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
        "max_ms": round(max(lat, default=0) * 1e3, 2),
        "s503": counts.get(503, 0), "other": sum(v for k, v in counts.items() if k not in (200, 503)),
        "example": bad[:3],
    }), flush=True)


async def bulk(a):
    ports = [int(p) for p in a.ports.split(",")]
    auth = {"Authorization": f"Bearer {a.token}"}
    shared = [png(f"{a.prefix}/shared/{k}") for k in range(a.contents)]
    next_i = a.start
    end = a.start + a.count
    done, retried, failed = 0, 0, []

    async def worker(n):
        nonlocal next_i, done, retried
        conn = Conn(ports[n % len(ports)])
        while next_i < end:
            i = next_i
            next_i += 1
            body = shared[i % a.contents] if a.contents else png(f"{a.prefix}/own/{i}", a.side)
            for attempt in range(200):
                try:
                    st, _, data = await conn.request("PUT", upload_path(a.prefix, i), body, auth)
                except (OSError, asyncio.IncompleteReadError):
                    conn.close()
                    conn = Conn(ports[n % len(ports)])
                    st, data = 0, b""
                if st == 200:
                    done += 1
                    break
                retried += 1
                if st not in (0, 503) or attempt == 199:
                    failed.append(f"{email(a.prefix, i)}: {st} {data[:120]!r} (try {attempt + 1})")
                    break
                await asyncio.sleep(0.02)
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(a.concurrency)))
    elapsed = time.perf_counter() - t0
    print(json.dumps({
        "imported": done, "seconds": round(elapsed, 1), "per_s": round(done / elapsed, 1),
        "retried": retried, "failed": len(failed), "example": failed[:3],
    }), flush=True)
    if failed or done < a.count:
        sys.exit(1)


async def lookups(a):
    conn = Conn(a.port)

    async def get(path):
        t = time.perf_counter()
        st, _, _ = await conn.request("GET", path)
        dt = time.perf_counter() - t
        if st != 200:
            raise SystemExit(f"lookups: {path} answered {st}")
        return dt

    path = lambda i: f"/avatar/{md5_of(a.prefix, i)}?s=64"
    # Warm: every shared content's variant, through identities left out of
    # the cold set.
    for i in range(a.start, a.start + a.contents):
        await get(path(i))
    hot = [await get(path(a.start)) for _ in range(a.count)]
    first = a.start + a.contents + a.offset
    cold = [await get(path(i)) for i in range(first, first + a.count)]
    conn.close()
    print(json.dumps({
        "name": a.name, "hot_p50_ms": round(pct(hot, 50), 3), "hot_p99_ms": round(pct(hot, 99), 3),
        "cold_p50_ms": round(pct(cold, 50), 3), "cold_p99_ms": round(pct(cold, 99), 3), "n": a.count,
    }), flush=True)


async def kvget(a):
    """Raw NATS protocol: direct gets (`$JS.API.DIRECT.GET.<stream>.<subject>`,
    answered by any replica of the stream), one in flight at a time."""
    r, w = await asyncio.open_connection("127.0.0.1", a.port)
    await r.readuntil(b"\r\n")  # INFO
    w.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1}\r\n'
            b"SUB _INBOX.kvget.* 1\r\nPING\r\n")
    await w.drain()
    while (await r.readuntil(b"\r\n")).strip() != b"PONG":
        pass
    seq = 0

    async def get(key):
        nonlocal seq
        seq += 1
        subject = f"$JS.API.DIRECT.GET.KV_avatar_edge_index.$KV.avatar_edge_index.{key}"
        w.write(f"PUB {subject} _INBOX.kvget.{seq} 0\r\n\r\n".encode())
        await w.drain()
        while True:
            line = (await r.readuntil(b"\r\n")).decode().split()
            if line[0] == "PING":
                w.write(b"PONG\r\n")
                continue
            if line[0] in ("HMSG", "MSG"):
                total = int(line[-1])
                hdr = int(line[-2]) if line[0] == "HMSG" else 0
                data = await r.readexactly(total + 2)
                if not line[1].endswith(f".{seq}"):
                    continue
                head, body = data[:hdr], data[hdr:total]
                if b"Status: 404" in head or head.startswith(b"NATS/1.0 404"):
                    raise SystemExit(f"kvget: {key} not found")
                return body
            if line[0] == "-ERR":
                raise SystemExit("kvget: " + " ".join(line))

    one, two = [], []
    for i in range(a.start, a.start + a.count):
        t = time.perf_counter()
        primary = (await get(f"a.{md5_of(a.prefix, i)}")).decode()
        t1 = time.perf_counter()
        await get(f"i.{primary}")
        t2 = time.perf_counter()
        one.append(t1 - t)
        two.append(t2 - t)
    w.close()
    print(json.dumps({
        "get_p50_ms": round(pct(one, 50), 3), "get_p99_ms": round(pct(one, 99), 3),
        "alias_then_record_p50_ms": round(pct(two, 50), 3), "alias_then_record_p99_ms": round(pct(two, 99), 3),
        "n": a.count,
    }), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("writes")
    p.add_argument("--ports", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--writers", type=int, default=12)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--replace", action="store_true")
    p.add_argument("--same", action="store_true", help="one image for every upload")
    p = sub.add_parser("import")
    p.add_argument("--ports", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--contents", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=36)
    p.add_argument("--side", type=int, default=16, help="side of the images (own contents)")
    p = sub.add_parser("lookups")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--contents", type=int, default=16)
    p.add_argument("--offset", type=int, default=0, help="first cold identity after the warm ones")
    p.add_argument("--count", type=int, default=2000)
    p = sub.add_parser("kvget")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--count", type=int, default=2000)
    a = ap.parse_args()
    run = {"writes": writes, "import": bulk, "lookups": lookups, "kvget": kvget}[a.cmd]
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
