//! Vector styles: `monsterid`, `wavatar`, `robohash` and the `mp` silhouette.
//!
//! Each drawing is a list of shapes in image-relative coordinates (0..1),
//! rasterized natively at the requested size with analytic coverage
//! anti-aliasing by [`super::canvas::Pen`]. Every choice (parts, colours,
//! offsets) is read from the style's own BLAKE3 bit stream of the seed, so the
//! same seed always gives the same drawing. Fine features have a minimum width
//! in pixels so they stay visible at 16 px. These are our own designs.
//!
//! Boundaries: pure functions of (seed, size) → canvas; no I/O.

use super::canvas::{sd_ellipse, Bits, Canvas, Pen, Rgb};

const WHITE: Rgb = Rgb(255, 255, 255);

/// A filled circle clipped to one side of a horizontal line (a "half disc").
#[allow(clippy::too_many_arguments)]
fn half_disc(p: &mut Pen, cx: f32, cy: f32, rx: f32, ry: f32, cut: f32, below: bool, c: Rgb) {
    let s = p.s;
    let (cx, cy, rx, ry, cut) = (cx * s, cy * s, rx * s, ry * s, cut * s);
    p.cv.shape([cx - rx, cy - ry, cx + rx, cy + ry], c, 1.0, |x, y| {
        let e = sd_ellipse(x, y, cx, cy, rx, ry);
        let h = if below { cut - y } else { y - cut };
        e.max(h)
    });
}

/// An eye: white, pupil looking in direction `gaze` (-1, 0, 1), highlight.
fn eye(p: &mut Pen, cx: f32, cy: f32, r: f32, gaze: f32, pupil: Rgb) {
    p.circle(cx, cy, r, WHITE);
    let pr = p.w(r * 0.5, 1.0);
    let dx = gaze * r * 0.35;
    p.circle_px(cx + dx, cy + r * 0.1, pr, pupil);
    if p.s >= 48.0 {
        p.circle(cx + dx - r * 0.18, cy - r * 0.1, r * 0.16, WHITE);
    }
}

