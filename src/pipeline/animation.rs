//! Animated uploads (issue 22): every frame of a GIF, APNG or animated WebP,
//! composited onto the logical screen as a browser shows it, cropped to the
//! avatar's square and resized to the animated master's side.
//!
//! Invariants:
//! - the limits ([`AnimationLimits`]: frames, total pixels, total duration)
//!   are checked against what the file *declares* before any frame is decoded
//!   (GIF: the gif crate walks the blocks without decoding pixels; APNG: its
//!   `fcTL` chunks; WebP: image-webp's `ANMF` headers), and again against
//!   what each decoded frame really is, before the next one is decoded;
//! - the total pixels are counted as one logical screen per frame (what
//!   compositing costs), whatever the frame's own rectangle says: a frame
//!   never grows the canvas (GIF frames outside it are clipped by the
//!   compositor; APNG and WebP frames outside it are errors per their specs);
//! - the frames kept for the master hold at most [`MASTER_FRAME_BUDGET`]
//!   bytes: past it the master's side shrinks (every kept frame resized once),
//!   so memory is bounded by the limits, not by the file;
//! - delays are what browsers play: 10 ms or less counts as 100 ms;
//!   identical consecutive frames (after resizing) are merged, delays summed;
//! - an embedded ICC profile (APNG `iCCP`, WebP `ICCP`) converts every kept
//!   frame to sRGB, and the still with the still ladder, as for any image
//!   (EXIF orientation of an animation is not applied).

use std::io::Cursor;

use image::codecs::{gif::GifDecoder, png::PngDecoder};
use image::{AnimationDecoder, ImageDecoder};

use super::color::to_srgb;
use super::decode::check_dimensions;
use super::geometry::{choose_square, Square};
use super::resize::crop_resize;
use super::{Crop, Layout, Limits, PipelineError, Pixels, SourceFormat};
use crate::model::AnimationInfo;

/// Largest side of a stored animated master, px.
pub const MAX_ANIMATION_SIDE: u32 = 512;

/// Bytes of RGBA the frames kept for the animated master may hold while an
/// upload is decoded (64 MiB: 45 frames at 512 px fit; 300 frames get
/// ~230 px).
pub const MASTER_FRAME_BUDGET: u64 = 64 << 20;

/// Delays at or below this many ms are played as [`SHORT_DELAY_AS_MS`] by
/// every major browser (GIF, APNG and WebP alike).
const SHORT_DELAY_MS: u32 = 10;
const SHORT_DELAY_AS_MS: u32 = 100;

/// What happens to an upload over an animation limit (`--animation-over-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverLimit {
    /// 422 naming the limit.
    #[default]
    Refuse,
    /// Keep the first frame: stored as a still avatar.
    Still,
}

/// The animation limits (`--max-frames`, `--max-animation-megapixels`,
/// `--max-animation-seconds`, `--animation-over-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnimationLimits {
    pub max_frames: u32,
    /// Logical-screen pixels summed over all frames.
    pub max_pixels: u64,
    /// One loop's duration, ms.
    pub max_duration_ms: u64,
    pub over_limit: OverLimit,
}

impl Default for AnimationLimits {
    fn default() -> Self {
        AnimationLimits {
            max_frames: 300,
            max_pixels: 200_000_000,
            max_duration_ms: 60_000,
            over_limit: OverLimit::Refuse,
        }
    }
}

/// Which animation limit an upload crossed (named by the 422).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnimationLimit {
    Frames,
    Pixels,
    Duration,
}

impl std::fmt::Display for AnimationLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AnimationLimit::Frames => "frames",
            AnimationLimit::Pixels => "megapixels over all frames",
            AnimationLimit::Duration => "seconds",
        })
    }
}

impl AnimationLimit {
    /// The option that sets it.
    pub fn option(self) -> &'static str {
        match self {
            AnimationLimit::Frames => "--max-frames",
            AnimationLimit::Pixels => "--max-animation-megapixels",
            AnimationLimit::Duration => "--max-animation-seconds",
        }
    }
}

