//! Decoding untrusted uploads: header probe, limits, first frame, metadata.
//!
//! Invariants: the declared width/height are read from the header and checked
//! against [`Limits`] *before* any pixel buffer is allocated; every decoder also
//! gets `image::Limits` (max_alloc, max width/height) as a second fence.
//! Animated GIF/WebP/APNG yield their first frame only (`read_image` never
//! walks the other frames). The image is returned in *stored* orientation
//! together with its EXIF orientation and ICC profile; applying them is the
//! caller's job (see `ladder`), so that cropping and downscaling can happen
//! before rotating. No I/O beyond an in-memory cursor.
//!
//! Shrink-on-load: a large baseline JPEG whose square will be downscaled by
//! 2× or more is decoded by `jpeg-decoder` at 1/2, 1/4 or 1/8 scale (scaled
//! IDCT, what Pillow's `draft` and libvips do with libjpeg): a quarter to a
//! sixty-fourth of the pixels are produced. Its YCbCr planes are handed on
//! unconverted (`Image::Ycc`: resized, then converted, by `shrunk`); other
//! colour types are converted by the decoder as its `decode` does. Anything
//! else, or any file jpeg-decoder cannot read, takes the full decode, which
//! is also what reports errors.

use std::io::Cursor;

use image::codecs::{gif::GifDecoder, jpeg::JpegDecoder, png::PngDecoder, webp::WebPDecoder};
use image::metadata::Orientation;
use image::{DynamicImage, GenericImageView, ImageDecoder};

use super::shrunk::YccImage;
use super::sniff::sniff;
use super::{Limits, PipelineError, SourceFormat};

/// A decoded upload, still in stored (not EXIF-rotated) orientation.
pub(crate) struct Decoded {
    pub format: SourceFormat,
    pub image: Image,
    pub orientation: Orientation,
    /// Embedded ICC profile bytes, if any (not yet validated).
    pub icc: Option<Vec<u8>>,
}

/// A decoded image's samples: pixels, or a shrunk JPEG's YCbCr planes
/// (`shrunk`), resized before they are converted.
pub(crate) enum Image {
    Pixels(DynamicImage),
    Ycc(YccImage),
}

impl Image {
    pub(crate) fn dimensions(&self) -> (u32, u32) {
        match self {
            Image::Pixels(img) => img.dimensions(),
            Image::Ycc(ycc) => ycc.dimensions(),
        }
    }
}

type BoxedDecoder<'a> = Box<dyn ImageDecoder + 'a>;

fn open(bytes: &[u8], format: SourceFormat) -> Result<BoxedDecoder<'_>, PipelineError> {
    let cur = Cursor::new(bytes);
    let dec: BoxedDecoder<'_> = match format {
        SourceFormat::Jpeg => Box::new(JpegDecoder::new(cur).map_err(PipelineError::from_decode)?),
        SourceFormat::Png => Box::new(PngDecoder::new(cur).map_err(PipelineError::from_decode)?),
        SourceFormat::Gif => Box::new(GifDecoder::new(cur).map_err(PipelineError::from_decode)?),
        SourceFormat::Webp => Box::new(WebPDecoder::new(cur).map_err(PipelineError::from_decode)?),
    };
    Ok(dec)
}

/// Refuses an empty body or one over `max_upload_bytes`.
pub(crate) fn check_body(bytes: &[u8], limits: &Limits) -> Result<(), PipelineError> {
    if bytes.is_empty() {
        return Err(PipelineError::Empty);
    }
    if bytes.len() > limits.max_upload_bytes {
        return Err(PipelineError::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_upload_bytes,
        });
    }
    Ok(())
}

