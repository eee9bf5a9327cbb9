//! One write to the embedded index: durable blobs, then the commit rule
//! ([`crate::store::change`]) applied in one redb transaction with its
//! reference counts and outbox event, then the event announced and
//! unreferenced blobs removed — all under the writer lock.

use redb::{ReadableTable, Table};

use super::{
    idx, json, unjson, EmbeddedStore, ALIASES, BLOB_REFS, CURSOR_PREFIX, EVENTS, EVENT_RETENTION,
    IDENTITIES, MANIFESTS, MASTER_REFS, META,
};
use crate::model::ContentHash;
use crate::store::blobs::BlobDir;
use crate::store::change::{self, Outcome};
use crate::store::{
    now_ms, Change, Committed, IdentityRecord, Manifest, NewMaster, RungRef, StoreError,
};

impl EmbeddedStore {
    pub(super) fn commit_blocking(
        &self,
        master: Option<NewMaster>,
        change: Change,
    ) -> Result<Committed, StoreError> {
        let inner = &self.inner;
        put_blobs(&inner.blobs, master.as_ref())?;
        let _guard = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Issue 16: taken-down content binds nowhere (takedowns are written
        // under this lock, so none lands between this check and the commit).
        if let Change::Bind { avatar, .. } = &change {
            if self.is_blocked(&avatar.hash) {
                return Err(StoreError::Blocked(avatar.hash));
            }
        }
        reput_missing_blobs(&inner.blobs, master.as_ref())?;
        let tx = inner.db.begin_write().map_err(idx)?;
        let mut garbage: Vec<RungRef> = Vec::new();
        let mut gone: Vec<ContentHash> = Vec::new();
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
            if let Change::Bind { avatar, .. } = &change {
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
            }

            // Every record the change's aliases name, each once, in order.
            let mut current: Vec<IdentityRecord> = Vec::new();
            for a in change::lookup_aliases(&change) {
                let primary = aliases
                    .get(a.to_hex().as_str())
                    .map_err(idx)?
                    .map(|p| p.value().to_string());
                let Some(p) = primary else { continue };
                if current.iter().any(|r| r.primary().to_hex() == p) {
                    continue;
                }
                if let Some(v) = ids.get(p.as_str()).map_err(idx)? {
                    current.push(unjson(v.value())?);
                }
            }

            let t = match change::apply(&current, None, &change, now_ms())? {
                Outcome::Unchanged(record) => {
                    // Identical re-upload: nothing changes, no event.
                    drop((ids, aliases, manifests, mrefs, brefs, events, meta));
                    tx.abort().map_err(idx)?;
                    return Ok(Committed {
                        record,
                        event: None,
                    });
                }
                Outcome::Changed(t) => t,
            };

            // Reference counts: masters by identities, blobs by bound masters
            // (additions first, so a blob two masters share never drops to 0).
            for (h, delta) in &t.refs {
                let (dead, master_gone) =
                    count_refs(&mut manifests, &mut mrefs, &mut brefs, h, *delta)?;
                garbage.extend(dead);
                if master_gone {
                    gone.push(*h);
                }
            }
            for p in &t.absorbed {
                ids.remove(p.to_hex().as_str()).map_err(idx)?;
            }
            let record = &t.record;
            let primary = record.primary().to_hex();
            ids.insert(primary.as_str(), json(record).as_slice())
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
            let event = t.event(id);
            events.insert(id, json(&event).as_slice()).map_err(idx)?;
            prune_events(&mut events, &meta, id)?;
            committed = Committed {
                record: t.record,
                event: Some(event),
            };
        }
        tx.commit().map_err(idx)?;
        // Durable: announce it, still under the lock so events go out in id order.
        if let Some(e) = &committed.event {
            self.publish.publish(e.clone());
        }
        if let Some(f) = inner.gone.get() {
            for h in gone {
                f(h);
            }
        }
        // Unreferenced blobs go. A crash here only leaves orphan files, never
        // a dangling reference.
        for r in garbage {
            if let Err(e) = inner.pins.collect(&inner.blobs, &r.blob) {
                tracing::warn!(blob = %r.blob, error = %e, "could not remove unreferenced blob");
            }
        }
        Ok(committed)
    }
}

