//! The per-master lossy-or-lossless decision, made once at upload.
//!
//! Rule: encode one rung (the largest ≤ [`DECISION_SIDE`] px) both ways with
//! libwebp — lossless, and lossy at [`DECISION_QUALITY`] — and keep lossless
//! only where it is no larger. Lossless is exact, so winning on bytes means
//! winning at equal (better) quality: logos, flat art, screenshots with few
//! colours and large flat areas. Photos compress 3–10× better lossy and stay
//! lossy. The comparison uses libwebp's lossless coder (the better one) so the
//! decision is about the content, not about image-webp's fast encoder, which
//! still writes the served lossless bytes (unchanged from before).
//!
//! The decision uses a fixed reference quality, not the node's
//! `--webp-quality`, so it is a property of the content alone: every node of
//! a cluster, and every re-upload of the same bytes, decides the same.

use super::encode::encode_webp_lossy;
use super::resize::check_buffer;
use super::{Compression, PipelineError, Pixels};

/// The lossy quality the decision compares against (the default
/// `--webp-quality`).
pub const DECISION_QUALITY: u8 = 80;

/// The decision is made on the largest rung at most this wide: the common
/// avatar sizes (64–256 px) are where bytes matter, and two encodes of a
/// 256 px rung cost a few milliseconds of an upload.
pub const DECISION_SIDE: u32 = 256;

/// Lossless or lossy WebP for the content in `px` (see the module doc).
///
/// Same answer as comparing libwebp's default-effort lossless bytes with the
/// lossy bytes, at a fraction of the cost: lossless at the default effort
/// took 50–100 ms on a 256 px photo rung (more than the rest of a 12 MP
/// upload). A probe at the lowest effort (`WebPConfigLosslessPreset` level 0,
/// ~1–4 ms) settles both clear cases — no larger than lossy: lossless (more
/// effort only shrinks it); more than `PROBE_MARGIN`× lossy: lossy (the
/// default effort was at most 2.4× smaller than the probe on the fixtures,
/// photos sit at 10–14×). Only the band between pays for the full encode.
pub fn classify(px: &Pixels) -> Result<Compression, PipelineError> {
    let lossy = encode_webp_lossy(px, DECISION_QUALITY)?.len();
    let probe = libwebp_lossless_len(px, PROBE)?;
    let lossless = if probe <= lossy || probe > lossy.saturating_mul(PROBE_MARGIN) {
        probe
    } else {
        libwebp_lossless_len(px, FULL)?
    };
    Ok(if lossless <= lossy {
        Compression::Lossless
    } else {
        Compression::Lossy
    })
}

/// A libwebp lossless effort: (method, quality), as `WebPConfigLosslessPreset`.
type Effort = (i32, f32);
/// Level 0: the probe.
const PROBE: Effort = (0, 0.0);
/// Level 6, libwebp's default: the decision in the ambiguous band.
const FULL: Effort = (4, 75.0);
/// Probe bytes above this multiple of the lossy bytes decide "lossy" without
/// the full encode.
pub const PROBE_MARGIN: usize = 4;

