//! The two entry points that compose the pipeline: `normalize` (upload →
//! resolution ladder of stored rungs) and `render` (rung → N×N variant), plus
//! `pick_rung`.
//!
//! Normalize order: limits → decode first frame (stored orientation) → pick
//! the square in *upright* coordinates (crop or centre) → map it back to the
//! stored image → crop + Lanczos3 downscale to at most `master_side` (a
//! shrunk JPEG: each YCbCr plane, then converted, `shrunk`) → apply
//! the EXIF orientation to the (small) master → ICC → sRGB → drop an all-opaque
//! alpha → halve down to 64 px, each rung from the previous one → stored
//! (`encode_rung`: QOI, uncompressed or YCbCr planes) + BLAKE3.
//! Rotating and colour-converting the master instead of the full upload is
//! what keeps a 12 MP photo fast; both commute with cropping and (up to
//! rounding) with the symmetric resampling filter.
//!
//! Invariants: deterministic (same bytes in → same rung bytes out on a given
//! build and CPU), never upscales the master, rung 0 is the master and rungs
//! are strictly decreasing, each `>= 64` except a master that is itself smaller.

use image::metadata::Orientation;
use image::{DynamicImage, GenericImageView, RgbImage, RgbaImage};

use super::animated::{animated_ladder, encode_master};
use super::animation::decode_animation;
use super::classify::{classify, DECISION_SIDE};
use super::color::to_srgb;
use super::decode::{check_body, decode, decode_jpeg_shrunk, Decoded, Image};
use super::encode::{encode, encode_rung, is_striped, with_rung};
use super::geometry::{choose_square, swaps_axes, upright_to_stored, Square};
use super::jpeg::encode_jpeg;
use super::parallel::{install_if, join, map};
use super::resize::{crop_resize, resize_square};
use super::{
    AnimatedMaster, Compression, Crop, Encoding, Layout, Limits, Normalized, OutputFormat,
    PipelineError, Pixels, Rung,
};
use crate::model::ContentHash;
use crate::model::MAX_OUTPUT_SIDE;

/// Smallest rung side produced by halving (a master below it is kept alone).
pub const MIN_RUNG_SIDE: u32 = 64;
/// A master at least this large is resized and its ladder built on the helper
/// pool (`parallel`).
const PARALLEL_SIDE: u32 = 512;

fn into_pixels(img: DynamicImage) -> Pixels {
    let (width, height) = img.dimensions();
    if img.color().has_alpha() {
        Pixels {
            width,
            height,
            layout: Layout::Rgba8,
            data: img.into_rgba8().into_raw(),
        }
    } else {
        Pixels {
            width,
            height,
            layout: Layout::Rgb8,
            data: img.into_rgb8().into_raw(),
        }
    }
}

fn orient(px: Pixels, o: Orientation) -> Result<Pixels, PipelineError> {
    if o == Orientation::NoTransforms {
        return Ok(px);
    }
    let bad = || PipelineError::Internal("pixel buffer size mismatch".into());
    let mut img = match px.layout {
        Layout::Rgb8 => DynamicImage::ImageRgb8(
            RgbImage::from_raw(px.width, px.height, px.data).ok_or_else(bad)?,
        ),
        Layout::Rgba8 => DynamicImage::ImageRgba8(
            RgbaImage::from_raw(px.width, px.height, px.data).ok_or_else(bad)?,
        ),
    };
    img.apply_orientation(o);
    Ok(into_pixels(img))
}

fn drop_alpha(px: Pixels) -> Pixels {
    let data = px
        .data
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Pixels {
        layout: Layout::Rgb8,
        data,
        ..px
    }
}

/// Sides of the ladder for a master of side `master`: halvings while >= 64.
pub(crate) fn ladder_sides(master: u32) -> Vec<u32> {
    let mut sides = vec![master];
    let mut s = master / 2;
    while s >= MIN_RUNG_SIDE {
        sides.push(s);
        s /= 2;
    }
    sides
}

/// Decodes, orients, crops, colour-converts and downscales an upload, and
/// builds its resolution ladder (the still from the first frame).
pub fn normalize(
    bytes: &[u8],
    crop: Option<Crop>,
    limits: &Limits,
) -> Result<Normalized, PipelineError> {
    normalize_upload(bytes, crop, 0, limits)
}

