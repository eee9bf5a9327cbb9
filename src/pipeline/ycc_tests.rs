//! Tests of `ycc.rs`.

use super::*;
use crate::model::ContentHash;
use crate::pipeline::encode::encode_rung;
use crate::pipeline::jpeg::encode_jpeg;
use crate::pipeline::{
    decode_rung, encode, fixture, normalize, render, salt, Encoding, Limits, OutputFormat,
};
use crate::pipeline::{Rung, RAW_RUNGS_UP_TO};
use proptest::prelude::*;

/// Pixels of a seeded noise image (what QOI cannot compress).
fn noise(w: u32, h: u32, seed: u32) -> Pixels {
    let mut s = seed | 1;
    let data = (0..w * h * 3)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8
        })
        .collect();
    Pixels {
        width: w,
        height: h,
        layout: Layout::Rgb8,
        data,
    }
}

/// A photo's ladder by default (its rung above 256 px as planes) and with
/// every rung below 513 px raw (`raw_rungs_up_to` 512): the same pixels
/// before storage.
fn ladders(name: &str) -> (Vec<Rung>, Vec<Rung>) {
    let with = |raw_rungs_up_to| {
        normalize(
            &fixture(name),
            None,
            &Limits {
                raw_rungs_up_to,
                ..Limits::default()
            },
        )
        .unwrap()
        .ladder
    };
    (with(RAW_RUNGS_UP_TO), with(512))
}

/// Photos whose ladder has a rung above 256 px below the master: 512 px
/// (1024 px masters: one square, one wide with Adobe RGB, one rotated by
/// EXIF) and 384 px (a 768 px master in Display P3).
/// A photo's rungs above 256 px below its master, as `ladders` stores them
/// by default and raw.
fn above_256(name: &str) -> Vec<(Rung, Rung)> {
    let (planar, raw) = ladders(name);
    let pairs = planar.into_iter().zip(raw).skip(1);
    pairs.filter(|(p, _)| p.side > 256).collect()
}

const PHOTOS: [&str; 4] = [
    "photo_retina_baseline_1024.jpg",
    "photo_adobergb_2000x1072.jpg",
    "exif_landscape_6.jpg",
    "photo_iphone_pug_displayp3_1024x768.jpg",
];

#[test]
fn jpeg_from_the_planes_is_the_jpeg_from_the_pixels() {
    let mut compared = 0;
    for name in PHOTOS {
        for (p, r) in &above_256(name) {
            assert!(p.bytes.starts_with(YCC_MAGIC), "{name} {}", p.side);
            assert!(r.bytes.starts_with(b"AEr1"), "{name} {}", r.side);
            let salted = salt::salt(p.bytes.clone(), &ContentHash([3; 32]));
            for stored in [&p.bytes, &salted] {
                let a = render(stored, p.side, OutputFormat::Jpeg, Encoding::LOSSY).unwrap();
                let b = render(&r.bytes, r.side, OutputFormat::Jpeg, Encoding::LOSSY).unwrap();
                assert!(
                    a == b,
                    "{name} {} px: {} vs {} bytes",
                    p.side,
                    a.len(),
                    b.len()
                );
            }
            compared += 1;
        }
    }
    assert_eq!(compared, PHOTOS.len());
    // Not square, and the parallel encode's sizes.
    for (w, h) in [(48, 32), (16, 400), (512, 512), (400, 496)] {
        let px = noise(w, h, w ^ h);
        let bytes = encode_ycc_rung(&px).unwrap();
        let planes = planes(&bytes).unwrap();
        let a = encode_jpeg(w, h, |enc, _, _| enc.encode_image(planes)).unwrap();
        assert!(
            a == encode(&px, OutputFormat::Jpeg, Encoding::LOSSY).unwrap(),
            "{w}x{h}"
        );
    }
}

/// Mean and largest absolute channel difference.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y));
    let sum: u64 = d.clone().map(u64::from).sum();
    (sum as f64 / a.len() as f64, d.max().unwrap_or(0))
}

#[test]
fn the_planes_convert_back_to_the_photo_with_its_chroma_at_half_resolution() {
    for name in PHOTOS {
        for (p, r) in &above_256(name) {
            let (back, exact) = (
                decode_rung(&p.bytes).unwrap(),
                decode_rung(&r.bytes).unwrap(),
            );
            assert_eq!((back.width, back.layout), (exact.width, exact.layout));
            let (mean, _) = diff(&back.data, &exact.data);
            // 0.4–1.6 for these four (at 128 px it would be 1.9–2.7).
            assert!(
                mean < 2.0,
                "{name} {} px: mean difference {mean:.2}",
                p.side
            );
        }
    }
    // Where the chroma is the same over each 2×2 block, only rounding
    // differs: greys, and colours in 2×2 blocks.
    let blocks = |w: u32, h: u32, colour: &dyn Fn(u32, u32) -> [u8; 3]| Pixels {
        width: w,
        height: h,
        layout: Layout::Rgb8,
        data: (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| colour(x / 2, y / 2)))
            .collect(),
    };
    let grey = |x: u32, y: u32| [((x * 13 + y * 7) % 256) as u8; 3];
    let colour = |x: u32, y: u32| [(x * 9) as u8, (y * 11) as u8, ((x + y) * 5) as u8];
    for px in [blocks(64, 48, &grey), blocks(32, 32, &colour)] {
        let back = to_rgb(&planes(&encode_ycc_rung(&px).unwrap()).unwrap(), Vec::new());
        assert_eq!((back.width, back.height), (px.width, px.height));
        let (mean, max) = diff(&back.data, &px.data);
        assert!(max <= 3 && mean < 1.0, "max {max}, mean {mean:.2}");
    }
}

