//! The bucket layout: bucket names, what each KV key names, the record as
//! stored under `i.<primary>`, and opening (or creating) the buckets.

use async_nats::jetstream::{self, kv, object_store};
use serde::{Deserialize, Serialize};

use crate::model::{ChangeEvent, ContentHash, IdentityHash};
use crate::store::change::event_of;
use crate::store::{AvatarRef, IdentityRecord, Manifest, StoreError};

/// The KV bucket holding identities, aliases and manifests.
pub const INDEX_BUCKET: &str = "avatar_edge_index";
/// The object store bucket holding rung blobs.
pub const BLOB_BUCKET: &str = "avatar_edge_blobs";
/// Revisions kept per KV key (the JetStream maximum).
const HISTORY: i64 = 64;

/// A record as stored under `i.<primary>`: the identity plus what its change
/// event needs beyond it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub record: IdentityRecord,
    /// The avatar this change replaced, if it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ContentHash>,
}

impl StoredRecord {
    /// The change event of the write that stored this record at `revision`.
    pub fn event(&self, revision: u64) -> ChangeEvent {
        event_of(&self.record, self.previous, revision)
    }
}

/// What `i.<p>` holds once `p` was merged into another record: the record
/// as it was (if any) and the bind that merged it, so that whoever finds the
/// merge unfinished (its writer died between this write and the survivor's)
/// can finish it. A forward is permanent: every writer that resolves to `p`
/// follows it, so nobody writes `i.<p>` again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The surviving primary.
    pub to: IdentityHash,
    /// `p`'s record as it was when it was merged (none: only an alias entry
    /// named `p`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<IdentityRecord>,
    /// The merging bind: its aliases and avatar.
    pub aliases: Vec<IdentityHash>,
    pub avatar: AvatarRef,
}

/// The value under `i.<p>`: a record (an event) or a forward (not an event).
/// The forward is boxed: it is rare (one per merged identity) and 1.5× a
/// record's size, and every replica holds one `Stored` per identity (issue
/// 20: unboxed, each record slot paid for a forward's size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stored {
    Forward { moved: Box<Forward> },
    Record(StoredRecord),
}

impl Stored {
    pub fn decode(value: &[u8]) -> Result<Stored, StoreError> {
        serde_json::from_slice(value)
            .map_err(|e| StoreError::Index(format!("corrupt index record: {e}")))
    }

    pub fn encode(&self) -> Result<bytes::Bytes, StoreError> {
        serde_json::to_vec(self)
            .map(bytes::Bytes::from)
            .map_err(|e| StoreError::Index(e.to_string()))
    }

    /// The masters this value keeps alive: a record's avatar; a forward's
    /// merging bind and the record it still answers with.
    pub fn masters(&self) -> Vec<ContentHash> {
        match self {
            Stored::Record(r) => record_masters(&r.record),
            Stored::Forward { moved } => forward_masters(moved),
        }
    }

    /// The change event of this write at `revision` (forwards are none).
    pub fn event(&self, revision: u64) -> Option<ChangeEvent> {
        match self {
            Stored::Record(r) => Some(r.event(revision)),
            Stored::Forward { .. } => None,
        }
    }
}

fn record_masters(record: &IdentityRecord) -> Vec<ContentHash> {
    record.avatar.iter().map(|a| a.hash).collect()
}

fn forward_masters(moved: &Forward) -> Vec<ContentHash> {
    std::iter::once(moved.avatar.hash)
        .chain(moved.record.iter().flat_map(record_masters))
        .collect()
}

/// A value of `i.<p>` as a replica holds it: the record without the avatar
/// it replaced (only the write's event needs that, and the event is made
/// when the value is applied), or the forward. One per identity on every
/// node (issue 20), so it is kept small: a record's slot is 80 bytes, not
/// the 120 of a [`StoredRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Record(IdentityRecord),
    Forward(Box<Forward>),
}