/// [`normalize`], and for an animated GIF, APNG or WebP (issue 22) also its
/// animated master (see `animation`); the still ladder is made from frame
/// `still_frame` (0-based; only 0 is valid for a still image).
pub fn normalize_upload(
    bytes: &[u8],
    crop: Option<Crop>,
    still_frame: u32,
    limits: &Limits,
) -> Result<Normalized, PipelineError> {
    check_body(bytes, limits)?;
    let format = super::sniff::sniff(bytes)?;
    if let Some(a) = decode_animation(bytes, format, crop, still_frame, limits)? {
        let (w, h) = (a.still.width, a.still.height);
        let decoded = Decoded {
            format,
            image: Image::Pixels(DynamicImage::ImageRgba8(
                RgbaImage::from_raw(w, h, a.still.data)
                    .ok_or_else(|| PipelineError::Internal("still frame size".into()))?,
            )),
            orientation: Orientation::NoTransforms,
            icc: a.icc,
        };
        let mut normalized = ladder_from(decoded, 1, (w, h), crop, limits)?;
        let bytes = encode_master(&a.animation)?;
        let mut info = a.animation.info();
        let smaller = animated_ladder(a.animation)?;
        info.smaller = u8::try_from(smaller.len())
            .map_err(|_| PipelineError::Internal("animated ladder too long".into()))?;
        normalized.animation = Some(AnimatedMaster {
            info,
            hash: ContentHash::of(&bytes),
            bytes,
            smaller,
        });
        return Ok(normalized);
    }
    if still_frame > 0 {
        return Err(PipelineError::BadStillFrame {
            frame: still_frame,
            frames: 1,
        });
    }
    normalize_with(bytes, crop, limits, true)
}

/// [`normalize`] of a still, with shrink-on-load optional (tests compare both
/// paths).
fn normalize_with(
    bytes: &[u8],
    crop: Option<Crop>,
    limits: &Limits,
    shrink_on_load: bool,
) -> Result<Normalized, PipelineError> {
    check_body(bytes, limits)?;
    // Large JPEGs decode at 1/2, 1/4 or 1/8 scale when the square still has
    // at least `master_side` pixels after it; everything else at full size.
    let (decoded, scale, dims) =
        match decode_jpeg_shrunk(bytes, limits, crop).filter(|_| shrink_on_load) {
            Some(shrunk) => shrunk,
            None => {
                let d = decode(bytes, limits)?;
                let dims = d.image.dimensions();
                (d, 1, dims)
            }
        };
    ladder_from(decoded, scale, dims, crop, limits)
}

/// The still ladder of a decoded image (decoded at 1/`scale` of its full
/// stored size `sw`×`sh`).
fn ladder_from(
    decoded: Decoded,
    scale: u32,
    (sw, sh): (u32, u32),
    crop: Option<Crop>,
    limits: &Limits,
) -> Result<Normalized, PipelineError> {
    if limits.master_side == 0 {
        return Err(PipelineError::Internal("master_side must be >= 1".into()));
    }
    let swapped = swaps_axes(decoded.orientation);
    let (uw, uh) = if swapped { (sh, sw) } else { (sw, sh) };
    // Crop validation and the master's side use the file's full dimensions…
    let upright = choose_square(uw, uh, crop)?;
    let master_side = upright.side.min(limits.master_side);
    // …the crop itself is taken from the (possibly) scaled pixels: an
    // explicit crop scaled exactly (decode_jpeg_shrunk made sure it divides),
    // the default centre square re-centred.
    let (dw, dh) = decoded.image.dimensions();
    let (udw, udh) = if swapped { (dh, dw) } else { (dw, dh) };
    let upright = match (scale, crop) {
        (1, _) => upright,
        (_, None) => choose_square(udw, udh, None)?,
        (_, Some(_)) => scale_square(upright, scale, udw, udh),
    };
    let stored: Square = upright_to_stored(decoded.orientation, dw, dh, upright);
    // A master of `PARALLEL_SIDE` or more is resized and its ladder built on
    // the helper pool (issue 19); below it the hand-offs cost more than they
    // save.
    let split = master_side >= PARALLEL_SIDE;
    let master = match decoded.image {
        Image::Pixels(img) => {
            let source = into_pixels(img);
            install_if(split, || crop_resize(&source, stored, master_side))?
        }
        Image::Ycc(ycc) => install_if(split, || ycc.crop_resize(stored, master_side, split))?,
    };
    let mut master = orient(master, decoded.orientation)?;
    if let Some(icc) = decoded.icc.as_deref() {
        to_srgb(&mut master, icc);
    }
    let has_alpha =
        master.layout == Layout::Rgba8 && master.data.chunks_exact(4).any(|p| p[3] != 255);
    if master.layout == Layout::Rgba8 && !has_alpha {
        master = drop_alpha(master);
    }

    let sides = ladder_sides(master_side);
    let raw = limits.raw_rungs_up_to;
    let (ladder, compression) = install_if(split, || rungs(&master, &sides, raw, split))?;
    Ok(Normalized {
        source_format: decoded.format,
        has_alpha,
        compression,
        ladder,
        animation: None,
    })
}

