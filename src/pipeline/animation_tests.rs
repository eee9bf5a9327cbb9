//! Animated uploads: frame counts, delays, loop counts and composited frames
//! of the GIF / APNG / animated WebP fixtures and of synthetic files built
//! here (GIF disposal to background and to previous, APNG blend over and
//! source, lying fcTL), the limits, and the stored master's round trip.

use super::*;
use crate::pipeline::animated::{decode_master, encode_master, render_animated};
use crate::pipeline::{fixture, normalize_upload, Encoding, OutputFormat};

const R: [u8; 4] = [255, 0, 0, 255];
const G: [u8; 4] = [0, 255, 0, 255];
const B: [u8; 4] = [0, 0, 255, 255];
const T: [u8; 4] = [0, 0, 0, 0];

fn limits() -> Limits {
    Limits::default()
}

fn anim(bytes: &[u8]) -> Animation {
    let format = super::super::sniff::sniff(bytes).unwrap();
    decode_animation(bytes, format, None, 0, &limits())
        .unwrap()
        .expect("animated")
        .animation
}

fn px(frame: &Frame, x: u32, y: u32) -> [u8; 4] {
    let i = ((y * frame.px.width + x) * 4) as usize;
    frame.px.data[i..i + 4].try_into().unwrap()
}

// ---- synthetic GIFs (the gif crate's encoder) ----

struct GifFrame {
    rect: (u16, u16, u16, u16),
    /// Palette indices: 0 red, 1 green, 2 blue, 3 transparent.
    pixels: Vec<u8>,
    dispose: gif::DisposalMethod,
    delay_cs: u16,
}

fn gif_bytes(w: u16, h: u16, repeat: gif::Repeat, frames: &[GifFrame]) -> Vec<u8> {
    let palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0];
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, w, h, &palette).unwrap();
        enc.set_repeat(repeat).unwrap();
        for f in frames {
            let (left, top, width, height) = f.rect;
            let frame = gif::Frame {
                left,
                top,
                width,
                height,
                dispose: f.dispose,
                delay: f.delay_cs,
                transparent: Some(3),
                buffer: std::borrow::Cow::Borrowed(&f.pixels),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).unwrap();
        }
    }
    out
}

fn full(w: u16, h: u16, index: u8, dispose: gif::DisposalMethod) -> GifFrame {
    GifFrame {
        rect: (0, 0, w, h),
        pixels: vec![index; usize::from(w) * usize::from(h)],
        dispose,
        delay_cs: 10,
    }
}

fn patch(rect: (u16, u16, u16, u16), index: u8, dispose: gif::DisposalMethod) -> GifFrame {
    GifFrame {
        pixels: vec![index; usize::from(rect.2) * usize::from(rect.3)],
        rect,
        dispose,
        delay_cs: 10,
    }
}

#[test]
fn gif_disposal_to_background_clears_the_frame_rectangle() {
    use gif::DisposalMethod::{Background, Keep};
    let b = gif_bytes(
        4,
        4,
        gif::Repeat::Infinite,
        &[
            full(4, 4, 0, Keep),
            patch((0, 0, 2, 2), 2, Background),
            patch((3, 3, 1, 1), 1, Keep),
        ],
    );
    let a = anim(&b);
    assert_eq!((a.side, a.frames.len(), a.loop_count), (4, 3, 0));
    let f = &a.frames[1];
    assert_eq!((px(f, 0, 0), px(f, 3, 3)), (B, R));
    let f = &a.frames[2];
    // The blue square was disposed to the (transparent) background.
    assert_eq!(
        [px(f, 0, 0), px(f, 1, 1), px(f, 2, 2), px(f, 3, 3)],
        [T, T, R, G]
    );
}

