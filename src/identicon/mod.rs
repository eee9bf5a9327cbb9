//! Generated default avatars (identicon, retro, monsterid, wavatar, robohash,
//! mp silhouette, blank, initials, color), drawn natively at the requested size.
//!
//! Pure and synchronous: seed bytes + style + size (+ initials) → RGBA8
//! [`Pixels`] of exactly `size × size`. No I/O, no global state, no hyper/tokio.
//!
//! Invariants:
//! - [`render`] never fails and never panics: sizes are clamped to
//!   `1..=MAX_SIZE`, any seed (empty, MD5, SHA-256, arbitrary bytes) is hashed
//!   with BLAKE3 into a per-style bit stream, and every index is in range.
//! - Deterministic: same inputs → same bytes on every machine (integer and
//!   IEEE-exact float arithmetic only, no libm transcendental functions, no
//!   hash-map iteration, no randomness). Golden tests pin the bytes.
//! - Never upscaled: grid styles (identicon, retro) use whole-pixel cells with
//!   the remainder as a centred margin, so they are crisp at any size; vector
//!   styles are rasterized at the size with analytic coverage anti-aliasing.
//!
//! Layout: `canvas` (surface, colours, seed bits, rasterizer), `grid`
//! (identicon, retro), `vector` (monsterid, wavatar, robohash, mp), `text`
//! (initials with the bundled DejaVu Sans Bold).

mod canvas;
mod grid;
mod text;
mod vector;

use std::str::FromStr;

// The style and pixel types are shared values (`model`); drawing is here.
pub use crate::model::Style;
use crate::model::{Layout, Pixels};
use canvas::{Bits, Canvas, Rgb};

/// Largest side [`render`] draws; larger requests are clamped to it (the
/// one output-size limit, defined in `model`).
pub use crate::model::MAX_OUTPUT_SIDE as MAX_SIZE;

/// Errors of this module. [`render`] itself is infallible; this only names
/// what can go wrong around it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdenticonError {
    #[error("unknown default style {0:?}; known: identicon, retro, monsterid, wavatar, robohash, mp, blank, initials, color")]
    UnknownStyle(String),
    /// The bundled font could not be parsed (never happens with the shipped
    /// file; `initials` then draws its background only).
    #[error("bundled font is unreadable")]
    Font,
}

impl FromStr for Style {
    type Err = IdenticonError;
    fn from_str(s: &str) -> Result<Style, IdenticonError> {
        Style::parse(s).ok_or_else(|| IdenticonError::UnknownStyle(s.chars().take(32).collect()))
    }
}

/// RGBA8 `Pixels` of exactly size×size (size clamped to 1..=MAX_SIZE).
///
/// `seed`: the identity hash bytes (16 or 32 bytes) or any bytes; `initials`:
/// 1–2 letters to draw for `Style::Initials` (when None/empty, Initials draws
/// its coloured background only; the caller decides fallbacks). Ignored by the
/// other styles. Never fails, never panics, for any input.
pub fn render(style: Style, seed: &[u8], size: u32, initials: Option<&str>) -> Pixels {
    let size = size.clamp(1, MAX_SIZE);
    let cv = match style {
        Style::Identicon => grid::identicon(seed, size),
        Style::Retro => grid::retro(seed, size),
        Style::MonsterId => vector::monsterid(seed, size),
        Style::Wavatar => vector::wavatar(seed, size),
        Style::Robohash => vector::robohash(seed, size),
        Style::Mp => vector::mp(size),
        Style::Blank => Canvas::new(size),
        Style::Initials => text::initials(seed, size, initials),
        Style::Color => {
            let mut cv = Canvas::new(size);
            cv.fill(color_of(seed));
            cv
        }
    };
    cv.into_pixels()
}

/// The `color` style's colour.
fn color_of(seed: &[u8]) -> Rgb {
    let mut b = Bits::new(seed, "color");
    Rgb::hsl(b.pick(360) as f32, b.range(0.45, 0.65), b.range(0.48, 0.60))
}

