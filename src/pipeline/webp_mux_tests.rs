//! The animated WebP muxer: what two independent decoders (libwebp's
//! `WebPAnimDecoder` and image-webp) composite from it is the frames given,
//! identical frames merged, durations and loop count exact.

use std::io::Cursor;

use image::codecs::webp::WebPDecoder;
use image::AnimationDecoder;
use proptest::prelude::*;

use super::super::animated::{animated_ladder, decode_master, encode_master, render_animated};
use super::super::animation::{Animation, Frame};
use super::super::{Encoding, Layout, OutputFormat, Pixels};
use super::{changed, mux_animated_webp, MuxFrame, Rect, MAX_FRAME_DURATION};

fn frame(side: u32, delay_ms: u32, paint: impl Fn(u32, u32) -> [u8; 4]) -> Frame {
    let mut data = Vec::with_capacity((side * side * 4) as usize);
    for y in 0..side {
        for x in 0..side {
            data.extend_from_slice(&paint(x, y));
        }
    }
    Frame {
        px: Pixels {
            width: side,
            height: side,
            layout: Layout::Rgba8,
            data,
        },
        delay_ms,
    }
}

fn lossless(frames: &[Frame], side: u32, loops: u32) -> Vec<u8> {
    encode_master(&Animation {
        side,
        loop_count: loops,
        frames: frames.to_vec(),
    })
    .unwrap()
}

/// `frames` with identical consecutive frames merged, delays summed.
fn merged(frames: &[Frame]) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    for f in frames {
        match out.last_mut() {
            Some(last) if last.px == f.px => last.delay_ms += f.delay_ms,
            _ => out.push(f.clone()),
        }
    }
    out
}

/// What image-webp (not libwebp) composites: RGBA frames and delays.
fn image_webp_frames(bytes: &[u8]) -> Vec<(Vec<u8>, u32)> {
    WebPDecoder::new(Cursor::new(bytes))
        .unwrap()
        .into_frames()
        .map(|f| {
            let f = f.unwrap();
            let (n, d) = f.delay().numer_denom_ms();
            (f.into_buffer().into_raw(), n / d)
        })
        .collect()
}

/// A 6 px dot moving over a gradient, with a transparent corner; frames 2
/// and 3 identical.
fn moving_dot(side: u32) -> Vec<Frame> {
    let at = [(3, 5), (17, 4), (17, 4), (30, 21), (9, 40)];
    at.iter()
        .enumerate()
        .map(|(i, &(dx, dy))| {
            frame(side, 40 + 10 * i as u32, move |x, y| {
                if x < 4 && y < 4 {
                    [0, 0, 0, 0]
                } else if (dx..dx + 6).contains(&x) && (dy..dy + 6).contains(&y) {
                    [250, 20, 30, 255]
                } else {
                    [(x * 4) as u8, (y * 4) as u8, 128, 200]
                }
            })
        })
        .collect()
}

#[test]
fn lossless_frames_come_back_exactly_from_both_decoders() {
    let frames = moving_dot(48);
    let bytes = lossless(&frames, 48, 3);
    let want = merged(&frames);
    assert_eq!(want.len(), 4);
    let got = decode_master(&bytes).unwrap();
    assert_eq!((got.side, got.loop_count), (48, 3));
    assert_eq!(got.frames, want);
    let other = image_webp_frames(&bytes);
    assert_eq!(other.len(), want.len());
    for ((px, delay), w) in other.iter().zip(&want) {
        assert_eq!((px, *delay), (&w.px.data, w.delay_ms));
    }
}

#[test]
fn later_frames_cover_only_what_changed() {
    let frames = moving_dot(64);
    let all = lossless(&frames, 64, 0);
    // The ANMF headers: the whole canvas, then each changed rectangle.
    let u24 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], 0]);
    let (mut at, mut rects) = (12, Vec::new());
    while at + 8 <= all.len() {
        let len = u32::from_le_bytes(all[at + 4..at + 8].try_into().unwrap()) as usize;
        if &all[at..at + 4] == b"ANMF" {
            let h = &all[at + 8..];
            rects.push((
                2 * u24(h),
                2 * u24(&h[3..]),
                u24(&h[6..]) + 1,
                u24(&h[9..]) + 1,
            ));
        }
        at += 8 + len + (len & 1);
    }
    assert_eq!(
        rects,
        [
            (0, 0, 64, 64),
            (2, 4, 21, 7),
            (16, 4, 20, 23),
            (8, 20, 28, 26)
        ]
    );
    let r = changed(&frames[0].px.data, &frames[1].px.data, 64).unwrap();
    assert_eq!(
        r,
        Rect {
            x: 2,
            y: 4,
            w: 21,
            h: 7
        }
    );
    assert_eq!(changed(&frames[1].px.data, &frames[2].px.data, 64), None);
}

