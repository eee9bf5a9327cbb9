//! Tests of `encode.rs` (its own file: the module would pass the 600-line
//! limit with them, `tests/tidy.rs`).

use super::*;
use crate::pipeline::jpeg::{parallel_jpeg_interval, JPEG_QUALITY};

/// A `w`×`h` image whose pixel at (x, y) is `pixel(x, y)` (RGBA; the
/// alpha is dropped for `Rgb8`).
fn image(w: u32, h: u32, layout: Layout, mut pixel: impl FnMut(u32, u32) -> [u8; 4]) -> Pixels {
    let mut data = Vec::with_capacity(w as usize * h as usize * channels(layout));
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&pixel(x, y)[..channels(layout)]);
        }
    }
    Pixels {
        width: w,
        height: h,
        layout,
        data,
    }
}

fn gradient(w: u32, h: u32, layout: Layout) -> Pixels {
    image(w, h, layout, |x, y| {
        [(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8, 200]
    })
}

#[test]
fn flatten_table() {
    let cases: &[([u8; 4], [u8; 3])] = &[
        ([10, 20, 30, 255], [10, 20, 30]),
        ([10, 20, 30, 0], [255, 255, 255]),
        ([0, 0, 0, 128], [127, 127, 127]),
        ([255, 0, 255, 51], [255, 204, 255]),
    ];
    for (i, o) in cases {
        assert_eq!(flatten_on_white(i), o.to_vec(), "{i:?}");
    }
}

#[test]
fn rung_roundtrip_is_lossless_and_deterministic() {
    for layout in [Layout::Rgb8, Layout::Rgba8] {
        let p = gradient(33, 33, layout);
        let a = encode_rung(&p, RAW_RUNGS_UP_TO, true).unwrap();
        assert_eq!(a, encode_rung(&p, RAW_RUNGS_UP_TO, true).unwrap());
        assert_eq!(decode_rung(&a).unwrap(), p);
    }
}

/// Pixels QOI cannot compress: a photograph's fine detail, at worst.
fn noise(w: u32, h: u32, layout: Layout) -> Pixels {
    let mut seed = 0x9e37_79b9_u32;
    image(w, h, layout, |_, _| {
        [0; 4].map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        })
    })
}

/// Flat art: a few solid colours, which QOI stores as runs.
fn flat(w: u32, h: u32, layout: Layout) -> Pixels {
    let colours = [[230u8, 57, 70, 255], [29, 53, 87, 255], [241, 250, 238, 0]];
    image(w, h, layout, |x, y| {
        colours[((x / 16 + y / 16) % 3) as usize]
    })
}

/// How a rung is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    Raw,
    Qoi,
    Striped,
    Ycc,
}

fn stored(bytes: &[u8]) -> Stored {
    match &bytes[..4] {
        b"AEr1" => Stored::Raw,
        b"qoif" => Stored::Qoi,
        b"AEq1" => Stored::Striped,
        b"AEy1" => Stored::Ycc,
        other => panic!("unknown rung magic {other:?}"),
    }
}