/// One frame of an animated master: RGBA, `side`×`side`, and how long it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub px: Pixels,
    pub delay_ms: u32,
}

/// A decoded animation, every frame composited and square.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Animation {
    pub side: u32,
    /// Times it plays; 0 = forever.
    pub loop_count: u32,
    pub frames: Vec<Frame>,
}

impl Animation {
    pub fn duration_ms(&self) -> u64 {
        self.frames.iter().map(|f| u64::from(f.delay_ms)).sum()
    }

    pub fn info(&self) -> AnimationInfo {
        AnimationInfo {
            side: self.side,
            frames: self.frames.len() as u32,
            loop_count: self.loop_count,
            duration_ms: self.duration_ms(),
            smaller: 0,
        }
    }
}

/// An animated upload: the master's frames and the still frame (the whole
/// logical screen, for the still ladder).
pub(crate) struct DecodedAnimation {
    pub animation: Animation,
    pub still: Pixels,
    /// The upload's ICC profile: the master's frames are converted to sRGB
    /// already; the still is converted with the still ladder, as any image.
    pub icc: Option<Vec<u8>>,
}

/// The delay a browser plays for a declared `ms`.
pub(crate) fn played_delay(ms: u32) -> u32 {
    if ms <= SHORT_DELAY_MS {
        SHORT_DELAY_AS_MS
    } else {
        ms
    }
}

/// What a file declares before any pixel is decoded.
struct Declared {
    width: u32,
    height: u32,
    frames: u32,
    /// One loop as browsers play it, ms.
    duration_ms: u64,
    loop_count: u32,
}

/// The running totals, checked before each frame is decoded.
struct Budget<'a> {
    limits: &'a AnimationLimits,
    screen: u64,
}

impl Budget<'_> {
    fn check(&self, frames: u32, duration_ms: u64) -> Result<(), AnimationLimit> {
        if frames > self.limits.max_frames {
            return Err(AnimationLimit::Frames);
        }
        if u64::from(frames).saturating_mul(self.screen) > self.limits.max_pixels {
            return Err(AnimationLimit::Pixels);
        }
        if duration_ms > self.limits.max_duration_ms {
            return Err(AnimationLimit::Duration);
        }
        Ok(())
    }
}

/// Over a limit: the 422, or `None` (keep the first frame) when the operator
/// chose `still`.
fn over(
    limit: AnimationLimit,
    limits: &AnimationLimits,
) -> Result<Option<DecodedAnimation>, PipelineError> {
    match limits.over_limit {
        OverLimit::Still => Ok(None),
        OverLimit::Refuse => Err(PipelineError::AnimationLimit {
            limit,
            max: match limit {
                AnimationLimit::Frames => u64::from(limits.max_frames),
                AnimationLimit::Pixels => limits.max_pixels / 1_000_000,
                AnimationLimit::Duration => limits.max_duration_ms / 1000,
            },
        }),
    }
}

