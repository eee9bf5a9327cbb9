//! The drawing surface shared by every generated style: an RGBA8 canvas,
//! colours (HSL → sRGB), a seed bit reader, whole-pixel rectangle fills for
//! the grid styles and a coverage rasterizer for the vector styles.
//!
//! Invariants: the canvas is always exactly `size × size` RGBA8 with
//! `1 <= size <= MAX_SIZE`, so `size * size * 4` fits in `usize` and every index
//! is computed from clamped, in-range coordinates (nothing here can panic on
//! input). Vector shapes are signed distance functions in pixel units (negative
//! inside); a pixel's coverage is `clamp(0.5 - d(centre), 0, 1)`, the analytic
//! box-filter coverage of a straight edge. Only IEEE-exact float operations
//! (`+ - * /`, `sqrt`, `abs`, `min`, `max`, `floor`) are used — no `sin`, `powf`
//! or other libm calls — so output is bit-identical on every machine.
//!
//! Boundaries: no I/O, no allocation besides the pixel buffer, no global state.

use super::MAX_SIZE;

/// An opaque sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// HSL → sRGB. `h` in degrees (any value, wrapped), `s`, `l` in 0..=1.
    pub(crate) fn hsl(h: f32, s: f32, l: f32) -> Rgb {
        let h = h - (h / 360.0).floor() * 360.0;
        let s = s.clamp(0.0, 1.0);
        let l = l.clamp(0.0, 1.0);
        let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
        let hp = h / 60.0;
        // x = c * (1 - |hp mod 2 - 1|), without fmod
        let m2 = hp - (hp / 2.0).floor() * 2.0;
        let x = c * (1.0 - (m2 - 1.0).abs());
        let (r, g, b) = if hp < 1.0 {
            (c, x, 0.0)
        } else if hp < 2.0 {
            (x, c, 0.0)
        } else if hp < 3.0 {
            (0.0, c, x)
        } else if hp < 4.0 {
            (0.0, x, c)
        } else if hp < 5.0 {
            (x, 0.0, c)
        } else {
            (c, 0.0, x)
        };
        let m = l - c / 2.0;
        Rgb(to_u8(r + m), to_u8(g + m), to_u8(b + m))
    }

    /// Approximate relative luminance (sRGB decoded with gamma 2; exact enough
    /// to pick the better-contrasting text colour, and libm-free).
    pub(crate) fn luminance(self) -> f32 {
        let lin = |v: u8| {
            let f = v as f32 / 255.0;
            f * f
        };
        0.2126 * lin(self.0) + 0.7152 * lin(self.1) + 0.0722 * lin(self.2)
    }

    pub(crate) fn rgba(self) -> [u8; 4] {
        [self.0, self.1, self.2, 255]
    }
}

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0 + 0.5).floor() as u8
}

/// WCAG-style contrast ratio between two colours (using [`Rgb::luminance`]).
pub(crate) fn contrast(a: Rgb, b: Rgb) -> f32 {
    let (la, lb) = (a.luminance(), b.luminance());
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// Reads bits from BLAKE3's extendable output of the seed: any seed (empty,
/// 16-byte MD5, 32-byte SHA-256, arbitrary bytes) gives uniform bits, and the
/// same seed always gives the same bits.
pub(crate) struct Bits {
    buf: [u8; 64],
    pos: usize,
}

impl Bits {
    pub(crate) fn new(seed: &[u8], domain: &str) -> Bits {
        let mut h = blake3::Hasher::new();
        // Domain separation: each style draws from its own stream, so two styles
        // never correlate by construction.
        h.update(domain.as_bytes());
        h.update(&[0]);
        h.update(seed);
        let mut buf = [0u8; 64];
        h.finalize_xof().fill(&mut buf);
        Bits { buf, pos: 0 }
    }

    /// The next `n` bits (`n <= 32`) as an integer; wraps around the 512-bit
    /// buffer (styles use far fewer bits than that).
    pub(crate) fn take(&mut self, n: u32) -> u32 {
        let mut v = 0u32;
        for _ in 0..n.min(32) {
            let byte = self.buf[(self.pos / 8) % 64];
            let bit = (byte >> (self.pos % 8)) & 1;
            v = (v << 1) | bit as u32;
            self.pos = (self.pos + 1) % 512;
        }
        v
    }

    /// A uniform choice in `0..n` (n >= 1), from 16 bits.
    pub(crate) fn pick(&mut self, n: u32) -> u32 {
        self.take(16) % n.max(1)
    }

    /// A value in `lo..=hi` with 8 bits of resolution.
    pub(crate) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.take(8) as f32 / 255.0)
    }

    pub(crate) fn flag(&mut self) -> bool {
        self.take(1) == 1
    }
}