#[test]
fn rung_storage_table() {
    // (pixels, raw_rungs_up_to, expected storage): a rung QOI cannot
    // shrink by 60 % is uncompressed up to the setting (never above
    // RAW_RUNG_MAX_SIDE), YCbCr planes above it and PLANES_ABOVE up to
    // RAW_RUNG_MAX_SIDE when opaque in 16 px blocks; else QOI, in stripes
    // when taller than STRIPE_ROWS.
    use Stored::*;
    let cases: &[(Pixels, u32, Stored)] = &[
        (noise(64, 64, Layout::Rgb8), 256, Raw),
        (noise(256, 256, Layout::Rgba8), 256, Raw),
        (noise(257, 257, Layout::Rgb8), 256, Striped),
        (noise(512, 300, Layout::Rgb8), 256, Striped),
        (noise(512, 300, Layout::Rgb8), 512, Raw),
        (noise(513, 513, Layout::Rgb8), 512, Striped),
        (noise(513, 513, Layout::Rgb8), 4096, Striped),
        (noise(64, 64, Layout::Rgb8), 0, Qoi),
        (noise(256, 256, Layout::Rgb8), 0, Striped),
        (noise(272, 272, Layout::Rgb8), 0, Ycc),
        (noise(512, 512, Layout::Rgb8), 256, Ycc),
        (noise(496, 512, Layout::Rgb8), 256, Ycc),
        (noise(504, 512, Layout::Rgb8), 256, Striped),
        (noise(512, 512, Layout::Rgba8), 256, Striped),
        (noise(512, 512, Layout::Rgb8), 512, Raw),
        (noise(528, 528, Layout::Rgb8), 256, Striped),
        (flat(512, 128, Layout::Rgb8), 256, Qoi),
        (noise(300, 128, Layout::Rgb8), 0, Qoi),
        (noise(300, 129, Layout::Rgba8), 0, Striped),
        (flat(64, 64, Layout::Rgb8), 256, Qoi),
        (flat(256, 256, Layout::Rgba8), 256, Striped),
        (flat(300, 300, Layout::Rgb8), 512, Striped),
        // QOI's 22 bytes of header and end marker outweigh one pixel.
        (flat(1, 1, Layout::Rgb8), 256, Raw),
    ];
    for (px, up_to, want) in cases {
        let bytes = encode_rung(px, *up_to, true).unwrap();
        let how = format!("{}x{} {:?} up to {up_to}", px.width, px.height, px.layout);
        assert_eq!(stored(&bytes), *want, "{how}");
        let decoded = decode_rung(&bytes).unwrap();
        if *want == Ycc {
            // 4:2:0 chroma: lossy (`ycc_tests` bounds the difference).
            let shape = |p: &Pixels| (p.width, p.height, p.layout, p.data.len());
            assert_eq!(shape(&decoded), shape(px), "{how}");
            continue;
        }
        assert_eq!(&decoded, px, "{how}");
        if *want == Striped {
            // The stripes are whole QOI images of the rung's rows: the
            // bytes are no larger than one QOI image's by more than each
            // stripe's header and end marker, and their own length.
            let one = qoi::encode_to_vec(&px.data, px.width, px.height).unwrap();
            let stripes = px.height.div_ceil(STRIPE_ROWS) as usize;
            assert!(
                bytes.len() <= one.len() + stripes * (22 + 4) + STRIPED_HEADER,
                "{how}"
            );
            assert_eq!(striped_rung_len(&bytes), Some(bytes.len()));
        }
    }
}

#[test]
fn striped_rungs_are_the_rows_of_the_rung_one_qoi_image_per_stripe() {
    let px = noise(40, 300, Layout::Rgba8);
    let bytes = encode_rung(&px, 0, true).unwrap();
    let s = striped_parts(&bytes).unwrap();
    assert_eq!(
        (s.width, s.height, s.rows, s.stripes.len()),
        (40, 300, 128, 3)
    );
    let row_bytes = 40 * 4;
    for (i, stripe) in s.stripes.iter().enumerate() {
        let (h, pixels) = qoi::decode_to_vec(stripe).unwrap();
        assert_eq!((h.width, h.height), (40, [128, 128, 44][i]));
        let from = i * 128 * row_bytes;
        assert_eq!(pixels, px.data[from..from + pixels.len()]);
    }
}

#[test]
fn corrupt_striped_rungs_are_internal_errors() {
    let good = encode_rung(&noise(16, 300, Layout::Rgb8), 0, true).unwrap();
    assert_eq!(stored(&good), Stored::Striped);
    let with = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    let first_len = u32::from_be_bytes(good[17..21].try_into().unwrap());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("magic only", STRIPED_MAGIC.to_vec()),
        ("header only", good[..STRIPED_HEADER].to_vec()),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("trailing byte", [good.clone(), vec![0]].concat()),
        ("zero width", with(4, &0u32.to_be_bytes())),
        ("huge side", with(8, &100_000u32.to_be_bytes())),
        ("taller than its stripes", with(8, &400u32.to_be_bytes())),
        ("five channels", with(12, &[5])),
        ("four channels in the header", with(12, &[4])),
        ("zero rows per stripe", with(13, &0u32.to_be_bytes())),
        ("more rows per stripe", with(13, &129u32.to_be_bytes())),
        ("one row per stripe", with(13, &1u32.to_be_bytes())),
        (
            "a stripe one byte longer",
            with(17, &(first_len + 1).to_be_bytes()),
        ),
        ("a stripe past the end", with(17, &u32::MAX.to_be_bytes())),
        // The first stripe starts after the 3-entry table: its own QOI
        // header (magic, width, height, channels), its end marker last.
        (
            "a stripe of another width",
            with(STRIPED_HEADER + 12 + 4, &[0, 0, 0, 17]),
        ),
        (
            "a stripe of other channels",
            with(STRIPED_HEADER + 12 + 12, &[4]),
        ),
        ("a stripe's end marker broken", {
            with(STRIPED_HEADER + 12 + first_len as usize - 1, &[0])
        }),
    ];
    for (why, c) in cases {
        let e = decode_rung(&c).expect_err(why);
        assert!(!e.is_client_error(), "{why}: {e:?}");
    }
}