/// Decodes every frame of an animated upload. `Ok(None)`: not animated (one
/// frame), or over a limit with `--animation-over-limit still`; the caller
/// then makes a still avatar of it as of any image.
pub(crate) fn decode_animation(
    bytes: &[u8],
    format: SourceFormat,
    crop: Option<Crop>,
    still_frame: u32,
    limits: &Limits,
) -> Result<Option<DecodedAnimation>, PipelineError> {
    let anim = &limits.animation;
    let Some(declared) = declare(bytes, format, limits)? else {
        return Ok(None);
    };
    if declared.frames < 2 {
        return Ok(None);
    }
    check_dimensions(declared.width, declared.height, limits)?;
    let budget = Budget {
        limits: anim,
        screen: u64::from(declared.width) * u64::from(declared.height),
    };
    if let Err(limit) = budget.check(declared.frames, declared.duration_ms) {
        return over(limit, anim);
    }
    if still_frame >= declared.frames {
        return Err(PipelineError::BadStillFrame {
            frame: still_frame,
            frames: declared.frames,
        });
    }
    let square = choose_square(declared.width, declared.height, crop)?;
    let mut acc = Accumulator::new(square, still_frame, MASTER_FRAME_BUDGET);
    let (mut seen, mut duration, mut crossed) = (0u32, 0u64, None);
    let mut on_frame = |canvas: Pixels, delay: u32| -> Result<bool, PipelineError> {
        if (canvas.width, canvas.height) != (declared.width, declared.height) {
            return Err(PipelineError::Decode(
                "a frame's size differs from the canvas".into(),
            ));
        }
        let delay = played_delay(delay);
        seen += 1;
        duration += u64::from(delay);
        if let Err(limit) = budget.check(seen, duration) {
            crossed = Some(limit);
            return Ok(false);
        }
        acc.push(canvas, delay)?;
        // Never more frames than declared (and checked).
        Ok(seen < declared.frames)
    };
    // The embedded ICC profile, if any (GIF has none): an unreadable one is
    // ignored, as for stills.
    let icc = match format {
        SourceFormat::Gif => {
            let mut dec =
                GifDecoder::new(Cursor::new(bytes)).map_err(PipelineError::from_decode)?;
            dec.set_limits(frame_limits(limits))
                .map_err(PipelineError::from_decode)?;
            walk(dec.into_frames(), &mut on_frame)?;
            None
        }
        SourceFormat::Png => {
            let mut dec =
                PngDecoder::new(Cursor::new(bytes)).map_err(PipelineError::from_decode)?;
            dec.set_limits(frame_limits(limits))
                .map_err(PipelineError::from_decode)?;
            let icc = dec.icc_profile().ok().flatten();
            let apng = dec.apng().map_err(PipelineError::from_decode)?;
            walk(apng.into_frames(), &mut on_frame)?;
            icc
        }
        SourceFormat::Webp => walk_webp(bytes, limits, &mut on_frame)?,
        SourceFormat::Jpeg => return Ok(None),
    };
    if let Some(limit) = crossed {
        return over(limit, anim);
    }
    let (mut frames, still, side) = acc.finish()?;
    if frames.len() < 2 {
        // Every frame the same: a still image.
        return Ok(None);
    }
    if let Some(icc) = icc.as_deref() {
        for f in &mut frames {
            if !to_srgb(&mut f.px, icc) {
                break; // sRGB already, or a profile we cannot read
            }
        }
    }
    Ok(Some(DecodedAnimation {
        animation: Animation {
            side,
            loop_count: declared.loop_count,
            frames,
        },
        still,
        icc,
    }))
}

/// Takes a composited frame and its declared delay; `false` stops the walk.
type OnFrame<'a> = dyn FnMut(Pixels, u32) -> Result<bool, PipelineError> + 'a;

/// Feeds image's composited frames to `on_frame` until the end or a limit.
fn walk(frames: image::Frames<'_>, on_frame: &mut OnFrame<'_>) -> Result<(), PipelineError> {
    for frame in frames {
        let frame = frame.map_err(PipelineError::from_decode)?;
        let (n, d) = frame.delay().numer_denom_ms();
        let delay = n.checked_div(d).unwrap_or(0);
        let buf = frame.into_buffer();
        let (width, height) = buf.dimensions();
        let canvas = Pixels {
            width,
            height,
            layout: Layout::Rgba8,
            data: buf.into_raw(),
        };
        if !on_frame(canvas, delay)? {
            break;
        }
    }
    Ok(())
}

