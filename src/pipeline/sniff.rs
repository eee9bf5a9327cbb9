//! Format sniffing from magic bytes only (never from a Content-Type or a name).
//!
//! Accepts JPEG (incl. MPO, which is JPEG), PNG (incl. APNG), GIF and WebP;
//! everything else is `UnsupportedFormat` with a short name of what it looks
//! like, for the error message. Text formats (SVG, HTML, XML) are recognised by
//! their first non-blank byte only and are never parsed.
//!
//! One structural check goes beyond magic bytes: a JPEG must reach its
//! end-of-image marker (`FF D9`). Decoders such as zune-jpeg fill a truncated
//! scan with grey and report success, so a half-uploaded photo would otherwise
//! be stored. [`jpeg_truncation`] walks the marker segments by their lengths
//! (so an `FF D9` inside an EXIF thumbnail in APP1 is skipped, never taken for
//! the end) and the entropy-coded data after each SOS up to the next real
//! marker; anything after the first EOI (MPO's second picture, trailing
//! garbage) is ignored. Linear in the input, no allocation.
//!
//! And one for PNG: compressed text chunks (`zTXt`, compressed `iTXt`) are
//! inflated under a shared budget of [`MAX_PNG_TEXT`] bytes and the upload is
//! refused when they would exceed it — a few KiB of zlib that inflate to
//! gigabytes is a decompression bomb aimed at whoever reads the metadata next
//! (we drop metadata, but we must not store or pass on a bomb either).

use super::{PipelineError, SourceFormat};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Inflated bytes all compressed PNG text chunks of one upload may reach.
pub const MAX_PNG_TEXT: usize = 1 << 20;

/// The upload's format from its first bytes.
pub fn sniff(bytes: &[u8]) -> Result<SourceFormat, PipelineError> {
    if bytes.is_empty() {
        return Err(PipelineError::Empty);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        if let Some(why) = jpeg_truncation(bytes) {
            return Err(PipelineError::Decode(format!("truncated JPEG: {why}")));
        }
        return Ok(SourceFormat::Jpeg);
    }
    if bytes.starts_with(PNG_MAGIC) {
        if let Some(why) = png_text_bomb(bytes) {
            return Err(PipelineError::MetadataBomb(why));
        }
        return Ok(SourceFormat::Png);
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Ok(SourceFormat::Gif);
    }
    if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        return Ok(SourceFormat::Webp);
    }
    Err(PipelineError::UnsupportedFormat {
        detected: describe_unsupported(bytes),
    })
}

/// Why a JPEG (starting with SOI) does not reach its end-of-image marker, or
/// `None` when it does. Lenient where decoders are: fill bytes (`FF FF`) and
/// stray bytes between segments are skipped, standalone markers (RSTn, TEM)
/// carry no length.
pub(crate) fn jpeg_truncation(b: &[u8]) -> Option<&'static str> {
    const EOF: &str = "the data ends before the end-of-image marker";
    let mut i = 2; // after SOI
    loop {
        // Next marker: skip stray bytes, then fill bytes.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return Some(EOF);
        };
        i += 1;
        match marker {
            0xD9 => return None,
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let len = match b.get(i..i + 2) {
            Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => return Some(EOF),
        };
        if len < 2 {
            return Some("a marker segment has an invalid length");
        }
        i = i.saturating_add(len);
        if i > b.len() {
            return Some("a marker segment runs past the end of the data");
        }
        if marker == 0xDA {
            i = match end_of_scan(b, i) {
                Some(next_marker) => next_marker,
                None => return Some(EOF),
            };
        }
    }
}

/// A JPEG frame header (SOFn), as far as shrink-on-load needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JpegFrame {
    /// The SOF marker's low nibble: 0 baseline, 1 extended, 2 progressive, ...
    pub process: u8,
    pub precision: u8,
    pub width: u32,
    pub height: u32,
    pub components: u8,
}

