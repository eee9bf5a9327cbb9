#!/usr/bin/env python3
"""Render time against output size per format, as an SVG, from criterion's
`<target>/criterion/render/<fmt>/<size>/new/estimates.json` (median).

    cargo bench --bench pipeline -- --warm-up-time 1 --measurement-time 1 render
    python3 bench/chart.py ${CARGO_TARGET_DIR:-target} docs/bench-render.svg
"""
import json, math, pathlib, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target") / "criterion" / "render"
out = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "docs/bench-render.svg")
series = {}
for est in sorted(root.glob("*/*/new/estimates.json")):
    fmt, size = est.parts[-4], est.parts[-3]
    if not size.isdigit():
        continue
    ns = json.loads(est.read_text())["median"]["point_estimate"]
    series.setdefault(fmt, []).append((int(size), ns / 1e6))
if not series:
    sys.exit(f"no estimates under {root}")
W, H, L, B, T, R = 640, 400, 70, 50, 30, 110
xs = sorted({s for pts in series.values() for s, _ in pts})
ymax = max(ms for pts in series.values() for _, ms in pts)
lx = lambda s: L + (math.log2(s) - math.log2(xs[0])) / max(math.log2(xs[-1]) - math.log2(xs[0]), 1) * (W - L - R)
ly = lambda ms: H - B - (math.log10(ms) - math.log10(0.05)) / (math.log10(ymax * 1.2) - math.log10(0.05)) * (H - B - T)
colors = {"png": "#1f77b4", "jpg": "#d62728", "webp": "#2ca02c"}
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">render: stored rung → N×N variant (median, log-log)</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{(L+W-R)/2}" y="{H-10}" text-anchor="middle">output side (px)</text>',
       f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">time (ms)</text>']
for s in xs:
    svg.append(f'<text x="{lx(s):.1f}" y="{H-B+16}" text-anchor="middle">{s}</text>')
for ms in (0.1, 0.3, 1, 3, 10, 30):
    if 0.05 <= ms <= ymax * 1.2:
        y = ly(ms)
        svg.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W-R}" y2="{y:.1f}" stroke="#ddd"/><text x="{L-6}" y="{y+4:.1f}" text-anchor="end">{ms:g}</text>')
for i, (fmt, pts) in enumerate(sorted(series.items())):
    pts.sort()
    c = colors.get(fmt, "#555")
    svg.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="' + " ".join(f"{lx(s):.1f},{ly(ms):.1f}" for s, ms in pts) + '"/>')
    svg += [f'<circle cx="{lx(s):.1f}" cy="{ly(ms):.1f}" r="3" fill="{c}"/>' for s, ms in pts]
    svg.append(f'<text x="{W-R+10}" y="{T+20+18*i}" fill="{c}">{fmt}</text>')
svg.append("</svg>")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("\n".join(svg) + "\n")
print(f"wrote {out} ({', '.join(f'{k}: {len(v)} sizes' for k, v in series.items())})")
