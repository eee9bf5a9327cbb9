#!/usr/bin/env python3
"""Bytes on the wire, measured (driven by bench/bytes.sh, which builds the
release binary, starts it and makes the venv with Pillow and numpy).

For every photo and logo of fixtures/ at 32/64/128/256/512 px it fetches from
a running avatar-edge: the lossless render (.png, the reference), .jpg,
explicit .webp, explicit .avif and the variant negotiated with Chromium's
Accept header; and encodes the same reference pixels with Pillow's libwebp
(quality 80, method 4) and libavif (quality 60). Every lossy output gets a
luma SSIM (Gaussian 11x11, sigma 1.5; alpha composited on white) against the
reference. Prints one table per fixture, the targets of issue 21 as a
summary, writes a JSON of every row and an SVG chart.

    python3 bench/bytes.py ADDR TOKEN OUT.json CHART.svg [cold-addr]
"""
import http.client
import io
import json
import pathlib
import statistics
import sys
import time

import numpy as np
from PIL import Image

CHROMIUM = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SIZES = [32, 64, 128, 256, 512]
FIXTURES = sorted(
    p.name
    for p in pathlib.Path("fixtures").iterdir()
    if p.name.startswith(("photo_", "logo_", "webp_lossy_flower", "webp_lossless_simple"))
)


def get(conn, path, headers=None):
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status} {body[:200]!r}")
    return r.getheader("content-type"), body


def upload(addr, token, name):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    c.request("PUT", f"/v1/avatars/{name}@bytes.example", body=pathlib.Path("fixtures", name).read_bytes(),
              headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"upload {name}: {r.status} {body[:200]!r}")
    return json.loads(body)["hash"]


def luma(img):
    img = img.convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    rgb = np.asarray(Image.alpha_composite(white, img).convert("RGB"), dtype=np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


def gauss_filter(x, k):
    # Separable 'valid' convolution.
    x = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, x)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, x)


