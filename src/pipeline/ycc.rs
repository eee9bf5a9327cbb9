//! Rungs stored as the JPEG encoder's own YCbCr 4:2:0 planes (`AEy1`, issue
//! 19): the 512 px rung of a photograph.
//!
//! A cold 512 px JPEG render from a QOI rung spent ~42 % of its CPU decoding
//! the rung and ~4 % converting it back to YCbCr; stored as planes, the
//! render is the encoder alone, and the rung is 1.5 bytes per pixel (393 KB
//! at 512 px; striped QOI took 333–547 KB for the photo fixtures, raw RGB
//! 786 KB).
//!
//! Invariants:
//! - The planes are what the encoder computes from the RGB rung at
//!   [`JPEG_QUALITY`](super::JPEG_QUALITY) (4:2:0, each chroma sample the
//!   top-left pixel's of its 2×2 block, `jpeg_encoder::rgb_to_ycbcr`, which
//!   its SIMD path matches), so a JPEG variant of the rung's own size is
//!   byte-identical to the one encoded from the RGB rung
//!   (`ycc_tests::jpeg_from_the_planes_is_the_jpeg_from_the_pixels`).
//! - Only opaque rungs whose sides are multiples of 16 (the 4:2:0 MCU) are
//!   stored so: the encoder then pads nothing, so it never needs a chroma
//!   sample the planes do not keep.
//! - Every other render converts the planes back to RGB (chroma repeated over
//!   its 2×2 block), so it sees the photo with 4:2:0 chroma, as the JPEG,
//!   lossy WebP and AVIF variants already encode it.
//! - A corrupt rung is `Internal` (we wrote it), checked before any pixel is
//!   read or allocated.
//!
//! Layout: `AEy1`, width and height (u32 big-endian), then the Y plane
//! (width × height bytes), the Cb plane and the Cr plane (width/2 × height/2
//! bytes each), rows top to bottom.

use jpeg_encoder::{rgb_to_ycbcr, ImageBuffer, JpegColorType};

use super::encode::{be32, check_rung_side, sized_for_decode};
use super::{Layout, PipelineError, Pixels};

/// Magic of a YCbCr rung. No other rung starts with it (`qoif`, `AEq1`,
/// `AEr1`, `RIFF`).
pub(crate) const YCC_MAGIC: &[u8; 4] = b"AEy1";
const YCC_HEADER: usize = 12;
/// A YCbCr rung's sides are multiples of this: 4:2:0's minimum coded unit.
const MCU: u32 = 16;

/// Could `px` be stored as planes? Opaque, sides multiples of 16.
pub(crate) fn fits(px: &Pixels) -> bool {
    px.layout == Layout::Rgb8 && px.width % MCU == 0 && px.height % MCU == 0
}

/// The planes of `px` (which [`fits`]) as a stored rung.
pub(crate) fn encode_ycc_rung(px: &Pixels) -> Result<Vec<u8>, PipelineError> {
    if !fits(px) {
        return Err(PipelineError::Internal(format!(
            "ycc rung: {}x{} {:?} is not opaque in 16 px blocks",
            px.width, px.height, px.layout
        )));
    }
    super::resize::check_buffer(px)?;
    let (w, h) = (px.width as usize, px.height as usize);
    let mut out = vec![0u8; YCC_HEADER + w * h * 3 / 2];
    out[..4].copy_from_slice(YCC_MAGIC);
    out[4..8].copy_from_slice(&px.width.to_be_bytes());
    out[8..12].copy_from_slice(&px.height.to_be_bytes());
    let (luma, chroma) = out[YCC_HEADER..].split_at_mut(w * h);
    let (cb, cr) = chroma.split_at_mut(w * h / 4);
    for (y, (row, luma)) in px
        .data
        .chunks_exact(w * 3)
        .zip(luma.chunks_exact_mut(w))
        .enumerate()
    {
        for (p, l) in row.chunks_exact(3).zip(luma.iter_mut()) {
            *l = rgb_to_ycbcr(p[0], p[1], p[2]).0;
        }
        if y % 2 == 0 {
            let at = y / 2 * (w / 2);
            let (cb, cr) = (&mut cb[at..at + w / 2], &mut cr[at..at + w / 2]);
            for ((p, b), r) in row.chunks_exact(6).zip(cb).zip(cr) {
                (_, *b, *r) = rgb_to_ycbcr(p[0], p[1], p[2]);
            }
        }
    }
    Ok(out)
}

/// The length a YCbCr rung's header says it has, if it has one.
pub(crate) fn ycc_rung_len(rung: &[u8]) -> Option<usize> {
    let header = rung.get(..YCC_HEADER)?;
    (be32(header, 4) as usize)
        .checked_mul(be32(header, 8) as usize)?
        .checked_mul(3)
        .map(|n| n / 2 + YCC_HEADER)
}

/// A YCbCr rung's planes, borrowed from its bytes; also the encoder's input
/// ([`ImageBuffer`]).
pub(crate) struct Planes<'a> {
    pub width: u32,
    pub height: u32,
    luma: &'a [u8],
    cb: &'a [u8],
    cr: &'a [u8],
}

