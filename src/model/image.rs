//! Image value types shared by the parsing layer, the pipeline and the
//! generated defaults: the output-size limit, output formats, crop
//! rectangles and pixel buffers. Plain data; the work on them lives in
//! `pipeline` and `identicon`.

/// Smallest output side, px.
pub const MIN_OUTPUT_SIDE: u32 = 1;
/// Largest output side, px: the one limit `spec` (size parsing), `pipeline`
/// (rendering) and `identicon` (drawing) all check against.
pub const MAX_OUTPUT_SIDE: u32 = 2048;

/// Output formats a variant can be encoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    Png,
    Jpeg,
    Webp,
    Avif,
    /// GIF: animated for an animated master (palette per frame), else the
    /// still frame.
    Gif,
}

impl OutputFormat {
    pub fn content_type(&self) -> &'static str {
        match self {
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Avif => "image/avif",
            OutputFormat::Gif => "image/gif",
        }
    }
    pub fn extension(&self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
            OutputFormat::Gif => "gif",
        }
    }
}

/// How a master's WebP variants are compressed: decided once per master at
/// upload (`pipeline::classify`) and stored in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Photographic content: lossy WebP; AVIF may be negotiated.
    Lossy,
    /// Logos and flat art (and generated defaults), where lossless WebP is
    /// smaller than lossy: lossless WebP, never a negotiated AVIF.
    Lossless,
}

/// An upload crop rectangle, in the upright (EXIF-oriented) image's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub side: u32,
}

/// Pixel layout of a [`Pixels`] buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    Rgb8,
    Rgba8,
}

/// A decoded image in memory, sRGB, 8 bits per channel, tightly packed rows.
/// The pixels are owned (`Vec<u8>`, the default) or borrowed (`&[u8]`: an
/// uncompressed stored rung is rendered from the bytes read, not a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels<D = Vec<u8>> {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub data: D,
}

impl<D: AsRef<[u8]>> Pixels<D> {
    /// The same pixels, borrowed.
    pub fn view(&self) -> Pixels<&[u8]> {
        Pixels {
            width: self.width,
            height: self.height,
            layout: self.layout,
            data: self.data.as_ref(),
        }
    }

    /// The same pixels, owned (a copy).
    pub fn to_owned_pixels(&self) -> Pixels {
        Pixels {
            width: self.width,
            height: self.height,
            layout: self.layout,
            data: self.data.as_ref().to_vec(),
        }
    }
}

/// What a stored animated master is (issue 22): kept in the manifest, read by
/// the render path without opening the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AnimationInfo {
    /// Side of the (square) animated master, px (at most 512).
    pub side: u32,
    /// Frames stored (identical consecutive frames merged, their delays summed).
    pub frames: u32,
    /// Times the animation plays; 0 = forever.
    pub loop_count: u32,
    /// One loop's duration, ms.
    pub duration_ms: u64,
    /// Smaller animated rungs stored after the master (`Manifest::rungs[1..]`),
    /// rung `i` of side `side >> i`, so a small render never decodes the
    /// whole master. 0 in manifests written before they existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub smaller: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl AnimationInfo {
    /// Sides of the stored animated rungs, the master's first.
    pub fn rung_sides(&self) -> Vec<u32> {
        (0..=u32::from(self.smaller))
            .map(|i| self.side >> i)
            .collect()
    }
}
