//! Format sniffing from magic bytes only (never from a Content-Type or a name).
//!
//! Accepts JPEG (incl. MPO, which is JPEG), PNG (incl. APNG), GIF and WebP;
//! everything else is `UnsupportedFormat` with a short name of what it looks
//! like, for the error message. Text formats (SVG, HTML, XML) are recognised by
//! their first non-blank byte only and are never parsed.

use super::{PipelineError, SourceFormat};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The upload's format from its first bytes.
pub fn sniff(bytes: &[u8]) -> Result<SourceFormat, PipelineError> {
    if bytes.is_empty() {
        return Err(PipelineError::Empty);
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(SourceFormat::Jpeg);
    }
    if bytes.starts_with(PNG_MAGIC) {
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

    #[test]
    fn accepted_magics() {
        let cases: &[(&[u8], SourceFormat)] = &[
            (b"\xFF\xD8\xFF\xE0\0\x10JFIF", SourceFormat::Jpeg),
            (b"\xFF\xD8\xFF\xE1 MPO-ish", SourceFormat::Jpeg),
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
}