#[test]
fn one_changed_pixel_at_odd_offsets() {
    let a = frame(9, 100, |_, _| [1, 2, 3, 255]);
    let b = frame(9, 100, |x, y| {
        if (x, y) == (7, 5) {
            [200, 0, 0, 255]
        } else {
            [1, 2, 3, 255]
        }
    });
    assert_eq!(
        changed(&a.px.data, &b.px.data, 9),
        Some(Rect {
            x: 6,
            y: 4,
            w: 2,
            h: 2
        })
    );
    let frames = [a, b];
    assert_eq!(
        decode_master(&lossless(&frames, 9, 0)).unwrap().frames,
        frames
    );
}

#[test]
fn loop_counts_past_16_bits_play_forever_and_long_merges_split() {
    let still = frame(4, MAX_FRAME_DURATION, |_, _| [9, 9, 9, 255]);
    let frames = [still.clone(), still.clone(), still];
    let got = decode_master(&lossless(&frames, 4, 70_000)).unwrap();
    assert_eq!(got.loop_count, 0);
    let total: u64 = got.frames.iter().map(|f| u64::from(f.delay_ms)).sum();
    assert_eq!(total, 3 * u64::from(MAX_FRAME_DURATION));
    assert_eq!(got.frames.len(), 3);
}

#[test]
fn lossy_renders_keep_timing_and_look_alike() {
    let frames = moving_dot(64);
    let master = lossless(&frames, 64, 2);
    let webp = render_animated(&master, 64, OutputFormat::Webp, Encoding::LOSSY).unwrap();
    let got = decode_master(&webp).unwrap();
    let want = merged(&frames);
    assert_eq!(got.loop_count, 2);
    let delays = |f: &[Frame]| f.iter().map(|f| f.delay_ms).collect::<Vec<_>>();
    assert_eq!(delays(&got.frames), delays(&want));
    for (g, w) in got.frames.iter().zip(&want) {
        let err: u64 =
            g.px.data
                .iter()
                .zip(&w.px.data)
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum();
        assert!(err / (w.px.data.len() as u64) < 6, "mean error {err}");
    }
    assert_eq!(image_webp_frames(&webp).len(), want.len());
}

#[test]
fn nothing_and_wrong_shapes_are_refused() {
    let f = frame(8, 10, |_, _| [0; 4]);
    let enc = |_: &Pixels| Ok(Vec::new());
    assert!(mux_animated_webp(&[], 8, 0, enc).is_err());
    let one = [MuxFrame {
        px: &f.px,
        delay_ms: 10,
    }];
    assert!(mux_animated_webp(&one, 9, 0, enc).is_err());
    // An encoder output that is no WebP is our fault, not a panic.
    assert!(mux_animated_webp(&one, 8, 0, |_| Ok(b"RIFF\0\0\0\0WEBP".to_vec())).is_err());
}

#[test]
fn the_animated_ladder_halves_down_to_64_and_merges_what_becomes_identical() {
    let base = |x: u32, y: u32| [(x % 7 * 30) as u8, (y % 5 * 40) as u8, 90, 255];
    let frames = vec![
        frame(300, 50, base),
        frame(300, 70, base),
        frame(300, 80, |x, _| [x as u8, 0, 0, 255]),
    ];
    let anim = Animation {
        side: 300,
        loop_count: 5,
        frames,
    };
    let rungs = animated_ladder(anim).unwrap();
    let sides: Vec<u32> = rungs.iter().map(|r| r.side).collect();
    assert_eq!(sides, [150, 75]);
    for r in &rungs {
        let a = decode_master(&r.bytes).unwrap();
        assert_eq!((a.side, a.loop_count), (r.side, 5));
        let delays: Vec<u32> = a.frames.iter().map(|f| f.delay_ms).collect();
        assert_eq!(delays, [120, 80], "{}", r.side);
    }
    let small = Animation {
        side: 127,
        loop_count: 0,
        frames: vec![frame(127, 10, |_, _| [0; 4])],
    };
    assert!(animated_ladder(small).unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_sequence_of_rectangle_changes_round_trips(
        side in 1u32..20,
        edits in prop::collection::vec(
            (0u32..20, 0u32..20, 1u32..20, 1u32..20, any::<[u8; 4]>(), 1u32..500),
            1..8,
        ),
    ) {
        let mut frames: Vec<Frame> = Vec::new();
        let mut canvas = frame(side, 0, |_, _| [0, 0, 0, 0]).px;
        for (x, y, w, h, colour, delay) in edits {
            for yy in y.min(side)..(y + h).min(side) {
                for xx in x.min(side)..(x + w).min(side) {
                    let at = ((yy * side + xx) * 4) as usize;
                    canvas.data[at..at + 4].copy_from_slice(&colour);
                }
            }
            frames.push(Frame { px: canvas.clone(), delay_ms: delay });
        }
        let bytes = lossless(&frames, side, 1);
        let got = decode_master(&bytes).unwrap();
        prop_assert_eq!(got.frames, merged(&frames));
    }
}