#[test]
fn corrupt_raw_rungs_are_internal_errors() {
    let good = encode_rung(&noise(16, 16, Layout::Rgb8), RAW_RUNGS_UP_TO, true).unwrap();
    assert!(good.starts_with(RAW_MAGIC));
    let with = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("magic only", RAW_MAGIC.to_vec()),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("trailing byte", [good.clone(), vec![0]].concat()),
        ("zero width", with(4, &0u32.to_be_bytes())),
        ("huge side", with(8, &100_000u32.to_be_bytes())),
        ("five channels", with(12, &[5])),
        (
            "width x height overflows the bytes",
            with(4, &16_384u32.to_be_bytes()),
        ),
    ];
    for (why, c) in cases {
        let e = decode_rung(&c).unwrap_err();
        assert!(!e.is_client_error(), "{why}: {e:?}");
    }
}

proptest::proptest! {
    #[test]
    fn any_rung_round_trips(
        w in 1u32..48,
        h in 1u32..400,
        alpha: bool,
        smooth: bool,
        up_to in proptest::sample::select(vec![0u32, RAW_RUNGS_UP_TO]),
    ) {
        let layout = if alpha { Layout::Rgba8 } else { Layout::Rgb8 };
        let px = if smooth { gradient(w, h, layout) } else { noise(w, h, layout) };
        // Without planes: the lossless storages (`ycc_tests` has theirs).
        let bytes = encode_rung(&px, up_to, false).unwrap();
        proptest::prop_assert_eq!(decode_rung(&bytes).unwrap(), px);
    }

    /// A striped rung with any bytes of its header and stripe table
    /// overwritten, or cut anywhere: the framing's one reader never panics,
    /// its length is the rung's whenever the decode succeeds, and a failed
    /// decode is our fault (an internal error), never the client's.
    #[test]
    fn damaged_striped_framing_never_panics(
        at in 0usize..(STRIPED_HEADER + 12 + 8),
        patch in proptest::collection::vec(proptest::num::u8::ANY, 1..6),
        cut in proptest::option::of(0usize..4000),
    ) {
        let good = encode_rung(&noise(16, 300, Layout::Rgb8), 0, true).unwrap();
        let mut b = good.clone();
        for (i, v) in patch.iter().enumerate() {
            if let Some(x) = b.get_mut(at + i) {
                *x = *v;
            }
        }
        if let Some(cut) = cut {
            b.truncate(cut.min(b.len()));
        }
        match decode_rung(&b) {
            Ok(px) => {
                proptest::prop_assert!(b.starts_with(STRIPED_MAGIC));
                proptest::prop_assert_eq!(striped_rung_len(&b), Some(b.len()));
                let pixels = px.width as usize * px.height as usize;
                proptest::prop_assert_eq!(px.data.len(), channels(px.layout) * pixels);
            }
            Err(e) => proptest::prop_assert!(!e.is_client_error(), "{e:?}"),
        }
    }
}

#[test]
fn corrupt_rungs_are_internal_errors() {
    let good = encode_rung(&gradient(8, 8, Layout::Rgb8), RAW_RUNGS_UP_TO, true).unwrap();
    let mut huge = good.clone();
    huge[4..8].copy_from_slice(&100_000u32.to_be_bytes());
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"qoif".to_vec(),
        good[..20].to_vec(),
        huge,
        b"\x89PNG\r\n\x1a\n".to_vec(),
    ];
    for c in cases {
        let e = decode_rung(&c).unwrap_err();
        assert!(!e.is_client_error(), "{e:?}");
    }
}

