//! Golden tests over real fixtures (`fixtures/`, provenance in
//! `fixtures/README.md`): EXIF orientation, colour management (reference
//! numbers measured with Pillow 13 + ImageCms), alpha fringes, crops, sizes,
//! determinism and metadata stripping.
//!
//! Resized photos are compared with tolerances (decoder updates may move a
//! level or two); only things fully in our control are compared exactly.
//! With `AVATAR_EDGE_WRITE_GOLDEN=<dir>` the rendered images are also written
//! there as PNG for a person to look at; otherwise nothing is written.

use super::*;
use image::GenericImageView;

fn write_golden(name: &str, px: &Pixels) {
    if let Ok(dir) = std::env::var("AVATAR_EDGE_WRITE_GOLDEN") {
        std::fs::create_dir_all(&dir).unwrap();
        let png = encode(px, OutputFormat::Png, Encoding::LOSSLESS).unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
}

fn normalized(name: &str, crop: Option<Crop>) -> Normalized {
    normalize(&fixture(name), crop, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn master(name: &str) -> Pixels {
    let n = normalized(name, None);
    let px = decode_rung(&n.ladder[0].bytes).unwrap();
    write_golden(&format!("master_{name}"), &px);
    px
}

fn rgb(px: &Pixels) -> Vec<[u8; 3]> {
    let ch = if px.layout == Layout::Rgb8 { 3 } else { 4 };
    px.data
        .chunks_exact(ch)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

/// Mean absolute difference per channel between two same-sized images.
fn mad(a: &Pixels, b: &Pixels) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let (a, b) = (rgb(a), rgb(b));
    let sum: u64 = a
        .iter()
        .zip(&b)
        .flat_map(|(p, q)| (0..3).map(move |k| u64::from(p[k].abs_diff(q[k]))))
        .sum();
    sum as f64 / (a.len() * 3) as f64
}

fn from_dynamic(img: image::DynamicImage) -> Pixels {
    let (width, height) = img.dimensions();
    Pixels {
        width,
        height,
        layout: Layout::Rgb8,
        data: img.into_rgb8().into_raw(),
    }
}

/// Mean colour of the central half of each cell of an n×n grid over the
/// centred square — the same arithmetic as the Pillow script that produced
/// the reference numbers.
fn grid(px: &Pixels, n: u32) -> Vec<[u8; 3]> {
    let s = px.width.min(px.height);
    let (x0, y0) = ((px.width - s) / 2, (px.height - s) / 2);
    let cell = f64::from(s) / f64::from(n);
    let all = rgb(px);
    let mut out = Vec::new();
    for j in 0..n {
        for i in 0..n {
            let (i, j) = (f64::from(i), f64::from(j));
            let (a, b) = (
                (i * cell + cell / 4.0) as u32,
                (j * cell + cell / 4.0) as u32,
            );
            let (c, d) = (
                (i * cell + 3.0 * cell / 4.0) as u32,
                (j * cell + 3.0 * cell / 4.0) as u32,
            );
            let mut sum = [0u64; 3];
            let mut count = 0u64;
            for y in b..d {
                for x in a..c {
                    let p = all[((y0 + y) * px.width + x0 + x) as usize];
                    for k in 0..3 {
                        sum[k] += u64::from(p[k]);
                    }
                    count += 1;
                }
            }
            out.push(sum.map(|v| ((v as f64 / count as f64).round()) as u8));
        }
    }
    out
}

/// Largest per-channel difference between two patch lists.
fn max_diff(a: &[[u8; 3]], b: &[[u8; 3]]) -> u8 {
    a.iter()
        .zip(b)
        .flat_map(|(p, q)| (0..3).map(move |k| p[k].abs_diff(q[k])))
        .max()
        .unwrap_or(0)
}

// ---------------------------------------------------------------- orientation

#[test]
fn exif_orientations_all_land_upright() {
    let reference = master("exif_landscape_1.jpg");
    assert_eq!((reference.width, reference.height), (1024, 1024));
    let mut flipped = image::RgbImage::from_raw(1024, 1024, reference.data.clone()).unwrap();
    image::imageops::flip_horizontal_in_place(&mut flipped);
    let flipped = from_dynamic(image::DynamicImage::ImageRgb8(flipped));
    let rotated = from_dynamic(
        image::DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(1024, 1024, reference.data.clone()).unwrap(),
        )
        .rotate90(),
    );
    let wrong_flip = mad(&reference, &flipped);
    let wrong_rot = mad(&reference, &rotated);
    assert!(
        wrong_flip > 20.0 && wrong_rot > 20.0,
        "{wrong_flip} {wrong_rot}"
    );
    for i in 2..=8 {
        let m = master(&format!("exif_landscape_{i}.jpg"));
        let d = mad(&reference, &m);
        assert!(d < 4.0, "orientation {i}: mean abs diff {d}");
    }
}

#[test]
fn exif_orientation_inside_webp() {
    let m = master("exif_hopper_orientation_6.webp");
    let raw = image::load_from_memory(&fixture("exif_hopper_orientation_6.webp")).unwrap();
    assert_eq!((m.width, m.height), (128, 128));
    let upright = from_dynamic(raw.rotate90());
    let stored = from_dynamic(raw);
    let (good, bad) = (mad(&m, &upright), mad(&m, &stored));
    assert!(good < 1.0 && bad > 10.0, "upright {good}, unrotated {bad}");
}

// --------------------------------------------------------------------- colour

/// Reference: Pillow `convert("RGB")` (the file has no ICC profile, so this
/// is also what ImageCms would give); 4×4 grid.
const CMYK_REF: [[u8; 3]; 16] = [
    [1, 4, 5],
    [1, 4, 5],
    [1, 4, 5],
    [1, 4, 5],
    [120, 10, 15],
    [106, 10, 14],
    [67, 8, 11],
    [129, 10, 15],
    [16, 5, 6],
    [17, 5, 6],
    [15, 5, 6],
    [2, 4, 5],
    [1, 4, 5],
    [1, 4, 5],
    [1, 4, 5],
    [1, 4, 5],
];

#[test]
fn cmyk_jpeg_colours() {
    let m = master("photo_cmyk_100.jpg");
    let got = grid(&m, 4);
    let d = max_diff(&got, &CMYK_REF);
    assert!(d <= 6, "max patch diff {d}: {got:?}");
}

/// Reference: Pillow ImageCms.profileToProfile(embedded Adobe RGB → sRGB).
const ADOBE_CHART_SRGB: [[u8; 3]; 16] = [
    [254, 0, 0],
    [0, 255, 1],
    [0, 0, 255],
    [255, 255, 0],
    [0, 255, 255],
    [255, 0, 255],
    [255, 128, 3],
    [128, 0, 255],
    [0, 160, 80],
    [201, 30, 90],
    [28, 200, 200],
    [92, 60, 21],
    [255, 255, 255],
    [128, 128, 128],
    [20, 20, 20],
    [250, 200, 151],
];
/// The same patches decoded without colour management (what a bug gives).
const ADOBE_CHART_RAW: [[u8; 3]; 16] = [
    [218, 0, 0],
    [144, 255, 60],
    [0, 0, 250],
    [255, 255, 59],
    [143, 255, 255],
    [219, 0, 250],
    [227, 127, 31],
    [109, 0, 251],
    [89, 159, 86],
    [172, 35, 89],
    [115, 199, 199],
    [85, 62, 30],
    [255, 255, 255],
    [127, 127, 127],
    [27, 27, 27],
    [237, 199, 152],
];

#[test]
fn adobe_rgb_chart_converts_to_srgb() {
    let m = master("photo_adobergb_chart_512.jpg");
    let got = grid(&m, 4);
    let d = max_diff(&got, &ADOBE_CHART_SRGB);
    assert!(d <= 4, "max patch diff {d}: {got:?}");
    assert!(
        max_diff(&ADOBE_CHART_RAW, &ADOBE_CHART_SRGB) > 80,
        "the test discriminates"
    );
}

/// Reference: Pillow ImageCms (Display P3 → sRGB) over the centred 768² square.
const PUG_P3_SRGB: [[u8; 3]; 16] = [
    [215, 211, 202],
    [210, 208, 202],
    [210, 210, 207],
    [206, 206, 203],
    [197, 190, 180],
    [197, 189, 179],
    [194, 189, 183],
    [188, 183, 177],
    [190, 182, 170],
    [134, 123, 124],
    [67, 68, 71],
    [187, 179, 171],
    [144, 142, 142],
    [70, 69, 68],
    [101, 100, 93],
    [66, 61, 50],
];

#[test]
fn display_p3_photo_converts_to_srgb() {
    let m = master("photo_iphone_pug_displayp3_1024x768.jpg");
    assert_eq!((m.width, m.height), (768, 768));
    let got = grid(&m, 4);
    let d = max_diff(&got, &PUG_P3_SRGB);
    assert!(d <= 2, "max patch diff {d}: {got:?}");
}

/// Reference: Pillow exif_transpose + ImageCms (Generic RGB → sRGB), 3×3 grid.
const GENERIC_RGB_SRGB: [[u8; 3]; 9] = [
    [78, 80, 60],
    [143, 144, 127],
    [81, 83, 67],
    [79, 86, 75],
    [174, 175, 185],
    [70, 69, 57],
    [92, 107, 53],
    [136, 152, 110],
    [87, 92, 64],
];

#[test]
fn generic_rgb_profile_converts_to_srgb() {
    // Unconverted patches are ~16 levels darker; allow a small tolerance.
    let m = master("exif_portrait_2_generic_icc.jpg");
    let got = grid(&m, 3);
    let d = max_diff(&got, &GENERIC_RGB_SRGB);
    assert!(d <= 4, "max patch diff {d}: {got:?}");
}

// ---------------------------------------------------------------------- alpha

/// No semi-transparent pixel may be darker than the shapes' own colours
/// (red 230,40,40 and blue 39,90,229: channel sums 310 and 358).
fn fringe_pixels(px: &Pixels) -> usize {
    px.data
        .chunks_exact(4)
        .filter(|p| (16..=250).contains(&p[3]))
        .filter(|p| u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2]) < 250)
        .count()
}