/// Animated WebP through image-webp, which composites (blend; dispose to
/// transparent, set explicitly below).
fn walk_webp(
    bytes: &[u8],
    limits: &Limits,
    on_frame: &mut OnFrame<'_>,
) -> Result<Option<Vec<u8>>, PipelineError> {
    let mut dec = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(webp_error)?;
    dec.set_memory_limit(usize::try_from(limits.max_decoder_alloc).unwrap_or(usize::MAX));
    // Not `dec.icc_profile()`: see `webp_chunk`.
    let icc = super::decode::webp_chunk(bytes, b"ICCP").map(<[u8]>::to_vec);
    // Disposal clears to transparent, as browsers do (they ignore the ANIM
    // background colour); without a colour set, image-webp would not clear
    // at all and a disposed frame would stay on the canvas.
    dec.set_background_color([0, 0, 0, 0]).map_err(webp_error)?;
    let (width, height) = dec.dimensions();
    let len = dec
        .output_buffer_size()
        .ok_or_else(|| PipelineError::LimitExceeded("canvas too large".into()))?;
    for _ in 0..dec.num_frames() {
        let mut buf = vec![0u8; len];
        let delay = dec.read_frame(&mut buf).map_err(webp_error)?;
        let canvas = if dec.has_alpha() {
            Pixels {
                width,
                height,
                layout: Layout::Rgba8,
                data: buf,
            }
        } else {
            let data = buf
                .chunks_exact(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect();
            Pixels {
                width,
                height,
                layout: Layout::Rgba8,
                data,
            }
        };
        if !on_frame(canvas, delay)? {
            break;
        }
    }
    Ok(icc)
}

pub(crate) fn webp_error(e: image_webp::DecodingError) -> PipelineError {
    PipelineError::Decode(format!("webp: {e}"))
}

fn frame_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_alloc = Some(limits.max_decoder_alloc);
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l
}

/// Reads what the file declares, decoding no pixels. `None`: not animated.
/// A GIF's walk stops one frame past `max_frames` (already over the limit).
fn declare(
    bytes: &[u8],
    format: SourceFormat,
    limits: &Limits,
) -> Result<Option<Declared>, PipelineError> {
    match format {
        SourceFormat::Gif => declare_gif(bytes, limits).map(Some),
        SourceFormat::Png => declare_apng(bytes),
        SourceFormat::Webp => {
            let dec = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(webp_error)?;
            if !dec.is_animated() {
                return Ok(None);
            }
            let (width, height) = dec.dimensions();
            let loop_count = match dec.loop_count() {
                image_webp::LoopCount::Forever => 0,
                image_webp::LoopCount::Times(n) => u32::from(n.get()),
            };
            Ok(Some(Declared {
                width,
                height,
                frames: dec.num_frames(),
                // image-webp sums the declared durations; short ones count
                // as declared here (a lower bound) and as played per frame.
                duration_ms: dec.loop_duration(),
                loop_count,
            }))
        }
        SourceFormat::Jpeg => Ok(None),
    }
}

/// A GIF's frames and delays, its LZW data skipped, not decoded. The screen
/// is checked against `limits` first: gif reserves a quarter of a frame's
/// declared pixels for its LZW bytes, 1 GiB for a 65535² frame of a file of
/// a few bytes (`fixtures/hostile/gif_65535x65535_tiny.gif`; counted by
/// `tests/hostile.rs`).
fn declare_gif(bytes: &[u8], limits: &Limits) -> Result<Declared, PipelineError> {
    let gif_err = |e: gif::DecodingError| PipelineError::Decode(format!("gif: {e}"));
    let mut opts = gif::DecodeOptions::new();
    opts.skip_frame_decoding(true);
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut dec = opts.read_info(Cursor::new(bytes)).map_err(gif_err)?;
    let (width, height) = (u32::from(dec.width()), u32::from(dec.height()));
    check_dimensions(width, height, limits)?;
    let max_frames = limits.animation.max_frames;
    let (mut frames, mut duration_ms) = (0u32, 0u64);
    while let Some(frame) = dec.read_next_frame().map_err(gif_err)? {
        frames = frames.saturating_add(1);
        duration_ms += u64::from(played_delay(u32::from(frame.delay) * 10));
        if frames > max_frames {
            break;
        }
    }
    let loop_count = match dec.repeat() {
        gif::Repeat::Infinite => 0,
        gif::Repeat::Finite(n) => u32::from(n),
    };
    Ok(Declared {
        width,
        height,
        frames,
        duration_ms,
        loop_count,
    })
}

