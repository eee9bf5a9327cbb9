//! avatar-edge fork (FORK.md): the fork decodes every input exactly as the
//! released crate does — the same pixels, the same info, an error where it
//! errs — at every scale, on both of its workers (images up to 128 px wide
//! decode on the calling thread, larger ones on a thread per component).

use std::path::Path;

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

/// Decoding buffers above this are refused by both (the bomb fixtures).
const MAX_BUFFER: usize = 64 << 20;

/// One decode's observable result: the pixels and their info, or the error
/// (its text: the two crates' error types are distinct).
#[derive(Debug, PartialEq)]
enum Outcome {
    Decoded { pixels: Vec<u8>, info: String },
    Failed(String),
}

/// Decodes `bytes` with `$krate` at 1/`scale`: the same steps for both.
macro_rules! decode_with {
    ($krate:ident, $bytes:expr, $scale:expr) => {{
        let mut d = $krate::Decoder::new($bytes);
        d.set_max_decoding_buffer_size(MAX_BUFFER);
        let result = (|| {
            d.read_info()?;
            let info = d.info().unwrap();
            if $scale > 1 {
                d.scale(info.width / $scale, info.height / $scale)?;
            }
            d.decode()
        })();
        match result {
            Ok(pixels) => Outcome::Decoded {
                pixels,
                info: format!("{:?}", d.info()),
            },
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }};
}

fn fork(bytes: &[u8], scale: u16) -> Outcome {
    decode_with!(jpeg_decoder, bytes, scale)
}

fn upstream(bytes: &[u8], scale: u16) -> Outcome {
    decode_with!(upstream, bytes, scale)
}

/// Compares the two at every scale; returns how many decoded.
fn same(label: &str, bytes: &[u8]) -> usize {
    let mut decoded = 0;
    for scale in [1, 2, 4, 8] {
        let (a, b) = (fork(bytes, scale), upstream(bytes, scale));
        if let Outcome::Decoded { .. } = a {
            decoded += 1;
        }
        assert!(
            a == b,
            "{label} at 1/{scale}: the fork's outcome differs from upstream's"
        );
    }
    decoded
}

/// A small deterministic generator (xorshift), for pixels and mutations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut out = Vec::new();
    for dir in [root.clone(), root.join("hostile")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            // Every JPEG by its signature, whatever its name.
            if bytes.starts_with(&[0xFF, 0xD8]) {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out
}

#[test]
fn fork_decodes_the_fixtures_as_upstream_does() {
    let files = fixtures();
    assert!(
        files.len() >= 15,
        "found only {} JPEG fixtures",
        files.len()
    );
    let decoded: usize = files.iter().map(|(name, bytes)| same(name, bytes)).sum();
    // The photographs decode at every scale (hostile files may not).
    assert!(decoded >= 4 * 15, "only {decoded} decodes succeeded");
}

/// `decode_to_planes` then `Planes::to_pixels` at 1/`scale`: the fork's
/// planes API, which must give `decode`'s outcome.
fn via_planes(bytes: &[u8], scale: u16) -> Outcome {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.set_max_decoding_buffer_size(MAX_BUFFER);
    let result = (|| {
        d.read_info()?;
        let info = d.info().unwrap();
        if scale > 1 {
            d.scale(info.width / scale, info.height / scale)?;
        }
        d.decode_to_planes()?.to_pixels()
    })();
    match result {
        Ok(pixels) => Outcome::Decoded {
            pixels,
            info: format!("{:?}", d.info()),
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[test]
fn planes_convert_to_what_decode_returns() {
    // Every fixture (hostile ones included) at every scale: the same pixels,
    // info and errors (no fixture is a lossless JPEG, which has no 8-bit
    // planes and is refused).
    let mut decoded = 0;
    for (name, bytes) in fixtures() {
        for scale in [1, 2, 4, 8] {
            let (a, b) = (via_planes(&bytes, scale), fork(&bytes, scale));
            if let Outcome::Decoded { .. } = a {
                decoded += 1;
            }
            assert!(a == b, "{name} at 1/{scale}: planes differ from decode");
        }
    }
    assert!(decoded >= 4 * 15, "only {decoded} decodes succeeded");
}

#[test]
fn fork_decodes_damaged_fixtures_as_upstream_does() {
    // Truncations and flipped bytes of the small real photographs: the
    // decoder's error paths, mid-row and mid-scan.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (name, bytes) in fixtures().iter().filter(|(_, b)| b.len() < 400_000) {
        for _ in 0..6 {
            let cut = (rng.next() % bytes.len() as u64) as usize;
            same(&format!("{name} cut at {cut}"), &bytes[..cut]);
            let mut flipped = bytes.clone();
            for _ in 0..1 + rng.next() % 8 {
                let at = (rng.next() % bytes.len() as u64) as usize;
                flipped[at] ^= 1 << (rng.next() % 8);
            }
            same(&format!("{name} with flipped bytes"), &flipped);
        }
    }
}

#[test]
fn fork_decodes_noise_scans_as_upstream_does() {
    // The first scan's entropy-coded bytes replaced by noise (no 0xFF, so no
    // marker): runs that pass the end of a block, codes the table misses,
    // values of every length, on real headers and tables. The fork's 10-bit
    // look-up must consume exactly what upstream's 8-bit one did.
    let mut rng = Rng(0x5EED);
    let mut decoded = 0;
    for (name, bytes) in fixtures().iter().filter(|(_, b)| b.len() < 150_000) {
        let Some(start) = first_scan_data(bytes) else {
            continue;
        };
        for round in 0..4 {
            let mut noisy = bytes.clone();
            let end = noisy.len() - 2;
            for b in &mut noisy[start..end] {
                *b = (rng.next() % 255) as u8;
            }
            decoded += same(&format!("{name} with a noise scan ({round})"), &noisy);
        }
    }
    assert!(decoded >= 4, "only {decoded} noise decodes succeeded");
}

/// Where the first scan's entropy-coded data starts: after the SOS segment.
fn first_scan_data(bytes: &[u8]) -> Option<usize> {
    let mut at = 2;
    while at + 4 <= bytes.len() && bytes[at] == 0xFF {
        let length = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        if bytes[at + 1] == 0xDA {
            return Some(at + 2 + length).filter(|&s| s < bytes.len() - 2);
        }
        at += 2 + length;
    }
    None
}

#[test]
fn fork_decodes_through_any_buffer_as_upstream_does() {
    // `read_bits` loads 8 bytes at once only when the reader has them
    // buffered: readers that buffer fewer, or end a buffer anywhere in the
    // entropy-coded data, must decode exactly as the slice does.
    let mut rng = Rng(7);
    for (name, bytes) in fixtures().iter().filter(|(_, b)| b.len() < 400_000) {
        let cut = (rng.next() % bytes.len() as u64) as usize;
        for data in [&bytes[..], &bytes[..cut]] {
            for capacity in [1, 7, 8, 9, 61] {
                for scale in [1, 8] {
                    let reader = std::io::BufReader::with_capacity(capacity, data);
                    assert!(
                        decode_with!(jpeg_decoder, reader, scale) == upstream(data, scale),
                        "{name} ({} bytes) through a {capacity}-byte buffer at 1/{scale}",
                        data.len()
                    );
                }
            }
        }
    }
}

#[test]
fn fork_decodes_every_encoding_as_upstream_does() {
    let mut rng = Rng(42);
    let samplings = [
        SamplingFactor::F_1_1,
        SamplingFactor::F_2_1,
        SamplingFactor::F_1_2,
        SamplingFactor::F_2_2,
        SamplingFactor::F_4_1,
        SamplingFactor::F_4_2,
        SamplingFactor::F_1_4,
        SamplingFactor::F_2_4,
    ];
    let mut cases = 0;
    // Below and above the 128 px width where the decoder starts threads.
    for (w, h) in [
        (1u16, 1u16),
        (17, 9),
        (64, 64),
        (127, 33),
        (200, 150),
        (333, 257),
    ] {
        for (ci, color) in [
            ColorType::Luma,
            ColorType::Rgb,
            ColorType::Cmyk,
            ColorType::Ycck,
        ]
        .into_iter()
        .enumerate()
        {
            let channels = match color {
                ColorType::Luma => 1,
                ColorType::Rgb => 3,
                _ => 4,
            };
            // Smooth gradients with noise: non-trivial AC coefficients.
            let pixels: Vec<u8> = (0..w as usize * h as usize * channels)
                .map(|i| {
                    ((i / channels % w as usize) * 3 + (i / channels / w as usize) * 2) as u8
                        ^ (rng.next() % 24) as u8
                })
                .collect();
            for progressive in [false, true] {
                for restart in [0u16, 3] {
                    let sampling = samplings[(cases + ci) % samplings.len()];
                    let mut bytes = Vec::new();
                    let mut e = Encoder::new(&mut bytes, [35, 85, 100][cases % 3]);
                    e.set_sampling_factor(sampling);
                    e.set_progressive(progressive);
                    if restart > 0 {
                        e.set_restart_interval(restart);
                    }
                    e.encode(&pixels, w, h, color).unwrap();
                    let label = format!("{w}x{h} {color:?} {sampling:?} progressive {progressive} restart {restart}");
                    assert!(same(&label, &bytes) >= 1, "{label} did not decode");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 6 * 4 * 2 * 2);
}

#[test]
fn fork_reuses_rows_across_decodes_on_one_thread() {
    // Noise (nearly every coefficient non-zero), decoded one image after
    // another with rows of different lengths: within a decode every reused
    // row must start zeroed, and nothing may carry over to the next decode.
    let mut rng = Rng(7);
    for (w, h) in [(400u16, 300u16), (150, 700), (129, 129), (600, 40)] {
        let pixels: Vec<u8> = (0..w as usize * h as usize * 3)
            .map(|_| rng.next() as u8)
            .collect();
        for progressive in [false, true] {
            let mut bytes = Vec::new();
            let mut e = Encoder::new(&mut bytes, 90);
            e.set_progressive(progressive);
            e.encode(&pixels, w, h, ColorType::Rgb).unwrap();
            same(&format!("noise {w}x{h} progressive {progressive}"), &bytes);
        }
    }
}
