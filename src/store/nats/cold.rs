//! Issue 20: look-ups on a bounded replica (`--nats-index-mb`). A key the
//! hot set holds answers from memory; any other is read from the stream
//! leader (the `a.` and `i.` keys of the asked hash together, one round trip
//! for a primary, a second for the primary of another alias), and held
//! when that is safe (`replica/hot.rs`). A failed read answers
//! `Unavailable`, which the service turns into the fault default with
//! `no-store`; it is counted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use futures_util::future::try_join_all;

use super::keys::{alias_key, identity_key, manifest_key, Held, MasterEntry, Phase, Stored};
use super::replica::bounded::named;
use super::replica::hot::{resolve, Hot, HotKey, Resolved, Value};
use super::replica::masters::kept;
use super::NatsStore;
use crate::model::{ContentHash, IdentityHash};
use crate::store::{now_ms, IdentityRecord, Manifest, StoreError};

/// Keys one look-up may read (an alias, its primary, a forward's target,
/// with room for a merge chain); past it, the index is inconsistent.
const MOST_READS: usize = 8;

/// One cold read of a key, shared by the look-ups that want it at once:
/// the value and the position the read began at, or its error.
pub(super) type Reading = Arc<tokio::sync::OnceCell<Result<(u64, Value), StoreError>>>;

impl NatsStore {
    /// The hot set, when the replica is bounded.
    pub(super) fn hot(&self) -> Option<MutexGuard<'_, Hot>> {
        let hot = self.inner.hot.as_ref()?;
        Some(hot.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The record `alias` names, on a bounded replica.
    pub(super) async fn identity_bounded(
        &self,
        alias: &IdentityHash,
    ) -> Result<Option<IdentityRecord>, StoreError> {
        // What this look-up read, whether or not the hot set kept it.
        let mut read: HashMap<HotKey, Value> = HashMap::new();
        while read.len() <= MOST_READS {
            let need = {
                let Some(mut hot) = self.hot() else {
                    return Err(StoreError::Index("the replica is not bounded".into()));
                };
                let found = resolve(alias, |k| {
                    read.get(k).cloned().or_else(|| hot.get(k).cloned())
                });
                match found {
                    Resolved::Found(r) => return Ok(r),
                    Resolved::Need(k) => k,
                }
            };
            // The asked hash is most often a primary (the md5 of an email):
            // its record is read alongside its alias entry.
            let mut keys = vec![need];
            if need == HotKey::Alias(*alias) {
                keys.push(HotKey::Identity(*alias));
            }
            let values = try_join_all(keys.into_iter().map(|k| self.read_shared(k))).await?;
            read.extend(values);
        }
        Err(StoreError::Index(format!(
            "looking up {alias} read {MOST_READS} keys without an answer"
        )))
    }

    /// The manifest `/c/` and renders may use (`Store::manifest`), on a
    /// bounded replica: a master some identity names (or a lease holds),
    /// not being deleted, from its held `m.` entry or read at the leader
    /// (and held, an absence too). As on the whole replica, one that what
    /// this node holds does not serve is asked again once this node has
    /// caught up with the bucket's head: it may have been bound a moment
    /// ago on another node.
    pub(super) async fn manifest_bounded(
        &self,
        hash: &ContentHash,
    ) -> Result<Option<Manifest>, StoreError> {
        let k = HotKey::Master(*hash);
        let served = |v: &Value| match v {
            Value::Master(e) if e.phase != Phase::Deleting && named(e, now_ms()) => {
                Some(e.manifest.clone())
            }
            _ => None,
        };
        let held = self.hot().and_then(|mut hot| hot.get(&k).cloned());
        let Some(v) = held else {
            return Ok(served(&self.read_shared(k).await?.1));
        };
        if let Some(m) = served(&v) {
            return Ok(Some(m));
        }
        if self.connected() {
            if let Ok(s) = self.inner.kv.status().await {
                let _ = self.wait_position(s.info.state.last_sequence).await;
            }
        }
        let held = self.hot().and_then(|mut hot| hot.get(&k).cloned());
        let v = match held {
            Some(v) => v,
            None => self.read_shared(k).await?.1,
        };
        Ok(served(&v))
    }

    /// `k`'s value, read at the stream leader and held when that is safe;
    /// concurrent look-ups of `k` share one read. A look-up that joins a
    /// read begun before it uses the value only if no change of `k` was
    /// applied here since that read began (this node's own commits
    /// included), else reads again itself: what it answers is never older
    /// than what this node had applied when it asked. (A change made on
    /// another node and not yet applied here may be missed by up to one
    /// read's time, within the propagation a whole replica has anyway.)
    async fn read_shared(&self, k: HotKey) -> Result<(HotKey, Value), StoreError> {
        let cell = {
            let mut reading = self.inner.reading.lock().unwrap_or_else(|p| p.into_inner());
            reading.entry(k).or_default().clone()
        };
        let ran = std::sync::atomic::AtomicBool::new(false);
        let shared = cell
            .get_or_init(|| async {
                let since = *self.inner.position.borrow();
                // A read that ended between this look-up's miss and here
                // left its value held: no second read.
                if let Some(v) = self.hot().and_then(|mut hot| hot.get(&k).cloned()) {
                    return Ok((since, v));
                }
                ran.store(true, Ordering::Relaxed);
                let (revision, v) = self.read_hot(k).await?;
                let held = self
                    .hot()
                    .is_some_and(|mut hot| hot.insert(since, k, revision, v.clone()));
                if !held {
                    self.inner.stats.cold_unheld.fetch_add(1, Ordering::Relaxed);
                }
                Ok((since, v))
            })
            .await
            .clone();
        {
            let mut reading = self.inner.reading.lock().unwrap_or_else(|p| p.into_inner());
            if reading.get(&k).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                reading.remove(&k);
            }
        }
        let (since, v) = shared?;
        let joined = !ran.load(Ordering::Relaxed);
        if joined && self.hot().is_some_and(|hot| hot.changed_after(since, &k)) {
            return Ok((k, self.read_hot(k).await?.1));
        }
        Ok((k, v))
    }