#[test]
fn gif_disposal_to_previous_restores_what_was_there() {
    use gif::DisposalMethod::{Keep, Previous};
    let b = gif_bytes(
        4,
        4,
        gif::Repeat::Finite(3),
        &[
            full(4, 4, 0, Keep),
            patch((0, 0, 2, 2), 2, Previous),
            patch((3, 3, 1, 1), 1, Keep),
        ],
    );
    let a = anim(&b);
    assert_eq!((a.frames.len(), a.loop_count), (3, 3));
    assert_eq!(px(&a.frames[1], 1, 1), B);
    let f = &a.frames[2];
    assert_eq!(
        [px(f, 0, 0), px(f, 1, 1), px(f, 2, 2), px(f, 3, 3)],
        [R, R, R, G]
    );
}

#[test]
fn gif_frames_outside_the_screen_are_clipped_and_transparency_shows_through() {
    use gif::DisposalMethod::Keep;
    let b = gif_bytes(
        4,
        4,
        gif::Repeat::Infinite,
        &[
            full(4, 4, 0, Keep),
            // Transparent pixels keep what is below; the part past the
            // screen is not drawn and never grows the canvas.
            patch((2, 2, 5, 5), 3, Keep),
            patch((65535, 65535, 1, 1), 1, Keep),
            patch((3, 0, 3, 1), 1, Keep),
        ],
    );
    let a = anim(&b);
    assert_eq!(a.side, 4);
    // Frames 1 and 2 change nothing visible: merged into frame 0.
    assert_eq!(a.frames.len(), 2);
    assert_eq!(a.frames[0].delay_ms, 300);
    assert_eq!([px(&a.frames[1], 3, 0), px(&a.frames[1], 2, 2)], [G, R]);
}

#[test]
fn short_gif_delays_play_as_100_ms_like_browsers() {
    use gif::DisposalMethod::Keep;
    let mut frames = vec![
        full(2, 2, 0, Keep),
        full(2, 2, 1, Keep),
        full(2, 2, 2, Keep),
    ];
    frames[0].delay_cs = 0;
    frames[1].delay_cs = 1;
    frames[2].delay_cs = 7;
    let a = anim(&gif_bytes(2, 2, gif::Repeat::Infinite, &frames));
    let delays: Vec<u32> = a.frames.iter().map(|f| f.delay_ms).collect();
    assert_eq!(delays, [100, 100, 70]);
}

// ---- synthetic APNGs (chunks written here; zlib by miniz_oxide) ----

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

struct ApngFrame {
    rect: (u32, u32, u32, u32),
    rgba: [u8; 4],
    /// 0 none, 1 background, 2 previous.
    dispose: u8,
    /// 0 source, 1 over.
    blend: u8,
}

fn apng_bytes(w: u32, h: u32, plays: u32, frames: &[ApngFrame]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let mut actl = (frames.len() as u32).to_be_bytes().to_vec();
    actl.extend_from_slice(&plays.to_be_bytes());
    chunk(&mut out, b"acTL", &actl);
    let mut seq = 0u32;
    for (i, f) in frames.iter().enumerate() {
        let (x, y, fw, fh) = f.rect;
        let mut fctl = seq.to_be_bytes().to_vec();
        seq += 1;
        for v in [fw, fh, x, y] {
            fctl.extend_from_slice(&v.to_be_bytes());
        }
        fctl.extend_from_slice(&[0, 50, 0, 100, f.dispose, f.blend]);
        chunk(&mut out, b"fcTL", &fctl);
        let mut row = vec![0u8];
        row.extend(f.rgba.repeat(fw as usize));
        let raw = row.repeat(fh as usize);
        let z = miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6);
        if i == 0 {
            chunk(&mut out, b"IDAT", &z);
        } else {
            let mut fdat = seq.to_be_bytes().to_vec();
            seq += 1;
            fdat.extend_from_slice(&z);
            chunk(&mut out, b"fdAT", &fdat);
        }
    }
    chunk(&mut out, b"IEND", &[]);
    out
}

fn apng_blend(blend: u8) -> Vec<u8> {
    let half_blue = [0, 0, 255, 0];
    apng_bytes(
        4,
        4,
        0,
        &[
            ApngFrame {
                rect: (0, 0, 4, 4),
                rgba: R,
                dispose: 0,
                blend: 0,
            },
            ApngFrame {
                rect: (0, 0, 2, 2),
                rgba: half_blue,
                dispose: 0,
                blend,
            },
            ApngFrame {
                rect: (3, 3, 1, 1),
                rgba: G,
                dispose: 0,
                blend: 0,
            },
        ],
    )
}