/// A `size × size` RGBA8 image being drawn.
pub(crate) struct Canvas {
    pub(crate) size: u32,
    pub(crate) data: Vec<u8>,
}

/// A signed distance in pixels: negative inside, positive outside.
pub(crate) type Dist = f32;

impl Canvas {
    /// A transparent canvas; `size` is clamped to `1..=MAX_SIZE`.
    pub(crate) fn new(size: u32) -> Canvas {
        let size = size.clamp(1, MAX_SIZE);
        let n = size as usize * size as usize * 4;
        Canvas {
            size,
            data: vec![0; n],
        }
    }

    pub(crate) fn fill(&mut self, c: Rgb) {
        fill_span(&mut self.data, c.rgba());
    }

    /// Fills the pixel rectangle `[x0, x1) × [y0, y1)` (clipped to the canvas).
    pub(crate) fn fill_rect_px(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        let s = self.size as i64;
        let (x0, x1) = (x0.clamp(0, s), x1.clamp(0, s));
        let (y0, y1) = (y0.clamp(0, s), y1.clamp(0, s));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let stride = self.size as usize * 4;
        let (xa, xb) = (x0 as usize * 4, x1 as usize * 4);
        let first = y0 as usize * stride;
        fill_span(&mut self.data[first + xa..first + xb], c.rgba());
        for y in y0 as usize + 1..y1 as usize {
            self.data
                .copy_within(first + xa..first + xb, y * stride + xa);
        }
    }

    /// Source-over blend of colour `c` at opacity `a` (0..=1) onto pixel (x, y).
    #[inline]
    pub(crate) fn blend(&mut self, x: usize, y: usize, c: Rgb, a: f32) {
        let s = self.size as usize;
        if x >= s || y >= s || a <= 0.0 {
            return;
        }
        let i = (y * s + x) * 4;
        let Some(p) = self.data.get_mut(i..i + 4) else {
            return;
        };
        if a >= 1.0 {
            p.copy_from_slice(&c.rgba());
            return;
        }
        let da = p[3] as f32 / 255.0;
        if p[3] == 255 {
            p[0] = lerp(p[0], c.0, a);
            p[1] = lerp(p[1], c.1, a);
            p[2] = lerp(p[2], c.2, a);
            return;
        }
        // General straight-alpha source-over (only hit over transparent pixels).
        let oa = a + da * (1.0 - a);
        if oa <= 0.0 {
            return;
        }
        let mix = |d: u8, s: u8| {
            let v = (s as f32 * a + d as f32 * da * (1.0 - a)) / oa;
            (v.clamp(0.0, 255.0) + 0.5).floor() as u8
        };
        p[0] = mix(p[0], c.0);
        p[1] = mix(p[1], c.1);
        p[2] = mix(p[2], c.2);
        p[3] = (oa * 255.0 + 0.5).floor().clamp(0.0, 255.0) as u8;
    }

    /// Fills the shape given by signed distance function `d` (pixel units,
    /// evaluated at pixel centres) inside the pixel-space bounding box
    /// `[x0, x1] × [y0, y1]`, with colour `c` at opacity `alpha`.
    ///
    /// `d` must be a *lower bound* of the true distance outside and inside
    /// (1-Lipschitz), as all the primitives below are: the scan then skips runs
    /// of pixels that are provably fully outside or fully inside, which makes a
    /// 2048 px shape cost its outline, not its area, and gives exactly the same
    /// bytes as evaluating every pixel (checked by a test).
    pub(crate) fn shape(
        &mut self,
        bbox: [f32; 4],
        c: Rgb,
        alpha: f32,
        d: impl Fn(f32, f32) -> Dist,
    ) {
        self.shape_impl(bbox, c, alpha, d, true);
    }

