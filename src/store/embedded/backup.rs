//! Online backup of the embedded store: a consistent snapshot of the index
//! plus the blobs it references, written as a tar stream while the server
//! keeps serving and accepting uploads.
//!
//! Consistency: a redb read transaction is a frozen view of the index. The
//! snapshot opens one under the writer lock and, in the same critical
//! section, *pins* garbage collection: from then on a blob that a later
//! commit stops referencing is not deleted but deferred, so every blob the
//! frozen view names stays on disk until the snapshot is written. Blobs are
//! immutable and content-addressed, so copying them later than the index is
//! exact. When the last pin goes, deferred blobs are deleted under the writer
//! lock unless a commit in between referenced them again.
//!
//! The index is copied table by table into a fresh redb file (a logical copy:
//! compact, and independent of pages being rewritten meanwhile), streamed,
//! and removed. The stream layout is the data directory's own (see
//! [`crate::store::backup`]), ending with the `BACKUP.json` marker.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::{idx, unjson, EmbeddedStore, ALIASES, BLOB_REFS, EVENTS, IDENTITIES, MANIFESTS};
use super::{MASTER_REFS, META};
use crate::model::ContentHash;
use crate::store::backup::{self, BackupInfo, BackupWriter};
use crate::store::blobs::BlobDir;
use crate::store::{IdentityRecord, Manifest, StoreError};

/// Garbage collection of blobs, deferred while a backup is running.
#[derive(Debug, Default)]
pub(super) struct GcPins {
    state: Mutex<PinState>,
}

#[derive(Debug, Default)]
struct PinState {
    pins: usize,
    deferred: Vec<ContentHash>,
}

impl GcPins {
    fn state(&self) -> MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remove a blob no index entry references any more — or, while a
    /// snapshot is pinned, remember it for later. Called under the writer lock.
    pub(super) fn collect(&self, blobs: &BlobDir, blob: &ContentHash) -> io::Result<()> {
        let mut s = self.state();
        if s.pins > 0 {
            s.deferred.push(*blob);
            return Ok(());
        }
        drop(s);
        blobs.remove(blob)
    }

    /// Blobs waiting for the running backups to end (tests).
    #[cfg(test)]
    pub(super) fn deferred(&self) -> usize {
        self.state().deferred.len()
    }
}

/// Source of unique temp-file names for index copies.
static COPIES: AtomicU64 = AtomicU64::new(0);

/// A pinned, consistent view of the store, written out by [`BackupWriter::write_to`].
struct Snapshot {
    store: EmbeddedStore,
    rtx: Option<ReadTransaction>,
}

impl EmbeddedStore {
    /// Take a consistent snapshot (cheap: pins GC and opens a read transaction).
    pub(super) fn snapshot_blocking(&self) -> Result<Box<dyn BackupWriter>, StoreError> {
        let inner = &self.inner;
        let _writer = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let rtx = inner.db.begin_read().map_err(idx)?;
        inner.pins.state().pins += 1;
        Ok(Box::new(Snapshot {
            store: self.clone(),
            rtx: Some(rtx),
        }))
    }

    /// Unpin: when no snapshot remains, delete the deferred blobs nothing references.
    fn release_pin(&self) {
        let inner = &self.inner;
        let _writer = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let deferred = {
            let mut s = inner.pins.state();
            s.pins -= 1;
            if s.pins > 0 {
                return;
            }
            std::mem::take(&mut s.deferred)
        };
        if deferred.is_empty() {
            return;
        }
        let still_used = |h: &ContentHash| -> Result<bool, StoreError> {
            let rtx = inner.db.begin_read().map_err(idx)?;
            let refs = rtx.open_table(BLOB_REFS).map_err(idx)?;
            Ok(refs.get(h.0.as_slice()).map_err(idx)?.is_some())
        };
        for h in deferred {
            match still_used(&h) {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = inner.blobs.remove(&h) {
                        tracing::warn!(blob = %h, error = %e, "could not remove unreferenced blob");
                    }
                }
                // Keep the file: an orphan costs space, a wrong delete costs data.
                Err(e) => tracing::warn!(blob = %h, error = %e, "kept a deferred blob"),
            }
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        drop(self.rtx.take());
        self.store.release_pin();
    }
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let src = from.open_table(def).map_err(idx)?;
    let mut dst = to.open_table(def).map_err(idx)?;
    let mut n = 0;
    for row in src.iter().map_err(idx)? {
        let (k, v) = row.map_err(idx)?;
        dst.insert(k.value(), v.value()).map_err(idx)?;
        n += 1;
    }
    Ok(n)
}

