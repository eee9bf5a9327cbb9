//! Bearer tokens for the mutating API, compared in constant time.
//!
//! Tokens are kept only as BLAKE3 digests; `blake3::Hash` equality is constant
//! time, and hashing first makes the comparison independent of length too.
//! Several named tokens can be active at once (rotation).

/// The set of accepted tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, blake3::Hash)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// Add a named token.
    pub fn add(&mut self, name: impl Into<String>, token: &str) {
        self.entries
            .push((name.into(), blake3::hash(token.as_bytes())));
    }

    /// The name of the token in an `Authorization: Bearer …` header value, if valid.
    pub fn check(&self, authorization: Option<&[u8]>) -> Option<&str> {
        let value = authorization?;
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))?;
        let digest = blake3::hash(token.trim_ascii());
        // Compare against every entry so timing does not reveal which matched.
        let mut found = None;
        for (name, h) in &self.entries {
            if *h == digest {
                found = Some(name.as_str());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_table() {
        let mut t = Tokens::default();
        t.add("admin", "s3cret-token-0123456789");
        t.add("next", "rotated-token-9876543210");
        let cases: &[(Option<&[u8]>, Option<&str>)] = &[
            (Some(b"Bearer s3cret-token-0123456789"), Some("admin")),
            (Some(b"Bearer rotated-token-9876543210"), Some("next")),
            (Some(b"bearer s3cret-token-0123456789 "), Some("admin")),
            (Some(b"Bearer s3cret-token-012345678"), None),
            (Some(b"Basic s3cret-token-0123456789"), None),
            (Some(b"Bearer "), None),
            (None, None),
        ];
        for (header, want) in cases {
            assert_eq!(
                t.check(*header),
                *want,
                "{:?}",
                header.map(String::from_utf8_lossy)
            );
        }
    }
}
