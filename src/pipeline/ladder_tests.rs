//! Tests of `ladder.rs` (its own file: the module would pass the 600-line
//! limit with them, `tests/tidy.rs`).

use super::*;
use crate::pipeline::decode_rung;
use crate::pipeline::fixture;
use crate::pipeline::RAW_RUNGS_UP_TO;
use proptest::prelude::*;

const LOSSLESS: Encoding = Encoding::LOSSLESS;

#[test]
fn ladder_sides_table() {
    let cases: &[(u32, &[u32])] = &[
        (1024, &[1024, 512, 256, 128, 64]),
        (1000, &[1000, 500, 250, 125]),
        (100, &[100]),
        (128, &[128, 64]),
        (127, &[127]),
        (64, &[64]),
        (1, &[1]),
    ];
    for (m, want) in cases {
        assert_eq!(ladder_sides(*m), want.to_vec(), "{m}");
    }
}

#[test]
fn pick_rung_table() {
    let ladder = [1024, 512, 256, 128, 64];
    let cases: &[(u32, usize)] = &[
        (1, 4),
        (64, 4),
        (65, 3),
        (80, 3),
        (128, 3),
        (129, 2),
        (512, 1),
        (1024, 0),
        (2048, 0),
    ];
    for &(size, want) in cases {
        assert_eq!(pick_rung(&ladder, size), want, "{size}");
    }
    assert_eq!(pick_rung(&[], 10), 0);
    assert_eq!(pick_rung(&[100], 2048), 0);
}

/// Mean absolute channel difference of two same-sized rungs.
fn mean_diff(a: &Rung, b: &Rung) -> f64 {
    let (pa, pb) = (
        decode_rung(&a.bytes).unwrap(),
        decode_rung(&b.bytes).unwrap(),
    );
    assert_eq!(
        (pa.width, pa.height, pa.layout),
        (pb.width, pb.height, pb.layout)
    );
    let sum: u64 = pa
        .data
        .iter()
        .zip(&pb.data)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / pa.data.len() as f64
}

#[test]
fn shrink_on_load_applies_only_where_the_square_allows_it() {
    let big = fixture("photo_large_4032x3024.jpg");
    let l = Limits::default();
    let (d, scale, dims) = decode_jpeg_shrunk(&big, &l, None).expect("shrinks");
    assert_eq!(
        (scale, dims, d.image.dimensions()),
        (2, (4032, 3024), (2016, 1512))
    );
    // (crop side, master side) → expected divisor; None = full decode.
    let sq = |x, y, side| Some(Crop { x, y, side });
    let cases: &[(Option<Crop>, u32, Option<u32>)] = &[
        (sq(0, 0, 2048), 1024, Some(2)),
        (sq(8, 16, 2048), 256, Some(8)),
        (sq(0, 0, 2046), 1024, None), // 1023 < 1024 at 1/2
        (sq(1, 0, 2048), 1024, None), // offset not divisible
        (sq(2, 6, 2048), 256, Some(2)),
        (None, 256, Some(8)),
        (None, 512, Some(4)),
        (None, 2048, None),
    ];
    for &(crop, master_side, want) in cases {
        let l = Limits {
            master_side,
            ..Limits::default()
        };
        let got = decode_jpeg_shrunk(&big, &l, crop).map(|(_, s, _)| s);
        assert_eq!(got, want, "crop {crop:?} master {master_side}");
    }
    // Too small to shrink at the default master side, CMYK: the full decode.
    let l = Limits::default();
    for name in [
        "photo_retina_baseline_1024.jpg",
        "photo_cmyk_100.jpg",
        "exif_landscape_6.jpg",
    ] {
        assert!(
            decode_jpeg_shrunk(&fixture(name), &l, None).is_none(),
            "{name}"
        );
    }
    let tiny_master = Limits {
        master_side: 16,
        ..Limits::default()
    };
    let cmyk = fixture("photo_cmyk_100.jpg");
    assert!(decode_jpeg_shrunk(&cmyk, &tiny_master, None).is_none());
}