impl Snapshot {
    /// Copy the frozen index into a new redb file at `path`; returns the
    /// number of identities with an avatar and the blobs they need.
    fn copy_index(&self, path: &std::path::Path) -> Result<(u64, Vec<ContentHash>), StoreError> {
        let rtx = self.rtx.as_ref().expect("snapshot is open");
        let db = redb::Database::create(path).map_err(idx)?;
        let wtx = db.begin_write().map_err(idx)?;
        copy_table(rtx, &wtx, IDENTITIES)?;
        copy_table(rtx, &wtx, ALIASES)?;
        copy_table(rtx, &wtx, MANIFESTS)?;
        copy_table(rtx, &wtx, MASTER_REFS)?;
        copy_table(rtx, &wtx, BLOB_REFS)?;
        copy_table(rtx, &wtx, EVENTS)?;
        copy_table(rtx, &wtx, META)?;
        copy_table(rtx, &wtx, super::moderation::TAKEDOWNS)?;
        copy_table(rtx, &wtx, super::moderation::AUDIT)?;
        copy_table(rtx, &wtx, super::fallback::FALLBACKS)?;
        wtx.commit().map_err(idx)?;
        drop(db);

        // What is served: every bound identity's master, every rung of it.
        let ids = rtx.open_table(IDENTITIES).map_err(idx)?;
        let manifests = rtx.open_table(MANIFESTS).map_err(idx)?;
        let mut masters = std::collections::BTreeSet::new();
        let mut bound = 0;
        for row in ids.iter().map_err(idx)? {
            let (_, v) = row.map_err(idx)?;
            let rec: IdentityRecord = unjson(v.value())?;
            if let Some(av) = rec.avatar {
                bound += 1;
                masters.insert(av.hash);
            }
        }
        // Issue 17: fallback entries hold their masters too (reference counts).
        let fallbacks = rtx.open_table(super::fallback::FALLBACKS).map_err(idx)?;
        for row in fallbacks.iter().map_err(idx)? {
            let (_, v) = row.map_err(idx)?;
            let entry: crate::store::FallbackEntry = unjson(v.value())?;
            masters.extend(entry.master);
        }
        let mut blobs = std::collections::BTreeSet::new();
        for m in masters {
            if let Some(v) = manifests.get(m.0.as_slice()).map_err(idx)? {
                let m: Manifest = unjson(v.value())?;
                blobs.extend(m.rungs.iter().map(|r| r.blob));
            }
        }
        Ok((bound, blobs.into_iter().collect()))
    }
}