/// Bytes of `px` as lossless WebP by libwebp at `effort`.
fn libwebp_lossless_len(px: &Pixels, (method, quality): Effort) -> Result<usize, PipelineError> {
    check_buffer(px)?;
    let enc = match px.layout {
        super::Layout::Rgb8 => webp::Encoder::from_rgb(&px.data, px.width, px.height),
        super::Layout::Rgba8 => webp::Encoder::from_rgba(&px.data, px.width, px.height),
    };
    let mut config = webp::WebPConfig::new()
        .map_err(|()| PipelineError::Internal("encode: libwebp version mismatch".into()))?;
    config.lossless = 1;
    config.method = method;
    config.quality = quality;
    enc.encode_advanced(&config)
        .map(|m| m.len())
        .map_err(|e| PipelineError::Internal(format!("encode: libwebp lossless: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixture;
    use crate::pipeline::{decode_rung, normalize, Layout, Limits};

    #[test]
    fn photos_are_lossy_flat_art_is_lossless() {
        let cases = [
            ("photo_grace_hopper_512x600.jpg", Compression::Lossy),
            ("photo_retina_baseline_1024.jpg", Compression::Lossy),
            (
                "photo_iphone_pug_displayp3_1024x768.jpg",
                Compression::Lossy,
            ),
            ("photo_astronaut_16bit_512.png", Compression::Lossy),
            ("photo_progressive_650x470.jpg", Compression::Lossy),
            ("photo_cat_progressive_320x240.jpg", Compression::Lossy),
            ("webp_lossy_flower.webp", Compression::Lossy),
            // A dithered 256-colour photo is still a photo.
            ("gif_static_hopper.gif", Compression::Lossy),
            // Flat shapes with anti-aliased edges and transparency: a logo.
            ("logo_alpha_disc_512.png", Compression::Lossless),
            // A logo with shading and gradients (2,340 colours at 250 px):
            // lossy is ~6x smaller, and that is what it gets.
            ("logo_alpha_500.png", Compression::Lossy),
            // Flat patches, but carrying JPEG noise: lossy wins on bytes.
            ("photo_adobergb_chart_512.jpg", Compression::Lossy),
        ];
        let limits = Limits::default();
        for (name, want) in cases {
            let n = normalize(&fixture(name), None, &limits).unwrap();
            let rung = n.ladder.iter().find(|r| r.side <= DECISION_SIDE).unwrap();
            let px = decode_rung(&rung.bytes).unwrap();
            let (lossless, lossy) = (
                libwebp_lossless_len(&px, FULL).unwrap(),
                encode_webp_lossy(&px, DECISION_QUALITY).unwrap().len(),
            );
            assert_eq!(
                n.compression, want,
                "{name}: lossless {lossless} B, lossy {lossy} B at {} px",
                rung.side
            );
        }
    }

    /// The probe's short cuts give the full-effort rule's answer on every
    /// fixture that normalizes (photos, logos, art, odd formats).
    #[test]
    fn the_probe_agrees_with_the_full_effort_rule_on_every_fixture() {
        let dir = format!("{}/fixtures", env!("CARGO_MANIFEST_DIR"));
        let limits = Limits::default();
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                continue;
            }
            let name = entry.file_name().into_string().unwrap();
            let Ok(n) = normalize(&fixture(&name), None, &limits) else {
                continue;
            };
            let rung = n.ladder.iter().find(|r| r.side <= DECISION_SIDE);
            let px = decode_rung(&rung.unwrap_or(n.ladder.last().unwrap()).bytes).unwrap();
            let lossy = encode_webp_lossy(&px, DECISION_QUALITY).unwrap().len();
            let full = libwebp_lossless_len(&px, FULL).unwrap();
            let want = if full <= lossy {
                Compression::Lossless
            } else {
                Compression::Lossy
            };
            assert_eq!(
                classify(&px).unwrap(),
                want,
                "{name}: full {full} B, lossy {lossy} B"
            );
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} fixtures normalized");
    }

    #[test]
    fn flat_generated_defaults_are_lossless() {
        use crate::identicon::Style;
        // (Defaults are served lossless whatever this says; the flat styles
        // show the rule agrees.)
        for style in [Style::Identicon, Style::Retro, Style::Blank, Style::Color] {
            let px = crate::identicon::render(style, b"someone@example.com", 128, Some("AL"));
            assert_eq!(classify(&px).unwrap(), Compression::Lossless, "{style:?}");
        }
    }

    #[test]
    fn flat_synthetic_art_is_lossless_and_noise_is_lossy() {
        let side = 128u32;
        let mut flat = Vec::new();
        let mut noise = Vec::new();
        let mut seed = 0x2545_f491_u32;
        for y in 0..side {
            for x in 0..side {
                let c = if (x / 32 + y / 32) % 2 == 0 {
                    [20, 90, 200]
                } else {
                    [250, 250, 250]
                };
                flat.extend_from_slice(&c);
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let v = (x + y) as u8 ^ (seed as u8 & 0x1f);
                noise.extend_from_slice(&[v, v / 2, 255 - v]);
            }
        }
        let px = |data| Pixels {
            width: side,
            height: side,
            layout: Layout::Rgb8,
            data,
        };
        assert_eq!(classify(&px(flat)).unwrap(), Compression::Lossless);
        assert_eq!(classify(&px(noise)).unwrap(), Compression::Lossy);
    }

    #[test]
    fn the_decision_is_deterministic() {
        let n = normalize(
            &fixture("photo_grace_hopper_512x600.jpg"),
            None,
            &Limits::default(),
        )
        .unwrap();
        let rung = n.ladder.iter().find(|r| r.side <= DECISION_SIDE).unwrap();
        let px = decode_rung(&rung.bytes).unwrap();
        assert_eq!(classify(&px).unwrap(), n.compression);
        assert_eq!(classify(&px).unwrap(), classify(&px).unwrap());
    }
}
