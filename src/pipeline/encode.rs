//! Encoders: variants (PNG / JPEG / WebP / AVIF) and the stored rung format
//! (QOI).
//!
//! Invariants: nothing but pixels is ever written — no EXIF, ICC, XMP or text
//! chunks (we always re-encode from pixels). PNG uses fast compression and
//! keeps alpha; JPEG (quality 85, `jpeg-encoder` with SIMD, optimized Huffman
//! tables, progressive from [`PROGRESSIVE_FROM`] px) flattens alpha onto
//! white; WebP is lossy (libwebp, alpha kept) or lossless (image-webp, byte-
//! for-byte what it always was) as the master's [`Compression`] says; AVIF is
//! in `avif`. Rungs are QOI: lossless, byte-deterministic, and decoded in
//! microseconds at avatar sizes. `decode_rung` reads bytes *we* stored, so
//! any failure there is `Internal` (a 5xx), not a client error.

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::resize::check_buffer;
use super::{Compression, Encoding, Layout, OutputFormat, PipelineError, Pixels};

/// JPEG quality for variants.
pub const JPEG_QUALITY: u8 = 85;

/// Smallest side written as progressive JPEG: from here on progressive is
/// smaller than baseline for every photo of `bench/bytes.sh` (below it the
/// extra scan headers cost more than they save).
pub const PROGRESSIVE_FROM: u32 = 256;

/// libwebp's effort (0 fastest … 6 smallest). Its default, 4, cost ~2.3 ms
/// of CPU for a cold 128 px render against a 2 ms budget; 2 takes about half
/// the encode time for ~3 % more bytes, still well inside the byte targets
/// (see BENCHMARKS.md, "Bytes on the wire"). Below 2 the bytes grow 10 %+.
pub(crate) const WEBP_METHOD: i32 = 2;

/// Largest rung side `decode_rung` accepts (guards against a corrupt header
/// asking for a huge allocation).
const MAX_RUNG_SIDE: u32 = 16384;

fn color_type(layout: Layout) -> ExtendedColorType {
    match layout {
        Layout::Rgb8 => ExtendedColorType::Rgb8,
        Layout::Rgba8 => ExtendedColorType::Rgba8,
    }
}

/// Composites RGBA onto opaque white, returning RGB.
fn flatten_on_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for p in rgba.chunks_exact(4) {
        let a = u32::from(p[3]);
        for &c in &p[..3] {
            // c·a + 255·(255−a), rounded, divided by 255: always <= 255.
            let v = (u32::from(c) * a + 255 * (255 - a) + 127) / 255;
            out.push(v as u8);
        }
    }
    out
}

/// `q` if it is 1..=100. Configuration refuses anything else at start-up,
/// so reaching the error is a bug: `Internal`, a 500 for that request only.
fn checked_quality(name: &str, q: u8) -> Result<u8, PipelineError> {
    if (1..=100).contains(&q) {
        Ok(q)
    } else {
        Err(PipelineError::Internal(format!(
            "encode: {name} quality {q} outside 1..=100"
        )))
    }
}

/// Lossy WebP at `quality` with libwebp (alpha kept, compressed losslessly).
pub(crate) fn encode_webp_lossy(px: &Pixels, quality: u8) -> Result<Vec<u8>, PipelineError> {
    check_buffer(px)?;
    let enc = match px.layout {
        Layout::Rgb8 => webp::Encoder::from_rgb(&px.data, px.width, px.height),
        Layout::Rgba8 => webp::Encoder::from_rgba(&px.data, px.width, px.height),
    };
    let mut config = webp::WebPConfig::new()
        .map_err(|()| PipelineError::Internal("encode: libwebp version mismatch".into()))?;
    config.lossless = 0;
    config.quality = f32::from(quality.min(100));
    config.method = WEBP_METHOD;
    config.alpha_compression = 1;
    config.alpha_quality = 100;
    let mem = enc
        .encode_advanced(&config)
        .map_err(|e| PipelineError::Internal(format!("encode: libwebp: {e:?}")))?;
    Ok(mem.to_vec())
}

/// Lossless WebP (image-webp): the bytes generated defaults and flat art
/// have always had.
pub(crate) fn encode_webp_lossless(px: &Pixels) -> Result<Vec<u8>, PipelineError> {
    check_buffer(px)?;
    let mut out = Vec::new();
    WebPEncoder::new_lossless(&mut out)
        .encode(&px.data, px.width, px.height, color_type(px.layout))
        .map_err(PipelineError::from_encode)?;
    Ok(out)
}

