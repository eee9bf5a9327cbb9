//! JPEG variants: their settings and the one place that encodes them, from
//! RGB pixels (`encode`) or from a YCbCr rung's planes (`ycc`).
//!
//! Invariants: quality 85, `jpeg-encoder` with SIMD, optimized Huffman
//! tables, baseline at every size, alpha flattened onto white; from
//! `PARALLEL_JPEG_MIN_PIXELS` in restart segments encoded on every core,
//! byte-identical to the serial encode with the same interval.

use super::encode::with_out_scratch;
use super::PipelineError;

/// JPEG quality for variants.
pub const JPEG_QUALITY: u8 = 85;

/// Whether JPEG variants are progressive: no. `jpeg-encoder`'s progressive
/// mode is spectral selection only (no successive approximation): with
/// optimized Huffman tables, baseline's output was smaller for every photo
/// of the corpus at 256 px (by 3–14 %) and 512 px (4–30 %, median 6 %),
/// and faster to encode at 512 px (1.44 vs 1.68 ms): BENCHMARKS.md, issue
/// 19, twenty-first session.
/// Avatars are small enough that progressive display buys nothing.
const PROGRESSIVE: bool = false;

/// JPEG variants of at least this many pixels are encoded on every core
/// (`parallel.rs`): in restart segments, a quarter of the luma blocks each,
/// so the chroma scans of 4:2:0 are one segment apiece. The interval costs
/// its `DRI` segment, a 2-byte marker per segment and the bit padding each
/// segment ends with: 11 bytes on a 32.5 KB 512 px photo (0.03 %). Below this
/// size the hand-off to the pool costs more than the split saves.
const PARALLEL_JPEG_MIN_PIXELS: u32 = 384 * 384;

/// The restart interval of a JPEG variant encoded in parallel, if it is.
pub(super) fn parallel_jpeg_interval(w: u16, h: u16) -> Option<u16> {
    let (w, h) = (u32::from(w), u32::from(h));
    if w * h < PARALLEL_JPEG_MIN_PIXELS {
        return None;
    }
    let luma_blocks = w.div_ceil(8) * h.div_ceil(8);
    Some(u16::try_from(luma_blocks.div_ceil(4)).unwrap_or(u16::MAX))
}

/// Composites RGBA onto opaque white, returning RGB.
pub(super) fn flatten_on_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for p in rgba.chunks_exact(4) {
        let a = u32::from(p[3]);
        for &c in &p[..3] {
            // c·a + 255·(255−a), rounded, divided by 255: always <= 255.
            let v = (u32::from(c) * a + 255 * (255 - a) + 127) / 255;
            out.push(v as u8);
        }
    }
    out
}

/// A `width`×`height` JPEG variant written by `write` (its input: RGB
/// pixels, or a YCbCr rung's planes) with the variants' settings: quality
/// [`JPEG_QUALITY`], optimized Huffman tables, baseline, and from
/// `PARALLEL_JPEG_MIN_PIXELS` in restart segments on every core.
pub(crate) fn encode_jpeg(
    width: u32,
    height: u32,
    write: impl FnOnce(JpegEncoder, u16, u16) -> Result<(), jpeg_encoder::EncodingError> + Send,
) -> Result<Vec<u8>, PipelineError> {
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(PipelineError::Internal(format!(
            "{width}x{height} too large for JPEG"
        )));
    };
    with_out_scratch(|buf| {
        let mut enc = jpeg_encoder::Encoder::new(buf, JPEG_QUALITY);
        enc.set_optimized_huffman_tables(true);
        enc.set_progressive(PROGRESSIVE);
        let Some(interval) = parallel_jpeg_interval(w, h) else {
            return write(enc, w, h).map_err(PipelineError::from_encode);
        };
        enc.set_restart_interval(interval);
        enc.set_parallel(true);
        super::parallel::install(|| write(enc, w, h)).map_err(PipelineError::from_encode)
    })
}

/// The encoder [`encode_jpeg`] hands its writer.
pub(crate) type JpegEncoder<'a> = jpeg_encoder::Encoder<&'a mut Vec<u8>>;
