use super::*;
use crate::pipeline::fixture;
use crate::pipeline::resize::crop_resize;
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

/// `bytes` decoded at 1/`scale` as planes.
fn planes(bytes: &[u8], scale: u16) -> Planes {
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    let info = {
        dec.read_info().unwrap();
        dec.info().unwrap()
    };
    dec.scale(info.width.div_ceil(scale), info.height.div_ceil(scale))
        .unwrap();
    dec.decode_to_planes().unwrap()
}

/// The centre square of a `w`×`h` image.
fn centre(w: u32, h: u32) -> Square {
    let side = w.min(h);
    Square {
        x: (w - side) / 2,
        y: (h - side) / 2,
        side,
    }
}

/// Mean and largest channel difference.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y));
    let (sum, max) = d.fold((0u64, 0u8), |(s, m), d| (s + u64::from(d), m.max(d)));
    (sum as f64 / a.len() as f64, max)
}

/// The master from the planes against the decoder's RGB resized the same
/// way, and the split work against the serial one.
fn check(name: &str, bytes: &[u8], scale: u16, square: Option<Square>, out: u32) -> f64 {
    let p = planes(bytes, scale);
    let (w, h) = (u32::from(p.width), u32::from(p.height));
    let rgb = Pixels {
        width: w,
        height: h,
        layout: Layout::Rgb8,
        data: p.clone().to_pixels().unwrap(),
    };
    let square = square.unwrap_or_else(|| centre(w, h));
    let want = crop_resize(&rgb, square, out).unwrap();
    let ycc = YccImage::new(p).unwrap_or_else(|_| panic!("{name}: not planes"));
    let got = ycc.crop_resize(square, out, false).unwrap();
    let split = crate::pipeline::parallel::install(|| ycc.crop_resize(square, out, true)).unwrap();
    assert_eq!(got.data, split.data, "{name}: split differs");
    assert_eq!(
        (got.width, got.height, got.layout),
        (out, out, Layout::Rgb8)
    );
    let (mean, max) = diff(&got.data, &want.data);
    assert!(
        mean <= 1.0 && max <= 48,
        "{name}: mean {mean:.2}, max {max}"
    );
    mean
}

#[test]
fn photos_from_planes_match_the_rgb_path() {
    // (fixture, scale, master side): the 4:2:0 photos an upload shrinks, a
    // wide one, a panorama whose square starts mid-chroma-sample.
    let cases = [
        ("photo_large_4032x3024.jpg", 2, 1024),
        ("photo_adobergb_2000x1072.jpg", 2, 512),
        ("photo_panorama_4032x800.jpg", 4, 200),
        ("photo_retina_baseline_1024.jpg", 2, 256),
        ("exif_landscape_6.jpg", 2, 64),
    ];
    for (name, scale, out) in cases {
        check(name, &fixture(name), scale, None, out);
    }
}

#[test]
fn every_sampling_and_odd_square_matches_the_rgb_path() {
    // Noise-free gradients encoded at each sampling factor, squares at odd
    // offsets (chroma shares between samples), shrinking and enlarging.
    let (w, h) = (301u16, 203u16);
    let mut rgb = Vec::with_capacity(usize::from(w) * usize::from(h) * 3);
    for y in 0..u32::from(h) {
        for x in 0..u32::from(w) {
            rgb.extend([
                (x * 255 / 300) as u8,
                (y * 255 / 202) as u8,
                ((x + y) % 256) as u8,
            ]);
        }
    }
    for f in [
        SamplingFactor::F_1_1,
        SamplingFactor::F_2_1,
        SamplingFactor::F_1_2,
        SamplingFactor::F_2_2,
    ] {
        let mut jpeg = Vec::new();
        let mut enc = Encoder::new(&mut jpeg, 95);
        enc.set_sampling_factor(f);
        enc.encode(&rgb, w, h, ColorType::Rgb).unwrap();
        for (scale, square, out) in [
            (1, (3, 5, 151), 64),
            (2, (1, 3, 97), 60),
            (1, (51, 1, 199), 250),
        ] {
            let (x, y, side) = square;
            let sq = Square { x, y, side };
            check(&format!("{f:?} {square:?}"), &jpeg, scale, Some(sq), out);
        }
    }
}

#[test]
fn what_is_not_ycbcr_goes_back_to_the_decoder() {
    // Grey (one plane) and CMYK (four) keep the decoder's own conversion.
    let grey = {
        let mut jpeg = Vec::new();
        Encoder::new(&mut jpeg, 90)
            .encode(&[128u8; 64 * 48], 64, 48, ColorType::Luma)
            .unwrap();
        jpeg
    };
    for (name, bytes) in [
        ("grey", grey),
        ("photo_cmyk_100.jpg", fixture("photo_cmyk_100.jpg")),
    ] {
        let p = planes(&bytes, 1);
        let n = p.planes.len();
        let back = YccImage::new(p)
            .err()
            .unwrap_or_else(|| panic!("{name}: taken as YCbCr"));
        assert_eq!(back.planes.len(), n, "{name}: planes lost");
        assert!(back.to_pixels().is_ok(), "{name}");
    }
}

#[test]
fn a_square_outside_the_image_is_an_error() {
    let p = planes(&fixture("photo_retina_baseline_1024.jpg"), 2);
    let ycc = YccImage::new(p).unwrap_or_else(|_| panic!("not planes"));
    for (x, y, side) in [(0, 0, 513), (1, 0, 512), (0, 0, 0), (u32::MAX, 0, 2)] {
        let e = ycc.crop_resize(Square { x, y, side }, 64, false);
        assert!(
            matches!(e, Err(PipelineError::Internal(_))),
            "{x},{y} {side}"
        );
    }
}