#[test]
fn apng_blend_over_keeps_what_is_below() {
    let a = anim(&apng_blend(1));
    // Frame 1 drew fully transparent pixels *over* red: nothing changed.
    assert_eq!(a.frames.len(), 2);
    assert_eq!((a.frames[0].delay_ms, a.frames[1].delay_ms), (1000, 500));
    assert_eq!([px(&a.frames[1], 0, 0), px(&a.frames[1], 3, 3)], [R, G]);
}

#[test]
fn apng_blend_source_replaces_pixels() {
    let a = anim(&apng_blend(0));
    assert_eq!(a.frames.len(), 3);
    assert_eq!(
        px(&a.frames[1], 0, 0)[3],
        0,
        "source blend wrote transparency"
    );
    assert_eq!(px(&a.frames[1], 2, 2), R);
    assert_eq!(px(&a.frames[2], 1, 1)[3], 0);
}

#[test]
fn apng_whose_fctl_lies_about_its_size_is_refused() {
    let mut b = apng_blend(0);
    // Second fcTL: claim a frame wider than the canvas (fix its CRC).
    let at = b
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"fcTL")
        .nth(1)
        .unwrap()
        .0;
    b[at + 8..at + 12].copy_from_slice(&4000u32.to_be_bytes());
    let crc = crc32(&b[at..at + 4 + 26]);
    b[at + 30..at + 34].copy_from_slice(&crc.to_be_bytes());
    let e = normalize_upload(&b, None, 0, &limits()).unwrap_err();
    assert!(e.is_client_error(), "{e:?}");
}

// ---- real fixtures ----

#[test]
fn fixtures_frames_delays_and_loops() {
    // (file, canvas-derived side, distinct frames, one loop in ms, loop count)
    let cases = [
        // 56 frames, 29 distinct (Pillow agrees); 400 ms then 55 × 0 ms,
        // played as 100 ms each.
        ("gif_animated_aero_56f.gif", 189, 29, 5900, 0),
        ("apng_ball_20f.png", 100, 20, 1500, 0),
        ("webp_animated_6f.webp", 200, 6, 600, 0),
    ];
    for (name, side, frames, ms, loops) in cases {
        let a = anim(&fixture(name));
        assert_eq!(
            (a.side, a.frames.len(), a.duration_ms(), a.loop_count),
            (side, frames, ms, loops),
            "{name}"
        );
    }
}

#[test]
fn truncated_animations_are_client_errors() {
    for name in [
        "gif_animated_aero_56f.gif",
        "apng_ball_20f.png",
        "webp_animated_6f.webp",
    ] {
        let b = fixture(name);
        for cut in [b.len() / 3, b.len() / 2, b.len() - 20] {
            let e = normalize_upload(&b[..cut], None, 0, &limits()).unwrap_err();
            assert!(e.is_client_error(), "{name} cut at {cut}: {e:?}");
        }
    }
}

// ---- limits ----

/// A GIF declaring `frames` frames of `w`×`h` whose LZW data is a stub: the
/// limits must refuse it from the declarations, before any frame decodes.
fn declared_gif(w: u16, h: u16, frames: usize, delay_cs: u16) -> Vec<u8> {
    let mut b = b"GIF89a".to_vec();
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
    for _ in 0..frames {
        b.extend_from_slice(&[0x21, 0xF9, 4, 0]);
        b.extend_from_slice(&delay_cs.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.push(0x2C);
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&[0, 2, 2, 0x4C, 0x01, 0]);
    }
    b.push(0x3B);
    b
}

fn limit_of(bytes: &[u8]) -> AnimationLimit {
    match normalize_upload(bytes, None, 0, &limits()) {
        Err(PipelineError::AnimationLimit { limit, .. }) => limit,
        other => panic!("{:?}", other.map(|n| n.animation.map(|a| a.info))),
    }
}