impl Held {
    /// As [`Stored::masters`].
    pub fn masters(&self) -> Vec<ContentHash> {
        match self {
            Held::Record(r) => record_masters(r),
            Held::Forward(moved) => forward_masters(moved),
        }
    }
}

impl From<Stored> for Held {
    fn from(stored: Stored) -> Held {
        match stored {
            Stored::Record(r) => Held::Record(r.record),
            Stored::Forward { moved } => Held::Forward(moved),
        }
    }
}

/// Where a master is in its life (see `gc`): bound or being bound (`Live`),
/// being checked for references by a collector (`Condemned`), or having its
/// blobs deleted (`Deleting`; the key is deleted once they are gone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Live,
    Condemned,
    Deleting,
}

/// The value under `m.<master>`: the manifest plus its collection state.
/// Manifests written before collection existed decode as live, generation
/// 0, pinned at 0 (long ago).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterEntry {
    #[serde(flatten)]
    pub manifest: Manifest,
    #[serde(default)]
    pub phase: Phase,
    /// Unix ms: when a binder last pinned it (`Live`), or when the phase
    /// began (`Condemned`, `Deleting`).
    #[serde(default)]
    pub at: u64,
    /// The incarnation: the key's revision when this life began (a create
    /// after a deletion, or a takeover of a stale deletion). A deletion only
    /// ever happens in `Deleting`, which ends its generation.
    #[serde(default)]
    pub generation: u64,
    /// Unix ms until which a fallback entry (issue 17) holds the master,
    /// named by an identity or not: a lease, renewed by every fallback write
    /// naming it; past it (and unnamed), the sweep collects the master.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_until: u64,
    /// Issue 20: the identity keys whose values name this master, each with
    /// the revision its write was based on (see `gc`: binders list,
    /// unlisters unlist). `None`: written before listings existed, unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refs: Option<Refs>,
}

/// The identity keys naming a master (`MasterEntry::refs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refs {
    /// Primary (the `i.` key) → the revision of that key its write was
    /// compared against: a later write that stops naming the master removes
    /// the key only if this basis precedes it.
    #[serde(default)]
    pub by: std::collections::BTreeMap<IdentityHash, u64>,
    /// More than [`MAX_REFS`] keys named it at once: no longer listed, so it
    /// counts as named for good (an over-count only keeps blobs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub many: bool,
    /// Listed by the audit of an entry written before listings, not yet
    /// checked again (`gc::audit_listing`): counts as named until it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

/// The most keys a master's entry lists (an entry is one KV value: 256 keys
/// are ~20 KB of JSON, rewritten by every bind of that master).
pub const MAX_REFS: usize = 256;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl MasterEntry {
    pub fn decode(value: &[u8]) -> Result<MasterEntry, StoreError> {
        serde_json::from_slice(value)
            .map_err(|e| StoreError::Index(format!("corrupt manifest: {e}")))
    }

    pub fn encode(&self) -> Result<bytes::Bytes, StoreError> {
        serde_json::to_vec(self)
            .map(bytes::Bytes::from)
            .map_err(|e| StoreError::Index(e.to_string()))
    }

    /// This entry in `phase` from `at` (same manifest and generation).
    pub fn with(&self, phase: Phase, at: u64) -> MasterEntry {
        MasterEntry {
            phase,
            at,
            ..self.clone()
        }
    }
}

/// What a KV key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Identity(IdentityHash),
    Alias(IdentityHash),
    Manifest(ContentHash),
    /// `p.<node>`: a node's watch probe (proves its watch delivers).
    Probe,
    /// `t.<master>`: a takedown (issue 16).
    Takedown(ContentHash),
    /// [`FORMAT_KEY`]: the bucket's format marker.
    Format,
}

impl Key {
    pub(super) fn parse(key: &str) -> Option<Key> {
        let (kind, hex) = key.split_once('.')?;
        match kind {
            "i" => hex.parse().ok().map(Key::Identity),
            "a" => hex.parse().ok().map(Key::Alias),
            "m" => hex.parse().ok().map(Key::Manifest),
            "p" => Some(Key::Probe),
            "t" => hex.parse().ok().map(Key::Takedown),
            "v" => (key == FORMAT_KEY).then_some(Key::Format),
            _ => None,
        }
    }
}