    pub(crate) fn shape_impl(
        &mut self,
        bbox: [f32; 4],
        c: Rgb,
        alpha: f32,
        d: impl Fn(f32, f32) -> Dist,
        skip: bool,
    ) {
        let s = self.size as f32;
        let clampi = |v: f32| v.clamp(0.0, s) as usize;
        let x0 = clampi((bbox[0] - 1.0).floor());
        let y0 = clampi((bbox[1] - 1.0).floor());
        let x1 = clampi((bbox[2] + 1.0).ceil());
        let y1 = clampi((bbox[3] + 1.0).ceil());
        for y in y0..y1 {
            let py = y as f32 + 0.5;
            let mut x = x0;
            while x < x1 {
                let dist = d(x as f32 + 0.5, py);
                let cov = (0.5 - dist).clamp(0.0, 1.0);
                if skip && dist > 1.5 {
                    // pixels x..=x+n all have d >= dist - n > 0.5 → coverage 0
                    let n = (dist - 0.5 - 0.01).floor() as usize;
                    x += n.max(1);
                    continue;
                }
                if skip && dist < -1.5 {
                    let n = (-dist - 0.5 - 0.01).floor() as usize;
                    let end = (x + n.max(1)).min(x1);
                    for xi in x..end {
                        self.blend(xi, y, c, alpha);
                    }
                    x = end;
                    continue;
                }
                self.blend(x, y, c, alpha * cov);
                x += 1;
            }
        }
    }

    pub(crate) fn into_pixels(self) -> crate::model::Pixels {
        crate::model::Pixels {
            width: self.size,
            height: self.size,
            layout: crate::model::Layout::Rgba8,
            data: self.data,
        }
    }
}

/// Fills an RGBA span with one pixel value by doubling copies (memcpy-fast
/// even in unoptimized builds).
fn fill_span(buf: &mut [u8], px: [u8; 4]) {
    let n = buf.len() - buf.len() % 4;
    if n == 0 {
        return;
    }
    buf[..4].copy_from_slice(&px);
    let mut done = 4;
    while done < n {
        let step = done.min(n - done);
        buf.copy_within(..step, done);
        done += step;
    }
}

fn lerp(d: u8, s: u8, a: f32) -> u8 {
    let v = d as f32 + (s as f32 - d as f32) * a;
    (v.clamp(0.0, 255.0) + 0.5).floor() as u8
}

// ---- signed distance primitives (pixel units, lower bounds, 1-Lipschitz) ----

pub(crate) fn len(x: f32, y: f32) -> f32 {
    (x * x + y * y).sqrt()
}

pub(crate) fn sd_circle(px: f32, py: f32, cx: f32, cy: f32, r: f32) -> Dist {
    len(px - cx, py - cy) - r
}

/// Ellipse: distance in the normalised space scaled by the smaller radius —
/// a valid lower bound (the map to the unit circle is (1/min r)-Lipschitz).
pub(crate) fn sd_ellipse(px: f32, py: f32, cx: f32, cy: f32, rx: f32, ry: f32) -> Dist {
    let rx = rx.max(1e-3);
    let ry = ry.max(1e-3);
    let k = len((px - cx) / rx, (py - cy) / ry);
    (k - 1.0) * rx.min(ry)
}

/// Axis-aligned rounded rectangle, centre (cx, cy), half extents (hx, hy), corner radius r.
pub(crate) fn sd_rrect(px: f32, py: f32, cx: f32, cy: f32, hx: f32, hy: f32, r: f32) -> Dist {
    let r = r.clamp(0.0, hx.min(hy));
    let qx = (px - cx).abs() - hx + r;
    let qy = (py - cy).abs() - hy + r;
    len(qx.max(0.0), qy.max(0.0)) + qx.max(qy).min(0.0) - r
}

