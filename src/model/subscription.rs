//! Event-stream subscriptions (issue 14): the typed key set a page
//! subscribes with (`POST /v1/subscriptions`, parsed in
//! [`crate::spec::parse_subscription`]), its limits, its content-addressed
//! id, and the compact encoding the stores keep it in.
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

use super::IdentityHash;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_print() {
        let set = KeySet::new(vec!["0bc83cb571cd1c50ba6f3e8a78ef1346".parse().unwrap()]).unwrap();
        let id = set.id();
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(id.to_string().parse::<SubscriptionId>().unwrap(), id);
        for bad in ["", "xyz", &"g".repeat(32), &"a".repeat(33)] {
            assert_eq!(bad.parse::<SubscriptionId>(), Err(SubscriptionError::BadId));
        }
        assert_eq!(KeySet::new(vec![]), Err(SubscriptionError::Empty));
        assert_eq!(KeySet::decode(&set.encode()), Some(set));
        assert_eq!(KeySet::decode(&[16, 1, 2]), None);
    }
}
