//! Animated masters and variants (issue 22).
//!
//! The stored animated master is a *lossless* animated WebP: exact pixels for
//! every later resize, and a file any WebP tool can open (backups stay
//! inspectable). Its frames are the composited, de-duplicated frames of
//! [`Animation`], so rendering never needs the upload again. Below it the
//! upload stores smaller animated rungs, halving down to
//! [`MIN_ANIMATED_RUNG_SIDE`] ([`animated_ladder`]).
//!
//! A render decodes the smallest animated rung at least as large as asked
//! (libwebp's animation decoder composites), resizes each frame to the
//! requested side and encodes an animated WebP or an animated GIF (a palette
//! per frame by NeuQuant, the `color_quant` crate through `gif`; delays in
//! centiseconds). Delays and the loop count are carried through unchanged
//! (GIF rounds delays to 10 ms).
//!
//! Animated WebP is muxed by `webp_mux`: every frame (only its changed
//! rectangle) encoded once, durations exact. A variant's frames are encoded
//! exactly as a still WebP variant is (`encode::encode`: lossy libwebp or
//! lossless image-webp, by the master's `Compression`); stored rungs with
//! libwebp's lossless encoder.

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, RgbaImage};

use super::animation::{Animation, Frame};
use super::encode::encode;
use super::resize::{check_buffer, resize_square};
use super::webp_mux::{mux_animated_webp, MuxFrame};
use super::{Encoding, Layout, PipelineError, Pixels, Rung};
use crate::model::{AnimationInfo, ContentHash, OutputFormat, MAX_OUTPUT_SIDE};

/// Speed of NeuQuant in GIF variants (1 best … 30 fastest; 10 is the
/// `gif` crate's own default for `from_rgba`).
const GIF_SPEED: i32 = 10;

/// Smallest side of a smaller animated rung: animated masters are stored
/// halving down to it (512 → 256, 128, 64), a third more bytes, so a cold
/// 64 px render decodes 1/64 of the master's pixels (issue 22's cost target:
/// decoding every frame of the 512 px master alone took ~240 ms).
pub const MIN_ANIMATED_RUNG_SIDE: u32 = 64;

/// The smaller animated rungs of `anim`: each half the side of the one
/// before, down to [`MIN_ANIMATED_RUNG_SIDE`], every frame resized from the
/// rung above and identical consecutive frames merged, stored like the
/// master ([`encode_master`]).
pub fn animated_ladder(mut anim: Animation) -> Result<Vec<Rung>, PipelineError> {
    let mut rungs = Vec::new();
    while anim.side / 2 >= MIN_ANIMATED_RUNG_SIDE {
        let side = anim.side / 2;
        let mut frames: Vec<Frame> = Vec::with_capacity(anim.frames.len());
        for f in &anim.frames {
            let px = resize_square(&f.px, side)?;
            match frames.last_mut() {
                Some(last) if last.px == px => {
                    last.delay_ms = last.delay_ms.saturating_add(f.delay_ms)
                }
                _ => frames.push(Frame {
                    px,
                    delay_ms: f.delay_ms,
                }),
            }
        }
        anim = Animation {
            side,
            loop_count: anim.loop_count,
            frames,
        };
        let bytes = encode_master(&anim)?;
        rungs.push(Rung {
            side,
            hash: ContentHash::of(&bytes),
            bytes,
        });
    }
    Ok(rungs)
}

/// Peak working memory of an animated render from the animated rung of side
/// `rung` of a master described by `info` to `size` px, bytes, charged by
/// frames × pixels: libwebp's animation decoder hands over every composited
/// rung frame at once (the frames and our RGBA copy of the one being
/// resized), then every output frame is held for the encoder, plus its
/// working copy of one. The render pool's memory budget is charged this much
/// (from a 45-frame 512 px rung: ~48 MiB, so it runs alone under the default
/// 32 MiB budget; from its 64 px rung ~1.5 MiB).
pub fn animated_render_cost(info: &AnimationInfo, rung: u32, size: u32) -> u64 {
    let (m, s) = (u64::from(rung.min(info.side)), u64::from(size));
    let frames = u64::from(info.frames.max(1));
    frames * 4 * m * m + 8 * m * m + frames * 4 * s * s + 12 * s * s
}

/// libwebp's lossless settings for stored animated rungs: effort, not
/// fidelity (lossless is exact at any quality): fast and still compact, the
/// RGB under transparent pixels kept.
fn master_config() -> Result<webp::WebPConfig, PipelineError> {
    let mut config = webp::WebPConfig::new()
        .map_err(|()| PipelineError::Internal("encode: libwebp version mismatch".into()))?;
    config.lossless = 1;
    config.quality = 25.0;
    config.method = 1;
    config.exact = 1;
    Ok(config)
}

/// Encodes `frames` (all `side`×`side`, RGBA) as an animated WebP, each
/// frame (or changed rectangle) once by `encode_still` (see `webp_mux`).
fn encode_webp(
    frames: &[Frame],
    side: u32,
    loop_count: u32,
    encode_still: impl FnMut(&Pixels) -> Result<Vec<u8>, PipelineError>,
) -> Result<Vec<u8>, PipelineError> {
    let frames: Vec<MuxFrame<'_>> = frames
        .iter()
        .map(|f| MuxFrame {
            px: &f.px,
            delay_ms: f.delay_ms,
        })
        .collect();
    mux_animated_webp(&frames, side, loop_count, encode_still)
}

