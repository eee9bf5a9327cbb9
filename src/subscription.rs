//! Event-stream subscriptions: the typed key list a page subscribes with
//! (`POST /v1/subscriptions`), its limits, its content-addressed id, and the
//! compact encoding the store keeps it in.
//!
//! Pure: no I/O. A page's identities do not fit in a URL (2,000 SHA-256 keys
//! are 130 KB), so the page posts them once and streams with a short id:
//! `GET /v1/events?sub=<id>`. The id is the BLAKE3 of the sorted,
//! de-duplicated key set, so the same set always gets the same id: creation
//! is idempotent, every tab of a page shares one entry, and any node of a
//! cluster derives the same id from the same body.
//!
//! Invariants: a [`KeySet`] is sorted, free of duplicates, and holds 1 to
//! [`MAX_SUBSCRIPTION_KEYS`] keys (an empty set would mean "every identity",
//! which only a token may ask for); a body is refused whole — nothing is
//! subscribed when any key is malformed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::model::IdentityHash;

/// Most identities one subscription may name (a 413 beyond).
pub const MAX_SUBSCRIPTION_KEYS: usize = 10_000;
/// Largest request body read for a subscription (a 413 beyond, before reading):
/// room for [`MAX_SUBSCRIPTION_KEYS`] quoted SHA-256 keys with separators.
pub const MAX_SUBSCRIPTION_BODY: usize = MAX_SUBSCRIPTION_KEYS * 72 + 1024;
/// How long a subscription lives after its last `POST` (the client re-creates
/// an expired one transparently; an open stream is not affected).
pub const SUBSCRIPTION_TTL: Duration = Duration::from_secs(3600);
/// How long an identity request naming a version (`v=`) newer than this
/// node's index waits for its replica to catch up before answering (then
/// uncacheable) — a cluster node can be a few milliseconds behind the node
/// whose event the page saw.
pub const VERSION_WAIT: Duration = Duration::from_millis(1500);
/// Longest bad key quoted back in an error message.
const MAX_QUOTED: usize = 80;

/// Why a subscription request was refused (the client's fault, always).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("expected a JSON body {{\"keys\": [\"<md5 or sha256 hex>\", ...]}}: {0}")]
    BadBody(String),
    #[error("keys[{index}] is not a 32/64-hex identity hash: \"{key}\"; nothing was subscribed")]
    BadKey { index: usize, key: String },
    #[error("a subscription needs at least one key")]
    Empty,
    #[error("{count} keys, at most {max} per subscription")]
    TooManyKeys { count: usize, max: usize },
    #[error("subscription body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("malformed subscription id: expected 32 hex digits")]
    BadId,
}

/// The id of a key set: the first 16 bytes of the BLAKE3 of its encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(pub [u8; 16]);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubscriptionId({self})")
    }
}

impl FromStr for SubscriptionId {
    type Err = SubscriptionError;
    fn from_str(s: &str) -> Result<Self, SubscriptionError> {
        let mut out = [0u8; 16];
        if s.len() != 32 {
            return Err(SubscriptionError::BadId);
        }
        hex::decode_to_slice(s.to_ascii_lowercase(), &mut out)
            .map_err(|_| SubscriptionError::BadId)?;
        Ok(SubscriptionId(out))
    }
}

/// A sorted, de-duplicated, non-empty set of identity hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet(Vec<IdentityHash>);

impl KeySet {
    /// Build from any keys (sorted and de-duplicated here); refuses an empty
    /// or oversized set.
    pub fn new(mut keys: Vec<IdentityHash>) -> Result<KeySet, SubscriptionError> {
        keys.sort_unstable();
        keys.dedup();
        match keys.len() {
            0 => Err(SubscriptionError::Empty),
            n if n > MAX_SUBSCRIPTION_KEYS => Err(SubscriptionError::TooManyKeys {
                count: n,
                max: MAX_SUBSCRIPTION_KEYS,
            }),
            _ => Ok(KeySet(keys)),
        }
    }