def ssim(a, b):
    a, b = luma(a), luma(b)
    n = min(11, a.shape[0], a.shape[1])
    g = np.exp(-((np.arange(n) - (n - 1) / 2) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = gauss_filter(a, g), gauss_filter(b, g)
    saa = gauss_filter(a * a, g) - mu_a**2
    sbb = gauss_filter(b * b, g) - mu_b**2
    sab = gauss_filter(a * b, g) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return float(m.mean())


def pillow(ref, fmt, **kw):
    buf = io.BytesIO()
    img = ref if ref.mode in ("RGB", "RGBA") else ref.convert("RGBA")
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def open_bytes(b):
    img = Image.open(io.BytesIO(b))
    img.load()
    return img


def main():
    addr, token, out_json, chart = sys.argv[1:5]
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    rows = []
    try:
        import pyjpegli  # noqa: F401  (optional: the JPEG encoder evaluation)
    except ImportError:
        pyjpegli = None
    for name in FIXTURES:
        h = upload(addr, token, name)
        print(f"\n{name}")
        print(f"{'px':>4} {'class':>8} | {'jpg':>7} {'webp':>7} {'avif':>7} {'chromium':>14} | "
              f"{'PIL webp':>8} {'PIL avif':>8} | SSIM jpg  webp  avif  PILwebp PILavif")
        for s in SIZES:
            _, png = get(conn, f"/c/{h}.png?s={s}")
            ref = open_bytes(png)
            row = {"fixture": name, "size": s, "png": len(png)}
            for ext in ("jpg", "webp", "avif"):
                _, b = get(conn, f"/c/{h}.{ext}?s={s}")
                row[ext] = len(b)
                row[f"ssim_{ext}"] = ssim(ref, open_bytes(b))
            ctype, neg = get(conn, f"/c/{h}?s={s}", {"Accept": CHROMIUM})
            row["negotiated"] = len(neg)
            row["negotiated_type"] = ctype
            row["ssim_negotiated"] = ssim(ref, open_bytes(neg))
            _, wb = get(conn, f"/c/{h}.webp?s={s}")
            row["class"] = "lossless" if b"VP8L" in wb[:40] else "lossy"
            pw = pillow(ref, "WEBP", quality=80, method=4)
            pa = pillow(ref, "AVIF", quality=60, speed=8)
            row.update(pil_webp=len(pw), pil_avif=len(pa),
                       ssim_pil_webp=ssim(ref, open_bytes(pw)), ssim_pil_avif=ssim(ref, open_bytes(pa)))
            if pyjpegli is not None:
                arr = np.asarray(Image.alpha_composite(Image.new("RGBA", ref.size, "white"),
                                                       ref.convert("RGBA")).convert("RGB"))
                jl = pyjpegli.encode(np.ascontiguousarray(arr).tobytes(), ref.width, ref.height, 85)
                row.update(jpegli=len(jl), ssim_jpegli=ssim(ref, open_bytes(jl)))
            rows.append(row)
            print(f"{s:>4} {row['class']:>8} | {row['jpg']:>7} {row['webp']:>7} {row['avif']:>7} "
                  f"{ctype.split('/')[1]:>5} {len(neg):>8} | {len(pw):>8} {len(pa):>8} | "
                  f"{row['ssim_jpg']:.3f} {row['ssim_webp']:.3f} {row['ssim_avif']:.3f} "
                  f"{row['ssim_pil_webp']:.3f}   {row['ssim_pil_avif']:.3f}")
    summarize(rows)
    pathlib.Path(out_json).write_text(json.dumps(rows, indent=1))
    draw(rows, pathlib.Path(chart))


def summarize(rows):
    print("\nSummary: lossy masters (photos) at 128 and 256 px — targets of issue 21")
    photos = [r for r in rows if r["class"] == "lossy" and r["size"] in (128, 256)]
    if not photos:
        return
    med = statistics.median

    def line(label, key, ssim_key, vs="jpg", target=0.7):
        ratios = [r[key] / r[vs] for r in photos]
        ssims = [r[ssim_key] for r in photos]
        print(f"  {label:<26} bytes/{vs}: median {med(ratios):.2f} (max {max(ratios):.2f}, target <= {target})"
              f"   SSIM median {med(ssims):.3f} (min {min(ssims):.3f}, target >= 0.95 / 0.93)")

    line("negotiated (Chromium)", "negotiated", "ssim_negotiated")
    line("explicit .webp", "webp", "ssim_webp")
    line("explicit .avif", "avif", "ssim_avif")
    line("Pillow libwebp q80", "pil_webp", "ssim_pil_webp")
    line("Pillow libavif q60", "pil_avif", "ssim_pil_avif")
    for key, peer in (("webp", "pil_webp"), ("negotiated", "pil_webp"), ("avif", "pil_avif")):
        rr = [r[key] / r[peer] for r in photos]
        print(f"  {key} / {peer}: median {med(rr):.2f} (max {max(rr):.2f}; target <= 1.1 for WebP)")
    if "jpegli" in photos[0]:
        rr = [r["jpegli"] / r["jpg"] for r in photos]
        ds = [r["ssim_jpegli"] - r["ssim_jpg"] for r in photos]
        print(f"  jpegli q85 / ours q85: median {med(rr):.2f} (SSIM difference median {med(ds):+.4f})")
    flat = [r for r in rows if r["class"] == "lossless"]
    print(f"Lossless masters: {sorted({r['fixture'] for r in flat})}; negotiated WebP is the lossless "
          f"render (never larger than before): "
          f"{all(r['negotiated_type'] == 'image/webp' for r in flat)}")


def draw(rows, out):
    """Median bytes relative to our JPEG q85 per size, photos only, one line per encoder."""
    series = {"webp (ours)": "webp", "avif (ours)": "avif", "Pillow webp q80": "pil_webp",
              "Pillow avif q60": "pil_avif", "png (lossless)": "png"}
    colors = ["#2ca02c", "#9467bd", "#98df8a", "#c5b0d5", "#1f77b4"]
    photos = [r for r in rows if r["class"] == "lossy"]
    W, H, L, B, T, R = 640, 380, 60, 50, 34, 150
    ymax = 4.0
    lx = lambda i: L + i / (len(SIZES) - 1) * (W - L - R)
    ly = lambda v: H - B - min(v, ymax) / ymax * (H - B - T)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">photo variants: median bytes / our JPEG q85</text>',
           f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
           f'<text x="{(L+W-R)/2}" y="{H-10}" text-anchor="middle">output side (px)</text>']
    for i, s in enumerate(SIZES):
        svg.append(f'<text x="{lx(i):.1f}" y="{H-B+16}" text-anchor="middle">{s}</text>')
    for v in (0.5, 1, 2, 3, 4):
        y = ly(v)
        stroke = "#888" if v == 1 else "#ddd"
        svg.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W-R}" y2="{y:.1f}" stroke="{stroke}"/>'
                   f'<text x="{L-6}" y="{y+4:.1f}" text-anchor="end">{v:g}x</text>')
    for n, ((label, key), color) in enumerate(zip(series.items(), colors)):
        pts = []
        for i, s in enumerate(SIZES):
            rr = [r[key] / r["jpg"] for r in photos if r["size"] == s]
            if rr:
                pts.append((lx(i), ly(statistics.median(rr))))
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in pts:
            svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        svg.append(f'<rect x="{W-R+12}" y="{T+n*20}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{W-R+30}" y="{T+n*20+11}">{label}</text>')
    svg.append("</svg>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(svg) + "\n")
    print(f"chart: {out}")


def cpu_ns(pid):
    """Nanoseconds the server's threads have run (schedstat): CPU time, far
    less sensitive to a loaded machine than wall time."""
    total = 0
    for t in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def cold(addr, token, rounds, pid):
    """Cold 128 px renders over HTTP (server started with a zero cache):
    per-request wall time and server CPU time, formats alternating, p50 per
    format."""
    host, port = addr.split(":")
    names = [n for n in FIXTURES if n.startswith("photo_")]
    hashes = [upload(addr, token, n) for n in names]
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    wall = {"jpg": [], "webp": [], "avif": [], "png": []}
    cpu = {k: [] for k in wall}
    for _ in range(rounds):
        for h in hashes:
            for ext in wall:
                c0, t = cpu_ns(pid), time.perf_counter()
                get(conn, f"/c/{h}.{ext}?s=128")
                wall[ext].append((time.perf_counter() - t) * 1e3)
                cpu[ext].append((cpu_ns(pid) - c0) / 1e6)
    for ext in wall:
        w, c = sorted(wall[ext]), sorted(cpu[ext])
        print(f"  cold 128 px .{ext:<5} wall p50 {statistics.median(w):6.2f} ms p90 {w[int(len(w) * 0.9)]:6.2f} ms"
              f" | server CPU p50 {statistics.median(c):6.2f} ms p90 {c[int(len(c) * 0.9)]:6.2f} ms  (n={len(w)})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--cold":
        cold(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