/// The stored form of an animated master (and of its smaller rungs):
/// lossless animated WebP, frames by libwebp's lossless encoder (more
/// compact than image-webp's, and uploads are rarer than renders).
pub fn encode_master(anim: &Animation) -> Result<Vec<u8>, PipelineError> {
    let config = master_config()?;
    encode_webp(&anim.frames, anim.side, anim.loop_count, |px| {
        let mem = webp::Encoder::from_rgba(&px.data, px.width, px.height)
            .encode_advanced(&config)
            .map_err(|e| PipelineError::Internal(format!("encode: libwebp: {e:?}")))?;
        Ok(mem.to_vec())
    })
}

/// Decodes a stored animated master (bytes we wrote: failures are ours).
pub fn decode_master(bytes: &[u8]) -> Result<Animation, PipelineError> {
    decode_frames(bytes, Ok)
}

/// Decodes a stored animated WebP with libwebp's own animation decoder (the
/// reference compositor: exact for what its encoder wrote), passing each RGBA
/// frame through `map`. All frames are composited at once; the master's size
/// was bounded at upload (`MASTER_FRAME_BUDGET`) and [`animated_render_cost`]
/// charges it.
fn decode_frames(
    bytes: &[u8],
    mut map: impl FnMut(Pixels) -> Result<Pixels, PipelineError>,
) -> Result<Animation, PipelineError> {
    let internal = |e: String| PipelineError::Internal(format!("stored animation: {e}"));
    let decoded = webp::AnimDecoder::new(bytes).decode().map_err(internal)?;
    let mut frames = Vec::with_capacity(decoded.len());
    let mut previous_end = 0i32;
    for f in &decoded {
        let (w, h) = (f.width(), f.height());
        if w != h || w > MAX_OUTPUT_SIDE {
            return Err(internal(format!("{w}x{h} is not a square master")));
        }
        let data = match f.get_layout() {
            webp::PixelLayout::Rgba => f.get_image().to_vec(),
            webp::PixelLayout::Rgb => f
                .get_image()
                .chunks_exact(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect(),
        };
        // libwebp reports each frame's *end* time.
        let end = f.get_time_ms();
        let delay_ms = u32::try_from(end.saturating_sub(previous_end)).unwrap_or(0);
        previous_end = end;
        let px = map(Pixels {
            width: w,
            height: h,
            layout: Layout::Rgba8,
            data,
        })?;
        frames.push(Frame { px, delay_ms });
    }
    let side = frames
        .first()
        .map(|f| f.px.width)
        .ok_or_else(|| internal("no frames".into()))?;
    Ok(Animation {
        side,
        loop_count: decoded.loop_count,
        frames,
    })
}

/// Renders a stored animated master as a `size`×`size` animated variant:
/// WebP or GIF (any other format is a still and never comes here).
pub fn render_animated(
    master: &[u8],
    size: u32,
    format: OutputFormat,
    encoding: Encoding,
) -> Result<Vec<u8>, PipelineError> {
    if size == 0 || size > MAX_OUTPUT_SIDE {
        return Err(PipelineError::BadSize(size));
    }
    let anim = decode_frames(super::salt::payload(master), |px| {
        if px.width == size {
            Ok(px)
        } else {
            resize_square(&px, size)
        }
    })?;
    match format {
        // Every frame encoded as a still WebP variant is.
        OutputFormat::Webp => encode_webp(&anim.frames, size, anim.loop_count, |px| {
            encode(px, OutputFormat::Webp, encoding)
        }),
        OutputFormat::Gif => encode_gif(&anim.frames, Some(anim.loop_count)),
        other => Err(PipelineError::Internal(format!(
            "no animated {}",
            other.extension()
        ))),
    }
}

/// GIF of `frames`: one frame without a loop count is a still GIF.
pub(crate) fn encode_gif(
    frames: &[Frame],
    loop_count: Option<u32>,
) -> Result<Vec<u8>, PipelineError> {
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new_with_speed(&mut out, GIF_SPEED);
        if let Some(n) = loop_count {
            let repeat = match u16::try_from(n) {
                Ok(0) | Err(_) => Repeat::Infinite,
                Ok(n) => Repeat::Finite(n),
            };
            enc.set_repeat(repeat).map_err(PipelineError::from_encode)?;
        }
        for f in frames {
            check_buffer(&f.px)?;
            let rgba = match f.px.layout {
                Layout::Rgba8 => f.px.data.clone(),
                Layout::Rgb8 => {
                    f.px.data
                        .chunks_exact(3)
                        .flat_map(|p| [p[0], p[1], p[2], 255])
                        .collect()
                }
            };
            let img = RgbaImage::from_raw(f.px.width, f.px.height, rgba)
                .ok_or_else(|| PipelineError::Internal("gif frame size".into()))?;
            let delay = Delay::from_numer_denom_ms(f.delay_ms, 1);
            enc.encode_frame(image::Frame::from_parts(img, 0, 0, delay))
                .map_err(PipelineError::from_encode)?;
        }
    }
    Ok(out)
}

/// A still GIF of `px`.
pub(crate) fn encode_still_gif(px: &Pixels<&[u8]>) -> Result<Vec<u8>, PipelineError> {
    let frame = Frame {
        px: px.to_owned_pixels(),
        delay_ms: 0,
    };
    encode_gif(std::slice::from_ref(&frame), None)
}
