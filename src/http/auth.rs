//! Bearer tokens for the mutating API, compared in constant time.
//!
//! Tokens are kept only as BLAKE3 digests; `blake3::Hash` equality is constant
//! time, and hashing first makes the comparison independent of length too.
//! Several named tokens can be active at once (rotation).

/// Seconds since the Unix epoch now (signed-URL expiry is in these).
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The named tokens of the token file, swapped as a whole on reload.
type Named = std::sync::Arc<std::sync::RwLock<std::sync::Arc<Vec<(String, blake3::Hash)>>>>;

/// The set of accepted tokens: fixed ones (the admin token) and the named
/// ones of the token file, which [`Tokens::set_named`] swaps as a whole when
/// the file is reloaded (SIGHUP) — requests in flight are unaffected. Clones
/// share the named set, so a reload reaches every clone.
#[derive(Clone, Default)]
pub struct Tokens {
    fixed: Vec<(String, blake3::Hash)>,
    named: Named,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named = self.named_now();
        let names: Vec<&str> = self
            .fixed
            .iter()
            .chain(named.iter())
            .map(|(n, _)| n.as_str())
            .collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// Add a fixed named token (kept across reloads).
    pub fn add(&mut self, name: impl Into<String>, token: &str) {
        self.fixed
            .push((name.into(), blake3::hash(token.as_bytes())));
    }

    /// Replace every token of the token file with `named` (`(name, token)`).
    pub fn set_named(&self, named: &[(String, String)]) {
        let hashed: Vec<(String, blake3::Hash)> = named
            .iter()
            .map(|(n, t)| (n.clone(), blake3::hash(t.as_bytes())))
            .collect();
        *self.named.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(hashed);
    }

    fn named_now(&self) -> std::sync::Arc<Vec<(String, blake3::Hash)>> {
        self.named.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The name of the token in an `Authorization: Bearer …` header value, if valid.
    pub fn check(&self, authorization: Option<&[u8]>) -> Option<String> {
        let value = authorization?;
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))?;
        let digest = blake3::hash(token.trim_ascii());
        let named = self.named_now();
        // Compare against every entry so timing does not reveal which matched.
        let mut found = None;
        for (name, h) in self.fixed.iter().chain(named.iter()) {
            if *h == digest {
                found = Some(name);
            }
        }
        found.cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.named_now().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_table() {
        let mut t = Tokens::default();
        t.add("admin", "s3cret-token-0123456789");
        t.set_named(&[("old".into(), "retired-token-0123456789".into())]);
        t.set_named(&[("next".into(), "rotated-token-9876543210".into())]);
        let cases: &[(Option<&[u8]>, Option<&str>)] = &[
            (Some(b"Bearer retired-token-0123456789"), None),
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
                t.check(*header).as_deref(),
                *want,
                "{:?}",
                header.map(String::from_utf8_lossy)
            );
        }
    }
}

/// Signs and verifies upload URLs: HMAC-SHA256 over method, identity key and
/// expiry, so a browser can upload for exactly one key until a deadline
/// without holding an API token.
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

impl UrlSigner {
    pub fn new(key: &[u8]) -> UrlSigner {
        UrlSigner { key: key.to_vec() }
    }

    fn mac(&self, method: &str, key: &str, expires: u64) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// Hex signature for `method key expires` (`key` normalized).
    pub fn sign(&self, method: &str, key: &str, expires: u64) -> String {
        use hmac::Mac;
        hex::encode(self.mac(method, key, expires).finalize().into_bytes())
    }

    /// Constant-time check of a signature; `now` and `expires` in Unix seconds.
    pub fn verify(&self, method: &str, key: &str, expires: u64, signature: &str, now: u64) -> bool {
        use hmac::Mac;
        if expires < now {
            return false;
        }
        let Ok(sig) = hex::decode(signature) else {
            return false;
        };
        self.mac(method, key, expires).verify_slice(&sig).is_ok()
    }
}

#[cfg(test)]
mod signer_tests {
    use super::*;

    #[test]
    fn signatures_bind_method_key_and_expiry() {
        let s = UrlSigner::new(b"0123456789abcdef0123456789abcdef");
        let sig = s.sign("PUT", "a@example.org", 1000);
        assert!(s.verify("PUT", "a@example.org", 1000, &sig, 999));
        assert!(s.verify("PUT", "a@example.org", 1000, &sig, 1000));
        assert!(
            !s.verify("PUT", "a@example.org", 1000, &sig, 1001),
            "expired"
        );
        assert!(
            !s.verify("PUT", "b@example.org", 1000, &sig, 999),
            "other key"
        );
        assert!(
            !s.verify("DELETE", "a@example.org", 1000, &sig, 999),
            "other method"
        );
        assert!(
            !s.verify("PUT", "a@example.org", 1001, &sig, 999),
            "other expiry"
        );
        assert!(!s.verify("PUT", "a@example.org", 1000, "zz", 999));
        assert!(!UrlSigner::new(b"another key 0123456789").verify(
            "PUT",
            "a@example.org",
            1000,
            &sig,
            999
        ));
    }
}