    /// `k`'s value and revision at the stream leader (never behind a write
    /// this node's watch has applied), counted.
    async fn read_hot(&self, k: HotKey) -> Result<(u64, Value), StoreError> {
        let stats = &self.inner.stats;
        stats.cold_reads.fetch_add(1, Ordering::Relaxed);
        let key = match k {
            HotKey::Identity(h) => identity_key(&h),
            HotKey::Alias(h) => alias_key(&h),
            HotKey::Master(h) => manifest_key(&h),
        };
        let (revision, bytes) = self.read_last(&key).await.inspect_err(|_| {
            stats.cold_read_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        let value = match (k, bytes) {
            (_, None) => Value::Absent,
            (HotKey::Identity(_), Some(b)) => Value::Held(Held::from(Stored::decode(&b)?)),
            (HotKey::Alias(_), Some(b)) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Value::Names)
                .ok_or_else(|| StoreError::Index(format!("corrupt alias entry {key}")))?,
            (HotKey::Master(_), Some(b)) => Value::Master(Box::new(kept(MasterEntry::decode(&b)?))),
        };
        Ok((revision, value))
    }

    /// `i.<primary>` changed at `revision` here: a held key takes it. A
    /// record this node's commit wrote (`watched` false) also places its
    /// aliases held as absent, ahead of the watch bringing their `a.`
    /// claims (read-your-writes, as the whole replica's record aliases).
    pub(super) fn hot_record(
        &self,
        primary: IdentityHash,
        revision: u64,
        value: &Stored,
        watched: bool,
    ) {
        let Some(mut hot) = self.hot() else { return };
        if let (false, Stored::Record(r)) = (watched, value) {
            for a in r.record.aliases.iter().filter(|a| **a != primary) {
                hot.listed(*a, primary, revision);
            }
        }
        hot.applied(
            HotKey::Identity(primary),
            revision,
            Value::Held(Held::from(value.clone())),
        );
    }

    /// Identities whose record binds `hash` (a takedown purges them), on a
    /// bounded replica: from its `m.` entry's listing, each key checked at
    /// the leader; an entry listing more than it can (`many`) or written
    /// before listings is answered by a scan of every record.
    pub(super) async fn bound_to_bounded(
        &self,
        hash: &ContentHash,
    ) -> Result<Vec<IdentityHash>, StoreError> {
        let (_, entry) = self.read_master(hash).await?;
        let listing = entry.and_then(|e| e.refs).filter(|r| !r.many && !r.verify);
        let binds = |s: &Stored| matches!(s, Stored::Record(r) if r.record.avatar.as_ref().is_some_and(|a| a.hash == *hash));
        let Some(listing) = listing else {
            return self.scan_records(binds).await;
        };
        let mut out = Vec::new();
        for key in listing.by.keys() {
            let (_, value) = self.read_last(&identity_key(key)).await?;
            if let Some(v) = value {
                if binds(&Stored::decode(&v)?) {
                    out.push(*key);
                }
            }
        }
        Ok(out)
    }

    /// The primaries of every `i.` key whose last value passes `keep`: one
    /// pass over the bucket's last values (an ordered consumer), O(N).
    async fn scan_records(
        &self,
        keep: impl Fn(&Stored) -> bool,
    ) -> Result<Vec<IdentityHash>, StoreError> {
        use futures_util::StreamExt;
        let status = self
            .inner
            .kv
            .status()
            .await
            .map_err(self.fail("index status"))?;
        if status.info.state.messages == 0 {
            return Ok(Vec::new());
        }
        let mut watch = self
            .inner
            .kv
            .watch_with_history("i.>")
            .await
            .map_err(self.fail("index scan"))?;
        let mut out = Vec::new();
        // A bucket without `i.` keys delivers nothing: stop when idle.
        let idle = std::time::Duration::from_secs(2);
        while let Ok(Some(e)) = tokio::time::timeout(idle, watch.next()).await {
            let e = e.map_err(self.fail("index scan"))?;
            let primary = e.key.strip_prefix("i.").and_then(|h| h.parse().ok());
            if let (Some(p), true) = (
                primary,
                e.operation == async_nats::jetstream::kv::Operation::Put,
            ) {
                if keep(&Stored::decode(&e.value)?) {
                    out.push(p);
                }
            }
            if e.delta == 0 {
                break;
            }
        }
        Ok(out)
    }
}
