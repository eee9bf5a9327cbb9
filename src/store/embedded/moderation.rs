//! Issue 16 on the embedded store: takedowns (table `takedowns`, master hash
//! → record, mirrored in memory so `/c/` asks no index) and the audit log
//! (table `audit`, id → entry, pruned past the retention a few per append).
//!
//! A takedown is written under the writer lock, and a commit checks the
//! in-memory set under the same lock: no bind can slip between the two.

use std::collections::HashSet;

use redb::{Database, ReadableTable, TableDefinition};

use super::{idx, json, unjson, EmbeddedStore, IDENTITIES, META};
use crate::model::{ContentHash, IdentityHash};
use crate::store::moderation::{AuditEntry, Takedown};
use crate::store::{now_ms, IdentityRecord, StoreError};

pub(super) const TAKEDOWNS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("takedowns");
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Expired audit entries removed per append (pruning stays incremental).
const PRUNE_PER_APPEND: usize = 8;

/// Every taken-down hash, read at open.
pub(super) fn load_blocked(db: &Database) -> Result<HashSet<ContentHash>, StoreError> {
    let rtx = db.begin_read().map_err(idx)?;
    let t = rtx.open_table(TAKEDOWNS).map_err(idx)?;
    let mut out = HashSet::new();
    for row in t.iter().map_err(idx)? {
        let (_, v) = row.map_err(idx)?;
        out.insert(unjson::<Takedown>(v.value())?.hash);
    }
    Ok(out)
}

impl EmbeddedStore {
    pub(super) fn is_blocked(&self, hash: &ContentHash) -> bool {
        self.inner
            .blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(hash)
    }

    /// Run `f` on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }

    pub(super) async fn put_takedown_now(
        &self,
        t: Takedown,
    ) -> Result<Option<Takedown>, StoreError> {
        self.blocking(move |s| {
            let _guard = s.inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let tx = s.inner.db.begin_write().map_err(idx)?;
            {
                let mut table = tx.open_table(TAKEDOWNS).map_err(idx)?;
                let key = t.hash.0;
                let existing: Option<Takedown> = match table.get(key.as_slice()).map_err(idx)? {
                    Some(v) => Some(unjson(v.value())?),
                    None => None,
                };
                if existing.is_some() {
                    return Ok(existing);
                }
                table
                    .insert(key.as_slice(), json(&t).as_slice())
                    .map_err(idx)?;
            }
            tx.commit().map_err(idx)?;
            s.inner
                .blocked
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(t.hash);
            Ok(None)
        })
        .await
    }

    pub(super) async fn remove_takedown_now(
        &self,
        hash: ContentHash,
    ) -> Result<Option<Takedown>, StoreError> {
        self.blocking(move |s| {
            let _guard = s.inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            let tx = s.inner.db.begin_write().map_err(idx)?;
            let removed: Option<Takedown> = {
                let mut table = tx.open_table(TAKEDOWNS).map_err(idx)?;
                let old = table.remove(hash.0.as_slice()).map_err(idx)?;
                match old {
                    Some(v) => Some(unjson(v.value())?),
                    None => None,
                }
            };
            if removed.is_none() {
                return Ok(None);
            }
            tx.commit().map_err(idx)?;
            s.inner
                .blocked
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&hash);
            Ok(removed)
        })
        .await
    }

    pub(super) fn takedowns_now(
        &self,
        after: Option<ContentHash>,
        limit: usize,
    ) -> Result<Vec<Takedown>, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(idx)?;
        let t = rtx.open_table(TAKEDOWNS).map_err(idx)?;
        let rows = match &after {
            Some(h) => t.range::<&[u8]>((
                std::ops::Bound::Excluded(h.0.as_slice()),
                std::ops::Bound::Unbounded,
            )),
            None => t.range::<&[u8]>(..),
        }
        .map_err(idx)?;
        let mut out = Vec::new();
        for row in rows.take(limit) {
            let (_, v) = row.map_err(idx)?;
            out.push(unjson(v.value())?);
        }
        Ok(out)
    }

    /// A scan of the identities: takedowns are rare, manual operations, so
    /// no reverse index is kept for them.
    pub(super) async fn bound_to_now(
        &self,
        hash: ContentHash,
    ) -> Result<Vec<IdentityHash>, StoreError> {
        self.blocking(move |s| {
            let rtx = s.inner.db.begin_read().map_err(idx)?;
            let ids = rtx.open_table(IDENTITIES).map_err(idx)?;
            let mut out = Vec::new();
            for row in ids.iter().map_err(idx)? {
                let (_, v) = row.map_err(idx)?;
                let rec: IdentityRecord = unjson(v.value())?;
                if rec.avatar.as_ref().is_some_and(|a| a.hash == hash) {
                    out.push(rec.primary());
                }
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn append_audit_now(&self, mut entry: AuditEntry) -> Result<u64, StoreError> {
        let retention = self.audit_retention.as_millis() as u64;
        self.blocking(move |s| {
            let tx = s.inner.db.begin_write().map_err(idx)?;
            let id;
            {
                let mut meta = tx.open_table(META).map_err(idx)?;
                let mut audit = tx.open_table(AUDIT).map_err(idx)?;
                id = meta
                    .get("next_audit")
                    .map_err(idx)?
                    .map_or(1, |v| v.value());
                meta.insert("next_audit", id + 1).map_err(idx)?;
                entry.id = id;
                audit.insert(id, json(&entry).as_slice()).map_err(idx)?;
                let cutoff = now_ms().saturating_sub(retention);
                let mut expired = Vec::new();
                for row in audit.iter().map_err(idx)?.take(PRUNE_PER_APPEND) {
                    let (k, v) = row.map_err(idx)?;
                    if unjson::<AuditEntry>(v.value())?.at >= cutoff {
                        break;
                    }
                    expired.push(k.value());
                }
                for k in expired {
                    audit.remove(k).map_err(idx)?;
                }
            }
            tx.commit().map_err(idx)?;
            Ok(id)
        })
        .await
    }

    pub(super) fn audit_after_now(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(idx)?;
        let t = rtx.open_table(AUDIT).map_err(idx)?;
        let mut out = Vec::new();
        for row in t.range(after.saturating_add(1)..).map_err(idx)?.take(limit) {
            let (_, v) = row.map_err(idx)?;
            out.push(unjson(v.value())?);
        }
        Ok(out)
    }
}
