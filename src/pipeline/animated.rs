//! Animated masters and variants (issue 22).
//!
//! The stored animated master is a *lossless* animated WebP (libwebp's
//! WebPAnimEncoder, through the `webp` crate): exact pixels for every later
//! resize, sub-frame rectangles and per-frame compression chosen by libwebp,
//! and a file any WebP tool can open (backups stay inspectable). Its frames
//! are the composited, de-duplicated frames of [`Animation`], so rendering
//! never needs the upload again.
//!
//! A render decodes the master frame by frame (image-webp composites), resizes
//! each frame to the requested side and encodes an animated WebP (lossy or
//! lossless as the master's `Compression` says, like stills) or an animated
//! GIF (a palette per frame by NeuQuant, the `color_quant` crate through
//! `gif`; delays in centiseconds). Delays and the loop count are carried
//! through unchanged (GIF rounds delays to 10 ms).
//!
//! Invariant: libwebp's encoder makes up the last frame's duration (the
//! `webp` crate ends the stream with a timestamp it rejects); every encoded
//! WebP gets its last `ANMF` duration written back ([`set_last_duration`]), so
//! the total is exactly the sum of the delays.

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, RgbaImage};

use super::animation::{Animation, Frame};
use super::encode::WEBP_METHOD;
use super::resize::{check_buffer, resize_square};
use super::{Compression, Encoding, Layout, PipelineError, Pixels};
use crate::model::{AnimationInfo, OutputFormat, MAX_OUTPUT_SIDE};

/// Speed of NeuQuant in GIF variants (1 best … 30 fastest; 10 is the
/// `gif` crate's own default for `from_rgba`).
const GIF_SPEED: i32 = 10;

/// Peak working memory of an animated render from a master described by
/// `info` to `size` px, bytes, charged by frames × pixels: libwebp's
/// animation decoder hands over every composited master frame at once (the
/// frames and our RGBA copy of the one being resized), then every output frame
/// is held for the encoder, plus its working copy of one. The render pool's
/// memory budget is charged this much (a 45-frame 512 px master: ~48 MiB,
/// so it runs alone under the default 32 MiB budget).
pub fn animated_render_cost(info: &AnimationInfo, size: u32) -> u64 {
    let (m, s) = (u64::from(info.side), u64::from(size));
    let frames = u64::from(info.frames.max(1));
    frames * 4 * m * m + 8 * m * m + frames * 4 * s * s + 12 * s * s
}

fn libwebp_config(
    compression: Compression,
    quality: u8,
) -> Result<webp::WebPConfig, PipelineError> {
    let mut config = webp::WebPConfig::new()
        .map_err(|()| PipelineError::Internal("encode: libwebp version mismatch".into()))?;
    match compression {
        Compression::Lossless => {
            config.lossless = 1;
            // Effort, not fidelity, for lossless: fast and still compact.
            config.quality = 25.0;
            config.method = 1;
            config.exact = 1;
        }
        Compression::Lossy => {
            config.lossless = 0;
            config.quality = f32::from(quality.clamp(1, 100));
            config.method = WEBP_METHOD;
            config.alpha_compression = 1;
            config.alpha_quality = 100;
        }
    }
    Ok(config)
}

/// Encodes `frames` (all `side`×`side`, RGBA) as an animated WebP.
fn encode_webp(
    frames: &[Frame],
    side: u32,
    loop_count: u32,
    compression: Compression,
    quality: u8,
) -> Result<Vec<u8>, PipelineError> {
    let config = libwebp_config(compression, quality)?;
    let mut enc = webp::AnimEncoder::new(side, side, &config);
    enc.set_bgcolor([0, 0, 0, 0]);
    enc.set_loop_count(i32::try_from(loop_count).unwrap_or(0));
    let mut t = 0i32;
    for f in frames {
        check_buffer(&f.px)?;
        if f.px.layout != Layout::Rgba8 || f.px.width != side || f.px.height != side {
            return Err(PipelineError::Internal(
                "animated frame of the wrong shape".into(),
            ));
        }
        enc.add_frame(webp::AnimFrame::from_rgba(&f.px.data, side, side, t));
        t = t.saturating_add(i32::try_from(f.delay_ms).unwrap_or(i32::MAX));
    }
    let mem = enc
        .try_encode()
        .map_err(|e| PipelineError::Internal(format!("encode: libwebp animation: {e:?}")))?;
    let mut out = mem.to_vec();
    let total: u64 = frames.iter().map(|f| u64::from(f.delay_ms)).sum();
    set_last_duration(&mut out, total)?;
    Ok(out)
}

/// Writes the duration of the last `ANMF` chunk so the durations sum to
/// `total` ms (see the module doc).
fn set_last_duration(webp: &mut [u8], total: u64) -> Result<(), PipelineError> {
    let bad = || PipelineError::Internal("encode: malformed animated WebP".into());
    let mut at = 12usize;
    let (mut last, mut others) = (None, 0u64);
    while at + 8 <= webp.len() {
        let len = u32::from_le_bytes(webp[at + 4..at + 8].try_into().map_err(|_| bad())?) as usize;
        if &webp[at..at + 4] == b"ANMF" {
            if len < 16 || at + 8 + 16 > webp.len() {
                return Err(bad());
            }
            if let Some(prev) = last {
                others += u64::from(read_u24(webp, prev));
            }
            last = Some(at + 8 + 12);
        }
        at = at.checked_add(8 + len + (len & 1)).ok_or_else(bad)?;
    }
    let last = last.ok_or_else(bad)?;
    let d = total.saturating_sub(others).min(0xFF_FFFF) as u32;
    webp[last..last + 3].copy_from_slice(&d.to_le_bytes()[..3]);
    Ok(())
}

fn read_u24(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], 0])
}

/// The stored form of an animated master: lossless animated WebP.
pub fn encode_master(anim: &Animation) -> Result<Vec<u8>, PipelineError> {
    encode_webp(
        &anim.frames,
        anim.side,
        anim.loop_count,
        Compression::Lossless,
        100,
    )
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
    let anim = decode_frames(master, |px| {
        if px.width == size {
            Ok(px)
        } else {
            resize_square(&px, size)
        }
    })?;
    match format {
        OutputFormat::Webp => encode_webp(
            &anim.frames,
            size,
            anim.loop_count,
            encoding.compression,
            encoding.quality.webp,
        ),
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
pub(crate) fn encode_still_gif(px: &Pixels) -> Result<Vec<u8>, PipelineError> {
    let frame = Frame {
        px: px.clone(),
        delay_ms: 0,
    };
    encode_gif(std::slice::from_ref(&frame), None)
}