#[test]
fn alpha_disc_has_no_dark_fringe() {
    let n = normalized("logo_alpha_disc_512.png", None);
    assert!(n.has_alpha);
    for size in [16, 32, 50, 80, 128, 300, 700] {
        let rung = &n.ladder[pick_rung(&n.ladder.iter().map(|r| r.side).collect::<Vec<_>>(), size)];
        let png = render(&rung.bytes, size, OutputFormat::Png, Encoding::LOSSLESS).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        let px = Pixels {
            width: size,
            height: size,
            layout: Layout::Rgba8,
            data: img.into_rgba8().into_raw(),
        };
        write_golden(&format!("alpha_disc_{size}"), &px);
        assert_eq!(fringe_pixels(&px), 0, "size {size}");
    }
    // Negative control: a resize that does not premultiply does fringe.
    let src = decode_rung(&n.ladder[0].bytes).unwrap();
    let img = fast_image_resize::images::ImageRef::new(
        512,
        512,
        &src.data,
        fast_image_resize::PixelType::U8x4,
    )
    .unwrap();
    let mut dst = fast_image_resize::images::Image::new(80, 80, fast_image_resize::PixelType::U8x4);
    let opts = fast_image_resize::ResizeOptions::new().use_alpha(false);
    fast_image_resize::Resizer::new()
        .resize(&img, &mut dst, &opts)
        .unwrap();
    let naive = Pixels {
        width: 80,
        height: 80,
        layout: Layout::Rgba8,
        data: dst.into_vec(),
    };
    assert!(
        fringe_pixels(&naive) > 20,
        "control: {}",
        fringe_pixels(&naive)
    );
}

