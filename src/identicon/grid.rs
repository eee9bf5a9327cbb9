//! Grid styles: `identicon` (symmetric 5×5) and `retro` (symmetric 8×8 pixel
//! sprite), drawn natively at the requested size.
//!
//! Invariants: every cell is a whole number of pixels (`cell >= 1`) and the
//! grid is centred, the leftover pixels forming the margin, so every cell edge
//! falls on a pixel boundary and the output only ever contains the colours of
//! the style's palette (no blended pixels) at any size. Below the grid's cell
//! count (e.g. a 3 px identicon) the 1 px-cell grid is cropped around its
//! centre. Colours and pattern come only from the seed.
//!
//! Boundaries: pure functions of (seed, size) → canvas; no I/O.

use super::canvas::{Bits, Canvas, Rgb};

/// Whole-pixel grid layout: `cells` cells plus a margin of `margin_cells` on
/// each side. Returns (cell size ≥ 1, offset of the grid's first cell — may be
/// negative when the image is smaller than the grid).
pub(crate) fn grid_layout(size: u32, cells: u32, margin_cells: f32) -> (i64, i64) {
    let size_f = size as f32;
    let ideal = size_f / (cells as f32 + 2.0 * margin_cells);
    let max_fit = (size / cells.max(1)).max(1);
    let cell = ((ideal + 0.5).floor() as u32).clamp(1, max_fit);
    let span = cell as i64 * cells as i64;
    let offset = (size as i64 - span).div_euclid(2);
    (cell as i64, offset)
}

/// The identicon's colours: [background, foreground].
#[cfg(test)]
pub(crate) fn identicon_palette(seed: &[u8]) -> [Rgb; 2] {
    let mut b = Bits::new(seed, "identicon");
    let _pattern = b.take(15);
    identicon_colours(&mut b)
}

fn identicon_colours(b: &mut Bits) -> [Rgb; 2] {
    let hue = b.pick(360) as f32;
    let sat = b.range(0.45, 0.70);
    let light = b.range(0.42, 0.56);
    [Rgb::hsl(hue, 0.25, 0.95), Rgb::hsl(hue, sat, light)]
}

pub(crate) fn identicon(seed: &[u8], size: u32) -> Canvas {
    let mut b = Bits::new(seed, "identicon");
    let mut pattern = b.take(15);
    if pattern == 0 {
        pattern = 1 << 7; // never an empty image: light the centre cell
    }
    let [bg, fg] = identicon_colours(&mut b);
    let mut cv = Canvas::new(size);
    cv.fill(bg);
    let (cell, off) = grid_layout(cv.size, 5, 0.3);
    for col in 0..3i64 {
        for row in 0..5i64 {
            let bit = (col * 5 + row) as u32;
            if pattern >> bit & 1 == 0 {
                continue;
            }
            for c in [col, 4 - col] {
                let x0 = off + c * cell;
                let y0 = off + row * cell;
                cv.fill_rect_px(x0, y0, x0 + cell, y0 + cell, fg);
            }
        }
    }
    cv
}

/// Retro sprite template, left half (column 3 touches the mirror axis).
/// 0 empty · 1 body or empty · 2 body · 3 body or accent · 4 eye · 5 dark or body.
const RETRO_TEMPLATE: [[u8; 4]; 8] = [
    [0, 0, 1, 1],
    [0, 1, 3, 2],
    [1, 2, 2, 2],
    [1, 2, 4, 3],
    [1, 3, 2, 2],
    [1, 2, 5, 5],
    [0, 1, 2, 3],
    [0, 1, 0, 1],
];

/// The retro sprite's colours: [background, body, accent, dark].
#[cfg(test)]
pub(crate) fn retro_palette(seed: &[u8]) -> [Rgb; 4] {
    let mut b = Bits::new(seed, "retro");
    retro_colours(&mut b)
}

fn retro_colours(b: &mut Bits) -> [Rgb; 4] {
    let hue = b.pick(360) as f32;
    let sat = b.range(0.50, 0.75);
    let light = b.range(0.48, 0.60);
    let accent_hue = hue + 140.0 + b.pick(80) as f32;
    [
        Rgb::hsl(hue, 0.25, 0.95),
        Rgb::hsl(hue, sat, light),
        Rgb::hsl(accent_hue, 0.65, 0.62),
        Rgb::hsl(hue, 0.45, 0.17),
    ]
}

pub(crate) fn retro(seed: &[u8], size: u32) -> Canvas {
    let mut b = Bits::new(seed, "retro");
    let [bg, body, accent, dark] = retro_colours(&mut b);
    let mut cells = [[None::<Rgb>; 8]; 8];
    for (row, tpl) in RETRO_TEMPLATE.iter().enumerate() {
        for (col, &kind) in tpl.iter().enumerate() {
            let c = match kind {
                1 => b.flag().then_some(body),
                2 => Some(body),
                3 => Some(if b.flag() { accent } else { body }),
                4 => Some(dark),
                5 => Some(if b.flag() { dark } else { body }),
                _ => None,
            };
            cells[row][col] = c;
            cells[row][7 - col] = c;
        }
    }
    let mut cv = Canvas::new(size);
    cv.fill(bg);
    let (cell, off) = grid_layout(cv.size, 8, 0.8);
    for (row, line) in cells.iter().enumerate() {
        for (col, c) in line.iter().enumerate() {
            if let Some(c) = c {
                let x0 = off + col as i64 * cell;
                let y0 = off + row as i64 * cell;
                cv.fill_rect_px(x0, y0, x0 + cell, y0 + cell, *c);
            }
        }
    }
    cv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_layout_table() {
        // (size, cells, margin) → (cell, offset)
        let cases = [
            (80u32, 5u32, 0.3f32, (14i64, 5i64)),
            (16, 5, 0.3, (3, 0)),
            (32, 5, 0.3, (6, 1)),
            (512, 5, 0.3, (91, 28)),
            (2048, 5, 0.3, (366, 109)),
            (5, 5, 0.3, (1, 0)),
            (3, 5, 0.3, (1, -1)),
            (1, 5, 0.3, (1, -2)),
            (16, 8, 0.8, (2, 0)),
            (80, 8, 0.8, (8, 8)),
            (1, 8, 0.8, (1, -4)),
        ];
        for (size, cells, m, want) in cases {
            assert_eq!(
                grid_layout(size, cells, m),
                want,
                "size {size} cells {cells}"
            );
        }
        // cells always fit and the margin is centred within one pixel
        for size in 1..=2048u32 {
            for (cells, m) in [(5u32, 0.3f32), (8, 0.8)] {
                let (cell, off) = grid_layout(size, cells, m);
                assert!(cell >= 1);
                if size >= cells {
                    let span = cell * cells as i64;
                    assert!(span <= size as i64);
                    let right = size as i64 - span - off;
                    assert!(
                        off >= 0 && (right - off) <= 1 && right >= off,
                        "size {size}"
                    );
                }
            }
        }
    }

    #[test]
    fn identicon_is_mirror_symmetric() {
        for seed in [&b"a"[..], b"b", b"c", b"0123456789abcdef"] {
            for size in [16u32, 80, 97] {
                let cv = identicon(seed, size);
                let s = size as usize;
                let (cell, off) = grid_layout(size, 5, 0.3);
                let span = (cell * 5) as usize;
                for y in 0..s {
                    for x in 0..span {
                        let xl = off as usize + x;
                        let xr = off as usize + span - 1 - x;
                        assert_eq!(
                            cv.data[(y * s + xl) * 4..][..4],
                            cv.data[(y * s + xr) * 4..][..4]
                        );
                    }
                }
            }
        }
    }
}
