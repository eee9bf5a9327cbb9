//! The single-node store: blob files ([`BlobDir`]) plus a redb index
//! (`<data>/index.redb`), crash-safe (copy-on-write B-trees, fsync on commit).
//!
//! Tables: `identities` (primary hash → record), `aliases` (hash → primary),
//! `manifests` (master hash → manifest), `master_refs` (master → identities
//! bound to it), `blob_refs` (rung blob → references), `events` (outbox, id →
//! event), `meta` (counters), `fallbacks` (issue 17: identity hash → what the
//! upstreams said; `fallback.rs`). A change and its event commit together.
//!
//! Writers are serialized by one lock that also covers garbage collection, so a
//! blob can never be deleted between an upload's durability check and the
//! commit that references it. Reads take no lock.

mod backup;
mod commit;
mod fallback;
mod moderation;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::blobs::BlobDir;
use super::{
    Change, ChangeEvent, Committed, IdentityRecord, Manifest, NewMaster, Publish, Store,
    StoreError, StoreStats,
};
use crate::model::{ContentHash, IdentityHash};
use crate::store::moderation::{AuditEntry, Takedown, DEFAULT_AUDIT_RETENTION};

const IDENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("identities");
const ALIASES: TableDefinition<&str, &str> = TableDefinition::new("aliases");
const MANIFESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("manifests");
const MASTER_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("master_refs");
const BLOB_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("blob_refs");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// How many outbox events are kept for SSE resume (older ones are pruned).
pub const EVENT_RETENTION: u64 = 100_000;
/// Prefix of delivery cursors in the `meta` table.
const CURSOR_PREFIX: &str = "cursor:";

fn idx<E: std::fmt::Display>(e: E) -> StoreError {
    let text = e.to_string();
    // redb reports I/O failures (disk full, read-only) through its own types.
    let lower = text.to_ascii_lowercase();
    if lower.contains("no space left") || lower.contains("quota") {
        StoreError::Full
    } else if lower.contains("read-only") || lower.contains("permission denied") {
        StoreError::Unavailable(text)
    } else {
        StoreError::Index(text)
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records serialize")
}

fn unjson<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Index(format!("corrupt record: {e}")))
}

struct Inner {
    db: Database,
    blobs: BlobDir,
    write_lock: Mutex<()>,
    /// Deferred blob deletion while a backup runs (see `backup.rs`).
    pins: backup::GcPins,
    /// Issue 16: taken-down masters (the `takedowns` table, in memory).
    blocked: RwLock<std::collections::HashSet<ContentHash>>,
    /// Told of masters garbage-collected ([`Store::on_content_gone`]).
    gone: std::sync::OnceLock<super::ContentGone>,
}

/// Files + redb; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    publish: Publish,
    /// How long audit entries are kept (issue 16).
    audit_retention: std::time::Duration,
}