#[test]
fn every_format_round_trips_its_size() {
    for layout in [Layout::Rgb8, Layout::Rgba8] {
        let p = gradient(17, 17, layout);
        for f in [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp] {
            let bytes = encode(&p, f, Encoding::LOSSY).unwrap();
            let img = image::load_from_memory(&bytes).unwrap();
            assert_eq!((img.width(), img.height()), (17, 17), "{f:?}");
            let keeps_alpha = layout == Layout::Rgba8 && f != OutputFormat::Jpeg;
            assert_eq!(img.color().has_alpha(), keeps_alpha, "{f:?} {layout:?}");
        }
    }
}

#[test]
fn jpeg_is_baseline_at_every_size() {
    // SOF0 (baseline) and never SOF2 (progressive).
    let has = |b: &[u8], m: u8| b.windows(2).any(|w| w == [0xFF, m]);
    for side in [1, 64, 255, 256, 300, 512] {
        let j = encode(
            &gradient(side, side, Layout::Rgb8),
            OutputFormat::Jpeg,
            Encoding::LOSSY,
        )
        .unwrap();
        assert!(has(&j, 0xC0), "{side}");
        assert!(!has(&j, 0xC2), "{side}");
    }
}

#[test]
fn baseline_jpeg_is_smaller_than_progressive_for_a_photo() {
    // Why `PROGRESSIVE` is false: a photo's rung, encoded both ways with
    // the tables optimized, as variants are; and what restart segments cost.
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/photo_retina_baseline_1024.jpg"
    ))
    .unwrap();
    let n = super::super::normalize(&bytes, None, &super::super::Limits::default()).unwrap();
    for rung in n.ladder.iter().filter(|r| r.side == 256 || r.side == 512) {
        let px = decode_rung(&rung.bytes).unwrap();
        let jpeg = |progressive: bool| {
            let mut out = Vec::new();
            let mut enc = jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY);
            enc.set_optimized_huffman_tables(true);
            enc.set_progressive(progressive);
            enc.encode(
                &px.data,
                px.width as u16,
                px.height as u16,
                jpeg_encoder::ColorType::Rgb,
            )
            .unwrap();
            out
        };
        let (baseline, progressive) = (jpeg(false), jpeg(true));
        assert!(
            baseline.len() < progressive.len(),
            "{}: {} vs {}",
            rung.side,
            baseline.len(),
            progressive.len()
        );
        // Ours is that baseline JPEG, from 384 px in four restart segments
        // of luma (encoded in parallel): the same coefficients, so the same
        // pixels, for a few bytes per marker.
        let ours = encode(&px, OutputFormat::Jpeg, Encoding::LOSSY).unwrap();
        let restarts = ours
            .windows(2)
            .filter(|w| w[0] == 0xFF && (0xD0..=0xD7).contains(&w[1]))
            .count();
        assert_eq!(
            restarts,
            if rung.side >= 384 { 3 } else { 0 },
            "{}",
            rung.side
        );
        assert!(
            ours.len() >= baseline.len() && ours.len() <= baseline.len() + 8 * restarts,
            "{}: {} vs {}",
            rung.side,
            ours.len(),
            baseline.len()
        );
        let pixels = |b: &[u8]| image::load_from_memory(b).unwrap().into_rgb8().into_raw();
        assert!(pixels(&ours) == pixels(&baseline), "{}", rung.side);
    }
}

#[test]
fn lossy_webp_is_vp8_and_keeps_alpha() {
    for layout in [Layout::Rgb8, Layout::Rgba8] {
        let p = gradient(40, 24, layout);
        let b = encode(&p, OutputFormat::Webp, Encoding::LOSSY).unwrap();
        assert!(b.windows(4).any(|w| w == b"VP8 "), "{layout:?}");
        let img = image::load_from_memory(&b).unwrap();
        assert_eq!((img.width(), img.height()), (40, 24));
        assert_eq!(img.color().has_alpha(), layout == Layout::Rgba8);
        let lossless = encode(&p, OutputFormat::Webp, Encoding::LOSSLESS).unwrap();
        assert!(lossless.windows(4).any(|w| w == b"VP8L"), "{layout:?}");
        // Same pixels, same bytes.
        assert_eq!(b, encode(&p, OutputFormat::Webp, Encoding::LOSSY).unwrap());
    }
}

#[test]
fn lossless_formats_are_exact() {
    let p = gradient(20, 20, Layout::Rgba8);
    for f in [OutputFormat::Png, OutputFormat::Webp] {
        let img = image::load_from_memory(&encode(&p, f, Encoding::LOSSLESS).unwrap()).unwrap();
        assert_eq!(img.into_rgba8().into_raw(), p.data, "{f:?}");
    }
}