/// An APNG's `acTL` and `fcTL` chunks (frame count, delays, plays); `None`
/// for a PNG without `acTL`. An APNG whose chunk list ends before `IEND` is
/// truncated: refused (a still PNG's truncation is the still decoder's to
/// report).
fn declare_apng(bytes: &[u8]) -> Result<Option<Declared>, PipelineError> {
    let (declared, complete) = walk_apng(bytes);
    match declared {
        Some(_) if !complete => Err(PipelineError::Decode("truncated APNG".into())),
        d => Ok(d),
    }
}

/// [`declare_apng`]'s chunk walk: what it found, and whether it reached `IEND`.
fn walk_apng(bytes: &[u8]) -> (Option<Declared>, bool) {
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let be16 = |b: &[u8]| u32::from(u16::from_be_bytes([b[0], b[1]]));
    let mut at = 8usize;
    let (mut width, mut height, mut complete) = (0, 0, false);
    let (mut frames, mut duration_ms, mut loop_count, mut animated) = (0u32, 0u64, 0u32, false);
    while at.saturating_add(12) <= bytes.len() {
        let len = be32(&bytes[at..]) as usize;
        let kind = &bytes[at + 4..at + 8];
        let Some(data) = bytes.get(at + 8..(at + 8).saturating_add(len)) else {
            break;
        };
        match kind {
            b"IHDR" if len >= 8 => (width, height) = (be32(data), be32(&data[4..])),
            b"acTL" if len >= 8 => (animated, loop_count) = (true, be32(&data[4..])),
            b"fcTL" if len >= 26 => {
                frames = frames.saturating_add(1);
                let (num, den) = (be16(&data[20..]), be16(&data[22..]));
                // APNG: a zero denominator means 1/100 s.
                let den = if den == 0 { 100 } else { den };
                duration_ms += u64::from(played_delay(num * 1000 / den));
            }
            b"IEND" => {
                complete = true;
                break;
            }
            _ => {}
        }
        at = (at + 12).saturating_add(len);
    }
    let declared = Declared {
        width,
        height,
        frames,
        duration_ms,
        loop_count,
    };
    (animated.then_some(declared), complete)
}

/// The frames kept for the master: cropped, resized, de-duplicated, within
/// [`MASTER_FRAME_BUDGET`].
struct Accumulator {
    square: Square,
    side: u32,
    still_frame: u32,
    index: u32,
    still: Option<Pixels>,
    frames: Vec<Frame>,
    budget: u64,
}

impl Accumulator {
    fn new(square: Square, still_frame: u32, budget: u64) -> Self {
        Accumulator {
            budget,
            square,
            side: square.side.min(MAX_ANIMATION_SIDE),
            still_frame,
            index: 0,
            still: None,
            frames: Vec::new(),
        }
    }

    fn push(&mut self, canvas: Pixels, delay_ms: u32) -> Result<(), PipelineError> {
        let px = crop_resize(&canvas, self.square, self.side)?;
        if self.index == self.still_frame {
            self.still = Some(canvas);
        }
        self.index += 1;
        match self.frames.last_mut() {
            Some(last) if last.px == px => last.delay_ms = last.delay_ms.saturating_add(delay_ms),
            _ => self.frames.push(Frame { px, delay_ms }),
        }
        let bytes = |side: u32, n: usize| 4 * u64::from(side) * u64::from(side) * n as u64;
        if bytes(self.side, self.frames.len()) > self.budget {
            // Room for twice as many frames at the new side, so this happens
            // a logarithmic number of times.
            let per_frame = self.budget / 4 / (2 * self.frames.len() as u64);
            let side = (per_frame as f64).sqrt() as u32;
            self.side = side.clamp(1, self.side);
            let whole = |s: u32| Square {
                x: 0,
                y: 0,
                side: s,
            };
            for f in &mut self.frames {
                f.px = crop_resize(&f.px, whole(f.px.width), self.side)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(Vec<Frame>, Pixels, u32), PipelineError> {
        let still = self.still.ok_or_else(|| {
            PipelineError::Decode("the animation ended before its still frame".into())
        })?;
        Ok((self.frames, still, self.side))
    }
}

#[cfg(test)]
#[path = "animation_tests.rs"]
mod tests;
