//! Fuzz target: upload decoding. Arbitrary bytes through
//! `pipeline::normalize` (the same path as `PUT /v1/avatars/{key}`), twice:
//! with the default limits, and with a 16 px master side so that every JPEG
//! of 32 px or more also takes the shrink-on-load decoder (jpeg-decoder at
//! 1/2..1/8 scale). It must return `Ok` or `Err`, never panic, hang or
//! allocate past the limits (run with `-rss_limit_mb=2048`, the default).
//! A successful result must be a well-formed ladder whose every rung (QOI,
//! striped QOI or uncompressed) decodes to its side.
#![no_main]

use avatar_edge::pipeline::{decode_rung, normalize, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for master_side in [Limits::default().master_side, 16] {
        let limits = Limits {
            master_side,
            ..Limits::default()
        };
        if let Ok(n) = normalize(data, None, &limits) {
            assert!(!n.ladder.is_empty());
            assert!(n.ladder[0].side <= limits.master_side);
            assert!(n.ladder.windows(2).all(|w| w[0].side > w[1].side));
            for rung in &n.ladder {
                let px = decode_rung(&rung.bytes).expect("a rung we stored decodes");
                assert_eq!((px.width, px.height), (rung.side, rung.side));
            }
        }
    }
});
