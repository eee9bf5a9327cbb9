//! Animated WebP, encoded frame by frame (issue 22's cost target).
//!
//! libwebp's `WebPAnimEncoder` (what the `webp` crate wraps, with its default
//! options only) encodes most frames several times to pick the smallest
//! candidate, and the crate makes up the last frame's duration. Avatars are
//! small and rendered cold on the request path, so we mux ourselves: each
//! frame is encoded *once* as a still (libwebp, the same config as a still
//! variant) and written as an `ANMF` chunk of a RIFF container per the WebP
//! container specification (`VP8X` with the animation flag, `ANIM`, `ANMF`).
//!
//! Invariants:
//! - a frame covers only the rectangle where it differs from the frame
//!   before (offsets even, as `ANMF` stores them halved), written without
//!   blending and disposed to nothing, so the canvas after every frame holds
//!   that frame's pixels (lossy: as decoded) whatever their alpha;
//! - a frame identical to the one before is merged into it, its delay added,
//!   so durations are exact and sum to the animation's duration (a delay past
//!   the 24-bit field starts a new frame instead);
//! - only image chunks (`ALPH`, `VP8 `, `VP8L`) of libwebp's output are kept:
//!   no metadata is ever written.

use super::resize::check_buffer;
use super::{Layout, PipelineError, Pixels};

/// Largest duration an `ANMF` chunk stores, ms (24 bits).
const MAX_FRAME_DURATION: u32 = 0xFF_FFFF;

/// Largest canvas side `VP8X` stores (24 bits, minus one).
const MAX_CANVAS_SIDE: u32 = 1 << 24;

/// One frame to mux: its pixels (`side`×`side` RGBA) and delay.
pub(crate) struct MuxFrame<'a> {
    pub px: &'a Pixels,
    pub delay_ms: u32,
}

/// The rectangle of a frame to write, px.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

/// The smallest rectangle, its corner at even offsets, covering every pixel
/// where `cur` differs from `prev` (both `side`×`side` RGBA); `None` when
/// they are identical.
fn changed(prev: &[u8], cur: &[u8], side: u32) -> Option<Rect> {
    let row = side as usize * 4;
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0u32, 0u32);
    for (y, (p, c)) in prev
        .chunks_exact(row)
        .zip(cur.chunks_exact(row))
        .enumerate()
    {
        if p == c {
            continue;
        }
        let first = p
            .chunks_exact(4)
            .zip(c.chunks_exact(4))
            .position(|(a, b)| a != b);
        let last = p
            .chunks_exact(4)
            .zip(c.chunks_exact(4))
            .rposition(|(a, b)| a != b);
        if let (Some(f), Some(l)) = (first, last) {
            let y = y as u32;
            (x0, x1) = (x0.min(f as u32), x1.max(l as u32));
            (y0, y1) = (y0.min(y), y1.max(y));
        }
    }
    if x0 == u32::MAX {
        return None;
    }
    let (x, y) = (x0 & !1, y0 & !1);
    Some(Rect {
        x,
        y,
        w: x1 + 1 - x,
        h: y1 + 1 - y,
    })
}

/// The RGBA pixels of `r` in a `side`-wide RGBA buffer.
fn crop(data: &[u8], side: u32, r: Rect) -> Pixels {
    let row = side as usize * 4;
    let mut out = Vec::with_capacity(r.w as usize * r.h as usize * 4);
    for y in r.y..r.y + r.h {
        let start = y as usize * row + r.x as usize * 4;
        out.extend_from_slice(&data[start..start + r.w as usize * 4]);
    }
    Pixels {
        width: r.w,
        height: r.h,
        layout: Layout::Rgba8,
        data: out,
    }
}

