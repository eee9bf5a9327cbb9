//! Encoders: variants (PNG / JPEG / WebP / AVIF) and the stored rung formats.
//!
//! Invariants: nothing but pixels is ever written — no EXIF, ICC, XMP or text
//! chunks (we always re-encode from pixels). PNG uses fast compression and
//! keeps alpha; JPEG is in `jpeg`; WebP is lossy
//! (libwebp, alpha kept) or lossless (image-webp, byte-for-byte what it
//! always was) as the master's [`Compression`] says; AVIF is
//! in `avif`. Rungs are QOI (lossless, byte-deterministic, decoded in
//! microseconds at avatar sizes), uncompressed, or YCbCr planes (`ycc`),
//! as `encode_rung` says. `decode_rung` reads bytes *we* stored, so
//! any failure there is `Internal` (a 5xx), not a client error.

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::jpeg::{encode_jpeg, flatten_on_white};
use super::resize::{channels, check_buffer};
use super::ycc::YCC_MAGIC;
use super::{Compression, Encoding, Layout, OutputFormat, PipelineError, Pixels};

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
pub(crate) fn encode_webp_lossy(
    px: &Pixels<impl AsRef<[u8]>>,
    quality: u8,
) -> Result<Vec<u8>, PipelineError> {
    check_buffer(px)?;
    let px = px.view();
    let enc = match px.layout {
        Layout::Rgb8 => webp::Encoder::from_rgb(px.data, px.width, px.height),
        Layout::Rgba8 => webp::Encoder::from_rgba(px.data, px.width, px.height),
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
pub(crate) fn encode_webp_lossless(px: &Pixels<&[u8]>) -> Result<Vec<u8>, PipelineError> {
    check_buffer(px)?;
    let mut out = Vec::new();
    WebPEncoder::new_lossless(&mut out)
        .encode(px.data, px.width, px.height, color_type(px.layout))
        .map_err(PipelineError::from_encode)?;
    Ok(out)
}

/// Encodes `px` as a variant in `format`.
pub fn encode(
    px: &Pixels<impl AsRef<[u8]>>,
    format: OutputFormat,
    encoding: Encoding,
) -> Result<Vec<u8>, PipelineError> {
    check_buffer(px)?;
    let px = &px.view();
    let mut out = match format {
        OutputFormat::Png => {
            return with_out_scratch(|buf| {
                PngEncoder::new_with_quality(buf, CompressionType::Fast, PngFilter::Adaptive)
                    .write_image(px.data, px.width, px.height, color_type(px.layout))
                    .map_err(PipelineError::from_encode)
            });
        }
        OutputFormat::Webp => match encoding.compression {
            Compression::Lossy => {
                encode_webp_lossy(px, checked_quality("webp", encoding.quality.webp)?)?
            }
            Compression::Lossless => encode_webp_lossless(px)?,
        },
        OutputFormat::Gif => super::animated::encode_still_gif(px)?,
        OutputFormat::Avif => {
            super::avif::encode_avif(px, checked_quality("avif", encoding.quality.avif)?)?
        }
        OutputFormat::Jpeg => {
            let flat;
            let rgb: &[u8] = match px.layout {
                Layout::Rgb8 => px.data,
                Layout::Rgba8 => {
                    flat = flatten_on_white(px.data);
                    &flat
                }
            };
            return encode_jpeg(px.width, px.height, |enc, w, h| {
                enc.encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
            });
        }
    };
    // These encoders grow their output by doubling; variants live in the
    // cache for a long time and are budgeted by length, so give back the
    // slack (up to half of every allocation otherwise).
    out.shrink_to_fit();
    Ok(out)
}

std::thread_local! {
    /// The output buffer of the last PNG or JPEG encode on this thread.
    static OUT_SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs an encoder writing into this thread's output scratch buffer and
/// returns an exact-size copy of what it wrote: variants live in the cache
/// for a long time and are budgeted by length, so they must carry no slack,
/// and growing a fresh buffer by doubling, then shrinking it, cost up to
/// three allocations and copies per render (issue 19).
pub(super) fn with_out_scratch(
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), PipelineError>,
) -> Result<Vec<u8>, PipelineError> {
    let mut buf = OUT_SCRATCH.take();
    buf.clear();
    let written = write(&mut buf).map(|()| buf.as_slice().to_vec());
    keep(&OUT_SCRATCH, buf);
    written
}

/// Default of [`Limits::raw_rungs_up_to`](super::Limits): rungs up to this
/// side may be stored uncompressed (issue 19): decoding the QOI rung was
/// 21–26 % of a cold render from it at 128–256 px.
pub const RAW_RUNGS_UP_TO: u32 = 256;
/// The largest `raw_rungs_up_to` allowed (`--raw-rungs-up-to`): at 512 px
/// the QOI decode was ~47 % of a cold render, and an uncompressed photo rung
/// is 768 KiB (a thread's kept read buffer, `store::blobs`, holds one).
pub const RAW_RUNG_MAX_SIDE: u32 = 512;
/// Rungs up to this side are never stored as YCbCr planes: the smaller the
/// rung, the more of a face a chroma sample spans (mean channel difference
/// from the exact rung, photo fixtures: 1.9–2.7 at 128 px, 1.3–1.5 at 256,
/// 0.4–1.6 at 384–512), and the smaller the QOI decode's share of a render.
const PLANES_ABOVE: u32 = 256;
/// Magic of an uncompressed rung: then width and height (u32 big-endian),
/// channels (3 or 4), and the pixels, rows top to bottom. No QOI rung starts
/// with it (those start `qoif`).
pub(crate) const RAW_MAGIC: &[u8; 4] = b"AEr1";
const RAW_HEADER: usize = 13;

/// Magic of a striped QOI rung (issue 19): then width and height (u32
/// big-endian), channels (3 or 4), the rows per stripe (u32), each stripe's
/// length in bytes (u32, one per stripe: `ceil(height / rows)`), and the
/// stripes, top to bottom, each a whole QOI image of `rows` rows of the rung
/// (the last: the rest). The stripes decode on every core at once: a whole
/// 512 px photo rung's QOI decode was ~47 % of a cold 512 px render, its
/// parts are independent by construction. Rungs stored before it (one QOI
/// image, `qoif`) are read as they are.
pub(crate) const STRIPED_MAGIC: &[u8; 4] = b"AEq1";
const STRIPED_HEADER: usize = 17;
/// Rows per stripe: 4 stripes at 512 px, 8 at 1024. A rung of at most this
/// many rows is one QOI image.
const STRIPE_ROWS: u32 = 128;

/// Encodes a ladder rung. Flat art (logos, drawings, generated avatars: QOI
/// saves at least 60 % of the raw bytes) is QOI, striped when taller than
/// `STRIPE_ROWS`: 5–50× smaller than raw, and fast to decode. A photograph's
/// rung is stored for its cold renders (issue 19): uncompressed
/// (`RAW_MAGIC`, ~2–2.5× QOI's bytes, no decode at all) up to `raw_up_to` px
/// (at most [`RAW_RUNG_MAX_SIDE`]); above that and `PLANES_ABOVE`, up to
/// `RAW_RUNG_MAX_SIDE`, as YCbCr 4:2:0 planes (`ycc`: 0.7–1.2× QOI's bytes
/// for the photo fixtures, the JPEG encoder's own input) when `planes`
/// (every rung but the master, which stays lossless) and opaque in 16 px
/// blocks; else QOI.
pub(crate) fn encode_rung(
    px: &Pixels,
    raw_up_to: u32,
    planes: bool,
) -> Result<Vec<u8>, PipelineError> {
    check_buffer(px)?;
    let qoi = encode_qoi_rung(px)?;
    let raw_len = RAW_HEADER + px.data.len();
    let side = px.width.max(px.height);
    if qoi.len() * 5 <= raw_len * 2 || side > RAW_RUNG_MAX_SIDE {
        return Ok(qoi);
    }
    if side > raw_up_to {
        return match planes && side > PLANES_ABOVE && super::ycc::fits(px) {
            true => super::ycc::encode_ycc_rung(px),
            false => Ok(qoi),
        };
    }
    let mut raw = Vec::with_capacity(raw_len);
    raw.extend_from_slice(RAW_MAGIC);
    raw.extend_from_slice(&px.width.to_be_bytes());
    raw.extend_from_slice(&px.height.to_be_bytes());
    raw.push(channels(px.layout) as u8);
    raw.extend_from_slice(&px.data);
    Ok(raw)
}

/// One QOI image, or stripes of `STRIPE_ROWS` rows encoded in parallel.
fn encode_qoi_rung(px: &Pixels) -> Result<Vec<u8>, PipelineError> {
    use rayon::prelude::*;
    if px.height <= STRIPE_ROWS {
        return qoi::encode_to_vec(&px.data, px.width, px.height)
            .map_err(PipelineError::from_encode);
    }
    let row_bytes = px.width as usize * channels(px.layout);
    let stripes = super::parallel::install(|| {
        px.data
            .par_chunks(STRIPE_ROWS as usize * row_bytes)
            .map(|rows| qoi::encode_to_vec(rows, px.width, (rows.len() / row_bytes) as u32))
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(PipelineError::from_encode)?;
    let total: usize = stripes.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(STRIPED_HEADER + 4 * stripes.len() + total);
    out.extend_from_slice(STRIPED_MAGIC);
    out.extend_from_slice(&px.width.to_be_bytes());
    out.extend_from_slice(&px.height.to_be_bytes());
    out.push(channels(px.layout) as u8);
    out.extend_from_slice(&STRIPE_ROWS.to_be_bytes());
    for s in &stripes {
        let len = u32::try_from(s.len())
            .map_err(|_| PipelineError::Internal("stripe over 4 GiB".into()))?;
        out.extend_from_slice(&len.to_be_bytes());
    }
    for s in &stripes {
        out.extend_from_slice(s);
    }
    Ok(out)
}

/// Is this rung (its salt already cut, `salt::payload`) a striped QOI rung?
pub(crate) fn is_striped(rung: &[u8]) -> bool {
    rung.starts_with(STRIPED_MAGIC)
}

/// A striped rung's header and stripe table as its bytes state them, and the
/// length they add up to: the one reader of the framing (`striped_parts`
/// checks the values for a decode, `salt::payload` needs only the length).
struct StripeTable<'a> {
    width: u32,
    height: u32,
    channels: u8,
    rows: u32,
    /// One big-endian u32 per stripe.
    lens: &'a [u8],
    /// Header + table + every stripe, in bytes.
    len: usize,
}

fn stripe_table(rung: &[u8]) -> Option<StripeTable<'_>> {
    let header = rung.get(..STRIPED_HEADER)?;
    let rows = be32(header, 13);
    if rows == 0 {
        return None;
    }
    let height = be32(header, 8);
    let count = height.div_ceil(rows) as usize;
    let lens = rung.get(STRIPED_HEADER..STRIPED_HEADER.checked_add(count.checked_mul(4)?)?)?;
    let len = lens
        .chunks_exact(4)
        .try_fold(STRIPED_HEADER + lens.len(), |n, l| {
            n.checked_add(be32(l, 0) as usize)
        })?;
    Some(StripeTable {
        width: be32(header, 4),
        height,
        channels: header[12],
        rows,
        lens,
        len,
    })
}

/// A striped rung's header, checked against its length.
struct Striped<'a> {
    width: u32,
    height: u32,
    layout: Layout,
    rows: u32,
    stripes: Vec<&'a [u8]>,
}

/// The parts of a striped rung: everything a decode needs checked before the
/// pixels are allocated (sides, channels, the stripe table, the exact length).
fn striped_parts(bytes: &[u8]) -> Result<Striped<'_>, PipelineError> {
    let corrupt = |why: &str| PipelineError::Internal(format!("corrupt rung: {why}"));
    let t = stripe_table(bytes).ok_or_else(|| corrupt("short or zero-row stripe table"))?;
    check_rung_side(t.width, t.height)?;
    let layout = match t.channels {
        3 => Layout::Rgb8,
        4 => Layout::Rgba8,
        _ => return Err(corrupt("bad channel count")),
    };
    if t.len != bytes.len() {
        return Err(corrupt("length does not match the stripe table"));
    }
    // The lengths add up to the rung's, so every stripe is inside it.
    let mut at = STRIPED_HEADER + t.lens.len();
    let stripes = t
        .lens
        .chunks_exact(4)
        .map(|l| {
            let stripe = &bytes[at..at + be32(l, 0) as usize];
            at += stripe.len();
            stripe
        })
        .collect();
    Ok(Striped {
        width: t.width,
        height: t.height,
        layout,
        rows: t.rows,
        stripes,
    })
}