#[test]
fn shrink_on_load_matches_the_full_decode() {
    let l = Limits::default();
    let crop = Some(Crop {
        x: 1000,
        y: 334,
        side: 2500,
    });
    for (name, crop) in [
        ("photo_large_4032x3024.jpg", None),
        ("photo_large_4032x3024.jpg", crop),
    ] {
        let bytes = fixture(name);
        let fast = normalize_with(&bytes, crop, &l, true).unwrap();
        let full = normalize_with(&bytes, crop, &l, false).unwrap();
        assert_eq!(fast.ladder.len(), full.ladder.len());
        for (a, b) in fast.ladder.iter().zip(&full.ladder) {
            assert_eq!(a.side, b.side);
            let d = mean_diff(a, b);
            assert!(d < 2.5, "{name} {crop:?} rung {}: mean diff {d:.2}", a.side);
        }
    }
    // An EXIF-rotated large JPEG keeps its orientation on the fast path.
    let rotated = fixture("exif_landscape_6.jpg");
    let l = Limits {
        master_side: 64,
        ..Limits::default()
    };
    let fast = normalize_with(&rotated, None, &l, true).unwrap();
    let full = normalize_with(&rotated, None, &l, false).unwrap();
    let d = mean_diff(&fast.ladder[0], &full.ladder[0]);
    assert!(d < 4.0, "exif_landscape_6: mean diff {d:.2}");
}

#[test]
fn the_parallel_ladder_is_the_sequential_one() {
    // A master of 512 px or more is built on the helper pool, its encodes,
    // halvings and decision side by side: the ladder and decision must be
    // exactly the one-thread result, in order.
    for name in ["photo_retina_baseline_1024.jpg", "logo_alpha_disc_512.png"] {
        let n = normalize(&fixture(name), None, &Limits::default()).unwrap();
        let master = decode_rung(&n.ladder[0].bytes).unwrap();
        assert!(master.width >= PARALLEL_SIDE, "{name}");
        let sides: Vec<u32> = n.ladder.iter().map(|r| r.side).collect();
        assert_eq!(sides, ladder_sides(master.width), "{name}");
        let (alone, compression) = rungs(&master, &sides, RAW_RUNGS_UP_TO, false).unwrap();
        assert_eq!(compression, n.compression, "{name}");
        let hashes = |l: &[Rung]| l.iter().map(|r| r.hash).collect::<Vec<_>>();
        assert_eq!(hashes(&alone), hashes(&n.ladder), "{name}");
        let split =
            crate::pipeline::parallel::install(|| rungs(&master, &sides, RAW_RUNGS_UP_TO, true));
        let (split, compression) = split.unwrap();
        assert_eq!(compression, n.compression, "{name}");
        assert_eq!(hashes(&split), hashes(&n.ladder), "{name}");
    }
}

#[test]
fn a_photos_rungs_are_uncompressed_up_to_the_setting() {
    // (raw_rungs_up_to, sides stored uncompressed) for a 1024 px photo.
    let photo = fixture("photo_retina_baseline_1024.jpg");
    let cases: &[(u32, &[u32])] = &[
        (0, &[]),
        (RAW_RUNGS_UP_TO, &[256, 128, 64]),
        (512, &[512, 256, 128, 64]),
    ];
    for &(up_to, want) in cases {
        let l = Limits {
            raw_rungs_up_to: up_to,
            ..Limits::default()
        };
        let n = normalize(&photo, None, &l).unwrap();
        let raw: Vec<u32> = (n.ladder.iter())
            .filter(|r| r.bytes.starts_with(super::super::encode::RAW_MAGIC))
            .map(|r| r.side)
            .collect();
        assert_eq!(raw, want, "up to {up_to}");
    }
}

#[test]
fn normalize_refuses_empty_and_oversized_bodies() {
    let l = Limits::default();
    assert!(matches!(
        normalize(&[], None, &l),
        Err(PipelineError::Empty)
    ));
    let small = Limits {
        max_upload_bytes: 3,
        ..l
    };
    assert!(matches!(
        normalize(b"GIF89a", None, &small),
        Err(PipelineError::TooLarge { bytes: 6, limit: 3 })
    ));
    assert!(matches!(
        normalize(b"<svg/>", None, &l),
        Err(PipelineError::UnsupportedFormat { .. })
    ));
}

#[test]
fn render_validates_size_before_decoding() {
    assert!(matches!(
        render(b"junk", 0, OutputFormat::Png, LOSSLESS),
        Err(PipelineError::BadSize(0))
    ));
    assert!(matches!(
        render(b"junk", 2049, OutputFormat::Png, LOSSLESS),
        Err(PipelineError::BadSize(2049))
    ));
    assert!(matches!(
        render(b"junk", 16, OutputFormat::Png, LOSSLESS),
        Err(PipelineError::Internal(_))
    ));
}

proptest! {
    #[test]
    fn pick_rung_is_smallest_adequate(master in 1u32..=4096, size in 1u32..=4096) {
        let sides = ladder_sides(master);
        let i = pick_rung(&sides, size);
        prop_assert!(i < sides.len());
        if sides[0] >= size {
            prop_assert!(sides[i] >= size);
            prop_assert!(sides.iter().all(|&s| s < size || s >= sides[i]));
        } else {
            prop_assert_eq!(i, 0);
        }
    }
}
