//! Plain domain values shared by every layer: content hashes, identity hashes,
//! ratings, change events, output formats and the output-size limit
//! (`model/image.rs`), default styles (`model/style.rs`), and whose fault an
//! error is (`model/fault.rs`, [`Fault`]).
//!
//! Invariants: every value here is valid by construction (parsing is the only way
//! in), cheap to copy, and free of I/O. Nothing here knows HTTP or the disk, and
//! this module imports no other module of the crate (it is the bottom layer).

mod fault;
mod image;
mod style;
pub mod subscription;

pub use fault::Fault;
pub use image::{
    AnimationInfo, Compression, Crop, Layout, OutputFormat, Pixels, MAX_OUTPUT_SIDE,
    MIN_OUTPUT_SIDE,
};
pub use style::Style;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Errors from parsing a domain value out of client-supplied text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("expected {expected} hex digits")]
    HexLength { expected: &'static str },
    #[error("not a hexadecimal string")]
    NotHex,
    #[error("not an email address or a 32/64-hex identity hash")]
    BadKey,
    #[error("unknown rating (expected g, pg, r or x)")]
    BadRating,
}

fn decode_hex<const N: usize>(s: &str) -> Result<[u8; N], ParseError> {
    if s.len() != N * 2 {
        return Err(ParseError::HexLength {
            expected: if N == 16 { "32" } else { "64" },
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s.to_ascii_lowercase(), &mut out).map_err(|_| ParseError::NotHex)?;
    Ok(out)
}

/// BLAKE3 hash of a stored blob's bytes; names immutable content (`/c/{hash}`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }
    /// Lower-case 64-hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for ContentHash {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        decode_hex::<32>(s).map(ContentHash)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", &self.to_hex()[..16])
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An identity hash as Gravatar/Libravatar use it: MD5 or SHA-256 of the
/// trimmed, lower-cased email address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityHash {
    Md5([u8; 16]),
    Sha256([u8; 32]),
}

/// MD5 of the empty string: what broken templates send for users without email.
pub const MD5_OF_EMPTY: &str = "d41d8cd98f00b204e9800998ecf8427e";
/// SHA-256 of the empty string.
pub const SHA256_OF_EMPTY: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl IdentityHash {
    /// Lower-case hex form (32 or 64 digits).
    pub fn to_hex(&self) -> String {
        match self {
            IdentityHash::Md5(b) => hex::encode(b),
            IdentityHash::Sha256(b) => hex::encode(b),
        }
    }
    /// The hash bytes (16 or 32), used to seed generated defaults.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            IdentityHash::Md5(b) => b,
            IdentityHash::Sha256(b) => b,
        }
    }
    /// True for the hash of the empty string: "no identity", never bindable.
    pub fn is_empty_email(&self) -> bool {
        let h = self.to_hex();
        h == MD5_OF_EMPTY || h == SHA256_OF_EMPTY
    }
}

impl FromStr for IdentityHash {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.len() {
            32 => decode_hex::<16>(s).map(IdentityHash::Md5),
            64 => decode_hex::<32>(s).map(IdentityHash::Sha256),
            _ => Err(ParseError::BadKey),
        }
    }
}

impl fmt::Display for IdentityHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for IdentityHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityHash({})", self.to_hex())
    }
}

impl Serialize for IdentityHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for IdentityHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The key of an upload: either an email (bound under both its hashes) or one
/// identity hash (bound as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityKeys {
    /// What the client named, normalized (lower-cased email or hex hash).
    pub key: String,
    /// Every hash this identity answers to: `[md5, sha256]` for an email,
    /// the one hash otherwise.
    pub aliases: Vec<IdentityHash>,
}

/// Longest email address accepted (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