pub(crate) fn monsterid(seed: &[u8], size: u32) -> Canvas {
    let mut b = Bits::new(seed, "monsterid");
    let hue = b.pick(360) as f32;
    let bg = Rgb::hsl(hue + 150.0 + b.pick(60) as f32, 0.35, 0.90);
    let body = Rgb::hsl(hue, b.range(0.50, 0.72), b.range(0.50, 0.60));
    let dark = Rgb::hsl(hue, 0.50, 0.22);
    let light = Rgb::hsl(hue, 0.65, 0.78);
    let bone = Rgb::hsl(40.0, 0.45, 0.88);
    let shape = b.pick(4);
    let horns = b.pick(5);
    let eyes = b.pick(4);
    let mouth = b.pick(4);
    let arms = b.pick(3);
    let belly = b.flag();
    let spots = b.flag();
    let gaze = b.pick(3) as f32 - 1.0;

    let mut cv = Canvas::new(size);
    cv.fill(bg);
    let mut p = Pen::new(&mut cv);
    let lw = p.w(0.02, 1.0);

    // behind the body: feet, arms, horns
    p.ellipse(0.37, 0.87, 0.08, 0.05, dark);
    p.ellipse(0.63, 0.87, 0.08, 0.05, dark);
    match arms {
        1 => {
            p.line_px(0.30, 0.62, 0.14, 0.50, p.w(0.035, 1.0), body);
            p.line_px(0.70, 0.62, 0.86, 0.50, p.w(0.035, 1.0), body);
        }
        2 => {
            p.line_px(0.30, 0.62, 0.15, 0.74, p.w(0.035, 1.0), body);
            p.line_px(0.70, 0.62, 0.85, 0.74, p.w(0.035, 1.0), body);
        }
        _ => {}
    }
    match horns {
        1 => {
            p.poly(&[(0.30, 0.42), (0.42, 0.34), (0.25, 0.13)], bone);
            p.poly(&[(0.70, 0.42), (0.58, 0.34), (0.75, 0.13)], bone);
        }
        2 => {
            p.line_px(0.43, 0.36, 0.35, 0.15, lw, dark);
            p.line_px(0.57, 0.36, 0.65, 0.15, lw, dark);
            p.circle(0.35, 0.15, 0.045, light);
            p.circle(0.65, 0.15, 0.045, light);
        }
        3 => p.poly(&[(0.44, 0.34), (0.56, 0.34), (0.5, 0.10)], bone),
        4 => {
            p.circle(0.25, 0.36, 0.10, body);
            p.circle(0.75, 0.36, 0.10, body);
            p.circle(0.25, 0.36, 0.055, light);
            p.circle(0.75, 0.36, 0.055, light);
        }
        _ => {}
    }
    // body
    match shape {
        0 => p.circle(0.5, 0.58, 0.30, body),
        1 => p.rrect(0.5, 0.58, 0.29, 0.28, 0.10, body),
        2 => {
            p.circle(0.5, 0.47, 0.22, body);
            p.ellipse(0.5, 0.67, 0.32, 0.21, body);
        }
        _ => {
            p.circle(0.5, 0.53, 0.27, body);
            p.rrect(0.5, 0.69, 0.27, 0.16, 0.04, body);
        }
    }
    if belly {
        p.ellipse(0.5, 0.70, 0.15, 0.11, light);
    }
    if spots {
        p.circle(0.30, 0.62, 0.035, light);
        p.circle(0.71, 0.58, 0.045, light);
        p.circle(0.68, 0.74, 0.03, light);
    }
    // eyes
    match eyes {
        0 => eye(&mut p, 0.5, 0.45, 0.11, gaze, dark),
        1 => {
            eye(&mut p, 0.40, 0.46, 0.07, gaze, dark);
            eye(&mut p, 0.60, 0.46, 0.07, gaze, dark);
        }
        2 => {
            eye(&mut p, 0.37, 0.49, 0.055, gaze, dark);
            eye(&mut p, 0.50, 0.41, 0.06, gaze, dark);
            eye(&mut p, 0.63, 0.49, 0.055, gaze, dark);
        }
        _ => {
            eye(&mut p, 0.40, 0.47, 0.065, gaze, dark);
            eye(&mut p, 0.60, 0.47, 0.065, gaze, dark);
            p.line_px(0.31, 0.36, 0.46, 0.41, lw, dark);
            p.line_px(0.69, 0.36, 0.54, 0.41, lw, dark);
        }
    }
    // mouth
    match mouth {
        0 => p.arc(0.5, 0.56, 0.11, lw, 0.03, true, dark),
        1 => {
            p.ellipse(0.5, 0.65, 0.10, 0.06, dark);
            half_disc(
                &mut p,
                0.5,
                0.68,
                0.06,
                0.035,
                0.665,
                true,
                Rgb::hsl(350.0, 0.7, 0.65),
            );
        }
        2 => {
            p.line_px(0.38, 0.64, 0.62, 0.64, lw, dark);
            p.poly(&[(0.42, 0.64), (0.47, 0.64), (0.445, 0.71)], WHITE);
            p.poly(&[(0.53, 0.64), (0.58, 0.64), (0.555, 0.71)], WHITE);
        }
        _ => {
            p.rrect(0.5, 0.65, 0.13, 0.05, 0.02, dark);
            p.rrect(0.44, 0.625, 0.035, 0.02, 0.005, WHITE);
            p.rrect(0.56, 0.625, 0.035, 0.02, 0.005, WHITE);
        }
    }
    cv
}

