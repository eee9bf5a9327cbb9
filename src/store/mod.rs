//! Durable state: content-addressed blobs, master manifests, the identity
//! index with versions, and the outbox of change events.
//!
//! [`Store`] is the boundary the service talks to; [`embedded::EmbeddedStore`]
//! (files + redb) is the single-node default, and [`nats::NatsStore`] runs
//! several nodes on NATS JetStream (KV for the index with compare-and-set, an
//! object store for blobs, the KV stream as the event log) without the
//! service noticing.
//!
//! Invariants every implementation keeps:
//! - a blob is named by the BLAKE3 of its bytes and verified on every read: a
//!   mismatch is counted and reported as missing, never served;
//! - blobs are durable before an index entry can point to them;
//! - an identity's `version` only grows (deletes leave a tombstone), and every
//!   change writes its [`ChangeEvent`] in the same transaction as the index;
//! - every store announces each committed event once through the [`Publish`]
//!   it was built with, so callers never publish (and never ask whether to);
//! - only this module touches the disk.

pub mod backup;
pub mod blobs;
pub mod change;
pub mod embedded;
mod manifest;
pub mod moderation;
pub mod nats;
pub mod subscriptions;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use crate::model::ChangeEvent;
use crate::model::{ContentHash, IdentityHash, Rating};
pub use manifest::{Manifest, RungRef};

/// Store failures. `Unavailable`/`Full` are the server's fault or the disk's,
/// never the client's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("no such identity")]
    NotFound,
    #[error("storage is full")]
    Full,
    #[error("storage is read-only or unavailable: {0}")]
    Unavailable(String),
    #[error("index error: {0}")]
    Index(String),
    #[error("I/O error: {0}")]
    Io(String),
    /// Issue 16: the content is taken down; nothing may bind it.
    #[error("content {0} is taken down")]
    Blocked(ContentHash),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::StorageFull | K::QuotaExceeded => StoreError::Full,
            K::ReadOnlyFilesystem | K::PermissionDenied => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Io(e.to_string()),
        }
    }
}

/// An identity's current avatar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarRef {
    pub hash: ContentHash,
    pub rating: Rating,
    /// Issue 16: the content is taken down; the identity shows its default
    /// (and its events say "no avatar") until the takedown is lifted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocked: bool,
    /// Where it came from when not uploaded here (issue 17: adopted from an
    /// upstream); absent for uploads and in records written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<AvatarSource>,
}

impl AvatarRef {
    /// The content the identity shows: none while taken down.
    pub fn visible(&self) -> Option<ContentHash> {
        (!self.blocked).then_some(self.hash)
    }
}

/// Where an avatar came from, when not from an upload to this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AvatarSource {
    /// Fetched from an upstream service and adopted (`--fallback-adopt`,
    /// `import --from-upstream`).
    Fallback,
}

impl AvatarSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AvatarSource::Fallback => "fallback",
        }
    }
}

/// An identity: all its hash aliases, its avatar (or none), its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// Every hash this identity answers to; `aliases[0]` is its primary key.
    pub aliases: Vec<IdentityHash>,
    pub avatar: Option<AvatarRef>,
    /// Grows by one on every change, deletes included; never reused.
    pub version: u64,
    /// Unix milliseconds of the last change (monotonic per identity).
    pub updated_ms: u64,
}

impl IdentityRecord {
    pub fn primary(&self) -> IdentityHash {
        self.aliases[0]
    }
}

/// A change to the identity index.
#[derive(Debug, Clone)]
pub enum Change {
    /// Bind these aliases (merged with any existing record that shares one) to an avatar.
    Bind {
        aliases: Vec<IdentityHash>,
        avatar: AvatarRef,
    },
    /// Remove the avatar of the identity that `alias` names (tombstone kept).
    Unbind { alias: IdentityHash },
    /// Change the rating of the identity's current avatar.
    SetRating { alias: IdentityHash, rating: Rating },
    /// Issue 16: hide (`blocked`) or show again the identity's avatar if it is
    /// `hash` (a takedown or its lift); anything else is left as it is.
    Block {
        alias: IdentityHash,
        hash: ContentHash,
        blocked: bool,
    },
}

/// The outcome of a [`Store::commit`].
#[derive(Debug, Clone)]
pub struct Committed {
    pub record: IdentityRecord,
    /// `None` when nothing changed (an identical re-upload).
    pub event: Option<ChangeEvent>,
}

/// A master to store: its manifest plus the bytes of every rung.
#[derive(Debug, Clone)]
pub struct NewMaster {
    pub manifest: Manifest,
    pub rungs: Vec<Bytes>,
}

/// Issue 17: what the upstream avatar services said about an identity this
/// store has no avatar for, kept until `expires_ms` (then asked again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackEntry {
    /// The fetched avatar's master (stored and referenced like a bound one);
    /// `None`: no upstream has the identity (a negative entry).
    pub master: Option<ContentHash>,
    /// Unix milliseconds of the fetch.
    pub fetched_ms: u64,
    /// Unix milliseconds after which the entry is stale.
    pub expires_ms: u64,
}