impl IdentityKeys {
    /// Parse an upload key: a 32/64-hex hash or an email address.
    ///
    /// Emails are trimmed and lower-cased before hashing, as Gravatar does.
    /// The empty email and its hashes are refused: "no identity" can never be
    /// bound to an upload.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.len() > MAX_EMAIL_LEN {
            return Err(ParseError::BadKey);
        }
        if trimmed.bytes().all(|b| b.is_ascii_hexdigit()) && matches!(trimmed.len(), 32 | 64) {
            let h: IdentityHash = trimmed.parse()?;
            if h.is_empty_email() {
                return Err(ParseError::BadKey);
            }
            return Ok(IdentityKeys {
                key: h.to_hex(),
                aliases: vec![h],
            });
        }
        let email = trimmed.to_lowercase();
        let valid = {
            let mut parts = email.splitn(2, '@');
            let local = parts.next().unwrap_or("");
            let domain = parts.next().unwrap_or("");
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && email
                    .chars()
                    .all(|c| !c.is_control() && !c.is_whitespace() && c != '/' && c != '\\')
        };
        if !valid {
            return Err(ParseError::BadKey);
        }
        use md5::Digest as _;
        let md5: [u8; 16] = md5::Md5::digest(email.as_bytes()).into();
        let sha: [u8; 32] = sha2::Sha256::digest(email.as_bytes()).into();
        Ok(IdentityKeys {
            key: email,
            aliases: vec![IdentityHash::Md5(md5), IdentityHash::Sha256(sha)],
        })
    }
}

/// Content rating of an avatar, Gravatar's scale (ordered: g < pg < r < x).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    #[default]
    G,
    Pg,
    R,
    X,
}

impl FromStr for Rating {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.to_ascii_lowercase().as_str() {
            "g" => Ok(Rating::G),
            "pg" => Ok(Rating::Pg),
            "r" => Ok(Rating::R),
            "x" => Ok(Rating::X),
            _ => Err(ParseError::BadRating),
        }
    }
}

impl Rating {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rating::G => "g",
            Rating::Pg => "pg",
            Rating::R => "r",
            Rating::X => "x",
        }
    }
}

/// One committed change of one identity: what the store's outbox keeps, the
/// bus carries, purges and webhooks deliver. A plain value; the store decides
/// *whether* something changed, `events` only who hears about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Monotonic across the store.
    pub id: u64,
    /// The identity's primary hash.
    pub key: IdentityHash,
    pub aliases: Vec<IdentityHash>,
    /// The new avatar, or `null` when unbound.
    pub hash: Option<ContentHash>,
    /// The avatar it replaced, if any (its content URLs are purged too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ContentHash>,
    pub version: u64,
    /// Unix milliseconds.
    pub at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_keys_are_trimmed_lowercased_and_hashed_twice() {
        // Gravatar's documented example.
        let k = IdentityKeys::parse("  MyEmailAddress@example.com ").unwrap();
        assert_eq!(k.key, "myemailaddress@example.com");
        assert_eq!(k.aliases[0].to_hex(), "0bc83cb571cd1c50ba6f3e8a78ef1346");
        assert_eq!(
            k.aliases[1].to_hex(),
            "84059b07d4be67b806386c0aad8070a23f18836bbaae342275dc0a83414c32ee"
        );
    }

    #[test]
    fn key_table() {
        let cases: &[(&str, Result<usize, ()>)] = &[
            ("0BC83CB571CD1C50BA6F3E8A78EF1346", Ok(1)),
            ("a@b", Ok(2)),
            ("", Err(())),
            ("   ", Err(())),
            ("no-at-sign", Err(())),
            ("@example.com", Err(())),
            ("user@", Err(())),
            ("a@b@c", Err(())),
            ("../../etc/passwd@x", Err(())),
            (MD5_OF_EMPTY, Err(())),
            (SHA256_OF_EMPTY, Err(())),
            ("0bc83cb571cd1c50ba6f3e8a78ef134", Err(())), // 31 hex, no @
        ];
        for (input, want) in cases {
            let got = IdentityKeys::parse(input)
                .map(|k| k.aliases.len())
                .map_err(|_| ());
            assert_eq!(&got, want, "input {input:?}");
        }
        let long = format!("{}@example.com", "a".repeat(300));
        assert!(IdentityKeys::parse(&long).is_err());
    }

    #[test]
    fn hashes_round_trip_and_reject_junk() {
        let h: ContentHash = "AB".repeat(32).parse().unwrap();
        assert_eq!(h.to_hex(), "ab".repeat(32));
        assert!("zz".repeat(32).parse::<ContentHash>().is_err());
        assert!("ab".parse::<ContentHash>().is_err());
        assert!(MD5_OF_EMPTY
            .parse::<IdentityHash>()
            .unwrap()
            .is_empty_email());
    }

    #[test]
    fn ratings_are_ordered() {
        assert!(Rating::G < Rating::Pg && Rating::Pg < Rating::R && Rating::R < Rating::X);
        assert_eq!("PG".parse::<Rating>().unwrap(), Rating::Pg);
        assert!("nc17".parse::<Rating>().is_err());
    }
}