    /// The keys, sorted (for [`crate::events::matches`]).
    pub fn keys(&self) -> &[IdentityHash] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, key: &IdentityHash) -> bool {
        self.0.binary_search(key).is_ok()
    }

    pub fn into_keys(self) -> Vec<IdentityHash> {
        self.0
    }

    /// The content-addressed id.
    pub fn id(&self) -> SubscriptionId {
        let hash = blake3::hash(&self.encode());
        let mut id = [0u8; 16];
        id.copy_from_slice(&hash.as_bytes()[..16]);
        SubscriptionId(id)
    }

    /// Compact storage form: per key one length byte (16 or 32) and its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 33);
        for k in &self.0 {
            let b = k.as_bytes();
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        }
        out
    }

    /// Inverse of [`KeySet::encode`]; `None` for bytes it never wrote.
    pub fn decode(mut bytes: &[u8]) -> Option<KeySet> {
        let mut keys = Vec::with_capacity(bytes.len() / 17);
        while let Some((&len, rest)) = bytes.split_first() {
            let len = len as usize;
            let body = rest.get(..len)?;
            keys.push(match len {
                16 => IdentityHash::Md5(body.try_into().ok()?),
                32 => IdentityHash::Sha256(body.try_into().ok()?),
                _ => return None,
            });
            bytes = &rest[len..];
        }
        let set = KeySet::new(keys).ok()?;
        Some(set)
    }
}