// ----------------------------------------------------------------------- crop

#[test]
fn panorama_centre_crop_picks_the_centre() {
    let m = master("photo_panorama_4032x800.jpg");
    assert_eq!((m.width, m.height), (800, 800));
    let full = image::load_from_memory(&fixture("photo_panorama_4032x800.jpg")).unwrap();
    let centre = from_dynamic(full.crop_imm(1616, 0, 800, 800));
    let left = from_dynamic(full.crop_imm(0, 0, 800, 800));
    let (c, l) = (mad(&m, &centre), mad(&m, &left));
    assert!(c < 0.5 && l > 10.0, "centre {c}, left {l}");
}

#[test]
fn explicit_crop_picks_the_requested_square() {
    let crop = Crop {
        x: 100,
        y: 150,
        side: 300,
    };
    let n = normalized("photo_grace_hopper_512x600.jpg", Some(crop));
    assert_eq!(
        n.ladder.iter().map(|r| r.side).collect::<Vec<_>>(),
        vec![300, 150, 75]
    );
    let m = decode_rung(&n.ladder[0].bytes).unwrap();
    write_golden("crop_hopper", &m);
    let full = image::load_from_memory(&fixture("photo_grace_hopper_512x600.jpg")).unwrap();
    let want = from_dynamic(full.crop_imm(100, 150, 300, 300));
    let shifted = from_dynamic(full.crop_imm(150, 200, 300, 300));
    let (good, bad) = (mad(&m, &want), mad(&m, &shifted));
    assert!(good < 0.5 && bad > 5.0, "requested {good}, shifted {bad}");

    let bytes = fixture("photo_grace_hopper_512x600.jpg");
    for bad in [
        Crop {
            x: 0,
            y: 0,
            side: 0,
        },
        Crop {
            x: 300,
            y: 0,
            side: 300,
        },
        Crop {
            x: 0,
            y: 301,
            side: 300,
        },
        Crop {
            x: u32::MAX,
            y: 0,
            side: 1,
        },
    ] {
        let e = normalize(&bytes, Some(bad), &Limits::default()).unwrap_err();
        assert!(matches!(e, PipelineError::BadCrop(_)), "{bad:?}: {e:?}");
    }
}