#[test]
fn qualities_outside_1_to_100_are_internal_errors() {
    let p = gradient(8, 8, Layout::Rgb8);
    let cases = [
        (0, 60, OutputFormat::Webp),
        (101, 60, OutputFormat::Webp),
        (80, 0, OutputFormat::Avif),
        (80, 255, OutputFormat::Avif),
    ];
    for (webp, avif, f) in cases {
        let e = Encoding {
            compression: Compression::Lossy,
            quality: super::super::Quality { webp, avif },
        };
        let err = encode(&p, f, e).unwrap_err();
        assert!(
            !err.is_client_error() && err.to_string().contains("quality"),
            "{err}"
        );
        // Only the format whose quality is wrong fails.
        assert!(encode(&p, OutputFormat::Png, e).is_ok());
    }
}

#[test]
fn bad_buffers_are_refused() {
    let mut p = gradient(4, 4, Layout::Rgb8);
    p.data.truncate(10);
    assert!(matches!(
        encode(&p, OutputFormat::Png, Encoding::LOSSY),
        Err(PipelineError::Internal(_))
    ));
    let z = Pixels {
        width: 0,
        height: 0,
        layout: Layout::Rgb8,
        data: vec![],
    };
    for f in [
        OutputFormat::Png,
        OutputFormat::Jpeg,
        OutputFormat::Webp,
        OutputFormat::Avif,
    ] {
        for e in [Encoding::LOSSY, Encoding::LOSSLESS] {
            assert!(
                matches!(encode(&z, f, e), Err(PipelineError::Internal(_))),
                "{f:?} {e:?}"
            );
            assert!(
                matches!(encode(&p, f, e), Err(PipelineError::Internal(_))),
                "{f:?} {e:?}"
            );
        }
    }
}

#[test]
fn renders_from_raw_and_qoi_rungs_are_identical() {
    // The uncompressed rung is rendered from its own bytes, the striped QOI
    // one from a copy decoded in parallel: the same pixels must give the same variant.
    let px = noise(512, 512, Layout::Rgb8);
    let (raw, qoi) = (
        encode_rung(&px, 512, true).unwrap(),
        encode_rung(&px, 0, false).unwrap(),
    );
    assert!(raw.starts_with(RAW_MAGIC) && qoi.starts_with(STRIPED_MAGIC));
    for (size, format) in [
        (512, OutputFormat::Jpeg),
        (300, OutputFormat::Png),
        (64, OutputFormat::Webp),
    ] {
        let r = |b: &[u8]| crate::pipeline::render(b, size, format, Encoding::LOSSY).unwrap();
        assert_eq!(r(&raw), r(&qoi), "{size} {format:?}");
    }
}

#[test]
fn parallel_jpeg_interval_table() {
    // (side, restart interval): none below 384×384 px; above, a quarter of
    // the luma blocks, so 4:2:0 chroma is one segment per scan.
    let cases: &[((u16, u16), Option<u16>)] = &[
        ((1, 1), None),
        ((256, 256), None),
        ((383, 383), None),
        ((384, 384), Some(576)),
        ((512, 512), Some(1024)),
        ((513, 513), Some(1057)),
        ((2048, 2048), Some(16384)),
        ((65535, 65535), Some(u16::MAX)),
    ];
    for &((w, h), want) in cases {
        assert_eq!(parallel_jpeg_interval(w, h), want, "{w}x{h}");
    }
}

#[test]
fn a_rung_decoded_into_this_threads_scratch_is_its_own_pixels() {
    // The scratch buffer is not zeroed between renders (only its growth
    // is): every rung, after a larger or a smaller one with other pixels,
    // must come back exactly, whatever it is stored as.
    let rungs = [
        noise(64, 300, Layout::Rgba8),
        flat(40, 200, Layout::Rgb8),
        noise(48, 100, Layout::Rgb8),
        flat(64, 400, Layout::Rgba8),
        noise(8, 8, Layout::Rgba8),
    ];
    for px in rungs.iter().chain(rungs.iter().rev()) {
        let bytes = encode_rung(px, 0, true).unwrap();
        let back = with_rung(&bytes, |v| Ok(v.data.to_vec())).unwrap();
        let how = format!("{}x{} {:?}", px.width, px.height, px.layout);
        assert_eq!(back, px.data, "{how}");
    }
}