/// Refuses declared dimensions over the limits (or zero), before allocation.
pub(crate) fn check_dimensions(
    width: u32,
    height: u32,
    limits: &Limits,
) -> Result<(), PipelineError> {
    let pixels = u64::from(width).saturating_mul(u64::from(height));
    if width > limits.max_side || height > limits.max_side || pixels > limits.max_pixels {
        return Err(PipelineError::DimensionsTooLarge {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    if width == 0 || height == 0 {
        return Err(PipelineError::Decode(format!(
            "image declares an empty size {width}x{height}"
        )));
    }
    Ok(())
}

fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_alloc = Some(limits.max_decoder_alloc);
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l
}

/// The payload of an extended WebP's (`VP8X`) first `fourcc` chunk, if it
/// lies inside `bytes`. image-webp reads a metadata chunk into a buffer of
/// the size the chunk *declares*, unchecked against the file and not bounded
/// by `image`'s limits: a 30 KB upload whose EXIF chunk declared 3.6 GB asked
/// for 3.6 GB (found by the `normalize` fuzz target). Metadata is read here
/// instead, as a slice of the upload. Chunks are walked as image-webp walks
/// them (padded to even sizes, the first of a kind wins); a chunk that runs
/// past the end ends the walk.
pub(crate) fn webp_chunk<'a>(bytes: &'a [u8], fourcc: &[u8; 4]) -> Option<&'a [u8]> {
    if bytes.get(..4) != Some(b"RIFF") || bytes.get(8..16) != Some(b"WEBPVP8X") {
        return None;
    }
    // Within the RIFF size, as image-webp walks.
    let riff = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let bytes = &bytes[..riff.saturating_add(8).min(bytes.len())];
    let mut at = 12usize;
    while let Some(header) = bytes.get(at..at.checked_add(8)?) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let payload = bytes.get(at + 8..(at + 8).checked_add(size)?)?;
        if &header[..4] == fourcc {
            return Some(payload);
        }
        at = at + 8 + size + (size & 1);
    }
    None
}

/// EXIF orientation from a raw EXIF block. Tolerates the `Exif\0\0` prefix
/// some writers (older Pillow, some WebP tools) leave in front of the TIFF
/// header; an unreadable or absent tag means "no transform".
pub(crate) fn orientation_from_exif(exif: &[u8]) -> Orientation {
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    Orientation::from_exif_chunk(tiff).unwrap_or(Orientation::NoTransforms)
}

/// Shrink-on-load for JPEG (see the module doc). An explicit `crop` (upright
/// pixels) only shrinks by a divisor that maps it exactly (its offsets, side
/// and the image's sides divisible by it), so the crop lands on the same
/// pixels; the default centre square is re-centred in the scaled image.
/// Returns the decoded image, the scale divisor (2, 4 or 8) and the file's
/// full stored dimensions; `None` means "use [`decode`]".
pub(crate) fn decode_jpeg_shrunk(
    bytes: &[u8],
    limits: &Limits,
    crop: Option<super::Crop>,
) -> Option<(Decoded, u32, (u32, u32))> {
    let f = super::sniff::jpeg_frame(bytes)?;
    // Baseline/extended 8-bit YCbCr or grey only: progressive files keep
    // whole-image coefficient buffers, CMYK and 12-bit go through the full
    // path (with its colour handling).
    if f.process > 1 || f.precision != 8 || !matches!(f.components, 1 | 3) {
        return None;
    }
    let (w, h) = (f.width, f.height);
    check_dimensions(w, h, limits).ok()?;
    let side = crop.map_or(u32::MAX, |c| c.side).min(w.min(h));
    let keep = side.min(limits.master_side);
    let aligned = |s: u32| crop.is_none_or(|c| [c.x, c.y, c.side, w, h].iter().all(|v| v % s == 0));
    let scale = [8u32, 4, 2]
        .into_iter()
        .find(|&s| keep > 0 && side / s >= keep && aligned(s))?;
    let (want_w, want_h) = (w.div_ceil(scale), h.div_ceil(scale));
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.set_max_decoding_buffer_size(usize::try_from(limits.max_decoder_alloc).ok()?);
    let got = dec
        .scale(u16::try_from(want_w).ok()?, u16::try_from(want_h).ok()?)
        .ok()?;
    if (u32::from(got.0), u32::from(got.1)) != (want_w, want_h) {
        return None;
    }
    // YCbCr planes are resized before they are converted (`shrunk`); the
    // decoder converts anything else, exactly as its `decode` does.
    let image = match YccImage::new(dec.decode_to_planes().ok()?) {
        Ok(ycc) => Image::Ycc(ycc),
        Err(planes) => {
            let px = planes.to_pixels().ok()?;
            Image::Pixels(match dec.info()?.pixel_format {
                jpeg_decoder::PixelFormat::RGB24 => {
                    DynamicImage::ImageRgb8(image::RgbImage::from_raw(want_w, want_h, px)?)
                }
                jpeg_decoder::PixelFormat::L8 => {
                    DynamicImage::ImageLuma8(image::GrayImage::from_raw(want_w, want_h, px)?)
                }
                _ => return None,
            })
        }
    };
    if image.dimensions() != (want_w, want_h) {
        return None;
    }
    let orientation = dec
        .exif_data()
        .map_or(Orientation::NoTransforms, orientation_from_exif);
    let decoded = Decoded {
        format: SourceFormat::Jpeg,
        image,
        orientation,
        icc: dec.icc_profile(),
    };
    Some((decoded, scale, (w, h)))
}