impl FallbackEntry {
    /// True until the entry expires.
    pub fn fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }
}

/// Counters the metrics endpoint reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreStats {
    pub corrupt_blobs: u64,
    pub blobs_written: u64,
    pub blobs_deleted: u64,
}

/// The durable state behind the service.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Make `master` durable (idempotent), then apply `change` and write its
    /// event in one transaction. Blobs no identity references any more are
    /// removed afterwards.
    async fn commit(
        &self,
        master: Option<NewMaster>,
        change: Change,
    ) -> Result<Committed, StoreError>;
    /// The identity that `alias` names, tombstones included.
    async fn identity(&self, alias: &IdentityHash) -> Result<Option<IdentityRecord>, StoreError>;
    /// The manifest of a master, if stored.
    async fn manifest(&self, hash: &ContentHash) -> Result<Option<Manifest>, StoreError>;
    /// A blob's bytes, verified against its hash; `None` if missing or corrupt.
    async fn blob(&self, hash: &ContentHash) -> Result<Option<Bytes>, StoreError>;
    /// True when [`Store::with_blob_blocking`] reads local files, so a caller
    /// already on a blocking thread (the render job) can read there: a cold
    /// render then takes one hand-off between threads instead of two.
    fn blobs_are_local(&self) -> bool {
        false
    }
    /// [`Store::blob`] from a blocking thread, lent to `f` from a buffer the
    /// thread keeps (`Ok(false)`: missing or corrupt, `f` not called);
    /// `None` when the store can only read asynchronously (see
    /// [`Store::blobs_are_local`]).
    fn with_blob_blocking(
        &self,
        _hash: &ContentHash,
        _f: &mut dyn FnMut(&[u8]),
    ) -> Option<Result<bool, StoreError>> {
        None
    }
    /// Events with `id > after`, oldest first, at most `limit`.
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError>;
    /// The id of the newest event (0 when none).
    async fn head(&self) -> Result<u64, StoreError>;
    /// How far delivery target `target` has acknowledged the outbox (`None`:
    /// a target never seen before).
    async fn cursor(&self, target: &str) -> Result<Option<u64>, StoreError>;
    /// Record that `target` acknowledged every event up to `id`. Events are
    /// never pruned before every known target has passed them.
    async fn set_cursor(&self, target: &str, id: u64) -> Result<(), StoreError>;
    /// Counters for `/metrics`.
    fn stats(&self) -> StoreStats;
    /// A cluster-wide delivery queue for `target` (each event handed to one
    /// node), or `None`: delivery walks [`Store::events_after`] from the
    /// durable [`Store::cursor`] (the embedded store).
    fn delivery_queue(&self, _target: &str) -> Option<Box<dyn DeliveryQueue>> {
        None
    }
    /// True while identity look-ups answer from a replica that is cut off from
    /// its source (answers get a short lifetime and a warning).
    fn index_stale(&self) -> bool {
        false
    }
    /// Why this node cannot serve correct answers yet (`/readyz` answers 503
    /// with it), or `None` when it can. An open embedded store is ready.
    fn unready_reason(&self) -> Option<&'static str> {
        None
    }
    /// Write store-specific metric families (registered with
    /// [`crate::metrics::Metrics::register`] by the composition root).
    fn collect_metrics(&self, _out: &mut crate::metrics::Exposition) {}
    /// Issue 14: where event-stream subscriptions are kept so that every node
    /// serving this store finds them; `None`: this node's memory is enough
    /// (one node). Called once, at start-up.
    fn subscriptions(&self) -> Option<Arc<dyn subscriptions::SubscriptionStore>> {
        None
    }
    /// A consistent snapshot for an online backup, written out later
    /// ([`backup`]). Blocking: call it from a blocking thread.
    fn snapshot(&self) -> Result<Box<dyn backup::BackupWriter>, StoreError> {
        Err(StoreError::Unavailable(
            "online backup covers the embedded store; back up a NATS cluster's streams with NATS' own tools".into(),
        ))
    }

    // Issue 16: moderation (see `moderation`).
    /// Is `hash` taken down? Answered from memory (the hot `/c/` path asks).
    fn blocked(&self, hash: &ContentHash) -> bool;
    /// Record a takedown; when `t.hash` is already taken down nothing is
    /// written and the existing record comes back.
    async fn put_takedown(
        &self,
        t: moderation::Takedown,
    ) -> Result<Option<moderation::Takedown>, StoreError>;
    /// Remove the takedown of `hash`, returning it (`None`: there was none).
    async fn remove_takedown(
        &self,
        hash: &ContentHash,
    ) -> Result<Option<moderation::Takedown>, StoreError>;
    /// Takedowns in hash order after `after`, at most `limit`.
    async fn takedowns(
        &self,
        after: Option<ContentHash>,
        limit: usize,
    ) -> Result<Vec<moderation::Takedown>, StoreError>;
    /// Primaries of the identities whose avatar is `hash` (hidden or not).
    async fn bound_to(&self, hash: &ContentHash) -> Result<Vec<IdentityHash>, StoreError>;
    /// Append an entry to the audit log durably; returns its id (ids grow).
    async fn append_audit(&self, entry: moderation::AuditEntry) -> Result<u64, StoreError>;
    /// Audit entries with `id > after`, oldest first, at most `limit`.
    async fn audit_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<moderation::AuditEntry>, StoreError>;
    /// Issue 17: the fallback entry of `hash` (fresh or not), shared by every
    /// node serving this store.
    async fn fallback(&self, hash: &IdentityHash) -> Result<Option<FallbackEntry>, StoreError>;
    /// Issue 17: keep `entry` for `hash`, replacing any previous one, with
    /// `master` (the fetched avatar, durable first) when the entry names one.
    /// The master stays stored while an entry or an identity references it.
    async fn put_fallback(
        &self,
        hash: &IdentityHash,
        entry: FallbackEntry,
        master: Option<NewMaster>,
    ) -> Result<(), StoreError>;
    /// Issue 15: call `f` with every master that stops being reachable on
    /// this node (no identity or fallback entry names it any more, on any node of a cluster),
    /// so cached manifests and variants of erased content go at once.
    /// Called once, at start-up; `f` must not block.
    fn on_content_gone(&self, _f: ContentGone) {}
}

