//! Fuzz target: upload decoding. Arbitrary bytes through
//! `pipeline::normalize` with the default limits (the same path as
//! `PUT /v1/avatars/{key}`): it must return `Ok` or `Err`, never panic, hang
//! or allocate past the limits (run with `-rss_limit_mb=2048`, the default).
//! A successful result must be a well-formed ladder.
#![no_main]

use avatar_edge::pipeline::{normalize, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(n) = normalize(data, None, &limits) {
        assert!(!n.ladder.is_empty());
        assert!(n.ladder[0].side <= limits.master_side);
        assert!(n.ladder.windows(2).all(|w| w[0].side > w[1].side));
    }
});
