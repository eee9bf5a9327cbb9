//! Resampling with `fast_image_resize` (SIMD): crop + downscale for masters
//! and rungs, and `resize_square` for rendering variants.
//!
//! Invariants: outputs are exactly the requested size; RGBA is resampled with
//! premultiplied alpha (the library multiplies before and divides after), so
//! transparent pixels never bleed a dark fringe into the edges. Shrinking uses
//! Lanczos3; enlarging uses Catmull-Rom (sharp, less ringing than Lanczos3 on
//! upscales). Buffers are validated against their declared size first.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::geometry::Square;
use super::{Layout, PipelineError, Pixels};
use crate::model::MAX_OUTPUT_SIDE;

pub(crate) fn channels(layout: Layout) -> usize {
    match layout {
        Layout::Rgb8 => 3,
        Layout::Rgba8 => 4,
    }
}

/// Checks that `px.data` holds exactly width×height pixels.
pub(crate) fn check_buffer(px: &Pixels<impl AsRef<[u8]>>) -> Result<(), PipelineError> {
    let want = (px.width as usize)
        .checked_mul(px.height as usize)
        .and_then(|n| n.checked_mul(channels(px.layout)));
    let len = px.data.as_ref().len();
    if want != Some(len) || px.width == 0 || px.height == 0 {
        return Err(PipelineError::Internal(format!(
            "pixel buffer of {} bytes does not match {}x{} {:?}",
            len, px.width, px.height, px.layout
        )));
    }
    Ok(())
}

fn pixel_type(layout: Layout) -> PixelType {
    match layout {
        Layout::Rgb8 => PixelType::U8x3,
        Layout::Rgba8 => PixelType::U8x4,
    }
}

/// Copies square `r` out of `px` without resampling.
fn crop_copy(px: &Pixels<&[u8]>, r: Square) -> Pixels {
    let ch = channels(px.layout);
    let row = px.width as usize * ch;
    let side = r.side as usize;
    let mut data = Vec::with_capacity(side * side * ch);
    for y in r.y as usize..r.y as usize + side {
        let start = y * row + r.x as usize * ch;
        data.extend_from_slice(&px.data[start..start + side * ch]);
    }
    Pixels {
        width: r.side,
        height: r.side,
        layout: px.layout,
        data,
    }
}

/// Takes square `r` of `px` and resamples it to `out`×`out`.
/// `r` must lie inside `px` (checked: `Internal` otherwise).
pub(crate) fn crop_resize(
    px: &Pixels<impl AsRef<[u8]>>,
    r: Square,
    out: u32,
) -> Result<Pixels, PipelineError> {
    check_buffer(px)?;
    super::parallel::init();
    let px = px.view();
    let inside = |o: u32, len: u32| o.checked_add(r.side).is_some_and(|e| e <= len);
    if r.side == 0 || out == 0 || !inside(r.x, px.width) || !inside(r.y, px.height) {
        return Err(PipelineError::Internal(format!(
            "region {r:?} outside {}x{}",
            px.width, px.height
        )));
    }
    if out == r.side {
        return Ok(crop_copy(&px, r));
    }
    let pt = pixel_type(px.layout);
    let src = ImageRef::new(px.width, px.height, px.data, pt)
        .map_err(|e| PipelineError::Internal(format!("resize source: {e}")))?;
    let mut dst = Image::new(out, out, pt);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(filter(
            f64::from(out),
            f64::from(r.side),
        )))
        .crop(
            f64::from(r.x),
            f64::from(r.y),
            f64::from(r.side),
            f64::from(r.side),
        )
        .use_alpha(true);
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| PipelineError::Internal(format!("resize: {e}")))?;
    Ok(Pixels {
        width: out,
        height: out,
        layout: px.layout,
        data: dst.into_vec(),
    })
}

/// The one filter rule: Lanczos3 when a region of side `from` shrinks to
/// `out`, Catmull-Rom when it keeps its size or grows.
fn filter(out: f64, from: f64) -> FilterType {
    if out < from {
        FilterType::Lanczos3
    } else {
        FilterType::CatmullRom
    }
}