#[test]
fn crop_is_in_upright_coordinates() {
    // Orientation 6 is stored rotated; the top-left upright square of the
    // oriented image must match the same crop of the orientation-1 file.
    let crop = Some(Crop {
        x: 0,
        y: 0,
        side: 600,
    });
    let a = decode_rung(&normalized("exif_landscape_1.jpg", crop).ladder[0].bytes).unwrap();
    let b = decode_rung(&normalized("exif_landscape_6.jpg", crop).ladder[0].bytes).unwrap();
    let d = mad(&a, &b);
    assert!(d < 4.0, "{d}");
}

// ---------------------------------------------------------- formats and sizes

#[test]
fn every_format_and_size_decodes_to_that_size() {
    for name in ["photo_grace_hopper_512x600.jpg", "logo_alpha_disc_512.png"] {
        let n = normalized(name, None);
        let sides: Vec<u32> = n.ladder.iter().map(|r| r.side).collect();
        for size in [1, 16, 32, 80, 128, 512, 2048] {
            let rung = &n.ladder[pick_rung(&sides, size)];
            for f in [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp] {
                let out = render(&rung.bytes, size, f, encoding(&n)).unwrap();
                let fmt = image::guess_format(&out).unwrap();
                let img = image::load_from_memory(&out).unwrap();
                assert_eq!(
                    (img.width(), img.height()),
                    (size, size),
                    "{name} {f:?} {size}"
                );
                let want = match f {
                    OutputFormat::Png => image::ImageFormat::Png,
                    OutputFormat::Jpeg => image::ImageFormat::Jpeg,
                    OutputFormat::Webp => image::ImageFormat::WebP,
                    OutputFormat::Avif => image::ImageFormat::Avif,
                    OutputFormat::Gif => image::ImageFormat::Gif,
                };
                assert_eq!(fmt, want);
                if size == 80 {
                    write_golden(
                        &format!("render_{name}_{size}.{}", f.extension()),
                        &from_dynamic(img),
                    );
                }
            }
        }
    }
}