/// Parse `POST /v1/subscriptions`: `{"keys": ["<hex>", ...]}` (the client
/// sends it as `text/plain` to stay a simple CORS request, so the content
/// type is not checked). The first malformed key is named; nothing of a
/// refused body is kept.
pub fn parse_body(body: &[u8]) -> Result<KeySet, SubscriptionError> {
    if body.len() > MAX_SUBSCRIPTION_BODY {
        return Err(SubscriptionError::BodyTooLarge {
            limit: MAX_SUBSCRIPTION_BODY,
        });
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        keys: Vec<String>,
    }
    let req: Request =
        serde_json::from_slice(body).map_err(|e| SubscriptionError::BadBody(e.to_string()))?;
    if req.keys.len() > MAX_SUBSCRIPTION_KEYS {
        return Err(SubscriptionError::TooManyKeys {
            count: req.keys.len(),
            max: MAX_SUBSCRIPTION_KEYS,
        });
    }
    let keys = req
        .keys
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            raw.trim()
                .parse::<IdentityHash>()
                .map_err(|_| SubscriptionError::BadKey {
                    index,
                    key: quote(raw),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    KeySet::new(keys)
}

/// The `v=` of an identity URL (the version a live page asks for), read as
/// forgivingly as every identity parameter: absent or junk is `None`.
pub fn version_param(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| *k == "v")
        .filter_map(|(_, v)| v.parse().ok())
        .next_back()
}

/// At most [`MAX_QUOTED`] characters of `raw`, control characters dropped.
fn quote(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_QUOTED)
        .collect();
    if raw.chars().count() > MAX_QUOTED {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MD5: &str = "0bc83cb571cd1c50ba6f3e8a78ef1346";
    const SHA: &str = "84059b07d4be415b0f5b4a0b2b5f5d8e0e7f0f4c7a6c8d4b3e2e1d0c9b8a7f6e";

    fn body(keys: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn table() {
        let cases: Vec<(Vec<u8>, Result<usize, &str>)> = vec![
            (body(&[MD5, SHA]), Ok(2)),
            (body(&[MD5, MD5, &MD5.to_uppercase()]), Ok(1)),
            (body(&[&format!(" {MD5} ")]), Ok(1)),
            (body(&[]), Err("at least one key")),
            (body(&[MD5, "zz", "also bad"]), Err("keys[1] is not")),
            (body(&[&MD5[..31]]), Err("keys[0]")),
            (b"{\"keys\": \"a,b\"}".to_vec(), Err("expected a JSON body")),
            (
                b"{\"keys\": [], \"all\": true}".to_vec(),
                Err("unknown field"),
            ),
            (b"not json".to_vec(), Err("expected a JSON body")),
        ];
        for (input, want) in cases {
            let got = parse_body(&input);
            match (got, want) {
                (Ok(set), Ok(n)) => assert_eq!(set.len(), n),
                (Err(e), Err(m)) => assert!(e.to_string().contains(m), "{e} !~ {m}"),
                (got, want) => panic!("{got:?} vs {want:?} for {input:?}"),
            }
        }
    }

    #[test]
    fn limits_are_typed() {
        let many: Vec<String> = (0..=MAX_SUBSCRIPTION_KEYS)
            .map(|i| format!("{i:032x}"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            parse_body(&body(&refs)),
            Err(SubscriptionError::TooManyKeys {
                count: MAX_SUBSCRIPTION_KEYS + 1,
                max: MAX_SUBSCRIPTION_KEYS
            })
        );
        assert!(parse_body(&body(&refs[..MAX_SUBSCRIPTION_KEYS])).is_ok());
        let sha: Vec<String> = (0..MAX_SUBSCRIPTION_KEYS)
            .map(|i| format!("{i:064x}"))
            .collect();
        let b = serde_json::to_vec(&serde_json::json!({ "keys": sha })).unwrap();
        assert!(b.len() <= MAX_SUBSCRIPTION_BODY, "the limit fits the keys");
        let huge = vec![b' '; MAX_SUBSCRIPTION_BODY + 1];
        assert!(matches!(
            parse_body(&huge),
            Err(SubscriptionError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn bad_key_is_quoted_short() {
        let long = "x".repeat(500);
        let e = parse_body(&body(&[MD5, &long])).unwrap_err().to_string();
        assert!(e.contains("keys[1]") && e.len() < 250, "{e}");
    }

    #[test]
    fn ids_parse_and_print() {
        let set = KeySet::new(vec![MD5.parse().unwrap()]).unwrap();
        let id = set.id();
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(id.to_string().parse::<SubscriptionId>().unwrap(), id);
        for bad in ["", "xyz", &"g".repeat(32), &"a".repeat(33)] {
            assert_eq!(bad.parse::<SubscriptionId>(), Err(SubscriptionError::BadId));
        }
    }

    #[test]
    fn version_param_is_forgiving() {
        for (q, want) in [
            (None, None),
            (Some(""), None),
            (Some("s=48&v=7"), Some(7)),
            (Some("v=7&v=9"), Some(9)),
            (Some("v=-1&s=2"), None),
            (Some("v=x"), None),
            (Some("vv=3&v"), None),
            (Some("v=99999999999999999999999"), None),
        ] {
            assert_eq!(version_param(q), want, "{q:?}");
        }
    }

    fn key() -> impl Strategy<Value = IdentityHash> {
        prop_oneof![
            any::<[u8; 16]>().prop_map(IdentityHash::Md5),
            any::<[u8; 32]>().prop_map(IdentityHash::Sha256),
        ]
    }

    proptest! {
        /// Order and duplicates never change the set or its id; the encoding
        /// round-trips; a parsed body holds exactly the distinct keys sent.
        #[test]
        fn content_addressed(keys in prop::collection::vec(key(), 1..60), seed in any::<u64>()) {
            let mut shuffled = keys.clone();
            shuffled.extend(keys.iter().take(5).copied());
            let n = shuffled.len();
            for i in 0..n {
                shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n);
            }
            let a = KeySet::new(keys.clone()).unwrap();
            let b = KeySet::new(shuffled.clone()).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.id(), b.id());
            prop_assert_eq!(KeySet::decode(&a.encode()), Some(a.clone()));
            let hex: Vec<String> = shuffled.iter().map(|k| k.to_hex().to_uppercase()).collect();
            let refs: Vec<&str> = hex.iter().map(String::as_str).collect();
            let parsed = parse_body(&body(&refs)).unwrap();
            prop_assert_eq!(&parsed, &a);
            for k in &keys {
                prop_assert!(parsed.contains(k));
            }
        }

        /// Any body: an answer, never a panic; a success is a valid set.
        #[test]
        fn any_body(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(set) = parse_body(&bytes) {
                prop_assert!(!set.is_empty() && set.len() <= MAX_SUBSCRIPTION_KEYS);
            }
        }

        /// One bad key anywhere refuses the whole body and names its index.
        #[test]
        fn first_bad_key_named(keys in prop::collection::vec(key(), 1..20), at in 0usize..20, junk in "[g-z ]{0,70}") {
            let mut hex: Vec<String> = keys.iter().map(|k| k.to_hex()).collect();
            let at = at % (hex.len() + 1);
            hex.insert(at, junk);
            let refs: Vec<&str> = hex.iter().map(String::as_str).collect();
            let e = parse_body(&body(&refs)).unwrap_err();
            prop_assert!(matches!(e, SubscriptionError::BadKey { index, .. } if index == at), "{:?}", e);
        }

        /// Decoding arbitrary bytes never panics.
        #[test]
        fn decode_any(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeySet::decode(&bytes);
        }
    }
}
