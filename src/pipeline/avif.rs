//! AVIF variants: ravif (rav1e, AV1 intra) at [`AVIF_SPEED`], one thread
//! per render (the render pool is the parallelism), 8-bit YCbCr 4:4:4, alpha
//! kept as an AV1 auxiliary image at the same quality.
//!
//! Invariants: only pixels are written (no EXIF); same pixels and quality →
//! same bytes; an encoder error is `Internal` (a 5xx for that request only).

use ravif::{Encoder, Img, RGB8, RGBA8};

use super::resize::check_buffer;
use super::{Layout, PipelineError, Pixels};

/// rav1e speed preset (1 slowest … 10 fastest). Chosen in
/// `benches/pipeline.rs` (`avif_speed` group) and BENCHMARKS.md: a CDN keeps
/// each variant for a year, so a slower first render is acceptable up to the
/// cold 128 px budget (15 ms p50); see the commit that set it for the
/// bytes/time trade-off.
pub const AVIF_SPEED: u8 = 8;

/// Encodes `px` as AVIF at `quality` (1–100) and [`AVIF_SPEED`].
pub(crate) fn encode_avif(px: &Pixels<&[u8]>, quality: u8) -> Result<Vec<u8>, PipelineError> {
    encode_avif_at(px, quality, AVIF_SPEED)
}

/// `encode_avif` at an explicit speed (the benchmark compares speeds).
pub fn encode_avif_at(
    px: &Pixels<impl AsRef<[u8]>>,
    quality: u8,
    speed: u8,
) -> Result<Vec<u8>, PipelineError> {
    check_buffer(px)?;
    let px = px.view();
    let q = f32::from(quality.clamp(1, 100));
    let enc = Encoder::new()
        .with_quality(q)
        .with_alpha_quality(q)
        .with_speed(speed.clamp(1, 10))
        .with_bit_depth(ravif::BitDepth::Eight)
        .with_num_threads(Some(1));
    let (w, h) = (px.width as usize, px.height as usize);
    let encoded = match px.layout {
        Layout::Rgb8 => {
            let rgb: Vec<RGB8> = px
                .data
                .chunks_exact(3)
                .map(|p| RGB8::new(p[0], p[1], p[2]))
                .collect();
            enc.encode_rgb(Img::new(&rgb[..], w, h))
        }
        Layout::Rgba8 => {
            let rgba: Vec<RGBA8> = px
                .data
                .chunks_exact(4)
                .map(|p| RGBA8::new(p[0], p[1], p[2], p[3]))
                .collect();
            enc.encode_rgba(Img::new(&rgba[..], w, h))
        }
    };
    encoded
        .map(|e| e.avif_file)
        .map_err(|e| PipelineError::Internal(format!("encode: avif: {e}")))
}