/// Add `delta` references to master `h` and to each of its rungs; a master
/// nobody references loses its manifest. Returns the rungs nobody references
/// any more (to delete after the commit), and whether the master went.
pub(super) fn count_refs(
    manifests: &mut Table<&[u8], &[u8]>,
    mrefs: &mut Table<&[u8], u64>,
    brefs: &mut Table<&[u8], u64>,
    h: &ContentHash,
    delta: i64,
) -> Result<(Vec<RungRef>, bool), StoreError> {
    let key = h.0.as_slice();
    let m: Option<Manifest> = match manifests.get(key).map_err(idx)? {
        Some(v) => Some(unjson(v.value())?),
        None => None,
    };
    let n = mrefs.get(key).map_err(idx)?.map_or(0, |v| v.value());
    let n = n.saturating_add_signed(delta);
    if n == 0 {
        mrefs.remove(key).map_err(idx)?;
        manifests.remove(key).map_err(idx)?;
    } else {
        mrefs.insert(key, n).map_err(idx)?;
    }
    let mut dead = Vec::new();
    for r in m.iter().flat_map(|m| &m.rungs) {
        let key = r.blob.0.as_slice();
        let n = brefs.get(key).map_err(idx)?.map_or(0, |v| v.value());
        let n = n.saturating_add_signed(delta);
        if n == 0 {
            brefs.remove(key).map_err(idx)?;
            dead.push(r.clone());
        } else {
            brefs.insert(key, n).map_err(idx)?;
        }
    }
    Ok((dead, n == 0))
}

impl EmbeddedStore {
    /// Remove blob files no bound master lists: what a crash between a
    /// commit and its garbage collection left (run once at open, in the
    /// background). Under the writer lock per directory, like collection
    /// after a commit, so a blob an upload is about to reference is re-put
    /// by that upload's check under the lock. Returns how many went.
    pub(super) fn sweep_orphans(&self) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let root = inner.blobs.root().join("blobs");
        let mut removed = 0;
        for dir in read_dirs(&root)?
            .into_iter()
            .flat_map(|d| read_dirs(&d).unwrap_or_default())
        {
            let names: Vec<ContentHash> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            let _guard = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let rtx = inner.db.begin_read().map_err(idx)?;
            let brefs = rtx.open_table(BLOB_REFS).map_err(idx)?;
            for h in names {
                if brefs.get(h.0.as_slice()).map_err(idx)?.is_none() {
                    inner.pins.collect(&inner.blobs, &h)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The subdirectories of `dir` (none when it is missing).
fn read_dirs(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, StoreError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// Keep the outbox within [`EVENT_RETENTION`] events after event `id`, but
/// never prune what a delivery target has not acknowledged yet.
fn prune_events(
    events: &mut Table<u64, &[u8]>,
    meta: &Table<&str, u64>,
    id: u64,
) -> Result<(), StoreError> {
    if id <= EVENT_RETENTION {
        return Ok(());
    }
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
    Ok(())
}

/// Durable blobs first, outside the write lock (idempotent,
/// content-addressed). Every commit that brings a master calls this, then
/// [`reput_missing_blobs`] under the lock.
pub(super) fn put_blobs(blobs: &BlobDir, master: Option<&NewMaster>) -> Result<(), StoreError> {
    for bytes in master.map(|m| m.rungs.as_slice()).unwrap_or_default() {
        blobs.put(bytes)?;
    }
    Ok(())
}

/// Under the write lock: a concurrent GC may have removed a blob this
/// master shares with content it collected; put those back.
pub(super) fn reput_missing_blobs(
    blobs: &BlobDir,
    master: Option<&NewMaster>,
) -> Result<(), StoreError> {
    if let Some(m) = master {
        for (r, bytes) in m.manifest.rungs.iter().zip(&m.rungs) {
            if !blobs.exists(&r.blob, r.len) {
                blobs.put(bytes)?;
            }
        }
    }
    Ok(())
}