impl EmbeddedStore {
    /// Open (creating) the store under `root`. It announces its events nowhere
    /// until given a publisher ([`EmbeddedStore::publishing`]).
    pub fn open(root: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(root)?;
        let blobs = BlobDir::open(root)?;
        let db = Database::create(root.join("index.redb")).map_err(idx)?;
        let tx = db.begin_write().map_err(idx)?;
        {
            tx.open_table(IDENTITIES).map_err(idx)?;
            tx.open_table(ALIASES).map_err(idx)?;
            tx.open_table(MANIFESTS).map_err(idx)?;
            tx.open_table(MASTER_REFS).map_err(idx)?;
            tx.open_table(BLOB_REFS).map_err(idx)?;
            tx.open_table(EVENTS).map_err(idx)?;
            tx.open_table(META).map_err(idx)?;
            tx.open_table(moderation::TAKEDOWNS).map_err(idx)?;
            tx.open_table(moderation::AUDIT).map_err(idx)?;
            tx.open_table(fallback::FALLBACKS).map_err(idx)?;
        }
        tx.commit().map_err(idx)?;
        let blocked = RwLock::new(moderation::load_blocked(&db)?);
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                blobs,
                write_lock: Mutex::new(()),
                pins: Default::default(),
                blocked,
                gone: Default::default(),
            }),
            publish: Publish::nowhere(),
            audit_retention: DEFAULT_AUDIT_RETENTION,
        })
    }

    /// The same store, keeping audit entries for `retention` (issue 16).
    pub fn audit_retention(self, retention: std::time::Duration) -> EmbeddedStore {
        EmbeddedStore {
            audit_retention: retention,
            ..self
        }
    }

    /// Start removing blob files a crash left unreferenced (see
    /// `sweep_orphans`), on a background thread.
    pub fn sweep_orphans_in_background(&self) {
        let this = self.clone();
        std::thread::spawn(move || match this.sweep_orphans() {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "unreferenced blob files removed"),
            Err(e) => tracing::warn!(error = %e, "sweeping unreferenced blob files"),
        });
    }

    /// The same store, announcing every committed event through `publish`.
    pub fn publishing(self, publish: Publish) -> EmbeddedStore {
        EmbeddedStore { publish, ..self }
    }

    /// Where a blob lives on disk (for tests and operators).
    pub fn blob_path(&self, hash: &ContentHash) -> std::path::PathBuf {
        self.inner.blobs.path_of(hash)
    }

    /// Check every index entry: each bound identity's master has a manifest and
    /// every rung blob is present and intact. Returns the problems found.
    pub fn verify(&self) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        let rtx = self.inner.db.begin_read().map_err(idx)?;
        let ids = rtx.open_table(IDENTITIES).map_err(idx)?;
        let manifests = rtx.open_table(MANIFESTS).map_err(idx)?;
        for row in ids.iter().map_err(idx)? {
            let (k, v) = row.map_err(idx)?;
            let rec: IdentityRecord = unjson(v.value())?;
            let Some(av) = rec.avatar else { continue };
            let Some(m) = manifests.get(av.hash.0.as_slice()).map_err(idx)? else {
                problems.push(format!("{}: manifest {} missing", k.value(), av.hash));
                continue;
            };
            let m: Manifest = unjson(m.value())?;
            for r in &m.rungs {
                if self.inner.blobs.get(&r.blob)?.is_none() {
                    problems.push(format!(
                        "{}: rung {} ({} px) missing or corrupt",
                        k.value(),
                        r.blob,
                        r.side
                    ));
                }
            }
        }
        Ok(problems)
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn commit(
        &self,
        master: Option<NewMaster>,
        change: Change,
    ) -> Result<Committed, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.commit_blocking(master, change))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }

    async fn identity(&self, alias: &IdentityHash) -> Result<Option<IdentityRecord>, StoreError> {
        // A read is a couple of B-tree lookups in cached pages: fine on the reactor.
        let rtx = self.inner.db.begin_read().map_err(idx)?;
        let aliases = rtx.open_table(ALIASES).map_err(idx)?;
        let Some(primary) = aliases.get(alias.to_hex().as_str()).map_err(idx)? else {
            return Ok(None);
        };
        let ids = rtx.open_table(IDENTITIES).map_err(idx)?;
        match ids.get(primary.value()).map_err(idx)? {
            Some(v) => Ok(Some(unjson(v.value())?)),
            None => Ok(None),
        }
    }

    async fn manifest(&self, hash: &ContentHash) -> Result<Option<Manifest>, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(idx)?;
        let t = rtx.open_table(MANIFESTS).map_err(idx)?;
        match t.get(hash.0.as_slice()).map_err(idx)? {
            Some(v) => Ok(Some(unjson(v.value())?)),
            None => Ok(None),
        }
    }

    async fn blob(&self, hash: &ContentHash) -> Result<Option<Bytes>, StoreError> {
        let this = self.clone();
        let hash = *hash;
        tokio::task::spawn_blocking(move || this.inner.blobs.get(&hash))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
            .map_err(StoreError::from)
    }

    fn blobs_are_local(&self) -> bool {
        true
    }

    fn on_content_gone(&self, f: super::ContentGone) {
        let _ = self.inner.gone.set(f);
    }

    fn with_blob_blocking(
        &self,
        hash: &ContentHash,
        f: &mut dyn FnMut(&[u8]),
    ) -> Option<Result<bool, StoreError>> {
        let read = self.inner.blobs.with(hash, f);
        Some(read.map(|r| r.is_some()).map_err(StoreError::from))
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(idx)?;
        let t = rtx.open_table(EVENTS).map_err(idx)?;
        let mut out = Vec::new();
        for row in t.range(after.saturating_add(1)..).map_err(idx)?.take(limit) {
            let (_, v) = row.map_err(idx)?;
            out.push(unjson(v.value())?);
        }
        Ok(out)
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(idx)?;
        let t = rtx.open_table(META).map_err(idx)?;
        Ok(t.get("next_event").map_err(idx)?.map_or(1, |v| v.value()) - 1)
    }

    async fn cursor(&self, target: &str) -> Result<Option<u64>, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(idx)?;
        let t = rtx.open_table(META).map_err(idx)?;
        let key = format!("{CURSOR_PREFIX}{target}");
        Ok(t.get(key.as_str()).map_err(idx)?.map(|v| v.value()))
    }

    async fn set_cursor(&self, target: &str, id: u64) -> Result<(), StoreError> {
        let this = self.clone();
        let key = format!("{CURSOR_PREFIX}{target}");
        tokio::task::spawn_blocking(move || {
            let _guard = this
                .inner
                .write_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let tx = this.inner.db.begin_write().map_err(idx)?;
            {
                let mut t = tx.open_table(META).map_err(idx)?;
                let current = t.get(key.as_str()).map_err(idx)?.map(|v| v.value());
                if current.is_none_or(|c| c < id) {
                    t.insert(key.as_str(), id).map_err(idx)?;
                }
            }
            tx.commit().map_err(idx)
        })
        .await
        .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }

    fn snapshot(&self) -> Result<Box<dyn super::backup::BackupWriter>, StoreError> {
        self.snapshot_blocking()
    }

    async fn fallback(
        &self,
        hash: &IdentityHash,
    ) -> Result<Option<super::FallbackEntry>, StoreError> {
        self.fallback_read(hash)
    }

    async fn put_fallback(
        &self,
        hash: &IdentityHash,
        entry: super::FallbackEntry,
        master: Option<NewMaster>,
    ) -> Result<(), StoreError> {
        let this = self.clone();
        let hash = *hash;
        tokio::task::spawn_blocking(move || this.put_fallback_blocking(&hash, entry, master))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }

    fn stats(&self) -> StoreStats {
        let b = &self.inner.blobs;
        StoreStats {
            corrupt_blobs: b.corrupt.load(Ordering::Relaxed),
            blobs_written: b.written.load(Ordering::Relaxed),
            blobs_deleted: b.deleted.load(Ordering::Relaxed),
        }
    }

    fn blocked(&self, hash: &ContentHash) -> bool {
        self.is_blocked(hash)
    }

    async fn put_takedown(&self, t: Takedown) -> Result<Option<Takedown>, StoreError> {
        self.put_takedown_now(t).await
    }

    async fn remove_takedown(&self, hash: &ContentHash) -> Result<Option<Takedown>, StoreError> {
        self.remove_takedown_now(*hash).await
    }

    async fn takedowns(
        &self,
        after: Option<ContentHash>,
        limit: usize,
    ) -> Result<Vec<Takedown>, StoreError> {
        self.takedowns_now(after, limit)
    }

    async fn bound_to(&self, hash: &ContentHash) -> Result<Vec<IdentityHash>, StoreError> {
        self.bound_to_now(*hash).await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        self.append_audit_now(entry).await
    }

    async fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_after_now(after, limit)
    }
}

/// Number of rows in the outbox (for metrics and tests).
pub fn event_count(store: &EmbeddedStore) -> Result<u64, StoreError> {
    let rtx = store.inner.db.begin_read().map_err(idx)?;
    rtx.open_table(EVENTS).map_err(idx)?.len().map_err(idx)
}

#[cfg(test)]
mod tests;