/// The length a striped rung's header and stripe table say it has, if it
/// has them.
pub(crate) fn striped_rung_len(rung: &[u8]) -> Option<usize> {
    stripe_table(rung).map(|t| t.len)
}

/// A striped rung decoded into `buf` (its allocation reused, see
/// [`sized_for_decode`]), its stripes in parallel.
fn decode_striped_rung(bytes: &[u8], mut buf: Vec<u8>) -> Result<Pixels, PipelineError> {
    use rayon::prelude::*;
    let s = striped_parts(bytes)?;
    let row_bytes = s.width as usize * channels(s.layout);
    sized_for_decode(&mut buf, row_bytes * s.height as usize);
    let want_channels = channels(s.layout) as u8;
    super::parallel::install(|| {
        buf.par_chunks_mut(s.rows as usize * row_bytes)
            .zip(s.stripes.par_iter())
            .try_for_each(|(out, stripe)| {
                let h = qoi::decode_header(stripe).map_err(corrupt_qoi)?;
                if h.width != s.width
                    || h.height as usize * row_bytes != out.len()
                    || h.channels.as_u8() != want_channels
                {
                    return Err(PipelineError::Internal(
                        "corrupt rung: a stripe does not match its header".into(),
                    ));
                }
                qoi::decode_to_buf(out, stripe).map_err(corrupt_qoi)?;
                Ok(())
            })
    })?;
    Ok(Pixels {
        width: s.width,
        height: s.height,
        layout: s.layout,
        data: buf,
    })
}

