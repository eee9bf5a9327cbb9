//! A shrunk JPEG's master from its YCbCr planes (issue 19).
//!
//! A large baseline JPEG decoded at 1/2–1/8 scale (`decode`) comes out of the
//! decoder as its components' planes (the `jpeg-decoder` fork's
//! `decode_to_planes`): full-resolution luma and, for the usual 4:2:0, chroma
//! at half its width and height. Instead of upsampling the chroma, converting
//! every decoded pixel to RGB and resizing three channels of the whole
//! square, each plane's share of the square is resized straight to the
//! master's side (the chroma planes' shares are fractional when the square's
//! edges fall between chroma samples), and only the master's pixels are
//! converted. For a 12 MP photo that is half the samples resized (1512² luma
//! and 2 × 756² chroma against 3 × 1512²) and a third of the pixels converted
//! (1024² against 2016 × 1512).
//!
//! The result is not the RGB path's bytes: resampling commutes with the
//! (affine) colour conversion only up to rounding and clamping, and the
//! chroma is interpolated by the resize filter instead of the decoder's
//! triangle upsampler (mean channel difference from the RGB path ≤ 1, tested).
//!
//! Invariants: only YCbCr frames with integer sampling ratios whose planes
//! cover the image take this path (`YccImage::new` hands anything else back
//! for the decoder's own conversion); chroma is sited as JFIF does, centred
//! on the luma samples it covers; no I/O, no threads of its own (the three
//! planes and the conversion's bands split on the helper pool when `split`).

use jpeg_decoder::{ColorTransform, Planes};

use super::geometry::Square;
use super::parallel::join;
use super::resize::resize_plane;
use super::ycc::{ycc_pixel, BAND_ROWS};
use super::{Layout, PipelineError, Pixels};

/// One component's samples, rows packed.
struct Plane {
    width: u32,
    height: u32,
    /// Image (luma) pixels per sample across and down.
    step: (u32, u32),
    data: Vec<u8>,
}

/// A decoded JPEG's Y, Cb and Cr planes at the decoded scale.
pub(crate) struct YccImage {
    width: u32,
    height: u32,
    planes: [Plane; 3],
}

impl YccImage {
    /// `p` when it is YCbCr with integer sampling ratios and each plane
    /// holds the samples its size says and covers the image; else `p` back.
    pub(crate) fn new(mut p: Planes) -> Result<Self, Box<Planes>> {
        let (width, height) = (u32::from(p.width), u32::from(p.height));
        let planes: [jpeg_decoder::Plane; 3] = match std::mem::take(&mut p.planes).try_into() {
            Ok(planes) => planes,
            Err(planes) => {
                p.planes = planes;
                return Err(Box::new(p));
            }
        };
        let h = planes.iter().map(|c| c.sampling.0).max().unwrap_or(0);
        let v = planes.iter().map(|c| c.sampling.1).max().unwrap_or(0);
        let covers = |c: &jpeg_decoder::Plane| {
            let (sh, sv) = c.sampling;
            let (cw, ch) = (c.width as u64, c.height as u64);
            sh > 0
                && sv > 0
                && h % sh == 0
                && v % sv == 0
                && cw > 0
                && ch > 0
                && cw <= u64::from(u32::MAX)
                && ch <= u64::from(u32::MAX)
                && c.stride >= c.width
                && c.data.len() as u64 >= c.stride as u64 * ch
                && cw * u64::from(h / sh) >= u64::from(width)
                && ch * u64::from(v / sv) >= u64::from(height)
        };
        let fits = p.color_transform == ColorTransform::YCbCr && planes.iter().all(covers);
        if !fits || width == 0 || height == 0 {
            p.planes = planes.into();
            return Err(Box::new(p));
        }
        let planes = planes.map(|c| {
            let mut data = c.data;
            if c.stride != c.width {
                for row in 1..c.height {
                    data.copy_within(row * c.stride..row * c.stride + c.width, row * c.width);
                }
            }
            data.truncate(c.width * c.height);
            Plane {
                // Checked above: each fits in u32.
                width: c.width as u32,
                height: c.height as u32,
                step: (u32::from(h / c.sampling.0), u32::from(v / c.sampling.1)),
                data,
            }
        });
        Ok(Self {
            width,
            height,
            planes,
        })
    }

    /// The image's size at the decoded scale.
    pub(crate) fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Square `r` (in image pixels) resampled to `out`×`out` RGB; the planes
    /// and the conversion's bands side by side on the helper pool when
    /// `split` (the caller is on it).
    pub(crate) fn crop_resize(
        &self,
        r: Square,
        out: u32,
        split: bool,
    ) -> Result<Pixels, PipelineError> {
        let inside = |o: u32, len: u32| o.checked_add(r.side).is_some_and(|e| e <= len);
        if r.side == 0 || out == 0 || !inside(r.x, self.width) || !inside(r.y, self.height) {
            return Err(PipelineError::Internal(format!(
                "region {r:?} outside {}x{}",
                self.width, self.height
            )));
        }
        let sized = |p: &Plane| {
            let (sx, sy) = (f64::from(p.step.0), f64::from(p.step.1));
            let side = f64::from(r.side);
            let region = (
                f64::from(r.x) / sx,
                f64::from(r.y) / sy,
                side / sx,
                side / sy,
            );
            resize_plane(&p.data, (p.width, p.height), region, out)
        };
        let [y, cb, cr] = &self.planes;
        let (y, (cb, cr)) = join(
            split,
            || sized(y),
            || join(split, || sized(cb), || sized(cr)),
        );
        let (y, cb, cr) = (y?, cb?, cr?);
        let n = out as usize;
        let mut data = vec![0; n * n * 3];
        let band = |(i, rows): (usize, &mut [u8])| {
            let at = i * BAND_ROWS * n;
            let samples = y[at..].iter().zip(&cb[at..]).zip(&cr[at..]);
            for (px, ((&l, &b), &r)) in rows.chunks_exact_mut(3).zip(samples) {
                px.copy_from_slice(&ycc_pixel(l, b, r));
            }
        };
        if split {
            use rayon::prelude::*;
            data.par_chunks_mut(BAND_ROWS * n * 3)
                .enumerate()
                .for_each(band);
        } else {
            data.chunks_mut(BAND_ROWS * n * 3)
                .enumerate()
                .for_each(band);
        }
        Ok(Pixels {
            width: out,
            height: out,
            layout: Layout::Rgb8,
            data,
        })
    }
}

#[cfg(test)]
#[path = "shrunk_tests.rs"]
mod tests;