impl BackupWriter for Snapshot {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> Result<BackupInfo, StoreError> {
        let blobs_dir = &self.store.inner.blobs;
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        let copy = blobs_dir
            .tmp_dir()
            .join(format!("backup-{}-{n}.redb", std::process::id()));
        let result = (|| {
            let (identities, blobs) = self.copy_index(&copy)?;
            let mut tar = backup::Packer::new(out);
            tar.file(backup::INDEX, &std::fs::read(&copy)?)?;
            let mut info = BackupInfo::new(identities);
            for h in blobs {
                match blobs_dir.get(&h)? {
                    Some(bytes) => {
                        tar.file(&backup::blob_path(&h), &bytes)?;
                        info.blobs += 1;
                        info.blob_bytes += bytes.len() as u64;
                    }
                    None => info.missing.push(h.to_hex()),
                }
            }
            for name in backup::SECRETS {
                match std::fs::read(blobs_dir.root().join(name)) {
                    Ok(bytes) => tar.file(name, &bytes)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            tar.finish(&info)?;
            Ok(info)
        })();
        let _ = std::fs::remove_file(&copy);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdentityKeys, Rating};
    use crate::store::{AvatarRef, Change, NewMaster, RungRef, Store};
    use bytes::Bytes;

    fn master(seed: &[u8]) -> NewMaster {
        let rung = Bytes::from([b"rung:", seed].concat());
        let hash = ContentHash::of(&rung);
        NewMaster {
            manifest: Manifest {
                hash,
                has_alpha: false,
                source_format: "png".into(),
                compression: None,
                animation: None,
                salted: false,
                rungs: vec![RungRef {
                    side: 64,
                    blob: hash,
                    len: rung.len() as u64,
                }],
            },
            rungs: vec![rung],
        }
    }

    fn bind(email: &str, m: &NewMaster) -> Change {
        Change::Bind {
            aliases: IdentityKeys::parse(email).unwrap().aliases,
            avatar: AvatarRef {
                hash: m.manifest.hash,
                rating: Rating::G,
                blocked: false,
                source: None,
            },
        }
    }

    #[tokio::test]
    async fn a_snapshot_keeps_what_it_saw_even_when_it_is_replaced_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let (a, b) = (master(b"a"), master(b"b"));
        s.commit(Some(a.clone()), bind("ada@example.org", &a))
            .await
            .unwrap();
        let snap = s.snapshot_blocking().unwrap();
        // Replace a by b while the snapshot is open: a's blob must survive.
        s.commit(Some(b.clone()), bind("ada@example.org", &b))
            .await
            .unwrap();
        assert_eq!(s.inner.pins.deferred(), 1);
        assert!(s.blob(&a.manifest.hash).await.unwrap().is_some());

        let mut tar = Vec::new();
        let info = snap.write_to(&mut tar).unwrap();
        assert_eq!((info.identities, info.blobs), (1, 1));
        assert!(info.missing.is_empty());
        // The pin is gone: the deferred blob was collected.
        assert_eq!(s.inner.pins.deferred(), 0);
        assert!(s.blob(&a.manifest.hash).await.unwrap().is_none());
        assert!(s.blob(&b.manifest.hash).await.unwrap().is_some());

        // The backup restores to the state the snapshot saw: ada → a.
        let out = tempfile::tempdir().unwrap();
        let unpacked = crate::store::backup::unpack(&tar[..], &out.path().join("b")).unwrap();
        assert_eq!(unpacked.blobs, 1);
        let data = out.path().join("data");
        crate::store::backup::restore(&out.path().join("b"), &data).unwrap();
        let r = EmbeddedStore::open(&data).unwrap();
        let ada = IdentityKeys::parse("ada@example.org").unwrap();
        let rec = r.identity(&ada.aliases[0]).await.unwrap().unwrap();
        assert_eq!(rec.avatar.unwrap().hash, a.manifest.hash);
        assert_eq!(r.blob(&a.manifest.hash).await.unwrap().unwrap(), a.rungs[0]);
        assert!(r.verify().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_deferred_blob_that_is_referenced_again_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let (a, b) = (master(b"a"), master(b"b"));
        s.commit(Some(a.clone()), bind("ada@example.org", &a))
            .await
            .unwrap();
        let snap = s.snapshot_blocking().unwrap();
        s.commit(Some(b.clone()), bind("ada@example.org", &b))
            .await
            .unwrap();
        // Someone uploads a's bytes again before the backup ends.
        s.commit(Some(a.clone()), bind("bob@example.org", &a))
            .await
            .unwrap();
        drop(snap);
        assert!(s.blob(&a.manifest.hash).await.unwrap().is_some());
        assert!(s.verify().unwrap().is_empty());
    }
}