/// A region of one 8-bit plane (`width`×`height` samples, rows packed),
/// given in samples and possibly fractional (a subsampled chroma plane's
/// share of a luma square), resampled to `out`×`out` with the filter
/// [`filter`] picks for its shorter side, as `crop_resize` does. The region
/// must lie inside the plane (`Internal` otherwise).
pub(crate) fn resize_plane(
    data: &[u8],
    (width, height): (u32, u32),
    (x, y, w, h): (f64, f64, f64, f64),
    out: u32,
) -> Result<Vec<u8>, PipelineError> {
    let inside = |o: f64, len: f64, size: u32| o >= 0.0 && len > 0.0 && o + len <= f64::from(size);
    if out == 0 || !inside(x, w, width) || !inside(y, h, height) {
        return Err(PipelineError::Internal(format!(
            "plane region {x},{y} {w}x{h} outside {width}x{height}"
        )));
    }
    super::parallel::init();
    let src = ImageRef::new(width, height, data, PixelType::U8)
        .map_err(|e| PipelineError::Internal(format!("resize plane: {e}")))?;
    let mut dst = Image::new(out, out, PixelType::U8);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(filter(f64::from(out), w.min(h))))
        .crop(x, y, w, h);
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| PipelineError::Internal(format!("resize plane: {e}")))?;
    Ok(dst.into_vec())
}

/// Resizes a square image to exactly `size`×`size` (1..=2048).
pub fn resize_square(px: &Pixels<impl AsRef<[u8]>>, size: u32) -> Result<Pixels, PipelineError> {
    if size == 0 || size > MAX_OUTPUT_SIDE {
        return Err(PipelineError::BadSize(size));
    }
    if px.width != px.height {
        return Err(PipelineError::Internal(format!(
            "resize_square needs a square, got {}x{}",
            px.width, px.height
        )));
    }
    let whole = Square {
        x: 0,
        y: 0,
        side: px.width,
    };
    crop_resize(px, whole, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn solid(side: u32, layout: Layout, px: &[u8]) -> Pixels {
        let n = (side * side) as usize;
        Pixels {
            width: side,
            height: side,
            layout,
            data: px.iter().copied().cycle().take(n * px.len()).collect(),
        }
    }

    #[test]
    fn bad_sizes_and_shapes() {
        let p = solid(4, Layout::Rgb8, &[1, 2, 3]);
        for s in [0, 2049, u32::MAX] {
            assert!(matches!(resize_square(&p, s), Err(PipelineError::BadSize(x)) if x == s));
        }
        let mut rect = p.clone();
        rect.width = 8;
        rect.height = 2;
        assert!(matches!(
            resize_square(&rect, 4),
            Err(PipelineError::Internal(_))
        ));
        let mut short = p.clone();
        short.data.pop();
        assert!(matches!(
            resize_square(&short, 4),
            Err(PipelineError::Internal(_))
        ));
    }

    #[test]
    fn solid_colour_stays_solid_both_ways() {
        for (layout, c) in [
            (Layout::Rgb8, &[200u8, 10, 60][..]),
            (Layout::Rgba8, &[9, 99, 199, 255][..]),
        ] {
            let p = solid(37, layout, c);
            for size in [1, 5, 37, 100, 300] {
                let out = resize_square(&p, size).unwrap();
                assert_eq!((out.width, out.height, out.layout), (size, size, layout));
                assert!(out.data.chunks(c.len()).all(|px| px == c), "{size}");
            }
        }
    }

    #[test]
    fn crop_copy_is_exact() {
        let p: Pixels = Pixels {
            width: 3,
            height: 3,
            layout: Layout::Rgb8,
            data: (0..27).collect(),
        };
        let out = crop_resize(
            &p,
            Square {
                x: 1,
                y: 1,
                side: 2,
            },
            2,
        )
        .unwrap();
        assert_eq!(
            out.data,
            vec![12, 13, 14, 15, 16, 17, 21, 22, 23, 24, 25, 26]
        );
        assert!(crop_resize(
            &p,
            Square {
                x: 2,
                y: 0,
                side: 2
            },
            2
        )
        .is_err());
    }

    #[test]
    fn transparent_black_does_not_darken_edges() {
        // Left half opaque red, right half transparent black.
        let mut p = solid(64, Layout::Rgba8, &[0, 0, 0, 0]);
        for y in 0..64usize {
            for x in 0..32usize {
                let i = (y * 64 + x) * 4;
                p.data[i..i + 4].copy_from_slice(&[255, 0, 0, 255]);
            }
        }
        let out = resize_square(&p, 9).unwrap();
        for px in out.data.chunks(4) {
            if px[3] > 8 {
                assert!(px[0] >= 250, "edge darkened: {px:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn output_is_exactly_size(side in 1u32..=40, size in 1u32..=2048, rgba in any::<bool>(), seed in any::<u8>()) {
            let layout = if rgba { Layout::Rgba8 } else { Layout::Rgb8 };
            let n = (side * side) as usize * channels(layout);
            let p: Pixels = Pixels { width: side, height: side, layout,
                data: (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect() };
            let out = resize_square(&p, size).unwrap();
            prop_assert_eq!((out.width, out.height), (size, size));
            prop_assert_eq!(out.data.len(), (size * size) as usize * channels(layout));
        }
    }
}