/// The first frame header of a JPEG (starting with SOI), walking segments by
/// their lengths; `None` when there is none before the first scan or the data
/// is malformed. No allocation.
pub(crate) fn jpeg_frame(b: &[u8]) -> Option<JpegFrame> {
    let mut i = 2; // after SOI
    loop {
        while *b.get(i)? != 0xFF {
            i += 1;
        }
        while *b.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *b.get(i)?;
        i += 1;
        match marker {
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => return None,
            _ => {}
        }
        let l = b.get(i..i + 2)?;
        let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let f = b.get(i + 2..i + 8)?;
            return Some(JpegFrame {
                process: marker & 0x0F,
                precision: f[0],
                height: u32::from(u16::from_be_bytes([f[1], f[2]])),
                width: u32::from(u16::from_be_bytes([f[3], f[4]])),
                components: f[5],
            });
        }
        if len < 2 {
            return None;
        }
        i = i.checked_add(len)?;
    }
}

/// Index of the marker that ends the entropy-coded data starting at `from`
/// (stuffed `FF 00`, RSTn and fill bytes are part of the scan), or `None` when
/// the data ends first.
fn end_of_scan(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let ff = i + memchr::memchr(0xFF, b.get(i..)?)?;
        match *b.get(ff + 1)? {
            0x00 | 0xD0..=0xD7 => i = ff + 2,
            0xFF => i = ff + 1,
            _ => return Some(ff),
        }
    }
}

/// Why a PNG's compressed text chunks are a decompression bomb, or `None`.
/// Walks the chunk list by lengths (stops quietly at a truncated or malformed
/// chunk: the decoder reports those) and inflates each compressed text chunk
/// under what is left of [`MAX_PNG_TEXT`]; allocation stays within the budget.
pub(crate) fn png_text_bomb(b: &[u8]) -> Option<String> {
    let mut left = MAX_PNG_TEXT;
    let mut i = PNG_MAGIC.len();
    while let Some(head) = b.get(i..i.checked_add(8)?) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let data = b.get(i + 8..(i + 8).checked_add(len)?)?;
        let compressed: Option<&[u8]> = match kind {
            // keyword \0 method data
            b"zTXt" => data
                .iter()
                .position(|&c| c == 0)
                .and_then(|k| data.get(k + 2..)),
            // keyword \0 flag method language \0 translated \0 text
            b"iTXt" => {
                let k = data.iter().position(|&c| c == 0)?;
                if data.get(k + 1) == Some(&1) {
                    let rest = data.get(k + 3..)?;
                    let lang = rest.iter().position(|&c| c == 0)?;
                    let rest = rest.get(lang + 1..)?;
                    let tr = rest.iter().position(|&c| c == 0)?;
                    rest.get(tr + 1..)
                } else {
                    None
                }
            }
            b"IEND" => return None,
            _ => None,
        };
        if let Some(z) = compressed {
            match miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(z, left) {
                Ok(text) => left -= text.len(),
                Err(e) if e.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput => {
                    return Some(format!(
                        "compressed {} text chunks inflate beyond {} KiB",
                        String::from_utf8_lossy(kind),
                        MAX_PNG_TEXT >> 10
                    ));
                }
                // Corrupt zlib in a text chunk: not our concern (never read).
                Err(_) => {}
            }
        }
        i = i + 12 + len;
    }
    None
}