#[test]
fn accepted_formats_and_first_frames() {
    let cases: &[(&str, SourceFormat, bool, u32)] = &[
        ("gif_static_hopper.gif", SourceFormat::Gif, false, 128),
        ("gif_animated_aero_56f.gif", SourceFormat::Gif, true, 0),
        ("webp_lossy_alpha.webp", SourceFormat::Webp, true, 0),
        ("webp_animated_6f.webp", SourceFormat::Webp, true, 0),
        ("apng_ball_20f.png", SourceFormat::Png, true, 0),
        (
            "photo_astronaut_16bit_512.png",
            SourceFormat::Png,
            false,
            512,
        ),
        (
            "photo_retina_baseline_1024.jpg",
            SourceFormat::Jpeg,
            false,
            1024,
        ),
        (
            "photo_adobergb_2000x1072.jpg",
            SourceFormat::Jpeg,
            false,
            1024,
        ),
    ];
    for &(name, fmt, _maybe_alpha, side) in cases {
        let bytes = fixture(name);
        let n =
            normalize(&bytes, None, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(n.source_format, fmt, "{name}");
        let (pf, w, h) = probe(&bytes, &Limits::default()).unwrap();
        assert_eq!(pf, fmt);
        let expect = w.min(h).min(1024);
        assert_eq!(n.ladder[0].side, expect, "{name}");
        if side != 0 {
            assert_eq!(expect, side, "{name}");
        }
        let m = decode_rung(&n.ladder[0].bytes).unwrap();
        assert_eq!(m.layout == Layout::Rgba8, n.has_alpha, "{name}");
        write_golden(&format!("master_{name}"), &m);
    }
    // The 16-bit astronaut equals its 8-bit reduction (within rounding).
    let m = master("photo_astronaut_16bit_512.png");
    let full = image::load_from_memory(&fixture("photo_astronaut_16bit_512.png")).unwrap();
    let d = mad(&m, &from_dynamic(full));
    assert!(d < 0.6, "{d}");
}

#[test]
fn large_photo_ladder() {
    let n = normalized("photo_large_4032x3024.jpg", None);
    assert!(!n.has_alpha);
    let sides: Vec<u32> = n.ladder.iter().map(|r| r.side).collect();
    assert_eq!(sides, vec![1024, 512, 256, 128, 64]);
    for r in &n.ladder {
        let px = decode_rung(&r.bytes).unwrap();
        assert_eq!(
            (px.width, px.height, px.layout),
            (r.side, r.side, Layout::Rgb8)
        );
        assert_eq!(r.hash, crate::model::ContentHash::of(&r.bytes));
    }
}

#[test]
fn normalize_is_deterministic() {
    for name in [
        "photo_grace_hopper_512x600.jpg",
        "logo_alpha_disc_512.png",
        "exif_landscape_6.jpg",
    ] {
        let a = normalized(name, None);
        let b = normalized(name, None);
        let ha: Vec<_> = a.ladder.iter().map(|r| r.hash).collect();
        let hb: Vec<_> = b.ladder.iter().map(|r| r.hash).collect();
        assert_eq!(ha, hb, "{name}");
    }
}

// ------------------------------------------------------------------- metadata

fn png_chunks(b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 8;
    while i + 8 <= b.len() {
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        out.push(String::from_utf8_lossy(&b[i + 4..i + 8]).into_owned());
        i += 12 + len;
    }
    out
}

fn jpeg_markers(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 2;
    while i + 4 <= b.len() && b[i] == 0xFF {
        let m = b[i + 1];
        out.push(m);
        if m == 0xDA {
            break;
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        i += 2 + len;
    }
    out
}

fn riff_chunks(b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 12;
    while i + 8 <= b.len() {
        let len = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        out.push(String::from_utf8_lossy(&b[i..i + 4]).into_owned());
        i += 8 + len + (len & 1);
    }
    out
}

#[test]
fn outputs_carry_no_metadata() {
    // Sources with EXIF, XMP and ICC.
    for name in [
        "exif_landscape_6.jpg",
        "photo_adobergb_chart_512.jpg",
        "logo_alpha_disc_512.png",
    ] {
        let n = normalized(name, None);
        let rung = &n.ladder[pick_rung(&n.ladder.iter().map(|r| r.side).collect::<Vec<_>>(), 128)];
        let enc = encoding(&n);
        let png = render(&rung.bytes, 128, OutputFormat::Png, enc).unwrap();
        for c in png_chunks(&png) {
            assert!(
                ["IHDR", "IDAT", "IEND"].contains(&c.as_str()),
                "{name}: PNG chunk {c}"
            );
        }
        let jpg = render(&rung.bytes, 128, OutputFormat::Jpeg, enc).unwrap();
        for m in jpeg_markers(&jpg) {
            // APP0 (JFIF) is fine; APP1 (EXIF/XMP), APP2 (ICC), COM are not.
            assert!(
                m == 0xE0 || !(0xE1..=0xEF).contains(&m) && m != 0xFE,
                "{name}: JPEG marker {m:X}"
            );
        }
        let webp = render(&rung.bytes, 128, OutputFormat::Webp, enc).unwrap();
        let want: &[&str] = match (n.compression, n.has_alpha) {
            (Compression::Lossless, _) => &["VP8L"],
            (Compression::Lossy, false) => &["VP8 "],
            (Compression::Lossy, true) => &["VP8X", "ALPH", "VP8 "],
        };
        assert_eq!(riff_chunks(&webp), want, "{name}");
        let avif = render(&rung.bytes, 128, OutputFormat::Avif, enc).unwrap();
        let boxes = avif_item_types(&avif);
        assert!(
            boxes.iter().all(|t| t == "av01"),
            "{name}: AVIF items {boxes:?}"
        );
    }
}

/// Every `ispe` (image spatial extent) property of an AVIF file.
fn avif_extents(b: &[u8]) -> Vec<(u32, u32)> {
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    b.windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"ispe")
        .map(|(i, _)| (be(i + 8), be(i + 12)))
        .collect()
}

/// Item types in an AVIF file's `iinf` (`infe` version 2+ boxes).
fn avif_item_types(b: &[u8]) -> Vec<String> {
    b.windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"infe")
        .map(|(i, _)| String::from_utf8_lossy(&b[i + 12..i + 16]).into_owned())
        .collect()
}