/// The rungs of `sides` (`sides[0]` is `top`'s side), each halved from the
/// one before, and the lossy-or-lossless decision, made once on the largest
/// rung <= 256 px (the last rung when every one is larger, which halving rules
/// out). With `split` (called on the helper pool) the encodes, the halving
/// and the decision run side by side: the top rung's encode beside the
/// halvings, then every smaller rung's encode beside the decision. Each task's
/// output is the same as serially, so the ladder is.
fn rungs(
    top: &Pixels,
    sides: &[u32],
    raw_up_to: u32,
    split: bool,
) -> Result<(Vec<Rung>, Compression), PipelineError> {
    let decision = sides
        .iter()
        .position(|&s| s <= DECISION_SIDE)
        .unwrap_or(sides.len() - 1);
    let (first, below) = join(
        split,
        || rung(top, sides[0], raw_up_to, false),
        || -> Result<_, PipelineError> {
            let mut halved: Vec<Pixels> = Vec::with_capacity(sides.len());
            for &side in &sides[1..] {
                let previous = halved.last().unwrap_or(top);
                let whole = Square {
                    x: 0,
                    y: 0,
                    side: previous.width,
                };
                halved.push(crop_resize(previous, whole, side)?);
            }
            let image = |i: usize| if i == 0 { top } else { &halved[i - 1] };
            let (compression, smaller) = join(
                split,
                || classify(image(decision)),
                || {
                    map(split, &halved, |i, px| {
                        rung(px, sides[i + 1], raw_up_to, true)
                    })
                },
            );
            Ok((compression?, smaller?))
        },
    );
    let (compression, smaller) = below?;
    let mut ladder = Vec::with_capacity(sides.len());
    ladder.push(first?);
    ladder.extend(smaller);
    Ok((ladder, compression))
}

/// One rung: its stored bytes and their hash. Only rungs below the master
/// (`planes`) may be stored as YCbCr planes: the master stays lossless.
fn rung(px: &Pixels, side: u32, raw_up_to: u32, planes: bool) -> Result<Rung, PipelineError> {
    let bytes = encode_rung(px, raw_up_to, planes)?;
    let hash = ContentHash::of(&bytes);
    Ok(Rung { side, bytes, hash })
}

/// `sq` (in full-size upright pixels, offsets and side divisible by `scale`)
/// in an image decoded at 1/`scale` whose upright size is `w`×`h`; the clamp
/// is a second fence.
fn scale_square(sq: Square, scale: u32, w: u32, h: u32) -> Square {
    if scale <= 1 {
        return sq;
    }
    let (x, y) = ((sq.x / scale).min(w - 1), (sq.y / scale).min(h - 1));
    let side = (sq.side / scale).max(1).min(w - x).min(h - y);
    Square { x, y, side }
}

/// Peak working memory of [`render`] from a rung of side `rung` to `size`
/// px, bytes, as an upper estimate: the decoded rung (RGBA), and per output
/// pixel the resized RGBA, the resizer's intermediate pass and the encoder's
/// input conversion plus output. The render pool's memory budget is charged
/// this much before the render starts.
pub fn render_cost(rung: u32, size: u32) -> u64 {
    let (r, s) = (u64::from(rung), u64::from(size));
    4 * r * r + 12 * s * s
}

/// Index of the smallest rung whose side is >= `size`; if none is large
/// enough (or `sides` is empty), the largest rung's index (0 when sorted).
pub fn pick_rung(sides: &[u32], size: u32) -> usize {
    let adequate = sides
        .iter()
        .enumerate()
        .filter(|(_, &s)| s >= size)
        .min_by_key(|(i, &s)| (s, *i))
        .map(|(i, _)| i);
    adequate.unwrap_or_else(|| {
        sides
            .iter()
            .enumerate()
            .max_by_key(|(i, &s)| (s, std::cmp::Reverse(*i)))
            .map_or(0, |(i, _)| i)
    })
}

/// Renders a stored rung (salted or not) as a `size`×`size` variant in
/// `format`, encoded as `encoding` says (the master's compression, qualities).
pub fn render(
    stored: &[u8],
    size: u32,
    format: OutputFormat,
    encoding: Encoding,
) -> Result<Vec<u8>, PipelineError> {
    if size == 0 || size > MAX_OUTPUT_SIDE {
        return Err(PipelineError::BadSize(size));
    }
    let rung = super::salt::payload(stored);
    let planar = rung.starts_with(super::ycc::YCC_MAGIC);
    // A YCbCr rung of exactly the requested side is the JPEG encoder's own
    // input: no decode, no colour conversion (`ycc`).
    if format == OutputFormat::Jpeg && planar {
        let planes = super::ycc::planes(rung)?;
        if planes.width == size && planes.height == size {
            return encode_jpeg(size, size, |enc, _, _| enc.encode_image(planes));
        }
    }
    let render = || {
        with_rung(rung, |px| {
            // A rung of exactly the requested side is already the Lanczos3
            // result from its parent: encode it as it is (the common
            // 64/128/256/512 sizes).
            if px.width == size && px.height == size {
                return encode(px, format, encoding);
            }
            let out = resize_square(px, size)?;
            encode(&out, format, encoding)
        })
    };
    // A striped rung's stripes decode on every core, as a planar rung's
    // bands convert, and a large JPEG is encoded there too: one hand-off to
    // the helper pool for both.
    if is_striped(rung) || planar {
        super::parallel::install(render)
    } else {
        render()
    }
}

#[cfg(test)]
#[path = "ladder_tests.rs"]
mod tests;