/// A short human name for a format we do not accept.
fn describe_unsupported(b: &[u8]) -> &'static str {
    if b.starts_with(b"BM") {
        return "BMP";
    }
    if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        return "TIFF";
    }
    if b.starts_with(&[0, 0, 1, 0]) || b.starts_with(&[0, 0, 2, 0]) {
        return "ICO";
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        return match &b[8..12] {
            b"avif" | b"avis" => "AVIF",
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => "HEIF",
            _ => "ISO media",
        };
    }
    if b.starts_with(&[0xFF, 0x0A]) || b.starts_with(b"\0\0\0\x0cJXL ") {
        return "JPEG XL";
    }
    if b.starts_with(b"qoif") {
        return "QOI";
    }
    if b.starts_with(b"8BPS") {
        return "PSD";
    }
    if b.starts_with(b"RIFF") {
        return "RIFF (not WebP)";
    }
    if b.starts_with(b"GIF") {
        return "GIF (bad version)";
    }
    if b.len() >= 4 && b[1..4].eq_ignore_ascii_case(b"PNG") {
        return "damaged PNG signature";
    }
    if b.starts_with(b"%PDF") {
        return "PDF";
    }
    // Text: skip an UTF-8 BOM and leading whitespace; markup starts with '<'.
    let text = b.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(b);
    if let Some(first) = text.iter().find(|c| !c.is_ascii_whitespace()) {
        if *first == b'<' {
            return "SVG/HTML/XML text";
        }
    }
    "unknown"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixture;

    #[test]
    fn accepted_magics() {
        let cases: &[(&[u8], SourceFormat)] = &[
            (b"\xFF\xD8\xFF\xE0\0\x06JFIF\xFF\xD9", SourceFormat::Jpeg),
            (b"\xFF\xD8\xFF\xE1\0\x05MPO\xFF\xD9", SourceFormat::Jpeg),
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", SourceFormat::Png),
            (b"GIF87a\x01\0\x01\0", SourceFormat::Gif),
            (b"GIF89a\x01\0\x01\0", SourceFormat::Gif),
            (b"RIFF\x10\0\0\0WEBPVP8L", SourceFormat::Webp),
        ];
        for (bytes, want) in cases {
            assert_eq!(sniff(bytes).ok(), Some(*want), "{bytes:?}");
        }
    }

    #[test]
    fn rejected_magics_name_what_they_are() {
        let cases: &[(&[u8], &str)] = &[
            (b"BM\x36\0\0\0", "BMP"),
            (b"II*\0\x08\0\0\0", "TIFF"),
            (b"MM\0*\0\0\0\x08", "TIFF"),
            (b"\0\0\x01\0\x01\0", "ICO"),
            (b"\0\0\0\x1cftypavif\0\0\0\0", "AVIF"),
            (b"\0\0\0\x18ftypheic\0\0\0\0", "HEIF"),
            (b"\xEF\xBB\xBF  <svg xmlns=", "SVG/HTML/XML text"),
            (b"<!DOCTYPE html><html>", "SVG/HTML/XML text"),
            (b"\n<?xml version=\"1.0\"?>", "SVG/HTML/XML text"),
            (b"RIFF\x10\0\0\0WAVEfmt ", "RIFF (not WebP)"),
            (b"\x89PnG\r\n\x1a\n", "damaged PNG signature"),
            (b"\xFF\xD8", "unknown"),
            (b"RIFF\0\0\0\0WEB", "RIFF (not WebP)"),
            (b"hello", "unknown"),
        ];
        for (bytes, want) in cases {
            match sniff(bytes) {
                Err(PipelineError::UnsupportedFormat { detected }) => {
                    assert_eq!(detected, *want, "{bytes:?}")
                }
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_is_its_own_error() {
        assert!(matches!(sniff(&[]), Err(PipelineError::Empty)));
    }

    /// A marker segment: `FF marker len(2, BE, counts itself) payload`.
    fn seg(marker: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len() + 2).unwrap();
        let mut v = vec![0xFF, marker];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    const SOI: &[u8] = &[0xFF, 0xD8];
    const EOI: &[u8] = &[0xFF, 0xD9];
    /// Entropy-coded data with a stuffed FF 00 and a restart marker.
    const SCAN: &[u8] = &[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF];

    #[test]
    fn jpeg_truncation_table() {
        let app0 = seg(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        // An EXIF thumbnail: a whole JPEG (with its own FF D9) inside APP1.
        let thumb = cat(&[SOI, &seg(0xDA, &[1, 1, 0, 0, 0x3F, 0]), SCAN, EOI]);
        let app1 = seg(0xE1, &cat(&[b"Exif\0\0", &thumb]));
        let sof = seg(0xC0, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]);
        let dht = seg(0xC4, &[0; 17]);
        let sos = seg(0xDA, &[1, 1, 0, 0, 0x3F, 0]);
        let whole = cat(&[SOI, &app0, &app1, &sof, &dht, &sos, SCAN, EOI]);
        let progressive = cat(&[SOI, &sof, &sos, SCAN, &dht, &sos, SCAN, EOI]);
        let cut_scan = cat(&[SOI, &app0, &app1, &sof, &sos, &SCAN[..4]]);
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("complete", whole.clone(), true),
            (
                "trailing garbage after EOI",
                cat(&[&whole, b"\0\0garbage\xFF\xDA"]),
                true,
            ),
            (
                "MPO: second picture cut",
                cat(&[&whole, &whole[..40]]),
                true,
            ),
            ("progressive, two scans", progressive.clone(), true),
            (
                "fill bytes before markers",
                cat(&[SOI, &[0xFF, 0xFF], &app0, &sos, SCAN, &[0xFF], EOI]),
                true,
            ),
            ("no scan, just EOI", cat(&[SOI, EOI]), true),
            ("no EOI", whole[..whole.len() - 2].to_vec(), false),
            ("EOI's FF only", whole[..whole.len() - 1].to_vec(), false),
            ("cut in the scan, thumbnail's EOI before", cut_scan, false),
            (
                "cut inside APP1 (in the thumbnail)",
                whole[..app0.len() + 30].to_vec(),
                false,
            ),
            (
                "cut in the second progressive scan",
                progressive[..progressive.len() - 5].to_vec(),
                false,
            ),
            (
                "cut in a segment length",
                cat(&[SOI, &[0xFF, 0xE0, 0x00]]),
                false,
            ),
            (
                "segment length 1",
                cat(&[SOI, &[0xFF, 0xE0, 0x00, 0x01], EOI]),
                false,
            ),
            (
                "segment runs past the end",
                cat(&[SOI, &[0xFF, 0xE1, 0x40, 0x00], EOI]),
                false,
            ),
            ("SOI only", SOI.to_vec(), false),
        ];
        for (name, bytes, complete) in cases {
            assert_eq!(jpeg_truncation(&bytes).is_none(), complete, "{name}");
            let want = if complete {
                Some(SourceFormat::Jpeg)
            } else {
                None
            };
            if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
                assert_eq!(sniff(&bytes).ok(), want, "sniff: {name}");
            }
        }
    }

    #[test]
    fn truncated_jpeg_is_a_client_decode_error() {
        let e = sniff(b"\xFF\xD8\xFF\xDB\0\x43").err().unwrap();
        assert!(
            e.is_client_error() && matches!(e, PipelineError::Decode(_)),
            "{e:?}"
        );
        assert!(e.to_string().contains("truncated JPEG"), "{e}");
    }

    #[test]
    fn real_jpegs_complete_and_every_prefix_truncated() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jpg") {
                let b = std::fs::read(&path).unwrap();
                assert_eq!(jpeg_truncation(&b), None, "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 10, "only {seen} JPEG fixtures");
        // Every cut of a real photo (sampled) is caught, including cuts inside
        // its EXIF/ICC segments and right before the final FF D9.
        let b = fixture("exif_portrait_2_generic_icc.jpg");
        let eoi = b.windows(2).rposition(|w| w == EOI).unwrap();
        for cut in (2..eoi).step_by(37).chain([eoi, eoi + 1]) {
            assert!(jpeg_truncation(&b[..cut]).is_some(), "cut at {cut}");
        }
    }

    #[test]
    fn jpeg_frame_headers() {
        let sof = |m: u8, p: u8, h: u16, w: u16, c: u8| {
            let mut d = vec![p];
            d.extend_from_slice(&h.to_be_bytes());
            d.extend_from_slice(&w.to_be_bytes());
            d.push(c);
            d.extend(std::iter::repeat_n(0, 3 * usize::from(c)));
            seg(m, &d)
        };
        let soi: &[u8] = &[0xFF, 0xD8];
        let app = seg(0xE1, b"Exif\0\0 not a frame \xFF\xC0");
        let frame = |process, precision, width, height, components| JpegFrame {
            process,
            precision,
            width,
            height,
            components,
        };
        let cases: Vec<(Vec<u8>, Option<JpegFrame>)> = vec![
            (
                cat(&[soi, &app, &sof(0xC0, 8, 3024, 4032, 3)]),
                Some(frame(0, 8, 4032, 3024, 3)),
            ),
            (
                cat(&[soi, &sof(0xC2, 8, 10, 20, 1)]),
                Some(frame(2, 8, 20, 10, 1)),
            ),
            (
                cat(&[soi, &seg(0xC4, &[0; 20]), &sof(0xC1, 12, 1, 1, 4)]),
                Some(frame(1, 12, 1, 1, 4)),
            ),
            // A scan before any frame, a truncated header, nothing at all.
            (cat(&[soi, &seg(0xDA, &[0; 4])]), None),
            (cat(&[soi, &[0xFF, 0xC0, 0x00, 0x11, 8, 0]]), None),
            (soi.to_vec(), None),
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            assert_eq!(jpeg_frame(bytes), *want, "case {i}");
        }
        let f = jpeg_frame(&fixture("photo_large_4032x3024.jpg")).unwrap();
        assert_eq!(
            (f.width, f.height, f.precision, f.components),
            (4032, 3024, 8, 3)
        );
    }

    #[test]
    fn png_text_bombs_are_refused_and_honest_text_is_not() {
        fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0; 4]); // CRC: not checked here
            c
        }
        let z = |n: usize| miniz_oxide::deflate::compress_to_vec_zlib(&vec![b'a'; n], 9);
        let ztxt = |n: usize| chunk(b"zTXt", &cat(&[b"Comment\0\0", &z(n)]));
        let itxt =
            |n: usize, flag: u8| chunk(b"iTXt", &cat(&[b"XML\0", &[flag, 0], b"en\0\0", &z(n)]));
        let png = |chunks: &[Vec<u8>]| {
            let mut v = PNG_MAGIC.to_vec();
            for c in chunks {
                v.extend_from_slice(c);
            }
            v.extend_from_slice(&chunk(b"IEND", b""));
            v
        };
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (png(&[ztxt(1000)]), false),
            (png(&[ztxt(MAX_PNG_TEXT)]), false),
            (png(&[ztxt(MAX_PNG_TEXT + 1)]), true),
            (
                png(&[ztxt(MAX_PNG_TEXT / 2), itxt(MAX_PNG_TEXT / 2 + 1, 1)]),
                true,
            ),
            // An uncompressed iTXt is never inflated.
            (png(&[itxt(MAX_PNG_TEXT * 2, 0)]), false),
            (png(&[itxt(MAX_PNG_TEXT * 2, 1)]), true),
            // A chunk whose length runs past the end: left to the decoder.
            (cat(&[PNG_MAGIC, &[0xff, 0, 0, 0], b"zTXt"]), false),
        ];
        for (i, (bytes, bomb)) in cases.iter().enumerate() {
            assert_eq!(png_text_bomb(bytes).is_some(), *bomb, "case {i}");
        }
        let e = sniff(&fixture("hostile/bomb_pillow_png_text_dos.png")).unwrap_err();
        assert!(matches!(e, PipelineError::MetadataBomb(_)), "{e}");
        assert!(e.to_string().contains("zTXt"), "{e}");
        for name in ["logo_alpha_disc_512.png", "photo_astronaut_16bit_512.png"] {
            assert_eq!(sniff(&fixture(name)).unwrap(), SourceFormat::Png, "{name}");
        }
    }

    #[test]
    fn hostile_truncated_jpegs_are_caught() {
        for name in ["truncated_jpeg.jpg", "truncated_half_grace_hopper.jpg"] {
            let b = fixture(&format!("hostile/{name}"));
            assert!(jpeg_truncation(&b).is_some(), "{name}");
        }
    }
}