/// See [`Store::on_content_gone`].
pub type ContentGone = Arc<dyn Fn(ContentHash) + Send + Sync>;

/// Undelivered events of one delivery target, handed out so that each goes to
/// one node of a cluster and comes back if that node dies before acknowledging.
#[async_trait::async_trait]
pub trait DeliveryQueue: Send {
    /// Up to `limit` events not yet acknowledged, oldest first, waiting at most
    /// `wait` for the first (empty when none came).
    async fn fetch(
        &mut self,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<ChangeEvent>, StoreError>;
    /// Acknowledge every event the last [`DeliveryQueue::fetch`] returned.
    async fn ack(&mut self) -> Result<(), StoreError>;
}

/// Where a store announces every committed change, once, right after it is
/// durable: the embedded store after its index transaction, the NATS store
/// from its replica (this node's changes and other nodes' alike). The
/// composition root wires it to `events::Bus::publish`; the store never knows
/// who listens. Called on the committing thread (possibly a blocking one), so
/// it must not block.
#[derive(Clone)]
pub struct Publish(Arc<dyn Fn(ChangeEvent) + Send + Sync>);

impl Publish {
    pub fn new(f: impl Fn(ChangeEvent) + Send + Sync + 'static) -> Publish {
        Publish(Arc::new(f))
    }

    /// Announce to nobody (offline tools, tests that read the outbox only).
    pub fn nowhere() -> Publish {
        Publish::new(|_| {})
    }

    pub fn publish(&self, event: ChangeEvent) {
        (self.0)(event)
    }
}

impl std::fmt::Debug for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publish")
    }
}

/// Shared handle to a store.
pub type SharedStore = Arc<dyn Store>;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The admin token stored in `<data>/admin.token`, created (mode 0600) with
/// 32 random bytes on first use. Returns the token, its path and whether it
/// was created now.
pub fn admin_token(
    data_dir: &std::path::Path,
) -> Result<(String, std::path::PathBuf, bool), StoreError> {
    secret_file(data_dir, "admin.token")
}

/// The key that signs upload URLs, `<data>/signing.key` (created like the admin token).
pub fn signing_key(data_dir: &std::path::Path) -> Result<String, StoreError> {
    secret_file(data_dir, "signing.key").map(|(k, _, _)| k)
}

/// Read the file of named tokens (`name:token` per line; `#` comments).
pub fn read_token_file(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, token) = line
            .split_once(':')
            .ok_or_else(|| format!("{}:{}: expected name:token", path.display(), n + 1))?;
        let (name, token) = (name.trim(), token.trim());
        if name.is_empty() || token.len() < 16 {
            return Err(format!(
                "{}:{}: a name and a token of at least 16 characters are required",
                path.display(),
                n + 1
            ));
        }
        out.push((name.to_string(), token.to_string()));
    }
    Ok(out)
}

/// A random secret kept in `<data>/<name>` (mode 0600), created on first use.
fn secret_file(
    data_dir: &std::path::Path,
    name: &str,
) -> Result<(String, std::path::PathBuf, bool), StoreError> {
    use std::io::Write;
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_string(), path, false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Io(format!("no randomness: {e}")))?;
    let token = hex::encode(raw);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok((token, path, true))
}