/// Is this stored KV message a value (not a delete or purge marker)?
pub(super) fn is_put(headers: &async_nats::HeaderMap) -> bool {
    headers
        .get("KV-Operation")
        .is_none_or(|op| op.as_str() == "PUT")
}

pub(super) fn identity_key(h: &IdentityHash) -> String {
    format!("i.{}", h.to_hex())
}
pub(super) fn alias_key(h: &IdentityHash) -> String {
    format!("a.{}", h.to_hex())
}
/// A node's watch probe key: one per process, random.
pub(super) fn probe_key() -> String {
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    format!(
        "p.{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}
pub(super) fn manifest_key(h: &ContentHash) -> String {
    format!("m.{}", h.to_hex())
}

/// Opens a bucket, creating it when missing: with `replicas`, or with one on a
/// single non-clustered server; if creating fails because another node made
/// it meanwhile, opens that one.
pub(super) async fn open_or_create<T, GE, CE, G, C>(
    what: &str,
    replicas: usize,
    get: impl Fn() -> G,
    create: impl Fn(usize) -> C,
) -> Result<T, StoreError>
where
    CE: std::fmt::Display,
    G: std::future::Future<Output = Result<T, GE>>,
    C: std::future::Future<Output = Result<T, CE>>,
{
    if let Ok(bucket) = get().await {
        return Ok(bucket);
    }
    let created = match create(replicas).await {
        Err(e) if replicas > 1 && e.to_string().contains("non-clustered") => {
            tracing::warn!(
                "single NATS server: {what} bucket with 1 replica instead of {replicas}"
            );
            create(1).await
        }
        other => other,
    };
    match created {
        Ok(bucket) => Ok(bucket),
        Err(e) => get()
            .await
            .map_err(|_| StoreError::Unavailable(format!("creating the {what} bucket: {e}"))),
    }
}

/// The index bucket's format marker (issue 20). Its value [`FORMAT_SALTED`]
/// says every master in the bucket was stored with salted rungs and every
/// entry with its listing, so a bounded replica need not wait to find out
/// ([`salted_bucket`]).
pub(super) const FORMAT_KEY: &str = "v.format";
/// See [`FORMAT_KEY`].
pub(super) const FORMAT_SALTED: &[u8] = b"salted rungs, listed entries";

/// Is the index bucket marked [`FORMAT_SALTED`]? The first node to find it
/// empty (no sequence ever written) marks it, create-only, so nodes
/// starting together agree; a bucket holding data without the marker was
/// written by an earlier version and may hold masters stored before
/// salting and entries stored before listings.
pub(super) async fn salted_bucket(kv: &kv::Store) -> Result<bool, StoreError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("the index bucket's format: {what}: {e}"))
    };
    let status = kv.status().await.map_err(|e| fail("status", &e))?;
    if status.info.state.last_sequence == 0 {
        match kv.create(FORMAT_KEY, FORMAT_SALTED.into()).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail("marking", &e)),
        }
    }
    let marker = kv.get(FORMAT_KEY).await.map_err(|e| fail("reading", &e))?;
    Ok(marker.as_deref() == Some(FORMAT_SALTED))
}