pub(crate) fn wavatar(seed: &[u8], size: u32) -> Canvas {
    let mut b = Bits::new(seed, "wavatar");
    let bg_hue = b.pick(360) as f32;
    let bg = Rgb::hsl(bg_hue, b.range(0.45, 0.65), b.range(0.62, 0.72));
    let face_hue = bg_hue + 90.0 + b.pick(180) as f32;
    let face = Rgb::hsl(face_hue, 0.70, 0.84);
    let ink = Rgb::hsl(face_hue, 0.35, 0.18);
    let blush = Rgb::hsl(350.0, 0.80, 0.70);
    let shape = b.pick(4);
    let eyes = b.pick(5);
    let mouth = b.pick(5);
    let brows = b.pick(3);
    let cheeks = b.flag();
    let tuft = b.flag();
    let gaze = b.pick(3) as f32 - 1.0;
    let ex = b.range(0.11, 0.15);

    let mut cv = Canvas::new(size);
    cv.fill(bg);
    let mut p = Pen::new(&mut cv);
    let lw = p.w(0.018, 0.9);
    let (cx, cy) = (0.5, 0.53);
    if tuft {
        let top = match shape {
            1 => cy - 0.41,
            2 => cy - 0.35,
            _ => cy - 0.38,
        };
        p.ellipse(0.45, top + 0.02, 0.05, 0.07, face);
        p.ellipse(0.55, top + 0.01, 0.045, 0.08, face);
    }
    match shape {
        0 => p.circle(cx, cy, 0.38, face),
        1 => p.ellipse(cx, cy, 0.34, 0.41, face),
        2 => p.ellipse(cx, cy, 0.41, 0.35, face),
        _ => p.rrect(cx, cy, 0.36, 0.36, 0.17, face),
    }
    if cheeks {
        p.ellipse_a(cx - 0.2, 0.62, 0.065, 0.045, blush, 0.55);
        p.ellipse_a(cx + 0.2, 0.62, 0.065, 0.045, blush, 0.55);
    }
    let ey = 0.47;
    let (lx, rx) = (cx - ex, cx + ex);
    match eyes {
        0 => {
            p.circle_px(lx, ey, p.w(0.045, 1.0), ink);
            p.circle_px(rx, ey, p.w(0.045, 1.0), ink);
        }
        1 => {
            for x in [lx, rx] {
                p.ellipse(x, ey, 0.065, 0.08, WHITE);
                p.circle_px(x + gaze * 0.02, ey + 0.01, p.w(0.04, 1.0), ink);
                if p.s >= 48.0 {
                    p.circle(x + gaze * 0.02 - 0.012, ey - 0.005, 0.012, WHITE);
                }
            }
        }
        2 => {
            p.arc(lx, ey + 0.02, 0.05, lw, 0.0, false, ink);
            p.arc(rx, ey + 0.02, 0.05, lw, 0.0, false, ink);
        }
        3 => {
            p.arc(lx, ey - 0.03, 0.05, lw, 0.0, true, ink);
            p.arc(rx, ey - 0.03, 0.05, lw, 0.0, true, ink);
        }
        _ => {
            p.circle_px(lx, ey, p.w(0.045, 1.0), ink);
            p.arc(rx, ey + 0.02, 0.05, lw, 0.0, false, ink);
        }
    }
    match brows {
        1 => {
            p.line_px(lx - 0.05, ey - 0.10, lx + 0.04, ey - 0.11, lw, ink);
            p.line_px(rx - 0.04, ey - 0.11, rx + 0.05, ey - 0.10, lw, ink);
        }
        2 => {
            p.line_px(lx - 0.05, ey - 0.13, lx + 0.04, ey - 0.10, lw, ink);
            p.line_px(rx - 0.04, ey - 0.10, rx + 0.05, ey - 0.13, lw, ink);
        }
        _ => {}
    }
    let my = 0.66;
    match mouth {
        0 => p.arc(cx, my - 0.07, 0.12, lw, 0.02, true, ink),
        1 => {
            half_disc(&mut p, cx, my - 0.02, 0.13, 0.12, my - 0.02, true, ink);
            half_disc(&mut p, cx, my + 0.07, 0.07, 0.04, my + 0.055, true, blush);
        }
        2 => p.ellipse(cx, my + 0.01, 0.04, 0.05, ink),
        3 => p.line_px(cx - 0.08, my + 0.01, cx + 0.08, my + 0.01, lw, ink),
        _ => {
            p.ellipse(cx + 0.03, my + 0.06, 0.045, 0.055, blush);
            p.arc(cx, my - 0.07, 0.12, lw, 0.02, true, ink);
        }
    }
    cv
}