/// "Ada Lovelace" → "AL", "ada" → "A", "  jean-luc picard " → "JP", "李小龍" → "李",
/// "" / "!!!" → "" (max 2 chars, upper-cased, letters/digits only, first char
/// of the first and of the last word).
///
/// Words are separated by whitespace; a word's initial is its first letter or
/// digit (so "(admin)" gives "A"); words without one are ignored. A character
/// whose upper case is more than one character (e.g. "ß") is kept as is.
pub fn initials_of(name: &str) -> String {
    let mut words = name
        .split_whitespace()
        .filter_map(|w| w.chars().find(|c| c.is_alphanumeric()));
    let first = words.next();
    let last = words.next_back();
    first
        .into_iter()
        .chain(last)
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

/// Gutter between contact-sheet tiles, in pixels.
const SHEET_GUTTER: u32 = 4;
/// Largest tile side on a contact sheet (larger sizes are clamped).
const SHEET_MAX_TILE: u32 = 512;
/// Widest contact sheet; seed blocks that would not fit are left out.
const SHEET_MAX_WIDTH: u32 = 8192;
const SHEET_BG: Rgb = Rgb(0xB8, 0xB8, 0xB8);
const CHECKER: [Rgb; 2] = [Rgb(0xF4, 0xF4, 0xF4), Rgb(0xD6, 0xD6, 0xD6)];

/// One RGBA image with every style (rows) at each size (columns, e.g. 16, 32,
/// 64, 128) for each seed (side-by-side blocks), with a few px of neutral
/// gutter; used to produce docs/styles.png.
///
/// Tiles sit on a light checkerboard so transparency (`blank`) is visible.
/// `Initials` tiles draw the letters "AE". Tile sizes are clamped to 1..=512
/// and seed blocks that would make the sheet wider than 8192 px are left out,
/// so the sheet stays bounded whatever the input. With no seeds or no sizes
/// the result is a gutter-only image.
pub fn contact_sheet(seeds: &[&[u8]], sizes: &[u32]) -> Pixels {
    let g = SHEET_GUTTER;
    let sizes: Vec<u32> = sizes
        .iter()
        .take(16)
        .map(|s| (*s).clamp(1, SHEET_MAX_TILE))
        .collect();
    let block_w: u32 = sizes.iter().map(|s| s + g).sum::<u32>() + g;
    let max_tile = sizes.iter().copied().max().unwrap_or(0);
    let mut n_seeds = 0u32;
    let mut width = g;
    for _ in seeds {
        if width + block_w > SHEET_MAX_WIDTH {
            break;
        }
        width += block_w;
        n_seeds += 1;
    }
    let rows = Style::ALL.len() as u32;
    let height = g + rows * (max_tile + g);
    let (w, h) = (width.max(1) as usize, height.max(1) as usize);
    let mut data = SHEET_BG.rgba().repeat(w * h);
    let mut x = g as usize;
    for seed in seeds.iter().take(n_seeds as usize) {
        x += g as usize; // seed blocks are separated by a double gutter
        for &size in &sizes {
            for (row, style) in Style::ALL.iter().enumerate() {
                let y = g as usize + row * (max_tile + g) as usize;
                let tile = render(*style, seed, size, Some("AE"));
                composite(&mut data, w, &tile, x, y);
            }
            x += (size + g) as usize;
        }
    }
    Pixels {
        width: w as u32,
        height: h as u32,
        layout: Layout::Rgba8,
        data,
    }
}

/// Draws `tile` over a 4 px checkerboard at (x0, y0) of an RGBA buffer `w` wide
/// (clipped to the buffer).
fn composite(data: &mut [u8], w: usize, tile: &Pixels, x0: usize, y0: usize) {
    let tw = tile.width as usize;
    for (ty, row) in tile.data.chunks_exact(tw * 4).enumerate() {
        for (tx, p) in row.chunks_exact(4).enumerate() {
            let (x, y) = (x0 + tx, y0 + ty);
            if x >= w {
                continue;
            }
            let Some(dst) = data.get_mut((y * w + x) * 4..(y * w + x) * 4 + 4) else {
                continue;
            };
            let under = CHECKER[(tx / 4 + ty / 4) % 2];
            let a = p[3] as u32;
            let mix = |s: u8, d: u8| ((s as u32 * a + d as u32 * (255 - a) + 127) / 255) as u8;
            dst[0] = mix(p[0], under.0);
            dst[1] = mix(p[1], under.1);
            dst[2] = mix(p[2], under.2);
            dst[3] = 255;
        }
    }
}

#[cfg(test)]
mod tests;
