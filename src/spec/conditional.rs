//! Conditional requests: `If-None-Match` (RFC 9110 §13.1.2), compared weakly
//! as RFC 9110 asks for GET. Borrowed, so a conditional hit allocates nothing.

/// A request's `If-None-Match` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfNoneMatch<'a>(&'a str);

impl<'a> IfNoneMatch<'a> {
    /// The header's raw bytes; `None` when absent or not visible ASCII text.
    pub fn parse(value: Option<&'a [u8]>) -> Option<IfNoneMatch<'a>> {
        let v = value?;
        // Visible ASCII and tabs only, as `http::HeaderValue::to_str` accepts.
        if !v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            return None;
        }
        std::str::from_utf8(v).ok().map(IfNoneMatch)
    }

    /// Does any listed tag (or `*`) match `etag` (weak comparison)?
    pub fn matches(&self, etag: &str) -> bool {
        self.0.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_comparison_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("\"a\"", "\"a\"", true),
            ("W/\"a\"", "\"a\"", true),
            ("\"b\", W/\"a\"", "\"a\"", true),
            ("*", "\"a\"", true),
            ("\"b\"", "\"a\"", false),
            ("", "\"a\"", false),
        ];
        for (header, etag, want) in cases {
            let inm = IfNoneMatch::parse(Some(header.as_bytes())).unwrap();
            assert_eq!(inm.matches(etag), *want, "{header:?} vs {etag}");
        }
        assert_eq!(IfNoneMatch::parse(None), None);
        assert_eq!(IfNoneMatch::parse(Some(b"\xff")), None);
    }
}