fn corrupt_qoi(e: qoi::Error) -> PipelineError {
    PipelineError::Internal(format!("corrupt rung: {e}"))
}

/// The big-endian u32 at `at` of `b` (the caller checked the length).
pub(super) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes a stored rung (QOI or uncompressed) into pixels. Failures are
/// `Internal`: rungs are written by `normalize`, never uploaded.
pub fn decode_rung(bytes: &[u8]) -> Result<Pixels, PipelineError> {
    decode_rung_into(bytes, Vec::new())
}

/// Largest scratch buffer a thread keeps between renders ([`with_rung`]): a
/// 1024 px RGBA rung.
const SCRATCH_KEEP_MAX: usize = 4 << 20;

std::thread_local! {
    /// The pixels of the last rung decoded on this thread, for the next one.
    static RUNG_SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on the pixels of a rung (its salt already cut: the caller has
/// [`salt::payload`](super::salt::payload)): an uncompressed rung's own bytes
/// (no copy: at 512 px the copy was 5 % of a cold render), a QOI rung
/// decoded (or a planar one converted) into this thread's scratch buffer
/// (issue 19): a fresh buffer per
/// cold render was a page-faulting allocation each time (freed pages go back
/// to the kernel at once, see `.cargo/config.toml`). Each render thread keeps
/// at most `SCRATCH_KEEP_MAX` bytes.
pub(crate) fn with_rung<T>(
    bytes: &[u8],
    f: impl FnOnce(&Pixels<&[u8]>) -> Result<T, PipelineError>,
) -> Result<T, PipelineError> {
    if bytes.starts_with(RAW_MAGIC) {
        return f(&raw_rung_view(bytes)?);
    }
    let px = decode_compressed_rung(bytes, RUNG_SCRATCH.take())?;
    let out = f(&px.view());
    keep(&RUNG_SCRATCH, px.data);
    out
}

/// Puts a scratch buffer back into its thread-local slot, unless it grew
/// past `SCRATCH_KEEP_MAX` (then it is freed).
fn keep(slot: &'static std::thread::LocalKey<std::cell::Cell<Vec<u8>>>, buf: Vec<u8>) {
    if buf.capacity() <= SCRATCH_KEEP_MAX {
        slot.set(buf);
    }
}

/// [`decode_rung`] into `buf` (emptied first; its allocation is reused).
/// The blob's salt (issue 20, `salt.rs`) is not part of the rung.
fn decode_rung_into(bytes: &[u8], mut buf: Vec<u8>) -> Result<Pixels, PipelineError> {
    let bytes = super::salt::payload(bytes);
    if bytes.starts_with(RAW_MAGIC) {
        let v = raw_rung_view(bytes)?;
        buf.clear();
        buf.extend_from_slice(v.data);
        return Ok(Pixels {
            width: v.width,
            height: v.height,
            layout: v.layout,
            data: buf,
        });
    }
    decode_compressed_rung(bytes, buf)
}

/// A QOI rung, striped or whole, or a YCbCr rung, decoded into `buf`.
fn decode_compressed_rung(bytes: &[u8], buf: Vec<u8>) -> Result<Pixels, PipelineError> {
    if bytes.starts_with(STRIPED_MAGIC) {
        decode_striped_rung(bytes, buf)
    } else if bytes.starts_with(YCC_MAGIC) {
        Ok(super::ycc::to_rgb(&super::ycc::planes(bytes)?, buf))
    } else {
        decode_qoi_rung(bytes, buf)
    }
}

/// A QOI rung decoded into `buf` (its allocation reused, see
/// [`sized_for_decode`]).
fn decode_qoi_rung(bytes: &[u8], mut buf: Vec<u8>) -> Result<Pixels, PipelineError> {
    let header = qoi::decode_header(bytes).map_err(corrupt_qoi)?;
    check_rung_side(header.width, header.height)?;
    sized_for_decode(&mut buf, header.n_bytes());
    let header = qoi::decode_to_buf(&mut buf[..], bytes).map_err(corrupt_qoi)?;
    let layout = match header.channels {
        qoi::Channels::Rgb => Layout::Rgb8,
        qoi::Channels::Rgba => Layout::Rgba8,
    };
    let px = Pixels {
        width: header.width,
        height: header.height,
        layout,
        data: buf,
    };
    check_buffer(&px)?;
    Ok(px)
}

/// `buf` at exactly `len` bytes for a QOI decode into it (or a planar rung's
/// conversion, `ycc::to_rgb`, which writes every pixel of every row). Only
/// bytes it grows by are zeroed: what a previous render on this thread left
/// in the rest is overwritten, because a QOI decode writes every pixel of its
/// output (each op writes its pixel or a run of them; a decode that runs out
/// of input fails and its buffer is not used). Zeroing the whole 768 KiB of a
/// 512 px rung first was ~1 % of a cold 512 px render.
pub(super) fn sized_for_decode(buf: &mut Vec<u8>, len: usize) {
    buf.truncate(len);
    buf.resize(len, 0);
}

pub(super) fn check_rung_side(width: u32, height: u32) -> Result<(), PipelineError> {
    if width == 0 || height == 0 || width > MAX_RUNG_SIDE || height > MAX_RUNG_SIDE {
        return Err(PipelineError::Internal(format!(
            "corrupt rung: header says {width}x{height}"
        )));
    }
    Ok(())
}

/// The length an uncompressed rung's header says it has, if it has one.
pub(crate) fn raw_rung_len(rung: &[u8]) -> Option<usize> {
    let header = rung.get(..RAW_HEADER)?;
    let channels = usize::from(header[12]);
    (be32(header, 4) as usize)
        .checked_mul(be32(header, 8) as usize)?
        .checked_mul(channels)?
        .checked_add(RAW_HEADER)
}

/// The pixels of an uncompressed rung, borrowed from its bytes.
fn raw_rung_view(bytes: &[u8]) -> Result<Pixels<&[u8]>, PipelineError> {
    let corrupt = |why: &str| PipelineError::Internal(format!("corrupt rung: {why}"));
    let header = bytes
        .get(..RAW_HEADER)
        .ok_or_else(|| corrupt("short header"))?;
    let (width, height) = (be32(header, 4), be32(header, 8));
    check_rung_side(width, height)?;
    let layout = match header[12] {
        3 => Layout::Rgb8,
        4 => Layout::Rgba8,
        _ => return Err(corrupt("bad channel count")),
    };
    // The length must match the header exactly (a truncated blob is
    // corrupt).
    let want = width as usize * height as usize * channels(layout);
    if bytes.len() - RAW_HEADER != want {
        return Err(corrupt("length does not match the header"));
    }
    Ok(Pixels {
        width,
        height,
        layout,
        data: &bytes[RAW_HEADER..],
    })
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
