//! Fuzz target: the URL parsers on arbitrary strings. The input is split at
//! the first `?` into a path segment and a query, and fed to every parser
//! that sees request text: `spec::parse_content`, `spec::parse_identity`,
//! `spec::parse_upload`, `spec::query_pairs` and `model::IdentityKeys::parse`.
//! None may panic; errors are fine.
#![no_main]

use avatar_edge::model::IdentityKeys;
use avatar_edge::spec::{parse_content, parse_identity, parse_upload, query_pairs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (segment, query) = match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    };
    let _ = parse_content(segment, query);
    let _ = parse_identity(segment, query);
    let _ = parse_upload(query);
    let _ = query_pairs(s);
    let _ = IdentityKeys::parse(s);
});
