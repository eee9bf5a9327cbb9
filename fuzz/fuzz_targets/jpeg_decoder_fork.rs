//! Fuzz target: the vendored JPEG decoder (vendor/jpeg-decoder, as
//! avatar-edge builds it) against the released crate it was forked from.
//! Arbitrary bytes, decoded by both at the scale the first byte picks (1,
//! 1/2, 1/4, 1/8: the upload path's shrink-on-load), with a 64 MiB decoding
//! buffer limit: the same pixels and info, or both an error. The fork must
//! also never panic where upstream does not, and its planes API
//! (`decode_to_planes`, then `Planes::to_pixels`) must give the same outcome.
//! The fork reads either the slice
//! (as avatar-edge does) or, by the first byte's upper bits, a `BufReader`
//! of 1 to 63 bytes: its 8-byte refill must not depend on the buffering.
//!
//! Headers declaring more than 16 Mpx are not decoded, as avatar-edge's
//! upload path refuses them from the header (`Limits`): both crates
//! allocate a progressive image's coefficients for the declared size before
//! any decoding-buffer check (8 GB for a 64k × 64k header, found by this
//! target in its first second).
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAX_BUFFER: usize = 64 << 20;
const MAX_PIXELS: u64 = 16 << 20;

#[derive(Debug, PartialEq)]
enum Outcome {
    Decoded(Vec<u8>, String),
    Failed(String),
}

macro_rules! decode_with {
    ($krate:ident, $bytes:expr, $scale:expr) => {
        decode_with!($krate, $bytes, $scale, d => d.decode())
    };
    ($krate:ident, $bytes:expr, $scale:expr, $d:ident => $decode:expr) => {{
        let mut $d = $krate::Decoder::new($bytes);
        $d.set_max_decoding_buffer_size(MAX_BUFFER);
        let result = (|| {
            $d.read_info()?;
            let info = $d.info().unwrap();
            if u64::from(info.width) * u64::from(info.height) > MAX_PIXELS {
                return Ok(Vec::new());
            }
            if $scale > 1 {
                $d.scale(info.width / $scale, info.height / $scale)?;
            }
            $decode
        })();
        match result {
            Ok(pixels) => Outcome::Decoded(pixels, format!("{:?}", $d.info())),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let scale: u16 = 1 << (pick % 4);
    let fork = match usize::from(pick >> 2) {
        0 => decode_with!(fork, bytes, scale),
        capacity => decode_with!(
            fork,
            std::io::BufReader::with_capacity(capacity, bytes),
            scale
        ),
    };
    let upstream = decode_with!(jpeg_decoder, bytes, scale);
    assert_eq!(fork, upstream);
    // The fork's planes API: its planes converted are `decode`'s outcome.
    let planes = decode_with!(fork, bytes, scale, d => d
        .decode_to_planes()
        .and_then(|p| p.to_pixels()));
    assert_eq!(planes, upstream);
});
