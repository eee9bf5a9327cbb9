//! Issue 17: fallback entries (what the upstream avatar services said about
//! an identity) in the `fallbacks` table, identity hash → entry. A positive
//! entry references its master like a bound identity does (reference counts),
//! so replacing the entry collects the old master's blobs.

use super::commit::{count_refs, put_blobs, reput_missing_blobs};
use super::{idx, json, unjson, EmbeddedStore, BLOB_REFS, MANIFESTS, MASTER_REFS};
use crate::model::IdentityHash;
use crate::store::{FallbackEntry, NewMaster, RungRef, StoreError};
use redb::{ReadableTable, TableDefinition};

pub(super) const FALLBACKS: TableDefinition<&str, &[u8]> = TableDefinition::new("fallbacks");

impl EmbeddedStore {
    pub(super) fn fallback_read(
        &self,
        hash: &IdentityHash,
    ) -> Result<Option<FallbackEntry>, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(idx)?;
        let t = rtx.open_table(FALLBACKS).map_err(idx)?;
        match t.get(hash.to_hex().as_str()).map_err(idx)? {
            Some(v) => Ok(Some(unjson(v.value())?)),
            None => Ok(None),
        }
    }

    pub(super) fn put_fallback_blocking(
        &self,
        hash: &IdentityHash,
        entry: FallbackEntry,
        master: Option<NewMaster>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let master = master.filter(|m| Some(m.manifest.hash) == entry.master);
        if entry.master.is_some() && master.is_none() {
            return Err(StoreError::Index(
                "a fallback entry names a master it does not bring".into(),
            ));
        }
        put_blobs(&inner.blobs, master.as_ref())?;
        let _guard = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        reput_missing_blobs(&inner.blobs, master.as_ref())?;
        let tx = inner.db.begin_write().map_err(idx)?;
        let mut garbage: Vec<RungRef> = Vec::new();
        let mut gone = None;
        {
            let mut fallbacks = tx.open_table(FALLBACKS).map_err(idx)?;
            let mut manifests = tx.open_table(MANIFESTS).map_err(idx)?;
            let mut mrefs = tx.open_table(MASTER_REFS).map_err(idx)?;
            let mut brefs = tx.open_table(BLOB_REFS).map_err(idx)?;
            let key = hash.to_hex();
            let old: Option<FallbackEntry> = match fallbacks.get(key.as_str()).map_err(idx)? {
                Some(v) => Some(unjson(v.value())?),
                None => None,
            };
            if let Some(m) = &master {
                let k = m.manifest.hash.0;
                if manifests.get(k.as_slice()).map_err(idx)?.is_none() {
                    manifests
                        .insert(k.as_slice(), json(&m.manifest).as_slice())
                        .map_err(idx)?;
                }
                count_refs(&mut manifests, &mut mrefs, &mut brefs, &m.manifest.hash, 1)?;
            }
            if let Some(h) = old.and_then(|o| o.master) {
                let (dead, went) = count_refs(&mut manifests, &mut mrefs, &mut brefs, &h, -1)?;
                garbage.extend(dead);
                gone = went.then_some(h);
            }
            fallbacks
                .insert(key.as_str(), json(&entry).as_slice())
                .map_err(idx)?;
        }
        tx.commit().map_err(idx)?;
        if let (Some(f), Some(h)) = (inner.gone.get(), gone) {
            f(h);
        }
        for r in garbage {
            if let Err(e) = inner.pins.collect(&inner.blobs, &r.blob) {
                tracing::warn!(blob = %r.blob, error = %e, "could not remove unreferenced blob");
            }
        }
        Ok(())
    }
}
