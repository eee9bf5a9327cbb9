//! The image pipeline: untrusted upload bytes → normalized master ladder, and
//! a ladder rung → an encoded variant of exactly N×N pixels.
//!
//! Pure and synchronous: no I/O, no async, no hyper, no store. Every limit is a
//! typed value checked before the allocation it guards.
//!
//! Submodules: `sniff` (magic bytes), `decode` (limits, first frame, EXIF/ICC
//! metadata), `geometry` (crop math), `resize` (fast_image_resize), `color`
//! (ICC → sRGB with moxcms), `encode` (PNG/WebP variants, rung storage),
//! `jpeg` (JPEG variants), `ycc` (rungs as YCbCr 4:2:0 planes),
//! `avif` (AVIF variants with rav1e), `classify` (the per-master lossy or
//! lossless decision), `ladder` (`normalize`, `render`, `pick_rung`,
//! `render_cost`), `animation` (issue 22: every frame of an animated upload,
//! under `AnimationLimits`), `animated` (the stored animated master and
//! animated WebP / GIF variants), `error`.

use crate::model::ContentHash;
// The value types the pipeline works on live in `model` (shared with `spec`
// and `identicon`, which must not import the pipeline).
pub use crate::model::{Compression, Crop, Layout, OutputFormat, Pixels};

mod animated;
mod animation;
mod avif;
mod classify;
mod color;
mod decode;
mod encode;
mod error;
mod geometry;
mod jpeg;
mod ladder;
mod parallel;
mod resize;
pub mod salt;
mod shrunk;
mod sniff;
mod webp_mux;
mod ycc;

#[cfg(test)]
mod golden_tests;

/// A file of `fixtures/` (tests of this module's parts).
#[cfg(test)]
fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub use animated::{
    animated_ladder, animated_render_cost, decode_master, encode_master, render_animated,
    MIN_ANIMATED_RUNG_SIDE,
};
pub use animation::{
    Animation, AnimationLimit, AnimationLimits, Frame, OverLimit, MASTER_FRAME_BUDGET,
    MAX_ANIMATION_SIDE,
};
pub use avif::encode_avif_at;
pub use avif::AVIF_SPEED;
pub use classify::classify;
pub use decode::probe;
pub use encode::{decode_rung, encode, RAW_RUNGS_UP_TO, RAW_RUNG_MAX_SIDE};
pub use error::PipelineError;
pub use jpeg::JPEG_QUALITY;
pub use ladder::{normalize, normalize_upload, pick_rung, render, render_cost, MIN_RUNG_SIDE};
pub use resize::resize_square;
pub use sniff::sniff;

/// Bump when any change to decoding, resizing or encoding alters output bytes:
/// it is part of every variant's ETag and cache key.
/// (2: lossy WebP for photos, AVIF, progressive JPEG from 256 px;
/// 3: lossy WebP at libwebp method 2;
/// 4: baseline JPEG at every size, 3–30 % smaller than progressive;
/// 5: JPEG variants from 384×384 px in restart segments, encoded in parallel;
/// 6: a photo's rung between 256 and 512 px stored as YCbCr 4:2:0 planes,
/// so its renders other than a JPEG of its own side see 4:2:0 chroma.)
/// Not bumped for what changes only what a new upload stores (the master of
/// a shrunk JPEG made from its planes): that content has a new hash, so no
/// variant of stored content changes.
pub const PIPELINE_VERSION: u32 = 6;

/// Encoder qualities (1–100), from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quality {
    /// Lossy WebP quality (libwebp's 0–100 scale) [default: 80].
    pub webp: u8,
    /// AVIF quality (ravif's 1–100 scale) [default: 80: the lowest whose
    /// luma SSIM against the lossless render holds ≥ 0.95 median and ≥ 0.93
    /// for every photo at 128 and 256 px in `bench/bytes.sh`; ravif's 60 gave
    /// 0.946 median, 0.884 worst].
    pub avif: u8,
}

impl Quality {
    /// `--webp-quality 80`, `--avif-quality 80`.
    pub const DEFAULT: Quality = Quality { webp: 80, avif: 80 };
}

impl Default for Quality {
    fn default() -> Self {
        Quality::DEFAULT
    }
}

/// Everything besides the pixels and the format that decides a variant's
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub compression: Compression,
    pub quality: Quality,
}

impl Encoding {
    /// Lossless WebP at the default qualities (generated defaults' goldens,
    /// tests).
    pub const LOSSLESS: Encoding = Encoding::lossless(Quality::DEFAULT);
    /// Lossy WebP at the default qualities.
    pub const LOSSY: Encoding = Encoding::lossy(Quality::DEFAULT);

    /// Lossless where the format allows it (generated defaults).
    pub const fn lossless(quality: Quality) -> Self {
        Encoding {
            compression: Compression::Lossless,
            quality,
        }
    }
    /// Lossy WebP (photos).
    pub const fn lossy(quality: Quality) -> Self {
        Encoding {
            compression: Compression::Lossy,
            quality,
        }
    }
}

/// Formats accepted for upload (sniffed from bytes, never from Content-Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    Jpeg,
    Png,
    Gif,
    Webp,
}

/// Limits for untrusted input; each is checked before the allocation it guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_upload_bytes: usize,
    pub max_side: u32,
    pub max_pixels: u64,
    pub max_decoder_alloc: u64,
    /// Side of the largest stored master (default 1024).
    pub master_side: u32,
    /// Photographs' rungs up to this side are stored uncompressed, so a cold
    /// render skips their decode (default [`RAW_RUNGS_UP_TO`], at most
    /// [`RAW_RUNG_MAX_SIDE`]; 0: none). Above it, a photo's rung of 257–512
    /// px below the master is YCbCr 4:2:0 planes (`ycc`); 512 keeps that
    /// rung exact instead, +15–23 % per 1024 px photo ladder.
    pub raw_rungs_up_to: u32,
    /// Issue 22: frames, total pixels and duration of animated uploads.
    pub animation: AnimationLimits,
}

/// One stored rung of a master's resolution ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    pub side: u32,
    /// Encoded rung bytes (the stored blob).
    pub bytes: Vec<u8>,
    pub hash: ContentHash,
}

/// The result of normalizing an upload.
#[derive(Debug, Clone)]
pub struct Normalized {
    pub source_format: SourceFormat,
    pub has_alpha: bool,
    /// Lossy or lossless WebP for this master ([`classify`]).
    pub compression: Compression,
    /// Largest first; `ladder[0]` is the still master (whose hash names the
    /// avatar unless it is animated).
    pub ladder: Vec<Rung>,
    /// Issue 22: the animated master of an animated upload (its hash then
    /// names the avatar: it covers every frame).
    pub animation: Option<AnimatedMaster>,
}

/// A stored animated master: lossless animated WebP ([`encode_master`]),
/// and its smaller animated rungs (`info.smaller` of them, halving).
#[derive(Debug, Clone)]
pub struct AnimatedMaster {
    pub info: crate::model::AnimationInfo,
    pub bytes: Vec<u8>,
    pub hash: ContentHash,
    pub smaller: Vec<Rung>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_upload_bytes: 10 << 20,
            max_side: 8192,
            max_pixels: 40_000_000,
            max_decoder_alloc: 512 << 20,
            master_side: 1024,
            raw_rungs_up_to: RAW_RUNGS_UP_TO,
            animation: AnimationLimits::default(),
        }
    }
}