/// Capsule: segment (ax, ay)–(bx, by) thickened by radius r.
pub(crate) fn sd_capsule(px: f32, py: f32, ax: f32, ay: f32, bx: f32, by: f32, r: f32) -> Dist {
    let (pax, pay) = (px - ax, py - ay);
    let (bax, bay) = (bx - ax, by - ay);
    let bb = bax * bax + bay * bay;
    let h = if bb > 0.0 {
        ((pax * bax + pay * bay) / bb).clamp(0.0, 1.0)
    } else {
        0.0
    };
    len(pax - bax * h, pay - bay * h) - r
}

/// Convex polygon given counter-clockwise *or* clockwise (pixel coordinates):
/// max of the signed distances to its edge lines (exact inside, lower bound outside).
pub(crate) fn sd_convex(px: f32, py: f32, pts: &[(f32, f32)]) -> Dist {
    let n = pts.len();
    if n < 3 {
        return f32::MAX;
    }
    // orientation from the signed area
    let mut area = 0.0;
    for i in 0..n {
        let (a, b) = (pts[i], pts[(i + 1) % n]);
        area += a.0 * b.1 - b.0 * a.1;
    }
    let sign = if area >= 0.0 { 1.0 } else { -1.0 };
    let mut d = f32::MIN;
    for i in 0..n {
        let (a, b) = (pts[i], pts[(i + 1) % n]);
        let (ex, ey) = (b.0 - a.0, b.1 - a.1);
        let l = len(ex, ey);
        if l <= 0.0 {
            continue;
        }
        // outward normal for positive-area (counter-clockwise in y-down = clockwise visually)
        let (nx, ny) = (ey / l * sign, -ex / l * sign);
        d = d.max((px - a.0) * nx + (py - a.1) * ny);
    }
    d
}

/// Ring (annulus) of centre radius r and half-thickness t.
pub(crate) fn sd_ring(px: f32, py: f32, cx: f32, cy: f32, r: f32, t: f32) -> Dist {
    (len(px - cx, py - cy) - r).abs() - t
}

/// Pixel-space bounding box of points with a margin.
pub(crate) fn bbox_of(pts: &[(f32, f32)], margin: f32) -> [f32; 4] {
    let mut b = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
    for &(x, y) in pts {
        b[0] = b[0].min(x);
        b[1] = b[1].min(y);
        b[2] = b[2].max(x);
        b[3] = b[3].max(y);
    }
    [b[0] - margin, b[1] - margin, b[2] + margin, b[3] + margin]
}

/// A vector pen over a canvas: coordinates are fractions of the image side
/// (0..1), converted to pixels here, so a drawing is resolution independent
/// and rasterized natively at any size.
pub(crate) struct Pen<'a> {
    pub(crate) cv: &'a mut Canvas,
    pub(crate) s: f32,
}