#[test]
fn bombs_are_refused_from_their_declarations() {
    let started = std::time::Instant::now();
    // 10,000 one-pixel frames.
    assert_eq!(
        limit_of(&declared_gif(1, 1, 10_000, 1)),
        AnimationLimit::Frames
    );
    // 100 frames of 4000×4000: 1.6 gigapixels.
    assert_eq!(
        limit_of(&declared_gif(4000, 4000, 100, 5)),
        AnimationLimit::Pixels
    );
    // Two frames of 40 s.
    assert_eq!(
        limit_of(&declared_gif(8, 8, 2, 4000)),
        AnimationLimit::Duration
    );
    // Nothing was decoded: this is a walk over a few hundred KiB of headers
    // (generous bound, no performance claim).
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn the_limit_is_named_and_still_mode_keeps_the_first_frame() {
    let b = declared_gif(1, 1, 10_000, 1);
    let e = normalize_upload(&b, None, 0, &limits()).unwrap_err();
    assert!(e.to_string().contains("--max-frames"), "{e}");
    let mut l = limits();
    l.animation.over_limit = OverLimit::Still;
    // The stub LZW data is still not a decodable first frame: the still path
    // reports that (a client error), it does not fail open.
    let real = fixture("gif_animated_aero_56f.gif");
    l.animation.max_frames = 10;
    let n = normalize_upload(&real, None, 0, &l).unwrap();
    assert!(n.animation.is_none());
    assert_eq!(n.ladder[0].side, 189);
    let first = normalize_upload(
        &real,
        None,
        0,
        &Limits {
            animation: AnimationLimits {
                max_frames: 1,
                ..l.animation
            },
            ..l
        },
    )
    .unwrap();
    assert_eq!(n.ladder[0].hash, first.ladder[0].hash);
}

#[test]
fn exact_limits_pass() {
    let mut l = limits();
    l.animation.max_frames = 56;
    l.animation.max_duration_ms = 5900;
    l.animation.max_pixels = 56 * 350 * 189;
    let b = fixture("gif_animated_aero_56f.gif");
    assert!(normalize_upload(&b, None, 0, &l)
        .unwrap()
        .animation
        .is_some());
    l.animation.max_frames = 55;
    assert!(matches!(
        normalize_upload(&b, None, 0, &l),
        Err(PipelineError::AnimationLimit {
            limit: AnimationLimit::Frames,
            max: 55
        })
    ));
}

#[test]
fn kept_frames_stay_within_the_budget() {
    use gif::DisposalMethod::Keep;
    let frames: Vec<GifFrame> = (0..40).map(|i| full(64, 64, (i % 3) as u8, Keep)).collect();
    let b = gif_bytes(64, 64, gif::Repeat::Infinite, &frames);
    let square = Square {
        x: 0,
        y: 0,
        side: 64,
    };
    let budget = 10 * 64 * 64 * 4;
    let mut acc = Accumulator::new(square, 0, budget);
    let mut dec = GifDecoder::new(Cursor::new(&b[..])).unwrap();
    dec.set_limits(frame_limits(&limits())).unwrap();
    walk(dec.into_frames(), &mut |canvas, delay| {
        acc.push(canvas, delay)?;
        let held: u64 = acc.frames.iter().map(|f| f.px.data.len() as u64).sum();
        assert!(held <= budget, "{held}");
        Ok(true)
    })
    .unwrap();
    let (frames, _, side) = acc.finish().unwrap();
    assert_eq!(frames.len(), 40);
    assert!(
        side < 64 && frames.iter().all(|f| f.px.width == side),
        "{side}"
    );
}

// ---- still frame, master round trip, renders ----

#[test]
fn still_frame_picks_the_still_ladder() {
    let b = fixture("apng_ball_20f.png");
    let first = normalize_upload(&b, None, 0, &limits()).unwrap();
    let tenth = normalize_upload(&b, None, 10, &limits()).unwrap();
    assert_ne!(first.ladder[0].hash, tenth.ladder[0].hash);
    assert_eq!(
        first.animation.as_ref().unwrap().hash,
        tenth.animation.as_ref().unwrap().hash
    );
    assert!(matches!(
        normalize_upload(&b, None, 20, &limits()),
        Err(PipelineError::BadStillFrame {
            frame: 20,
            frames: 20
        })
    ));
    let still = fixture("logo_alpha_500.png");
    assert!(normalize_upload(&still, None, 0, &limits())
        .unwrap()
        .animation
        .is_none());
    assert!(matches!(
        normalize_upload(&still, None, 1, &limits()),
        Err(PipelineError::BadStillFrame { .. })
    ));
}

#[test]
fn master_round_trips_exactly() {
    for name in [
        "gif_animated_aero_56f.gif",
        "apng_ball_20f.png",
        "webp_animated_6f.webp",
    ] {
        let a = anim(&fixture(name));
        let stored = encode_master(&a).unwrap();
        assert_eq!(decode_master(&stored).unwrap(), a, "{name}");
    }
}

fn gif_frames(b: &[u8]) -> (Vec<u32>, Option<u32>, (u32, u32)) {
    let dec = GifDecoder::new(Cursor::new(b)).unwrap();
    let dims = dec.dimensions();
    let loops = match dec.loop_count() {
        image::metadata::LoopCount::Infinite => None,
        image::metadata::LoopCount::Finite(n) => Some(n.get()),
    };
    let delays = dec
        .into_frames()
        .map(|f| {
            let (n, d) = f.unwrap().delay().numer_denom_ms();
            n / d
        })
        .collect();
    (delays, loops, dims)
}

#[test]
fn renders_keep_delays_and_loop_count() {
    let a = anim(&fixture("apng_ball_20f.png"));
    let mut looped = a.clone();
    looped.loop_count = 4;
    let master = encode_master(&looped).unwrap();
    let delays: Vec<u32> = a.frames.iter().map(|f| f.delay_ms).collect();
    for encoding in [Encoding::LOSSY, Encoding::LOSSLESS] {
        for size in [32, 64, 100, 300] {
            let webp = render_animated(&master, size, OutputFormat::Webp, encoding).unwrap();
            let got = decode_master(&webp).unwrap();
            assert_eq!((got.side, got.loop_count), (size, 4));
            let got: Vec<u32> = got.frames.iter().map(|f| f.delay_ms).collect();
            assert_eq!(got, delays, "webp {size}");
        }
    }
    let gif = render_animated(&master, 64, OutputFormat::Gif, Encoding::LOSSY).unwrap();
    let (got, loops, dims) = gif_frames(&gif);
    assert_eq!(dims, (64, 64));
    assert_eq!(loops, Some(4));
    assert_eq!(got.len(), delays.len());
    for (g, w) in got.iter().zip(&delays) {
        assert!(g.abs_diff(*w) <= 10, "{got:?} vs {delays:?}");
    }
}

#[test]
fn rendered_frames_look_like_the_master() {
    let a = anim(&fixture("gif_animated_aero_56f.gif"));
    let master = encode_master(&a).unwrap();
    let small =
        decode_master(&render_animated(&master, 64, OutputFormat::Webp, Encoding::LOSSY).unwrap())
            .unwrap();
    // Compared as seen (premultiplied): what lies under a fully transparent
    // pixel is libwebp's to choose.
    let seen = |p: &[u8]| {
        let a = u64::from(p[3]);
        let c = |i: usize| u64::from(p[i]) * a / 255;
        [c(0), c(1), c(2), a]
    };
    assert_eq!(small.frames.len(), a.frames.len());
    for (i, (m, s)) in a.frames.iter().zip(&small.frames).enumerate() {
        let m = crate::pipeline::resize_square(&m.px, 64).unwrap();
        let diff: u64 = m
            .data
            .chunks_exact(4)
            .zip(s.px.data.chunks_exact(4))
            .map(|(a, b)| (0..4).map(|c| seen(a)[c].abs_diff(seen(b)[c])).sum::<u64>())
            .sum();
        let mean = diff as f64 / m.data.len() as f64;
        assert!(mean < 3.0, "frame {i}: mean difference {mean}");
    }
}

/// Golden frames from Pillow 13 (an independent compositor): (file, [(time in ms
/// into the loop, 4×4 grid of premultiplied RGBA means of the centre square)]).
/// Time into the loop (ms) and the expected grid.
type GoldenFrame = (u32, [[u8; 4]; 16]);
#[rustfmt::skip]
const GOLDEN: &[(&str, &[GoldenFrame])] = &[
    ("gif_animated_aero_56f.gif", &[
        (1, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        (801, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        (2301, [[11, 11, 11, 19], [2, 2, 2, 4], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        (4301, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        (5801, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [4, 4, 3, 7], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
    ]),
    ("apng_ball_20f.png", &[
        (1, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [79, 65, 53, 109], [51, 51, 55, 114], [0, 0, 0, 0], [0, 0, 0, 0], [17, 44, 37, 123], [31, 41, 16, 120], [0, 0, 0, 0], [0, 0, 0, 0], [4, 7, 5, 16], [5, 6, 2, 16], [0, 0, 0, 0]]),
        (526, [[0, 0, 0, 0], [39, 27, 28, 51], [20, 20, 34, 55], [0, 0, 0, 0], [0, 0, 0, 0], [41, 63, 45, 135], [48, 56, 24, 133], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        (976, [[0, 0, 0, 0], [86, 79, 61, 132], [64, 64, 58, 138], [0, 0, 0, 0], [0, 0, 0, 0], [9, 27, 26, 87], [17, 26, 10, 85], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        (1426, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [90, 89, 68, 151], [73, 73, 61, 157], [0, 0, 0, 0], [0, 0, 0, 0], [6, 19, 20, 72], [9, 19, 8, 70], [0, 0, 0, 0], [0, 0, 0, 0], [1, 3, 4, 13], [2, 3, 2, 12], [0, 0, 0, 0]]),
    ]),
    ("webp_animated_6f.webp", &[
        (1, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [4, 4, 4, 30], [2, 2, 2, 9], [0, 0, 0, 0], [0, 0, 0, 0], [132, 132, 132, 210], [38, 38, 38, 110], [0, 0, 0, 0], [0, 0, 0, 0], [3, 3, 3, 22], [2, 2, 2, 6], [0, 0, 0, 0], [0, 0, 0, 0]]),
        (201, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 2], [4, 4, 4, 27], [0, 0, 0, 0], [0, 0, 0, 0], [22, 22, 22, 77], [148, 148, 148, 242], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 3], [5, 5, 5, 34]]),
        (501, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 4], [24, 24, 24, 84], [1, 1, 1, 3], [0, 0, 0, 0], [4, 4, 4, 33], [147, 147, 147, 235], [4, 4, 4, 25], [0, 0, 0, 0]]),
    ]),
];

/// The 4×4 grid of premultiplied RGBA means of a frame (as `GOLDEN`).
fn grid(f: &Frame) -> [[u8; 4]; 16] {
    let s = f.px.width;
    let mut out = [[0u8; 4]; 16];
    for (i, cell) in out.iter_mut().enumerate() {
        let (gx, gy) = (i as u32 % 4, i as u32 / 4);
        let mut acc = [0f64; 4];
        let mut n = 0f64;
        for y in gy * s / 4..(gy + 1) * s / 4 {
            for x in gx * s / 4..(gx + 1) * s / 4 {
                let p = px(f, x, y);
                let a = f64::from(p[3]);
                for c in 0..3 {
                    acc[c] += f64::from(p[c]) * a / 255.0;
                }
                acc[3] += a;
                n += 1.0;
            }
        }
        for c in 0..4 {
            cell[c] = (acc[c] / n).round() as u8;
        }
    }
    out
}

#[test]
fn composited_frames_match_an_independent_compositor() {
    for (name, goldens) in GOLDEN {
        let a = anim(&fixture(name));
        for (t, want) in goldens.iter() {
            // The frame shown `t` ms into the loop.
            let mut start = 0u32;
            let frame = a
                .frames
                .iter()
                .find(|f| {
                    start += f.delay_ms;
                    *t < start
                })
                .unwrap();
            let got = grid(frame);
            for (g, w) in got.iter().zip(want) {
                for c in 0..4 {
                    assert!(
                        g[c].abs_diff(w[c]) <= 3,
                        "{name} at {t} ms: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn render_cost_grows_with_frames_and_pixels() {
    use crate::pipeline::animated_render_cost;
    let info = |frames, side| crate::model::AnimationInfo {
        side,
        frames,
        loop_count: 0,
        duration_ms: 0,
        smaller: 0,
    };
    let base = animated_render_cost(&info(45, 512), 512, 64);
    assert!(base >= 45 * 512 * 512 * 4 + 45 * 64 * 64 * 4);
    assert!(animated_render_cost(&info(90, 512), 512, 64) > base);
    assert!(animated_render_cost(&info(45, 512), 512, 128) > base);
    assert!(animated_render_cost(&info(45, 256), 256, 64) < base);
    // From a smaller rung: its pixels, never more than the master's.
    let small = animated_render_cost(&info(45, 512), 64, 64);
    assert!(small >= 45 * 64 * 64 * 8 && small < base / 32);
    assert_eq!(
        animated_render_cost(&info(45, 256), 512, 64),
        animated_render_cost(&info(45, 256), 256, 64)
    );
}

#[test]
fn an_embedded_icc_profile_converts_every_frame_and_the_still_to_srgb() {
    // The APNG of `apng_blend(0)` with a Display P3 `iCCP` chunk after IHDR.
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let plain = apng_frames_of(&[(200, 100, 50), (40, 160, 90)]);
    let mut iccp = b"P3\0\0".to_vec();
    iccp.extend(miniz_oxide::deflate::compress_to_vec_zlib(&p3, 6));
    let mut tagged = plain[..33].to_vec(); // signature + IHDR
    chunk(&mut tagged, b"iCCP", &iccp);
    tagged.extend_from_slice(&plain[33..]);

    let want = |rgb: (u8, u8, u8)| {
        let mut p = Pixels {
            width: 1,
            height: 1,
            layout: Layout::Rgba8,
            data: vec![rgb.0, rgb.1, rgb.2, 255],
        };
        assert!(crate::pipeline::color::to_srgb(&mut p, &p3));
        [p.data[0], p.data[1], p.data[2], p.data[3]]
    };
    let (a, b) = (anim(&plain), anim(&tagged));
    assert_eq!(px(&a.frames[0], 1, 1), [200, 100, 50, 255]);
    for (i, rgb) in [(200, 100, 50), (40, 160, 90)].into_iter().enumerate() {
        assert_ne!(
            want(rgb),
            [rgb.0, rgb.1, rgb.2, 255],
            "P3 moves this colour"
        );
        assert_eq!(px(&b.frames[i], 1, 1), want(rgb), "frame {i}");
    }
    let n = normalize_upload(&tagged, None, 0, &limits()).unwrap();
    let still = crate::pipeline::decode_rung(&n.ladder.last().unwrap().bytes).unwrap();
    let got = &still.data[..3];
    let w = want((200, 100, 50));
    assert!(
        got.iter().zip(&w).all(|(g, w)| g.abs_diff(*w) <= 2),
        "{got:?} vs {w:?}"
    );
}

/// An APNG of full 4×4 opaque frames of these colours.
fn apng_frames_of(colours: &[(u8, u8, u8)]) -> Vec<u8> {
    let frames: Vec<ApngFrame> = colours
        .iter()
        .map(|&(r, g, b)| ApngFrame {
            rect: (0, 0, 4, 4),
            rgba: [r, g, b, 255],
            dispose: 0,
            blend: 0,
        })
        .collect();
    apng_bytes(4, 4, 0, &frames)
}