fn avif_has_alpha(b: &[u8]) -> bool {
    let urn = b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha";
    b.windows(urn.len()).any(|w| w == urn)
}

/// The encoding a master's variants get at the default qualities.
fn encoding(n: &Normalized) -> Encoding {
    Encoding {
        compression: n.compression,
        quality: Quality::DEFAULT,
    }
}

/// Mean SSIM of the luma planes of two same-sized images (8×8 windows,
/// stride 4, the usual constants): the lossy outputs' quality check.
fn luma_ssim(a: &Pixels, b: &Pixels) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let luma = |px: &Pixels| -> Vec<f64> {
        rgb(px)
            .iter()
            .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
            .collect()
    };
    let (la, lb) = (luma(a), luma(b));
    let (w, h) = (a.width as usize, a.height as usize);
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let win = 8.min(w).min(h);
    let (mut sum, mut n) = (0.0, 0usize);
    let mut y = 0;
    while y + win <= h {
        let mut x = 0;
        while x + win <= w {
            let (mut ma, mut mb) = (0.0, 0.0);
            for j in y..y + win {
                for i in x..x + win {
                    ma += la[j * w + i];
                    mb += lb[j * w + i];
                }
            }
            let k = (win * win) as f64;
            let (ma, mb) = (ma / k, mb / k);
            let (mut va, mut vb, mut cov) = (0.0, 0.0, 0.0);
            for j in y..y + win {
                for i in x..x + win {
                    let (da, db) = (la[j * w + i] - ma, lb[j * w + i] - mb);
                    va += da * da;
                    vb += db * db;
                    cov += da * db;
                }
            }
            let (va, vb, cov) = (va / (k - 1.0), vb / (k - 1.0), cov / (k - 1.0));
            sum += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            n += 1;
            x += 4;
        }
        y += 4;
    }
    sum / n as f64
}