impl<'a> Pen<'a> {
    pub(crate) fn new(cv: &'a mut Canvas) -> Pen<'a> {
        let s = cv.size as f32;
        Pen { cv, s }
    }

    /// A stroke/feature width in pixels with a floor so that small features
    /// stay visible at 16 px.
    pub(crate) fn w(&self, frac: f32, min_px: f32) -> f32 {
        (frac * self.s).max(min_px)
    }

    pub(crate) fn circle(&mut self, cx: f32, cy: f32, r: f32, c: Rgb) {
        let s = self.s;
        let (cx, cy, r) = (cx * s, cy * s, r * s);
        self.cv
            .shape([cx - r, cy - r, cx + r, cy + r], c, 1.0, |x, y| {
                sd_circle(x, y, cx, cy, r)
            });
    }

    /// Circle with a radius given in pixels (for features with a minimum size).
    pub(crate) fn circle_px(&mut self, cx: f32, cy: f32, r: f32, c: Rgb) {
        let s = self.s;
        let (cx, cy) = (cx * s, cy * s);
        self.cv
            .shape([cx - r, cy - r, cx + r, cy + r], c, 1.0, |x, y| {
                sd_circle(x, y, cx, cy, r)
            });
    }

    pub(crate) fn ellipse(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, c: Rgb) {
        self.ellipse_a(cx, cy, rx, ry, c, 1.0);
    }

    pub(crate) fn ellipse_a(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, c: Rgb, a: f32) {
        let s = self.s;
        let (cx, cy, rx, ry) = (cx * s, cy * s, rx * s, ry * s);
        self.cv
            .shape([cx - rx, cy - ry, cx + rx, cy + ry], c, a, |x, y| {
                sd_ellipse(x, y, cx, cy, rx, ry)
            });
    }

    /// Rounded rectangle from its centre and half extents (fractions), corner radius (fraction).
    pub(crate) fn rrect(&mut self, cx: f32, cy: f32, hx: f32, hy: f32, r: f32, c: Rgb) {
        let s = self.s;
        let (cx, cy, hx, hy, r) = (cx * s, cy * s, hx * s, hy * s, r * s);
        self.cv
            .shape([cx - hx, cy - hy, cx + hx, cy + hy], c, 1.0, |x, y| {
                sd_rrect(x, y, cx, cy, hx, hy, r)
            });
    }

    /// Capsule (thick line with round caps); `r` in pixels.
    pub(crate) fn line_px(&mut self, ax: f32, ay: f32, bx: f32, by: f32, r: f32, c: Rgb) {
        let s = self.s;
        let (ax, ay, bx, by) = (ax * s, ay * s, bx * s, by * s);
        let bb = [
            ax.min(bx) - r,
            ay.min(by) - r,
            ax.max(bx) + r,
            ay.max(by) + r,
        ];
        self.cv
            .shape(bb, c, 1.0, |x, y| sd_capsule(x, y, ax, ay, bx, by, r));
    }

    pub(crate) fn poly(&mut self, pts: &[(f32, f32)], c: Rgb) {
        let s = self.s;
        let mut p = [(0.0f32, 0.0f32); 8];
        let n = pts.len().min(8);
        for (dst, src) in p.iter_mut().zip(pts.iter()) {
            *dst = (src.0 * s, src.1 * s);
        }
        let p = &p[..n];
        self.cv
            .shape(bbox_of(p, 0.0), c, 1.0, |x, y| sd_convex(x, y, p));
    }

    /// An arc of a ring: the part of the ring (centre cx, cy, radius r,
    /// half-thickness t in px) below (`down = true`) or above the horizontal line
    /// through `cy + cut` (fraction). Used for smiles, closed eyes and brows.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn arc(&mut self, cx: f32, cy: f32, r: f32, t: f32, cut: f32, down: bool, c: Rgb) {
        let s = self.s;
        let (cx, cy, r, cut) = (cx * s, cy * s, r * s, cut * s);
        let bb = [cx - r - t, cy - r - t, cx + r + t, cy + r + t];
        let cut_y = cy + cut;
        // Round ends: the ring clipped by a half plane, softened with the
        // capsule-like end rounding given by taking the half plane distance
        // only (lower bound preserved by max).
        self.cv.shape(bb, c, 1.0, |x, y| {
            let ring = sd_ring(x, y, cx, cy, r, t);
            let half = if down { cut_y - y } else { y - cut_y };
            ring.max(half)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsl_primaries_and_greys() {
        let cases = [
            ((0.0, 1.0, 0.5), Rgb(255, 0, 0)),
            ((120.0, 1.0, 0.5), Rgb(0, 255, 0)),
            ((240.0, 1.0, 0.5), Rgb(0, 0, 255)),
            ((360.0, 1.0, 0.5), Rgb(255, 0, 0)),
            ((-120.0, 1.0, 0.5), Rgb(0, 0, 255)),
            ((60.0, 1.0, 0.5), Rgb(255, 255, 0)),
            ((200.0, 0.0, 0.5), Rgb(128, 128, 128)),
            ((10.0, 0.7, 1.0), Rgb(255, 255, 255)),
            ((10.0, 0.7, 0.0), Rgb(0, 0, 0)),
        ];
        for ((h, s, l), want) in cases {
            assert_eq!(Rgb::hsl(h, s, l), want, "hsl({h},{s},{l})");
        }
    }

    #[test]
    fn contrast_is_symmetric_and_max_for_black_white() {
        let (w, k) = (Rgb(255, 255, 255), Rgb(0, 0, 0));
        assert!((contrast(w, k) - 21.0).abs() < 0.01);
        assert_eq!(contrast(w, k), contrast(k, w));
        assert!((contrast(w, w) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn bits_are_deterministic_and_seed_dependent() {
        let mut a = Bits::new(b"x", "d");
        let mut b = Bits::new(b"x", "d");
        let mut c = Bits::new(b"y", "d");
        let mut d = Bits::new(b"x", "e");
        let va: Vec<u32> = (0..20).map(|_| a.take(32)).collect();
        let vb: Vec<u32> = (0..20).map(|_| b.take(32)).collect();
        let vc: Vec<u32> = (0..20).map(|_| c.take(32)).collect();
        let vd: Vec<u32> = (0..20).map(|_| d.take(32)).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        assert_ne!(va, vd);
        assert!(a.pick(3) < 3);
        assert_eq!(a.pick(0), 0);
    }

    #[test]
    fn coverage_of_half_plane_edge_is_proportional() {
        // a rect edge at x = 2.25 covers pixel 2 by a quarter
        let mut cv = Canvas::new(4);
        cv.fill(Rgb(0, 0, 0));
        cv.shape([0.0, 0.0, 4.0, 4.0], Rgb(255, 255, 255), 1.0, |x, y| {
            sd_rrect(x, y, 0.0, 2.0, 2.25, 10.0, 0.0)
        });
        let row: Vec<u8> = (0..4).map(|x| cv.data[(4 + x) * 4]).collect();
        assert_eq!(row, vec![255, 255, 64, 0]);
    }

    #[test]
    fn skipping_scan_equals_brute_force() {
        for size in [16u32, 97, 300] {
            let s = size as f32;
            let shapes: Vec<Box<dyn Fn(f32, f32) -> f32>> = vec![
                Box::new(move |x, y| sd_circle(x, y, 0.4 * s, 0.55 * s, 0.33 * s)),
                Box::new(move |x, y| sd_ellipse(x, y, 0.5 * s, 0.5 * s, 0.45 * s, 0.2 * s)),
                Box::new(move |x, y| sd_rrect(x, y, 0.5 * s, 0.4 * s, 0.3 * s, 0.2 * s, 0.07 * s)),
                Box::new(move |x, y| {
                    sd_capsule(x, y, 0.1 * s, 0.2 * s, 0.8 * s, 0.7 * s, 0.06 * s)
                }),
                Box::new(move |x, y| {
                    sd_convex(
                        x,
                        y,
                        &[(0.1 * s, 0.9 * s), (0.5 * s, 0.1 * s), (0.9 * s, 0.8 * s)],
                    )
                }),
                Box::new(move |x, y| {
                    sd_ring(x, y, 0.5 * s, 0.5 * s, 0.3 * s, 0.05 * s).max(0.5 * s - y)
                }),
            ];
            for (i, f) in shapes.iter().enumerate() {
                let mut a = Canvas::new(size);
                let mut b = Canvas::new(size);
                a.fill(Rgb(10, 20, 30));
                b.fill(Rgb(10, 20, 30));
                a.shape_impl([0.0, 0.0, s, s], Rgb(200, 100, 50), 0.8, f, true);
                b.shape_impl([0.0, 0.0, s, s], Rgb(200, 100, 50), 0.8, f, false);
                assert!(a.data == b.data, "shape {i} at {size}px differs");
                assert!(
                    a.data.chunks(4).any(|p| p[0] == 162),
                    "shape {i} drew nothing"
                );
            }
        }
    }
}