/// Encodes `px` as a variant in `format`.
pub fn encode(
    px: &Pixels,
    format: OutputFormat,
    encoding: Encoding,
) -> Result<Vec<u8>, PipelineError> {
    check_buffer(px)?;
    let mut out = Vec::new();
    match format {
        OutputFormat::Png => {
            let enc =
                PngEncoder::new_with_quality(&mut out, CompressionType::Fast, PngFilter::Adaptive);
            enc.write_image(&px.data, px.width, px.height, color_type(px.layout))
                .map_err(PipelineError::from_encode)?;
        }
        OutputFormat::Webp => {
            out = match encoding.compression {
                Compression::Lossy => {
                    encode_webp_lossy(px, checked_quality("webp", encoding.quality.webp)?)?
                }
                Compression::Lossless => encode_webp_lossless(px)?,
            };
        }
        OutputFormat::Gif => out = super::animated::encode_still_gif(px)?,
        OutputFormat::Avif => {
            out = super::avif::encode_avif(px, checked_quality("avif", encoding.quality.avif)?)?
        }
        OutputFormat::Jpeg => {
            let (w, h) = match (u16::try_from(px.width), u16::try_from(px.height)) {
                (Ok(w), Ok(h)) => (w, h),
                _ => {
                    return Err(PipelineError::Internal(format!(
                        "{}x{} too large for JPEG",
                        px.width, px.height
                    )))
                }
            };
            let flat;
            let rgb: &[u8] = match px.layout {
                Layout::Rgb8 => &px.data,
                Layout::Rgba8 => {
                    flat = flatten_on_white(&px.data);
                    &flat
                }
            };
            let mut enc = jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY);
            enc.set_optimized_huffman_tables(true);
            enc.set_progressive(px.width.min(px.height) >= PROGRESSIVE_FROM);
            enc.encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
                .map_err(PipelineError::from_encode)?;
        }
    }
    // Encoders grow their output by doubling; variants live in the cache for
    // a long time and are budgeted by length, so give back the slack (up to
    // half of every allocation otherwise).
    out.shrink_to_fit();
    Ok(out)
}

/// Encodes a ladder rung (QOI).
pub(crate) fn encode_rung(px: &Pixels) -> Result<Vec<u8>, PipelineError> {
    check_buffer(px)?;
    qoi::encode_to_vec(&px.data, px.width, px.height).map_err(PipelineError::from_encode)
}

/// Decodes a stored rung (QOI) into pixels. Failures are `Internal`: rungs are
/// written by `normalize`, never uploaded.
pub fn decode_rung(bytes: &[u8]) -> Result<Pixels, PipelineError> {
    let corrupt = |e: qoi::Error| PipelineError::Internal(format!("corrupt rung: {e}"));
    let header = qoi::decode_header(bytes).map_err(corrupt)?;
    if header.width == 0
        || header.height == 0
        || header.width > MAX_RUNG_SIDE
        || header.height > MAX_RUNG_SIDE
    {
        return Err(PipelineError::Internal(format!(
            "corrupt rung: header says {}x{}",
            header.width, header.height
        )));
    }
    let (header, data) = qoi::decode_to_vec(bytes).map_err(corrupt)?;
    let layout = match header.channels {
        qoi::Channels::Rgb => Layout::Rgb8,
        qoi::Channels::Rgba => Layout::Rgba8,
    };
    let px = Pixels {
        width: header.width,
        height: header.height,
        layout,
        data,
    };
    check_buffer(&px)?;
    Ok(px)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32, layout: Layout) -> Pixels {
        let ch = if layout == Layout::Rgb8 { 3 } else { 4 };
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(
                    &[(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8, 200][..ch],
                );
            }
        }
        Pixels {
            width: w,
            height: h,
            layout,
            data,
        }
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
            let a = encode_rung(&p).unwrap();
            assert_eq!(a, encode_rung(&p).unwrap());
            assert_eq!(decode_rung(&a).unwrap(), p);
        }
    }

    #[test]
    fn corrupt_rungs_are_internal_errors() {
        let good = encode_rung(&gradient(8, 8, Layout::Rgb8)).unwrap();
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
    fn jpeg_is_progressive_from_256_px() {
        // SOF2 (progressive) vs SOF0 (baseline) markers.
        let has = |b: &[u8], m: u8| b.windows(2).any(|w| w == [0xFF, m]);
        for (side, progressive) in [(64, false), (255, false), (256, true), (300, true)] {
            let j = encode(
                &gradient(side, side, Layout::Rgb8),
                OutputFormat::Jpeg,
                Encoding::LOSSY,
            )
            .unwrap();
            assert_eq!(has(&j, 0xC2), progressive, "{side}");
            assert_eq!(has(&j, 0xC0), !progressive, "{side}");
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
}