#[test]
fn lossy_webp_is_close_to_the_lossless_render_and_smaller() {
    // Photos: lossy WebP at quality 80 against the exact (PNG) render.
    for name in [
        "photo_grace_hopper_512x600.jpg",
        "photo_iphone_pug_displayp3_1024x768.jpg",
        "photo_retina_baseline_1024.jpg",
    ] {
        let n = normalized(name, None);
        assert_eq!(n.compression, Compression::Lossy, "{name}");
        let sides: Vec<u32> = n.ladder.iter().map(|r| r.side).collect();
        for size in [64, 128, 256] {
            let rung = &n.ladder[pick_rung(&sides, size)];
            let exact = render(&rung.bytes, size, OutputFormat::Png, encoding(&n)).unwrap();
            let exact = from_dynamic(image::load_from_memory(&exact).unwrap());
            let lossless =
                render(&rung.bytes, size, OutputFormat::Webp, Encoding::LOSSLESS).unwrap();
            let webp = render(&rung.bytes, size, OutputFormat::Webp, encoding(&n)).unwrap();
            let jpeg = render(&rung.bytes, size, OutputFormat::Jpeg, encoding(&n)).unwrap();
            let decoded = from_dynamic(image::load_from_memory(&webp).unwrap());
            let ssim = luma_ssim(&exact, &decoded);
            assert!(ssim >= 0.93, "{name} {size}: SSIM {ssim:.4}");
            assert!(
                webp.len() * 2 < lossless.len() && webp.len() < jpeg.len(),
                "{name} {size}: lossy {} B, lossless {} B, JPEG {} B",
                webp.len(),
                lossless.len(),
                jpeg.len()
            );
        }
    }
}

#[test]
fn lossy_webp_keeps_alpha() {
    let n = normalized("webp_lossy_alpha.webp", None);
    assert!(n.has_alpha);
    let rung = &n.ladder[0];
    let side = rung.side;
    let webp = render(&rung.bytes, side, OutputFormat::Webp, Encoding::LOSSY).unwrap();
    let exact = decode_rung(&rung.bytes).unwrap();
    let img = image::load_from_memory(&webp).unwrap();
    assert!(img.color().has_alpha());
    let got = img.into_rgba8().into_raw();
    // Alpha is compressed losslessly: identical, plane for plane.
    let alpha = |d: &[u8]| d.chunks_exact(4).map(|p| p[3]).collect::<Vec<u8>>();
    assert_eq!(alpha(&got), alpha(&exact.data));
}

#[test]
fn avif_is_square_sized_and_keeps_alpha() {
    for (name, alpha) in [
        ("photo_grace_hopper_512x600.jpg", false),
        ("logo_alpha_disc_512.png", true),
    ] {
        let n = normalized(name, None);
        let sides: Vec<u32> = n.ladder.iter().map(|r| r.side).collect();
        for size in [1, 16, 80, 128, 256] {
            let rung = &n.ladder[pick_rung(&sides, size)];
            let avif = render(&rung.bytes, size, OutputFormat::Avif, encoding(&n)).unwrap();
            assert_eq!(&avif[4..12], b"ftypavif", "{name} {size}");
            // One `ispe`, shared by the colour item and the alpha item.
            assert_eq!(avif_extents(&avif), vec![(size, size)], "{name} {size}");
            let items = avif_item_types(&avif);
            assert_eq!(items.len(), if alpha { 2 } else { 1 }, "{name} {size}");
            assert_eq!(avif_has_alpha(&avif), alpha, "{name} {size}");
        }
    }
}

#[test]
fn identicon_webp_stays_lossless_and_exact() {
    for style in crate::identicon::Style::ALL {
        let px = crate::identicon::render(style, b"golden", 64, Some("GH"));
        let webp = encode(&px, OutputFormat::Webp, Encoding::LOSSLESS).unwrap();
        assert_eq!(riff_chunks(&webp), vec!["VP8L".to_string()], "{style:?}");
        let back = image::load_from_memory(&webp).unwrap();
        let back = match px.layout {
            Layout::Rgb8 => back.into_rgb8().into_raw(),
            Layout::Rgba8 => back.into_rgba8().into_raw(),
        };
        assert_eq!(back, px.data, "{style:?}");
    }
}
