//! The single-node store: blob files ([`BlobDir`]) plus a redb index
//! (`<data>/index.redb`), crash-safe (copy-on-write B-trees, fsync on commit).
//!
//! Tables: `identities` (primary hash → record), `aliases` (hash → primary),
//! `manifests` (master hash → manifest), `master_refs` (master → identities
//! bound to it), `blob_refs` (rung blob → references), `events` (outbox, id →
//! event), `meta` (counters). A change and its event commit together.
//!
//! Writers are serialized by one lock that also covers garbage collection, so a
//! blob can never be deleted between an upload's durability check and the
//! commit that references it. Reads take no lock.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

mod backup;

use super::blobs::BlobDir;
use super::{
    now_ms, AvatarRef, Change, ChangeEvent, Committed, IdentityRecord, Manifest, NewMaster, Store,
    StoreError, StoreStats,
};
use crate::model::{ContentHash, IdentityHash};

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
}

/// Files + redb; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl EmbeddedStore {
    /// Open (creating) the store under `root`.
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
        }
        tx.commit().map_err(idx)?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                blobs,
                write_lock: Mutex::new(()),
                pins: Default::default(),
            }),
        })
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

    fn commit_blocking(
        &self,
        master: Option<NewMaster>,
        change: Change,
    ) -> Result<Committed, StoreError> {
        let inner = &self.inner;
        // Durable blobs first, outside the lock (idempotent, content-addressed).
        if let Some(m) = &master {
            for bytes in &m.rungs {
                inner.blobs.put(bytes)?;
            }
        }
        let _guard = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock: a concurrent GC may have removed a blob we share.
        if let Some(m) = &master {
            for (r, bytes) in m.manifest.rungs.iter().zip(&m.rungs) {
                if !inner.blobs.exists(&r.blob, r.len) {
                    inner.blobs.put(bytes)?;
                }
            }
        }
        let tx = inner.db.begin_write().map_err(idx)?;
        let mut garbage: Vec<Manifest> = Vec::new();
        let committed;
        {
            let mut ids = tx.open_table(IDENTITIES).map_err(idx)?;
            let mut aliases = tx.open_table(ALIASES).map_err(idx)?;
            let mut manifests = tx.open_table(MANIFESTS).map_err(idx)?;
            let mut mrefs = tx.open_table(MASTER_REFS).map_err(idx)?;
            let mut brefs = tx.open_table(BLOB_REFS).map_err(idx)?;
            let mut events = tx.open_table(EVENTS).map_err(idx)?;
            let mut meta = tx.open_table(META).map_err(idx)?;

            if let Some(m) = &master {
                let key = m.manifest.hash.0;
                if manifests.get(key.as_slice()).map_err(idx)?.is_none() {
                    manifests
                        .insert(key.as_slice(), json(&m.manifest).as_slice())
                        .map_err(idx)?;
                }
            }

            // Find the existing record through any alias.
            let lookup_aliases: Vec<IdentityHash> = match &change {
                Change::Bind { aliases, .. } => aliases.clone(),
                Change::Unbind { alias } | Change::SetRating { alias, .. } => vec![*alias],
            };
            let mut existing: Option<IdentityRecord> = None;
            for a in &lookup_aliases {
                let primary = aliases
                    .get(a.to_hex().as_str())
                    .map_err(idx)?
                    .map(|p| p.value().to_string());
                if let Some(p) = primary {
                    if let Some(v) = ids.get(p.as_str()).map_err(idx)? {
                        existing = Some(unjson(v.value())?);
                        break;
                    }
                }
            }

            let (new_avatar, new_aliases) = match &change {
                Change::Bind {
                    aliases: want,
                    avatar,
                } => {
                    if manifests
                        .get(avatar.hash.0.as_slice())
                        .map_err(idx)?
                        .is_none()
                    {
                        return Err(StoreError::Index(format!(
                            "master {} is not stored",
                            avatar.hash
                        )));
                    }
                    let mut all = existing
                        .as_ref()
                        .map(|r| r.aliases.clone())
                        .unwrap_or_default();
                    for a in want {
                        if !all.contains(a) {
                            all.push(*a);
                        }
                    }
                    (Some(avatar.clone()), all)
                }
                Change::Unbind { .. } => match &existing {
                    Some(r) if r.avatar.is_some() => (None, r.aliases.clone()),
                    _ => return Err(StoreError::NotFound),
                },
                Change::SetRating { rating, .. } => match &existing {
                    Some(IdentityRecord {
                        avatar: Some(a),
                        aliases: all,
                        ..
                    }) => (
                        Some(AvatarRef {
                            hash: a.hash,
                            rating: *rating,
                        }),
                        all.clone(),
                    ),
                    _ => return Err(StoreError::NotFound),
                },
            };

            if let Some(prev) = &existing {
                if prev.avatar == new_avatar && prev.aliases == new_aliases {
                    // Identical re-upload: nothing changes, no event.
                    drop((ids, aliases, manifests, mrefs, brefs, events, meta));
                    tx.abort().map_err(idx)?;
                    return Ok(Committed {
                        record: prev.clone(),
                        event: None,
                    });
                }
            }

            let prev_version = existing.as_ref().map_or(0, |r| r.version);
            let prev_ms = existing.as_ref().map_or(0, |r| r.updated_ms);
            let record = IdentityRecord {
                aliases: new_aliases,
                avatar: new_avatar,
                version: prev_version + 1,
                updated_ms: now_ms().max(prev_ms + 1),
            };

            // Reference counts: masters by identities, blobs by bound masters.
            let old_hash = existing
                .as_ref()
                .and_then(|r| r.avatar.as_ref())
                .map(|a| a.hash);
            let new_hash = record.avatar.as_ref().map(|a| a.hash);
            if old_hash != new_hash {
                if let Some(h) = new_hash {
                    let n = mrefs
                        .get(h.0.as_slice())
                        .map_err(idx)?
                        .map_or(0, |v| v.value());
                    mrefs.insert(h.0.as_slice(), n + 1).map_err(idx)?;
                    let m: Manifest = unjson(
                        manifests
                            .get(h.0.as_slice())
                            .map_err(idx)?
                            .expect("checked above")
                            .value(),
                    )?;
                    for r in &m.rungs {
                        let n = brefs
                            .get(r.blob.0.as_slice())
                            .map_err(idx)?
                            .map_or(0, |v| v.value());
                        brefs.insert(r.blob.0.as_slice(), n + 1).map_err(idx)?;
                    }
                }
                if let Some(h) = old_hash {
                    let n = mrefs
                        .get(h.0.as_slice())
                        .map_err(idx)?
                        .map_or(0, |v| v.value());
                    let m: Option<Manifest> = match manifests.get(h.0.as_slice()).map_err(idx)? {
                        Some(v) => Some(unjson(v.value())?),
                        None => None,
                    };
                    if n <= 1 {
                        mrefs.remove(h.0.as_slice()).map_err(idx)?;
                        manifests.remove(h.0.as_slice()).map_err(idx)?;
                    } else {
                        mrefs.insert(h.0.as_slice(), n - 1).map_err(idx)?;
                    }
                    if let Some(m) = m {
                        let mut dead = Vec::new();
                        for r in &m.rungs {
                            let n = brefs
                                .get(r.blob.0.as_slice())
                                .map_err(idx)?
                                .map_or(0, |v| v.value());
                            if n <= 1 {
                                brefs.remove(r.blob.0.as_slice()).map_err(idx)?;
                                dead.push(r.clone());
                            } else {
                                brefs.insert(r.blob.0.as_slice(), n - 1).map_err(idx)?;
                            }
                        }
                        if !dead.is_empty() {
                            garbage.push(Manifest { rungs: dead, ..m });
                        }
                    }
                }
            }

            let primary = record.primary().to_hex();
            ids.insert(primary.as_str(), json(&record).as_slice())
                .map_err(idx)?;
            for a in &record.aliases {
                aliases
                    .insert(a.to_hex().as_str(), primary.as_str())
                    .map_err(idx)?;
            }

            let id = meta
                .get("next_event")
                .map_err(idx)?
                .map_or(1, |v| v.value());
            meta.insert("next_event", id + 1).map_err(idx)?;
            let event = ChangeEvent {
                id,
                key: record.primary(),
                aliases: record.aliases.clone(),
                hash: new_hash,
                previous: old_hash.filter(|h| Some(*h) != new_hash),
                version: record.version,
                at: record.updated_ms,
            };
            events.insert(id, json(&event).as_slice()).map_err(idx)?;
            if id > EVENT_RETENTION {
                // Never prune what a delivery target has not acknowledged yet.
                let mut cutoff = id - EVENT_RETENTION;
                for row in meta.range(CURSOR_PREFIX..).map_err(idx)? {
                    let (k, v) = row.map_err(idx)?;
                    if !k.value().starts_with(CURSOR_PREFIX) {
                        break;
                    }
                    cutoff = cutoff.min(v.value() + 1);
                }
                // Remove at most a few per commit: pruning stays incremental.
                let old: Vec<u64> = events
                    .range(..cutoff)
                    .map_err(idx)?
                    .take(8)
                    .map(|r| r.map(|(k, _)| k.value()))
                    .collect::<Result<_, _>>()
                    .map_err(idx)?;
                for k in old {
                    events.remove(k).map_err(idx)?;
                }
            }
            committed = Committed {
                record,
                event: Some(event),
            };
        }
        tx.commit().map_err(idx)?;
        // After the commit, still under the lock: unreferenced blobs go. A crash
        // here only leaves orphan files, never a dangling reference.
        for m in garbage {
            for r in &m.rungs {
                if let Err(e) = inner.pins.collect(&inner.blobs, &r.blob) {
                    tracing::warn!(blob = %r.blob, error = %e, "could not remove unreferenced blob");
                }
            }
        }
        Ok(committed)
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

    fn blob_blocking(&self, hash: &ContentHash) -> Option<Result<Option<Bytes>, StoreError>> {
        Some(self.inner.blobs.get(hash).map_err(StoreError::from))
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

    fn stats(&self) -> StoreStats {
        let b = &self.inner.blobs;
        StoreStats {
            corrupt_blobs: b.corrupt.load(Ordering::Relaxed),
            blobs_written: b.written.load(Ordering::Relaxed),
            blobs_deleted: b.deleted.load(Ordering::Relaxed),
        }
    }
}

/// Number of rows in the outbox (for metrics and tests).
pub fn event_count(store: &EmbeddedStore) -> Result<u64, StoreError> {
    let rtx = store.inner.db.begin_read().map_err(idx)?;
    rtx.open_table(EVENTS).map_err(idx)?.len().map_err(idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdentityKeys, Rating};
    use crate::store::RungRef;

    fn master(seed: &[u8]) -> NewMaster {
        let rung0 = Bytes::from([b"rung0:", seed].concat());
        let rung1 = Bytes::from([b"rung1:", seed].concat());
        let manifest = Manifest {
            hash: ContentHash::of(&rung0),
            has_alpha: false,
            source_format: "png".into(),
            rungs: vec![
                RungRef {
                    side: 128,
                    blob: ContentHash::of(&rung0),
                    len: rung0.len() as u64,
                },
                RungRef {
                    side: 64,
                    blob: ContentHash::of(&rung1),
                    len: rung1.len() as u64,
                },
            ],
        };
        NewMaster {
            manifest,
            rungs: vec![rung0, rung1],
        }
    }

    fn bind(keys: &IdentityKeys, m: &NewMaster) -> Change {
        Change::Bind {
            aliases: keys.aliases.clone(),
            avatar: AvatarRef {
                hash: m.manifest.hash,
                rating: Rating::G,
            },
        }
    }

    #[tokio::test]
    async fn bind_rebind_unbind_keeps_versions_events_and_refcounts() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let alice = IdentityKeys::parse("alice@example.org").unwrap();
        let (a, b) = (master(b"a"), master(b"b"));

        let c1 = s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
        assert_eq!(c1.record.version, 1);
        assert_eq!(c1.event.as_ref().unwrap().id, 1);
        // Both aliases resolve to the same record.
        for alias in &alice.aliases {
            let r = s.identity(alias).await.unwrap().unwrap();
            assert_eq!(r.avatar.as_ref().unwrap().hash, a.manifest.hash);
        }
        // Identical re-upload: no new version, no event.
        let again = s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
        assert!(again.event.is_none());
        assert_eq!(again.record.version, 1);

        // Replace: old master's blobs are collected, new ones present.
        let c2 = s.commit(Some(b.clone()), bind(&alice, &b)).await.unwrap();
        assert_eq!(c2.record.version, 2);
        assert!(c2.record.updated_ms > c1.record.updated_ms);
        assert!(s.blob(&a.manifest.hash).await.unwrap().is_none());
        assert!(s.manifest(&a.manifest.hash).await.unwrap().is_none());
        assert!(s.blob(&b.manifest.hash).await.unwrap().is_some());

        // Unbind leaves a tombstone with a higher version.
        let c3 = s
            .commit(
                None,
                Change::Unbind {
                    alias: alice.aliases[1],
                },
            )
            .await
            .unwrap();
        assert_eq!(c3.record.version, 3);
        assert!(c3.record.avatar.is_none());
        assert_eq!(c3.event.as_ref().unwrap().hash, None);
        assert!(s.blob(&b.manifest.hash).await.unwrap().is_none());
        assert!(matches!(
            s.commit(
                None,
                Change::Unbind {
                    alias: alice.aliases[0]
                }
            )
            .await,
            Err(StoreError::NotFound)
        ));
        // Rebinding continues the version sequence.
        let c4 = s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
        assert_eq!(c4.record.version, 4);

        let evs = s.events_after(0, 100).await.unwrap();
        assert_eq!(
            evs.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(s.events_after(2, 100).await.unwrap().len(), 2);
        assert!(s.verify().unwrap().is_empty());
    }

    #[tokio::test]
    async fn shared_masters_survive_until_the_last_reference() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let (alice, bob) = (
            IdentityKeys::parse("alice@example.org").unwrap(),
            IdentityKeys::parse("bob@example.org").unwrap(),
        );
        let (a, b) = (master(b"a"), master(b"b"));
        s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
        s.commit(Some(a.clone()), bind(&bob, &a)).await.unwrap();
        s.commit(
            None,
            Change::Unbind {
                alias: alice.aliases[0],
            },
        )
        .await
        .unwrap();
        assert!(
            s.blob(&a.manifest.hash).await.unwrap().is_some(),
            "bob still uses it"
        );
        s.commit(Some(b.clone()), bind(&bob, &b)).await.unwrap();
        assert!(s.blob(&a.manifest.hash).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn md5_only_identity_merges_with_a_later_email_upload() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let email = IdentityKeys::parse("carol@example.org").unwrap();
        let md5_only = IdentityKeys::parse(&email.aliases[0].to_hex()).unwrap();
        let (a, b) = (master(b"a"), master(b"b"));
        s.commit(Some(a.clone()), bind(&md5_only, &a))
            .await
            .unwrap();
        let c = s.commit(Some(b.clone()), bind(&email, &b)).await.unwrap();
        assert_eq!(c.record.version, 2);
        assert_eq!(c.record.aliases, email.aliases);
        let via_sha = s.identity(&email.aliases[1]).await.unwrap().unwrap();
        assert_eq!(via_sha.avatar.unwrap().hash, b.manifest.hash);
    }

    #[tokio::test]
    async fn reopen_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let alice = IdentityKeys::parse("alice@example.org").unwrap();
        let a = master(b"a");
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            s.commit(Some(a.clone()), bind(&alice, &a)).await.unwrap();
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let r = s.identity(&alice.aliases[0]).await.unwrap().unwrap();
        assert_eq!(r.version, 1);
        assert_eq!(s.blob(&a.manifest.hash).await.unwrap().unwrap(), a.rungs[0]);
        let c = s
            .commit(
                None,
                Change::Unbind {
                    alias: alice.aliases[0],
                },
            )
            .await
            .unwrap();
        assert_eq!(c.event.unwrap().id, 2, "event ids continue after reopen");
    }
}
