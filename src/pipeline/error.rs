//! The pipeline's error type and its mapping from the `image` crate's errors.
//!
//! Invariant: every variant except [`PipelineError::Internal`] is caused by the
//! upload's bytes or the request's parameters (a 4xx); `Internal` means our own
//! encoder failed or a stored rung is corrupt (a 5xx). Messages are short and
//! human: no `Debug` dumps of decoder state.

use super::animation::AnimationLimit;
use crate::model::{Fault, MAX_OUTPUT_SIDE, MIN_OUTPUT_SIDE};

/// Longest detail text carried from a decoder's message.
pub(crate) const MAX_DETAIL: usize = 120;

/// A decoder message, trimmed and cut to `MAX_DETAIL` characters.
fn short(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    let s = s.trim();
    match s.char_indices().nth(MAX_DETAIL) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Everything that can go wrong between upload bytes and an encoded variant.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("empty body")]
    Empty,
    #[error("upload of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("unsupported format ({detected}); supported: JPEG, PNG, GIF, WebP")]
    UnsupportedFormat { detected: &'static str },
    #[error(
        "image is {width}x{height}; limits are {max_side} px per side and {max_pixels} pixels"
    )]
    DimensionsTooLarge {
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("decoder limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("metadata decompression bomb: {0}")]
    MetadataBomb(String),
    /// Issue 22: an animation over `--max-frames`, `--max-animation-megapixels`
    /// or `--max-animation-seconds` (with `--animation-over-limit refuse`).
    #[error("animation over the limit: more than {max} {limit} ({})", limit.option())]
    AnimationLimit { limit: AnimationLimit, max: u64 },
    /// Issue 22: `?still_frame=N` names a frame the upload does not have.
    #[error("still_frame {frame} out of range: the image has {frames} frame(s)")]
    BadStillFrame { frame: u32, frames: u32 },
    #[error("bad crop: {0}")]
    BadCrop(String),
    #[error("size {0} out of range {min}..={max}", min = MIN_OUTPUT_SIDE, max = MAX_OUTPUT_SIDE)]
    BadSize(u32),
    #[error("internal pipeline error: {0}")]
    Internal(String),
}

impl PipelineError {
    /// Whose fault: the upload's or the request's for everything but
    /// [`PipelineError::Internal`].
    pub fn fault(&self) -> Fault {
        match self {
            PipelineError::Internal(_) => Fault::Server,
            _ => Fault::Client,
        }
    }

    /// True for anything caused by the upload's bytes or the request (a 4xx).
    pub fn is_client_error(&self) -> bool {
        self.fault() == Fault::Client
    }

    /// Maps an error from decoding *untrusted upload bytes*. Decoder messages
    /// are cut to [`MAX_DETAIL`] characters (some embed `Debug` output).
    pub(crate) fn from_decode(e: image::ImageError) -> Self {
        use image::ImageError as E;
        match e {
            E::Limits(l) => PipelineError::LimitExceeded(short(&l)),
            E::Decoding(d) => PipelineError::Decode(short(&d)),
            E::Unsupported(u) => PipelineError::Decode(short(&u)),
            E::Parameter(p) => PipelineError::Decode(short(&p)),
            E::IoError(io) => PipelineError::Decode(short(&io)),
            E::Encoding(en) => PipelineError::Internal(short(&en)),
        }
    }

    /// Maps an error from encoding pixels we produced ourselves.
    pub(crate) fn from_encode(e: impl std::fmt::Display) -> Self {
        PipelineError::Internal(format!("encode: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_internal_is_a_server_error() {
        let cases: Vec<(PipelineError, bool)> = vec![
            (PipelineError::Empty, true),
            (PipelineError::TooLarge { bytes: 2, limit: 1 }, true),
            (PipelineError::UnsupportedFormat { detected: "BMP" }, true),
            (
                PipelineError::DimensionsTooLarge {
                    width: 1,
                    height: 1,
                    max_side: 1,
                    max_pixels: 1,
                },
                true,
            ),
            (PipelineError::Decode("x".into()), true),
            (PipelineError::LimitExceeded("x".into()), true),
            (PipelineError::BadCrop("x".into()), true),
            (PipelineError::BadSize(0), true),
            (PipelineError::Internal("x".into()), false),
        ];
        for (e, client) in cases {
            assert_eq!(e.is_client_error(), client, "{e}");
        }
    }

    #[test]
    fn decoder_messages_are_cut_short() {
        let long = "x".repeat(500);
        assert_eq!(short(&long).chars().count(), MAX_DETAIL + 1);
        assert_eq!(short(&" eof\n"), "eof");
    }

    #[test]
    fn messages_name_limits_and_formats() {
        let e = PipelineError::UnsupportedFormat { detected: "BMP" };
        assert_eq!(
            e.to_string(),
            "unsupported format (BMP); supported: JPEG, PNG, GIF, WebP"
        );
        let e = PipelineError::DimensionsTooLarge {
            width: 100000,
            height: 3,
            max_side: 8192,
            max_pixels: 40_000_000,
        };
        let s = e.to_string();
        assert!(
            s.contains("100000x3") && s.contains("8192") && s.contains("40000000"),
            "{s}"
        );
    }
}