pub(super) async fn open_kv(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, StoreError> {
    let config = |num_replicas| kv::Config {
        bucket: INDEX_BUCKET.into(),
        description: "avatar-edge identity index, manifests and change events".into(),
        history: HISTORY,
        max_value_size: 1 << 20,
        storage: jetstream::stream::StorageType::File,
        num_replicas,
        ..Default::default()
    };
    open_or_create(
        "index",
        replicas,
        || js.get_key_value(INDEX_BUCKET),
        |n| js.create_key_value(config(n)),
    )
    .await
}

pub(super) async fn open_blobs(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<object_store::ObjectStore, StoreError> {
    let config = |num_replicas| object_store::Config {
        bucket: BLOB_BUCKET.into(),
        description: Some("avatar-edge master rungs by BLAKE3".into()),
        storage: jetstream::stream::StorageType::File,
        num_replicas,
        ..Default::default()
    };
    open_or_create(
        "blob",
        replicas,
        || js.get_object_store(BLOB_BUCKET),
        |n| js.create_object_store(config(n)),
    )
    .await
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{IdentityKeys, Rating};
    use crate::store::AvatarRef;

    #[test]
    fn keys_round_trip_and_reject_junk() {
        let k = IdentityKeys::parse("a@example.org").unwrap();
        let h = k.aliases[1];
        assert_eq!(Key::parse(&identity_key(&h)), Some(Key::Identity(h)));
        assert_eq!(Key::parse(&alias_key(&h)), Some(Key::Alias(h)));
        let c = ContentHash([7; 32]);
        assert_eq!(Key::parse(&manifest_key(&c)), Some(Key::Manifest(c)));
        let t = super::super::moderation::takedown_key(&c);
        assert_eq!(Key::parse(&t), Some(Key::Takedown(c)));
        assert_eq!(Key::parse(&probe_key()), Some(Key::Probe));
        assert_eq!(Key::parse(FORMAT_KEY), Some(Key::Format));
        assert_eq!(Key::parse("v.other"), None);
        assert_ne!(probe_key(), probe_key());
        for junk in ["", "i", "x.00", "i.zz", "m.00"] {
            assert_eq!(Key::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_held_value_is_the_size_of_an_identity_record() {
        // Every replica holds one `Held` per identity: neither a forward
        // (rare, larger) nor the replaced avatar (only events need it) may
        // set the size of every record's slot.
        assert_eq!(
            std::mem::size_of::<Held>(),
            std::mem::size_of::<IdentityRecord>()
        );
        assert!(std::mem::size_of::<Held>() < std::mem::size_of::<Stored>());
        let r = stored("a@example.org", 2, 1);
        let held = Held::from(Stored::Record(r.clone()));
        assert_eq!(held, Held::Record(r.record.clone()));
        assert_eq!(held.masters(), Stored::Record(r).masters());
    }

    #[test]
    fn records_and_forwards_decode_apart() {
        let r = Stored::Record(stored("a@example.org", 2, 1));
        assert_eq!(Stored::decode(&r.encode().unwrap()).unwrap(), r);
        assert!(r.event(7).is_some());
        let s = stored("b@example.org", 1, 2).record;
        let f = Stored::Forward {
            moved: Box::new(Forward {
                to: s.aliases[0],
                record: Some(s.clone()),
                aliases: s.aliases.clone(),
                avatar: s.avatar.clone().unwrap(),
            }),
        };
        assert_eq!(Stored::decode(&f.encode().unwrap()).unwrap(), f);
        assert_eq!(f.event(8), None, "a forward is not an event");
        assert!(Stored::decode(b"{}").is_err());
    }

    #[test]
    fn events_carry_the_record_and_the_replaced_avatar() {
        let mut s = stored("a@example.org", 3, 1);
        s.previous = Some(ContentHash([9; 32]));
        let e = s.event(42);
        assert_eq!(
            (e.id, e.version, e.at, e.hash, e.previous),
            (
                42,
                3,
                1003,
                Some(ContentHash([1; 32])),
                Some(ContentHash([9; 32]))
            )
        );
        assert_eq!(e.key, s.record.aliases[0]);
    }
    pub(crate) fn stored(email: &str, version: u64, seed: u8) -> StoredRecord {
        let k = IdentityKeys::parse(email).unwrap();
        StoredRecord {
            record: IdentityRecord {
                aliases: k.aliases,
                avatar: Some(AvatarRef {
                    hash: ContentHash([seed; 32]),
                    rating: Rating::G,
                    blocked: false,
                    source: None,
                }),
                version,
                updated_ms: 1000 + version,
            },
            previous: None,
        }
    }
}