#[test]
fn only_opaque_rungs_in_16_px_blocks_are_stored_as_planes() {
    let cases = [
        ((512, 512), true),
        ((16, 16), true),
        ((504, 512), false),
        ((512, 8), false),
    ];
    for ((w, h), want) in cases {
        let px = noise(w, h, 7);
        assert_eq!(fits(&px), want, "{w}x{h}");
        assert_eq!(encode_ycc_rung(&px).is_ok(), want, "{w}x{h}");
    }
    let rgba = Pixels {
        width: 16,
        height: 16,
        layout: Layout::Rgba8,
        data: vec![9; 16 * 16 * 4],
    };
    assert!(!fits(&rgba) && encode_ycc_rung(&rgba).is_err());
    // The master stays lossless whatever its side, and so do the rungs up
    // to 256 px: planes only for the one in between.
    for name in PHOTOS {
        let (planar, _) = ladders(name);
        let planes: Vec<u32> = (planar.iter())
            .filter(|r| r.bytes.starts_with(YCC_MAGIC))
            .map(|r| r.side)
            .collect();
        assert_eq!(planes, [planar[1].side], "{name}");
    }
    // An opaque photo-like rung of 512 px is planes by default, 1.5 bytes a
    // pixel.
    let bytes = encode_rung(&noise(512, 512, 1), Limits::default().raw_rungs_up_to, true).unwrap();
    assert_eq!(
        (&bytes[..4], bytes.len()),
        (&YCC_MAGIC[..], 12 + 512 * 512 * 3 / 2)
    );
}

#[test]
fn corrupt_ycc_rungs_are_internal_errors() {
    let good = encode_ycc_rung(&noise(32, 16, 5)).unwrap();
    let with_sides = |w: u32, h: u32| {
        let mut b = good.clone();
        b[4..8].copy_from_slice(&w.to_be_bytes());
        b[8..12].copy_from_slice(&h.to_be_bytes());
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("magic only", YCC_MAGIC.to_vec()),
        ("short header", good[..11].to_vec()),
        ("one byte short", good[..good.len() - 1].to_vec()),
        ("one byte long", [&good[..], &[0]].concat()),
        ("zero side", with_sides(0, 16)),
        (
            "sides swapped, same length",
            with_sides(16, 32)[..].to_vec(),
        ),
        ("not in 16 px blocks", with_sides(24, 16)),
        ("huge sides", with_sides(1 << 20, 1 << 20)),
        ("sides overflowing usize", with_sides(u32::MAX, u32::MAX)),
    ];
    for (why, bytes) in cases {
        match decode_rung(&bytes) {
            // Swapping the sides keeps the length: a valid (if wrong)
            // rung, as any byte change inside the planes would be.
            Ok(px) if why.starts_with("sides swapped") => assert_eq!(px.width, 16),
            Err(PipelineError::Internal(_)) => {}
            other => panic!("{why}: {other:?}"),
        }
        for format in [OutputFormat::Jpeg, OutputFormat::Png] {
            let r = render(&bytes, 32, format, Encoding::LOSSY);
            assert!(
                matches!(r, Err(PipelineError::Internal(_))) || why.starts_with("sides swapped"),
                "{why} {format:?}: {r:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a damaged header or a cut says, reading the rung never
    /// panics and never reads past it: an internal error, or pixels of the
    /// sides the header states.
    #[test]
    fn damaged_ycc_framing_never_panics(
        at in 0usize..12,
        with in proptest::collection::vec(any::<u8>(), 1..8),
        cut in 0usize..700,
    ) {
        let mut b = encode_ycc_rung(&noise(32, 16, 11)).unwrap();
        for (i, v) in with.iter().enumerate() {
            if let Some(x) = b.get_mut(at + i) {
                *x = *v;
            }
        }
        b.truncate(cut.min(b.len()));
        match decode_rung(&b) {
            Ok(px) => prop_assert_eq!(
                (px.width * px.height) as usize * 3 / 2 + 12,
                b.len()
            ),
            Err(e) => prop_assert!(matches!(e, PipelineError::Internal(_)), "{e:?}"),
        }
        let _ = render(&b, 16, OutputFormat::Jpeg, Encoding::LOSSY);
    }
}
