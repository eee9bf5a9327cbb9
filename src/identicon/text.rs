//! The `initials` style: 1–2 letters on a seed-derived colour, set in the
//! bundled DejaVu Sans Bold (embedded with `include_bytes!`, see
//! `assets/fonts/README.md`) and rasterized with `ab_glyph` (exact-area
//! coverage of the glyph outlines).
//!
//! Invariants: the text's ink box (not its advance box) is centred in the image
//! and scaled to fit 44 % of its height and 70 % of its width, so one or two
//! letters always sit optically centred; text is white or near-black, whichever
//! contrasts more with the background. Characters the font lacks are skipped;
//! if nothing drawable remains only the background is drawn. At most the first
//! two characters are drawn.
//!
//! Boundaries: no file or network I/O (the font is in the binary), no global
//! state: the font is parsed per call (cheap — `ttf-parser` reads tables lazily).

use ab_glyph::{point, Font, FontRef, GlyphId, PxScale};

use super::canvas::{contrast, Bits, Canvas, Rgb};
use super::IdenticonError;

const FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

const DARK_TEXT: Rgb = Rgb(0x21, 0x21, 0x21);
const LIGHT_TEXT: Rgb = Rgb(255, 255, 255);

fn font() -> Result<FontRef<'static>, IdenticonError> {
    FontRef::try_from_slice(FONT_BYTES).map_err(|_| IdenticonError::Font)
}

/// [background, text] colours of the initials style for a seed.
pub(crate) fn initials_palette(seed: &[u8]) -> [Rgb; 2] {
    let mut b = Bits::new(seed, "initials");
    let bg = Rgb::hsl(b.pick(360) as f32, b.range(0.45, 0.65), b.range(0.40, 0.56));
    let text = if contrast(LIGHT_TEXT, bg) >= contrast(DARK_TEXT, bg) {
        LIGHT_TEXT
    } else {
        DARK_TEXT
    };
    [bg, text]
}

pub(crate) fn initials(seed: &[u8], size: u32, text: Option<&str>) -> Canvas {
    let [bg, fg] = initials_palette(seed);
    let mut cv = Canvas::new(size);
    cv.fill(bg);
    if let Some(text) = text {
        // A font that fails to parse cannot happen with the bundled file (a
        // test checks it); if it did, the background alone is the fallback.
        if let Ok(font) = font() {
            draw_text(&mut cv, &font, text, fg);
        }
    }
    cv
}

/// Glyph ids of the first two drawable characters of `text`.
fn glyphs(font: &FontRef<'_>, text: &str) -> Vec<GlyphId> {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .take(2)
        .map(|c| font.glyph_id(c))
        .filter(|g| g.0 != 0 && font.outline(*g).is_some())
        .collect()
}

fn draw_text(cv: &mut Canvas, font: &FontRef<'_>, text: &str, fg: Rgb) {
    let ids = glyphs(font, text);
    if ids.is_empty() {
        return;
    }
    // Layout in font units (y up): pen positions and the union of ink boxes.
    let mut pens = Vec::with_capacity(ids.len());
    let mut pen = 0.0f32;
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for (i, &id) in ids.iter().enumerate() {
        if i > 0 {
            pen += font.kern_unscaled(ids[i - 1], id);
        }
        if let Some(o) = font.outline(id) {
            x0 = x0.min(pen + o.bounds.min.x);
            x1 = x1.max(pen + o.bounds.max.x);
            // ab_glyph stores (x_min, y_max) as `min` and (x_max, y_min) as `max`
            let (lo, hi) = (
                o.bounds.min.y.min(o.bounds.max.y),
                o.bounds.min.y.max(o.bounds.max.y),
            );
            y0 = y0.min(lo);
            y1 = y1.max(hi);
        }
        pens.push(pen);
        pen += font.h_advance_unscaled(id);
    }
    let (w, h) = (x1 - x0, y1 - y0);
    if !(w > 0.0 && h > 0.0) {
        return;
    }
    let s = cv.size as f32;
    let k = (0.44 * s / h).min(0.70 * s / w); // px per font unit
    let scale = PxScale::from(k * font.height_unscaled());
    let origin_x = s / 2.0 - k * (x0 + x1) / 2.0;
    let baseline = s / 2.0 + k * (y0 + y1) / 2.0;
    for (&id, &pen) in ids.iter().zip(pens.iter()) {
        let glyph = id.with_scale_and_position(scale, point(origin_x + k * pen, baseline));
        let Some(og) = font.outline_glyph(glyph) else {
            continue;
        };
        let bb = og.px_bounds();
        let (bx, by) = (bb.min.x as i64, bb.min.y as i64);
        og.draw(|x, y, c| {
            let px = bx + x as i64;
            let py = by + y as i64;
            if px >= 0 && py >= 0 {
                cv.blend(px as usize, py as usize, fg, c.clamp(0.0, 1.0));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_font_parses_and_has_latin_but_not_han() {
        let f = font().expect("bundled font");
        assert_ne!(f.glyph_id('A').0, 0);
        assert_ne!(f.glyph_id('Ж').0, 0);
        assert_eq!(f.glyph_id('李').0, 0);
    }

    #[test]
    fn text_colour_contrasts_with_background() {
        for i in 0u32..200 {
            let [bg, fg] = initials_palette(&i.to_le_bytes());
            let other = if fg == LIGHT_TEXT {
                DARK_TEXT
            } else {
                LIGHT_TEXT
            };
            assert!(contrast(fg, bg) >= contrast(other, bg));
            assert!(contrast(fg, bg) >= 3.0, "seed {i}: {bg:?} vs {fg:?}");
        }
    }

    /// Ink bounding box (pixels that differ from the background).
    fn ink_box(cv: &Canvas, bg: Rgb) -> Option<(usize, usize, usize, usize)> {
        let s = cv.size as usize;
        let mut b: Option<(usize, usize, usize, usize)> = None;
        for y in 0..s {
            for x in 0..s {
                if cv.data[(y * s + x) * 4..][..3] != [bg.0, bg.1, bg.2] {
                    b = Some(match b {
                        None => (x, y, x, y),
                        Some((a, c, d, e)) => (a.min(x), c.min(y), d.max(x), e.max(y)),
                    });
                }
            }
        }
        b
    }

    #[test]
    fn text_is_centred_and_missing_glyphs_are_skipped() {
        let seed = b"centre";
        let [bg, _] = initials_palette(seed);
        for text in ["AL", "W", "ij", "Q", "李A"] {
            let cv = initials(seed, 200, Some(text));
            let (x0, y0, x1, y1) = ink_box(&cv, bg).expect("ink");
            let (l, r) = (x0 as i64, 199 - x1 as i64);
            let (t, bo) = (y0 as i64, 199 - y1 as i64);
            assert!((l - r).abs() <= 2, "{text}: left {l} right {r}");
            assert!((t - bo).abs() <= 2, "{text}: top {t} bottom {bo}");
        }
        // "李A" draws just the A, the same as "A"
        assert_eq!(
            initials(seed, 64, Some("李A")).data,
            initials(seed, 64, Some("A")).data
        );
        // nothing drawable → background only, same as None and empty
        let plain = initials(seed, 64, None).data;
        for t in ["李", "", "   ", "\u{0}"] {
            assert_eq!(initials(seed, 64, Some(t)).data, plain, "{t:?}");
        }
        assert!(plain.chunks(4).all(|p| p == bg.rgba()));
    }
}