/// The image chunks (`ALPH`, `VP8 `, `VP8L`) of a still WebP libwebp wrote.
fn image_chunks(webp: &[u8]) -> Result<Vec<u8>, PipelineError> {
    let bad = || PipelineError::Internal("encode: libwebp wrote a malformed WebP".into());
    if webp.len() < 12 || &webp[..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(webp.len());
    let mut at = 12usize;
    while at + 8 <= webp.len() {
        let len = u32::from_le_bytes(webp[at + 4..at + 8].try_into().map_err(|_| bad())?) as usize;
        let end = at + 8 + len + (len & 1);
        if at + 8 + len > webp.len() {
            return Err(bad());
        }
        if matches!(&webp[at..at + 4], b"ALPH" | b"VP8 " | b"VP8L") {
            out.extend_from_slice(&webp[at..end.min(webp.len())]);
            if len & 1 == 1 && end > webp.len() {
                out.push(0);
            }
        }
        at = end;
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

fn put_u24(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes()[..3]);
}

fn put_chunk(out: &mut Vec<u8>, fourcc: &[u8; 4], payload: &[u8]) {
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() & 1 == 1 {
        out.push(0);
    }
}

/// A frame written: where, how long, and its image chunks.
struct Written {
    rect: Rect,
    duration: u32,
    chunks: Vec<u8>,
}

/// Encodes `frames` (each `side`×`side` RGBA) as an animated WebP playing
/// `loop_count` times (0 = forever; past 65,535 plays forever, as GIF),
/// each frame (or changed rectangle) encoded by `encode_still`.
pub(crate) fn mux_animated_webp(
    frames: &[MuxFrame<'_>],
    side: u32,
    loop_count: u32,
    mut encode_still: impl FnMut(&Pixels) -> Result<Vec<u8>, PipelineError>,
) -> Result<Vec<u8>, PipelineError> {
    if side == 0 || side > MAX_CANVAS_SIDE || frames.is_empty() {
        return Err(PipelineError::Internal("animated WebP of nothing".into()));
    }
    let mut written: Vec<Written> = Vec::with_capacity(frames.len());
    let mut prev: Option<&[u8]> = None;
    let mut alpha = false;
    for f in frames {
        check_buffer(f.px)?;
        if f.px.layout != Layout::Rgba8 || f.px.width != side || f.px.height != side {
            return Err(PipelineError::Internal(
                "animated frame of the wrong shape".into(),
            ));
        }
        let whole = Rect {
            x: 0,
            y: 0,
            w: side,
            h: side,
        };
        let rect = match prev {
            None => Some(whole),
            Some(p) => changed(p, &f.px.data, side),
        };
        let rect = match (rect, written.last_mut()) {
            (None, Some(last))
                if last.duration.saturating_add(f.delay_ms) <= MAX_FRAME_DURATION =>
            {
                last.duration += f.delay_ms;
                continue;
            }
            // Identical but too long to merge: a 2×2 frame carries the time.
            (None, _) => Rect {
                w: 2.min(side),
                h: 2.min(side),
                ..whole
            },
            (Some(r), _) => r,
        };
        let part = crop(&f.px.data, side, rect);
        alpha |= part.data.chunks_exact(4).any(|p| p[3] != 255);
        written.push(Written {
            rect,
            duration: f.delay_ms.min(MAX_FRAME_DURATION),
            chunks: image_chunks(&encode_still(&part)?)?,
        });
        prev = Some(&f.px.data);
    }

    let mut body = Vec::with_capacity(written.iter().map(|w| w.chunks.len() + 24).sum());
    body.extend_from_slice(b"WEBP");
    let mut vp8x = vec![0x02 | if alpha { 0x10 } else { 0 }, 0, 0, 0];
    put_u24(&mut vp8x, side - 1);
    put_u24(&mut vp8x, side - 1);
    put_chunk(&mut body, b"VP8X", &vp8x);
    let mut anim = vec![0u8; 4]; // background: transparent black
    anim.extend_from_slice(&u16::try_from(loop_count).unwrap_or(0).to_le_bytes());
    put_chunk(&mut body, b"ANIM", &anim);
    for w in &written {
        let mut anmf = Vec::with_capacity(16 + w.chunks.len());
        put_u24(&mut anmf, w.rect.x / 2);
        put_u24(&mut anmf, w.rect.y / 2);
        put_u24(&mut anmf, w.rect.w - 1);
        put_u24(&mut anmf, w.rect.h - 1);
        put_u24(&mut anmf, w.duration);
        anmf.push(0b10); // do not blend, dispose to nothing
        anmf.extend_from_slice(&w.chunks);
        put_chunk(&mut body, b"ANMF", &anmf);
    }
    let size = u32::try_from(body.len())
        .map_err(|_| PipelineError::Internal("animated WebP over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
#[path = "webp_mux_tests.rs"]
mod tests;