/// The planes of a YCbCr rung (its salt already cut), its header checked
/// against its length.
pub(crate) fn planes(bytes: &[u8]) -> Result<Planes<'_>, PipelineError> {
    let corrupt = |why: &str| PipelineError::Internal(format!("corrupt ycc rung: {why}"));
    let header = bytes
        .get(..YCC_HEADER)
        .filter(|h| h.starts_with(YCC_MAGIC))
        .ok_or_else(|| corrupt("short header"))?;
    let (width, height) = (be32(header, 4), be32(header, 8));
    check_rung_side(width, height)?;
    if width % MCU != 0 || height % MCU != 0 {
        return Err(corrupt("sides not multiples of 16"));
    }
    if ycc_rung_len(bytes) != Some(bytes.len()) {
        return Err(corrupt("length does not match the header"));
    }
    let n = width as usize * height as usize;
    let (luma, chroma) = bytes[YCC_HEADER..].split_at(n);
    let (cb, cr) = chroma.split_at(n / 4);
    Ok(Planes {
        width,
        height,
        luma,
        cb,
        cr,
    })
}

impl ImageBuffer for Planes<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    // `planes` checked both sides against `MAX_RUNG_SIDE` (16384).
    fn width(&self) -> u16 {
        self.width as u16
    }

    fn height(&self) -> u16 {
        self.height as u16
    }

    /// Row `y` at full resolution, as the encoder's own RGB input fills it:
    /// each chroma sample twice. At 4:2:0 the encoder reads the even rows'
    /// even columns, which are the samples stored.
    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let (w, y) = (self.width as usize, usize::from(y));
        buffers[0].extend_from_slice(&self.luma[y * w..][..w]);
        let at = y / 2 * (w / 2);
        for (plane, buf) in [(self.cb, 1), (self.cr, 2)] {
            buffers[buf].extend(plane[at..at + w / 2].iter().flat_map(|&v| [v, v]));
        }
    }
}

/// Rows per band of a conversion on the helper pool ([`to_rgb`], and
/// `shrunk`'s master; even: a band holds whole chroma rows); 8 bands at
/// 512 px.
pub(super) const BAND_ROWS: usize = 64;

// JFIF's YCbCr → RGB in 16.16 fixed point, the one conversion back: planar
// rungs here, a shrunk JPEG's master in `shrunk` (`ycc_pixel`).
const R_CR: i32 = 91_881; // 1.402
const G_CB: i32 = 22_554; // 0.344136
const G_CR: i32 = 46_802; // 0.714136
const B_CB: i32 = 116_130; // 1.772
const HALF: i32 = 1 << 15;

/// One pixel of JFIF's YCbCr → RGB (the constants above).
#[inline]
pub(crate) fn ycc_pixel(l: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (l, cb, cr) = (i32::from(l) << 16, i32::from(cb) - 128, i32::from(cr) - 128);
    [
        ((l + R_CR * cr + HALF) >> 16).clamp(0, 255) as u8,
        ((l + HALF - G_CB * cb - G_CR * cr) >> 16).clamp(0, 255) as u8,
        ((l + B_CB * cb + HALF) >> 16).clamp(0, 255) as u8,
    ]
}

/// The planes as RGB pixels in `buf` (its allocation reused), each chroma
/// sample repeated over its 2×2 block; JFIF's inverse of
/// `jpeg_encoder::rgb_to_ycbcr`, in 16.16 fixed point, in bands of rows on
/// the helper pool (`parallel`).
pub(crate) fn to_rgb(p: &Planes, mut buf: Vec<u8>) -> Pixels {
    use rayon::prelude::*;
    let w = p.width as usize;
    sized_for_decode(&mut buf, w * p.height as usize * 3);
    let row = |y: usize, out: &mut [u8], luma: &[u8]| {
        let at = y / 2 * (w / 2);
        let chroma = p.cb[at..at + w / 2].iter().zip(&p.cr[at..at + w / 2]);
        for ((out, luma), (&cb, &cr)) in out
            .chunks_exact_mut(6)
            .zip(luma.chunks_exact(2))
            .zip(chroma)
        {
            let (cb, cr) = (i32::from(cb) - 128, i32::from(cr) - 128);
            let (r, g, b) = (
                R_CR * cr + HALF,
                HALF - G_CB * cb - G_CR * cr,
                B_CB * cb + HALF,
            );
            for (px, &l) in out.chunks_exact_mut(3).zip(luma) {
                let l = i32::from(l) << 16;
                px[0] = ((l + r) >> 16).clamp(0, 255) as u8;
                px[1] = ((l + g) >> 16).clamp(0, 255) as u8;
                px[2] = ((l + b) >> 16).clamp(0, 255) as u8;
            }
        }
    };
    super::parallel::install(|| {
        (buf.par_chunks_mut(BAND_ROWS * w * 3))
            .zip(p.luma.par_chunks(BAND_ROWS * w))
            .enumerate()
            .for_each(|(band, (out, luma))| {
                let rows = out.chunks_exact_mut(w * 3).zip(luma.chunks_exact(w));
                for (i, (out, luma)) in rows.enumerate() {
                    row(band * BAND_ROWS + i, out, luma);
                }
            });
    });
    Pixels {
        width: p.width,
        height: p.height,
        layout: Layout::Rgb8,
        data: buf,
    }
}

#[cfg(test)]
#[path = "ycc_tests.rs"]
mod tests;