pub(crate) fn robohash(seed: &[u8], size: u32) -> Canvas {
    let mut b = Bits::new(seed, "robohash");
    let hue = b.pick(360) as f32;
    let bg = Rgb::hsl(hue + 120.0 + b.pick(120) as f32, 0.35, 0.88);
    let metal = Rgb::hsl(hue, b.range(0.12, 0.32), b.range(0.56, 0.68));
    let metal_dark = Rgb::hsl(hue, 0.15, 0.33);
    let metal_light = Rgb::hsl(hue, 0.10, 0.82);
    let glow = Rgb::hsl(b.pick(360) as f32, 0.90, 0.58);
    let head = b.pick(4);
    let ears = b.flag();
    let antenna = b.pick(4);
    let eyes = b.pick(4);
    let bars = 3 + b.pick(4);
    let mouth_w = b.range(0.10, 0.17);
    let rivets = b.flag();

    let mut cv = Canvas::new(size);
    cv.fill(bg);
    let mut p = Pen::new(&mut cv);
    let lw = p.w(0.018, 1.0);
    let (cx, cy, hx, hy, r) = match head {
        0 => (0.5, 0.50, 0.30, 0.26, 0.04),
        1 => (0.5, 0.50, 0.30, 0.27, 0.12),
        2 => (0.5, 0.48, 0.25, 0.30, 0.07),
        _ => (0.5, 0.51, 0.33, 0.24, 0.20),
    };
    // neck and shoulders
    p.rrect(0.5, 0.92, 0.09, 0.14, 0.0, metal_dark);
    p.rrect(0.5, 1.04, 0.40, 0.10, 0.06, metal);
    // antenna (behind the head)
    let top = cy - hy;
    match antenna {
        1 => {
            p.line_px(0.5, top, 0.5, top - 0.12, lw, metal_dark);
            p.circle(0.5, top - 0.12, 0.035, glow);
        }
        2 => {
            p.line_px(0.42, top, 0.34, top - 0.11, lw, metal_dark);
            p.line_px(0.58, top, 0.66, top - 0.11, lw, metal_dark);
            p.circle(0.34, top - 0.11, 0.03, glow);
            p.circle(0.66, top - 0.11, 0.03, glow);
        }
        3 => p.rrect(0.5, top - 0.03, 0.08, 0.05, 0.015, metal_dark),
        _ => {}
    }
    if ears {
        p.rrect(cx - hx - 0.02, cy, 0.035, 0.08, 0.015, metal_dark);
        p.rrect(cx + hx + 0.02, cy, 0.035, 0.08, 0.015, metal_dark);
    }
    p.rrect(cx, cy, hx, hy, r, metal);
    if rivets {
        let rr = p.w(0.014, 0.7);
        let inset = 0.04 + 0.3 * r; // inside the rounded corner
        let (ix, iy) = (hx - inset, hy - inset);
        for (dx, dy) in [(-ix, -iy), (ix, -iy), (-ix, iy), (ix, iy)] {
            p.circle_px(cx + dx, cy + dy, rr, metal_dark);
        }
    }
    let ey = cy - 0.06;
    match eyes {
        0 => {
            for x in [cx - 0.11, cx + 0.11] {
                p.circle(x, ey, 0.075, metal_dark);
                p.circle(x, ey, 0.05, glow);
                if p.s >= 32.0 {
                    p.circle(x - 0.015, ey - 0.015, 0.015, WHITE);
                }
            }
        }
        1 => {
            p.line_px(cx - 0.18, ey, cx + 0.18, ey, p.w(0.06, 1.5), metal_dark);
            p.line_px(cx - 0.15, ey, cx + 0.15, ey, p.w(0.03, 0.8), glow);
        }
        2 => {
            for x in [cx - 0.11, cx + 0.11] {
                p.rrect(x, ey, 0.07, 0.06, 0.015, metal_dark);
                p.rrect(x, ey, 0.045, 0.035, 0.008, glow);
            }
        }
        _ => {
            p.circle(cx, ey, 0.11, metal_dark);
            p.circle(cx, ey, 0.07, glow);
            p.circle_px(cx, ey, p.w(0.03, 0.8), metal_dark);
        }
    }
    // mouth grille
    let my = cy + 0.14;
    p.rrect(cx, my, mouth_w, 0.05, 0.015, metal_dark);
    let n = bars as f32;
    let bw = 2.0 * mouth_w / (2.0 * n + 1.0);
    if p.s * bw >= 1.0 {
        for i in 0..bars {
            let x = cx - mouth_w + bw * (2.0 * i as f32 + 1.5);
            p.rrect(x, my, bw * 0.5, 0.032, 0.0, metal_light);
        }
    }
    cv
}

/// Light grey background for `mp`.
pub(crate) const MP_BG: Rgb = Rgb(0xE4, 0xE4, 0xE4);
/// Silhouette grey for `mp`.
pub(crate) const MP_FG: Rgb = Rgb(0xA3, 0xA3, 0xA3);

pub(crate) fn mp(size: u32) -> Canvas {
    let mut cv = Canvas::new(size);
    cv.fill(MP_BG);
    let mut p = Pen::new(&mut cv);
    p.circle(0.5, 0.38, 0.175, MP_FG);
    let s = p.s;
    // shoulders: an ellipse clipped by the bottom edge of the image
    let (cx, cy, rx, ry) = (0.5 * s, 0.99 * s, 0.35 * s, 0.34 * s);
    p.cv.shape([cx - rx, cy - ry, cx + rx, s], MP_FG, 1.0, |x, y| {
        sd_ellipse(x, y, cx, cy, rx, ry)
    });
    cv
}