/// Sniffs, opens the header and checks the limits; decodes no pixels.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<(SourceFormat, u32, u32), PipelineError> {
    check_body(bytes, limits)?;
    let format = sniff(bytes)?;
    let dec = open(bytes, format)?;
    let (w, h) = dec.dimensions();
    check_dimensions(w, h, limits)?;
    Ok((format, w, h))
}

/// Decodes the first frame of an upload under `limits`.
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, PipelineError> {
    check_body(bytes, limits)?;
    let format = sniff(bytes)?;
    let mut dec = open(bytes, format)?;
    let (w, h) = dec.dimensions();
    check_dimensions(w, h, limits)?;
    let needed = dec.total_bytes();
    if needed > limits.max_decoder_alloc {
        return Err(PipelineError::LimitExceeded(format!(
            "{w}x{h} needs {needed} bytes, limit is {}",
            limits.max_decoder_alloc
        )));
    }
    dec.set_limits(image_limits(limits))
        .map_err(PipelineError::from_decode)?;
    // Metadata is best effort: a broken EXIF or ICC chunk never fails the upload.
    let (icc, exif) = if format == SourceFormat::Webp {
        let chunk = |fourcc| webp_chunk(bytes, fourcc).map(<[u8]>::to_vec);
        (chunk(b"ICCP"), chunk(b"EXIF"))
    } else {
        (
            dec.icc_profile().ok().flatten(),
            dec.exif_metadata().ok().flatten(),
        )
    };
    let orientation = exif.map_or(Orientation::NoTransforms, |e| orientation_from_exif(&e));
    let image = Image::Pixels(DynamicImage::from_decoder(dec).map_err(PipelineError::from_decode)?);
    Ok(Decoded {
        format,
        image,
        orientation,
        icc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        // Signature + IHDR (bad CRC is fine for header-only checks? no: png checks
        // CRCs, so compute a correct one via a real encoder instead).
        let mut out = Vec::new();
        let enc = image::codecs::png::PngEncoder::new(&mut out);
        image::ImageEncoder::write_image(enc, &[0u8; 4], 1, 1, image::ExtendedColorType::Rgba8)
            .unwrap();
        // Patch width/height in IHDR and fix its CRC.
        out[16..20].copy_from_slice(&w.to_be_bytes());
        out[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&out[12..29]);
        out[29..33].copy_from_slice(&crc.to_be_bytes());
        out
    }

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

    #[test]
    fn webp_metadata_chunks_are_slices_of_the_upload() {
        fn chunk(kind: &[u8; 4], size: u32, data: &[u8]) -> Vec<u8> {
            let mut c = kind.to_vec();
            c.extend_from_slice(&size.to_le_bytes());
            c.extend_from_slice(data);
            c
        }
        fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
            let body: Vec<u8> = chunks.concat();
            let mut f = b"RIFF".to_vec();
            f.extend_from_slice(&(4 + body.len() as u32).to_le_bytes());
            f.extend_from_slice(b"WEBP");
            f.extend_from_slice(&body);
            f
        }
        let vp8x = chunk(b"VP8X", 10, &[8, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let exif = chunk(b"EXIF", 3, b"abc\0");
        let icc = chunk(b"ICCP", 4, b"icc1");
        let huge = chunk(b"EXIF", 3_659_594_484, b"short");
        /// (why, file, chunk asked for, its payload)
        type Case<'a> = (&'a str, Vec<u8>, &'a [u8; 4], Option<&'a [u8]>);
        let cases: Vec<Case> = vec![
            (
                "odd size, padded",
                riff(&[vp8x.clone(), exif.clone(), icc.clone()]),
                b"ICCP",
                Some(b"icc1"),
            ),
            (
                "found",
                riff(&[vp8x.clone(), icc.clone(), exif.clone()]),
                b"EXIF",
                Some(b"abc"),
            ),
            (
                "first of a kind",
                riff(&[vp8x.clone(), icc.clone(), chunk(b"ICCP", 2, b"xy")]),
                b"ICCP",
                Some(b"icc1"),
            ),
            ("absent", riff(&[vp8x.clone(), icc.clone()]), b"EXIF", None),
            (
                "declared past the end",
                riff(&[vp8x.clone(), huge.clone()]),
                b"EXIF",
                None,
            ),
            (
                "after one past the end",
                riff(&[vp8x.clone(), huge, icc.clone()]),
                b"ICCP",
                None,
            ),
            (
                "simple WebP: no metadata",
                riff(&[chunk(b"VP8L", 4, b"\x2f\0\0\0"), icc.clone()]),
                b"ICCP",
                None,
            ),
            ("not RIFF", b"GIF89a".to_vec(), b"ICCP", None),
            (
                "header only",
                b"RIFF\0\0\0\0WEBPVP8X".to_vec(),
                b"VP8X",
                None,
            ),
        ];
        for (why, file, fourcc, want) in cases {
            assert_eq!(webp_chunk(&file, fourcc), want, "{why}");
        }
        // Past the RIFF size is not the file's.
        let mut cut = riff(&[vp8x, exif]);
        cut[4..8].copy_from_slice(&22u32.to_le_bytes());
        assert_eq!(webp_chunk(&cut, b"EXIF"), None);
    }

    #[test]
    fn exif_orientation_with_and_without_prefix() {
        let tiff: &[u8] = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0";
        let mut prefixed = b"Exif\0\0".to_vec();
        prefixed.extend_from_slice(tiff);
        let cases: &[(&[u8], Orientation)] = &[
            (tiff, Orientation::Rotate90),
            (&prefixed, Orientation::Rotate90),
            (b"", Orientation::NoTransforms),
            (b"Exif\0\0garbage", Orientation::NoTransforms),
            (&tiff[..12], Orientation::NoTransforms),
        ];
        for (bytes, want) in cases {
            assert_eq!(orientation_from_exif(bytes), *want, "{bytes:?}");
        }
    }

    #[test]
    fn dimension_limits_table() {
        let l = Limits::default();
        let cases: &[(u32, u32, bool)] = &[
            (1, 1, true),
            (8192, 4882, true), // 39_993_344 px
            (8192, 4883, false),
            (8193, 1, false),
            (1, 8193, false),
            (0, 10, false),
            (u32::MAX, u32::MAX, false),
        ];
        for &(w, h, ok) in cases {
            assert_eq!(check_dimensions(w, h, &l).is_ok(), ok, "{w}x{h}");
        }
    }

    #[test]
    fn probe_reads_header_only_and_refuses_bombs() {
        let l = Limits::default();
        assert_eq!(
            probe(&png_header(300, 200), &l).unwrap(),
            (SourceFormat::Png, 300, 200)
        );
        match probe(&png_header(100_000, 100_000), &l) {
            Err(PipelineError::DimensionsTooLarge { width, height, .. }) => {
                assert_eq!((width, height), (100_000, 100_000))
            }
            other => panic!("{other:?}"),
        }
        // Declared huge but tiny body: decode must refuse before allocating.
        assert!(matches!(
            decode(&png_header(60_000, 60_000), &l),
            Err(PipelineError::DimensionsTooLarge { .. })
        ));
    }

    #[test]
    fn probe_checks_the_body_size() {
        let l = Limits {
            max_upload_bytes: 10,
            ..Limits::default()
        };
        let b = png_header(1, 1);
        assert!(matches!(
            probe(&b, &l),
            Err(PipelineError::TooLarge { limit: 10, .. })
        ));
        assert!(matches!(probe(&[], &l), Err(PipelineError::Empty)));
    }

    #[test]
    fn decoder_alloc_limit_is_enforced() {
        let l = Limits {
            max_decoder_alloc: 1000,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&png_header(100, 100), &l),
            Err(PipelineError::LimitExceeded(_))
        ));
    }

    #[test]
    fn truncated_input_is_a_decode_error() {
        let mut b = png_header(1, 1);
        b.truncate(40);
        let e = decode(&b, &Limits::default()).err().unwrap();
        assert!(
            e.is_client_error() && matches!(e, PipelineError::Decode(_)),
            "{e:?}"
        );
    }
}
