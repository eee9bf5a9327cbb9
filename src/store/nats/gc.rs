//! Erasure on the cluster: masters no identity names are collected (their
//! blobs leave the object store, their `m.` entry is deleted), safely against
//! binds of the same content racing the collection.
//!
//! The `m.<master>` entry ([`MasterEntry`]) is the master's reference record;
//! every write to it is a compare-and-set on its revision, by three parties:
//!
//! - a **binder** (a commit binding the master) *pins* it before writing the
//!   identity record: `Live` (pinned now) over `Live` or `Condemned` (same
//!   generation), over nothing or an abandoned `Deleting` (a new generation:
//!   the key's revision); a fresh `Deleting` is waited for. The pin also
//!   *lists* the identity keys the attempt writes ([`MasterEntry::refs`]),
//!   each with the revision its write is compared against (its basis). After
//!   the pin it makes sure every rung is in the object store (read at the
//!   stream leader, put when missing: it holds the bytes), writes the record,
//!   then checks the pin still holds: the entry is `Live` in the same
//!   generation and lists its keys. If not, it pins again, puts the blobs
//!   again and re-checks, before answering.
//! - an **unlister** (a commit whose record stopped naming the master, at
//!   revision `w`) takes its key off the listing, only if the listing's basis
//!   precedes `w` ([`unname`]).
//! - a **collector** (the node whose commit left the listing empty, and a
//!   periodic sweep on every node) *condemns* a `Live` entry that lists no
//!   key and was pinned more than [`GRACE_MS`] ago, and decides: listed, or
//!   named in its replica once that has applied the index up to the
//!   condemnation → back to `Live`; else → `Deleting`, delete the blobs
//!   (rungs another master lists stay), delete the key. A phase older than
//!   [`LEASE_MS`] is abandoned and anyone may take it over; a deleter stops
//!   deleting after [`DELETE_WINDOW`].
//!
//! Why an acknowledged bind never loses its blobs: blobs are only deleted in
//! `Deleting`, which ends a generation, and `Deleting` is only written by a
//! compare-and-set on the `Condemned` revision `c`, whose entry listed no
//! key. The binder's pin lists its key before its record `w` exists. If that
//! pin precedes `c`, the listing is gone by `c` only if an unlister removed
//! it, which needs a write to the same key after the binder's basis: then
//! the binder's record (compared against that basis) failed and was retried
//! under a new pin, or preceded the unlister's write and is no longer the
//! key's value. If the pin follows `c`, it changed the revision, so the
//! collector's `Deleting` fails; and if `w` follows `c`, the binder's check
//! (after `w`) sees that the entry is not `Live` in its generation, so it
//! pins again and puts the blobs again before answering. Entries written
//! before listings existed (`refs: None`) list nothing and are decided by
//! the replica's count as before (a record `w` before `c` is in the replica
//! at `c`), which for now also backs up every listed entry; the bounded
//! replica (issue 20) will drop it. The sweep's *audit* gives those entries
//! their listings ([`audit_listing`], [`audit_verified`]): a scan of the
//! replica at the entry's revision, a first write marked `verify` (counted
//! as listed), a second scan at that write, the verifying write. A binder
//! that confirmed before the first write has its record in the second scan;
//! one confirming after it finds its key missing and pins again. Rungs shared between masters: a deleter
//! keeps rungs a non-deleting master lists in its replica at ≥ its
//! `Deleting` revision; a binder, at ≥ its pin revision, waits for every
//! deletion that lists one of its rungs before putting them. Whichever wrote
//! second sees the other. Since salted rungs (`pipeline::salt`,
//! `Manifest::salted`) a master shares no rung with another stored since,
//! so a bounded replica, which holds only deletions of the other masters,
//! deletes a salted master's rungs without asking (its own blob excepted
//! once a master stored before salting was seen, which may list it), and
//! leaves masters stored before salting to a node holding every master
//! (counted). `model` below checks the rule on every
//! interleaving of a binder, an unlister, a collector and (for entries
//! written before listings) the audit, with the replica's count and without
//! it; `tests`, the rules case by case.

use std::time::{Duration, Instant};

use super::keys::{manifest_key, MasterEntry, Phase, Refs, MAX_REFS};
use super::NatsStore;
use crate::model::{ContentHash, IdentityHash};
use crate::store::{now_ms, Manifest, NewMaster, StoreError};

/// A collector leaves a master pinned this recently alone (a binder is
/// between its pin and its record).
pub(super) const GRACE_MS: u64 = 3_000;
/// A `Condemned` or `Deleting` phase this old is abandoned (its collector
/// died): anyone may take it over.
pub(super) const LEASE_MS: u64 = 30_000;
/// A deleter stops deleting this long after it entered `Deleting`, well
/// inside the lease, so a takeover never races it (clocks may differ by up
/// to the difference).
const DELETE_WINDOW: Duration = Duration::from_secs(10);
/// How long a binder waits for a deletion in progress before a 503.
const PIN_WAIT: Duration = Duration::from_secs(3);
/// Entries written before listings that one sweep gives listings to.
const AUDIT_BATCH: usize = 1_000;

/// The binder's pin: the entry to write over `current` (read at revision
/// `seq`), naming `keys` (the identity keys its writes will name it under,
/// each with the revision that write is compared against), or `None`: a
/// deletion is in progress, wait.
pub(super) fn pin(
    current: Option<&MasterEntry>,
    seq: u64,
    manifest: &Manifest,
    now: u64,
    keys: &[(IdentityHash, u64)],
) -> Option<MasterEntry> {
    let (generation, held_until, refs) = match current {
        Some(e) if e.phase != Phase::Deleting => (e.generation, e.held_until, e.refs.clone()),
        Some(e) if now < e.at.saturating_add(LEASE_MS) => return None,
        // A new generation: its references are exactly the new ones.
        _ => (seq, 0, Some(Refs::default())),
    };
    let mut entry = MasterEntry {
        manifest: manifest.clone(),
        phase: Phase::Live,
        at: now,
        generation,
        held_until,
        refs,
    };
    name(&mut entry, keys);
    Some(entry)
}

/// Add `keys` to `entry`'s references; a key already listed keeps the later
/// basis. Unknown references (`None`) stay unknown; past [`MAX_REFS`] the
/// entry stops listing and counts as named for good.
pub(super) fn name(entry: &mut MasterEntry, keys: &[(IdentityHash, u64)]) {
    let Some(refs) = entry.refs.as_mut().filter(|r| !r.many) else {
        return;
    };
    for (key, basis) in keys {
        let b = refs.by.entry(*key).or_insert(*basis);
        *b = (*b).max(*basis);
    }
    if refs.by.len() > MAX_REFS {
        refs.by.clear();
        refs.many = true;
    }
}

/// Does `entry` list every one of `keys` at its basis or later (or not
/// list at all: unknown or too many)?
pub(super) fn names(entry: &MasterEntry, keys: &[(IdentityHash, u64)]) -> bool {
    match &entry.refs {
        Some(r) if !r.many => keys
            .iter()
            .all(|(k, basis)| r.by.get(k).is_some_and(|b| b >= basis)),
        _ => true,
    }
}

/// `key`'s write at revision `written` stopped naming the master: `entry`
/// without `key`, if `key` is listed from a basis before that write (a
/// later bind of the same key was compared against `written` or later, so
/// its listing stays). `None`: nothing to change.
pub(super) fn unname(entry: &MasterEntry, key: &IdentityHash, written: u64) -> Option<MasterEntry> {
    let listed = entry.refs.as_ref()?.by.get(key)?;
    if *listed >= written {
        return None;
    }
    let mut e = entry.clone();
    e.refs.as_mut()?.by.remove(key);
    Some(e)
}

/// Does `entry` list some identity key (or too many to list, or a listing
/// still to verify)? Unknown references (`None`) list none: the replica's
/// count decides for them.
pub(super) fn listed(entry: &MasterEntry) -> bool {
    entry
        .refs
        .as_ref()
        .is_some_and(|r| r.many || r.verify || !r.by.is_empty())
}

/// The audit's first write over a `Live` entry written before listings:
/// the keys whose values name it in the replica at or after its revision
/// (each with its value's revision as basis: at least the true one, so an
/// unlisting is only less likely), marked to verify. `None`: not such an
/// entry.
pub(super) fn audit_listing(
    entry: &MasterEntry,
    keys: &[(IdentityHash, u64)],
) -> Option<MasterEntry> {
    if entry.refs.is_some() || entry.phase != Phase::Live {
        return None;
    }
    let mut e = entry.clone();
    e.refs = Some(Refs {
        verify: true,
        ..Refs::default()
    });
    name(&mut e, keys);
    Some(e)
}

/// The audit's second write: the keys found again once the replica applied
/// the first write (a bind that confirmed before it, with its record after
/// the first scan) joined, and verified. `None`: nothing to verify.
pub(super) fn audit_verified(
    entry: &MasterEntry,
    keys: &[(IdentityHash, u64)],
) -> Option<MasterEntry> {
    if !entry.refs.as_ref().is_some_and(|r| r.verify) {
        return None;
    }
    let mut e = entry.clone();
    name(&mut e, keys);
    if let Some(r) = e.refs.as_mut() {
        r.verify = false;
    }
    Some(e)
}

/// Does the pin of `generation` still hold (no deletion began since)?
pub(super) fn pin_holds(current: Option<&MasterEntry>, generation: u64) -> bool {
    matches!(current, Some(e) if e.phase == Phase::Live && e.generation == generation)
}

/// A collector's first step on `current`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Collect {
    Leave,
    /// Write this `Condemned` entry, then count references.
    Condemn(MasterEntry),
    /// Take over an abandoned deletion: write this `Deleting` entry, delete.
    Delete(MasterEntry),
}

pub(super) fn collect(current: Option<&MasterEntry>, now: u64) -> Collect {
    let Some(e) = current else {
        return Collect::Leave;
    };
    let waited = |ms: u64| now >= e.at.saturating_add(ms);
    match e.phase {
        Phase::Live if waited(GRACE_MS) && !listed(e) => {
            Collect::Condemn(e.with(Phase::Condemned, now))
        }
        Phase::Condemned if waited(LEASE_MS) => Collect::Condemn(e.with(Phase::Condemned, now)),
        Phase::Deleting if waited(LEASE_MS) => Collect::Delete(e.with(Phase::Deleting, now)),
        _ => Collect::Leave,
    }
}

/// After the count: back to `Live`, or on to `Deleting`.
pub(super) fn verdict(condemned: &MasterEntry, referenced: bool, now: u64) -> MasterEntry {
    if referenced {
        condemned.with(Phase::Live, now)
    } else {
        condemned.with(Phase::Deleting, now)
    }
}

impl NatsStore {
    /// The `m.<hash>` entry and its revision, from the stream leader.
    pub(super) async fn read_master(
        &self,
        hash: &ContentHash,
    ) -> Result<(u64, Option<MasterEntry>), StoreError> {
        let (seq, value) = self.read_last(&manifest_key(hash)).await?;
        Ok((seq, value.as_deref().map(MasterEntry::decode).transpose()?))
    }

    /// The stored manifest of `hash` (any phase but `Deleting`), from the
    /// stream leader.
    pub(super) async fn stored_manifest(
        &self,
        hash: &ContentHash,
    ) -> Result<Option<Manifest>, StoreError> {
        let (seq, entry) = self.read_master(hash).await?;
        let entry = entry.filter(|e| e.phase != Phase::Deleting);
        if let Some(e) = &entry {
            self.apply_master(*hash, seq, Some(e.clone()));
        }
        Ok(entry.map(|e| e.manifest))
    }

    /// Wait until this node's replica has applied the index up to
    /// `revision` (a watch delivering, or catch-up reads).
    pub(super) async fn wait_position(&self, revision: u64) -> Result<(), StoreError> {
        let mut rx = self.inner.position.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(2), async {
            rx.wait_for(|p| *p >= revision).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(StoreError::Unavailable(format!(
                "the index replica did not reach revision {revision}"
            ))),
        }
    }

    /// Pin `manifest`'s master for a bind naming it under `keys` (see the
    /// module doc), then make sure its blobs are stored unless `ensured`
    /// says they were in this generation; returns the pin's generation.
    /// `hold`: a fallback entry's lease (`MasterEntry::held_until`, 0 for a
    /// bind).
    pub(super) async fn pin_master(
        &self,
        manifest: &Manifest,
        master: Option<&NewMaster>,
        hold: u64,
        keys: &[(IdentityHash, u64)],
        ensured: &mut Option<u64>,
    ) -> Result<u64, StoreError> {
        let started = Instant::now();
        // With this node's other pins of the same master (`pins.rs`).
        let generation = self.pin_batched(manifest, keys, hold).await?;
        if *ensured == Some(generation) {
            return Ok(generation);
        }
        while self.read_replica().shares_a_deletion(manifest) {
            if started.elapsed() > PIN_WAIT {
                return Err(StoreError::Unavailable(
                    "a master sharing a rung is being collected; retry".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (i, r) in manifest.rungs.iter().enumerate() {
            if self.blob_stored(&r.blob, r.len).await? {
                continue;
            }
            match master.and_then(|m| m.rungs.get(i)) {
                Some(bytes) => self.put_blob(bytes).await?,
                None => {
                    return Err(StoreError::Index(format!(
                        "blob {} of master {} is missing",
                        r.blob, manifest.hash
                    )))
                }
            }
        }
        *ensured = Some(generation);
        Ok(generation)
    }

    /// The pin's write (one batch of `pins.rs`): `manifest`'s entry listing
    /// `keys`, with lease `hold`, by compare-and-set, tried again while it
    /// loses a race or a deletion is in progress, up to [`PIN_WAIT`]; once
    /// written, applied here. Returns the generation pinned.
    pub(super) async fn pin_write(
        &self,
        manifest: &Manifest,
        keys: &[(IdentityHash, u64)],
        hold: u64,
    ) -> Result<u64, StoreError> {
        let key = manifest_key(&manifest.hash);
        let started = Instant::now();
        loop {
            let (seq, current) = self.read_master(&manifest.hash).await?;
            let pinned = pin(current.as_ref(), seq, manifest, now_ms(), keys);
            if let Some(mut entry) = pinned {
                entry.held_until = entry.held_until.max(hold);
                if let Some(rev) = self.write_if(&key, seq, Some(entry.encode()?)).await? {
                    self.apply_master(manifest.hash, rev, Some(entry.clone()));
                    // Deletions of masters sharing a rung, sequenced before
                    // the pin, are in the replica from here on.
                    self.wait_position(rev).await?;
                    return Ok(entry.generation);
                }
            }
            if started.elapsed() > PIN_WAIT {
                return Err(StoreError::Unavailable(format!(
                    "master {} is being collected; retry",
                    manifest.hash
                )));
            }
            // Jittered, so pins of other nodes that lost together do not
            // meet again.
            let mut r = [0u8; 1];
            let _ = getrandom::fill(&mut r);
            tokio::time::sleep(Duration::from_millis(25 + u64::from(r[0]) / 5)).await;
        }
    }

    /// After the writes naming it under `keys`: hold the pin, re-pinning
    /// (and re-putting blobs) while a collection got in between or a
    /// listing is missing.
    pub(super) async fn confirm_pin(
        &self,
        manifest: &Manifest,
        master: Option<&NewMaster>,
        mut generation: u64,
        hold: u64,
        keys: &[(IdentityHash, u64)],
    ) -> Result<(), StoreError> {
        let mut ensured = Some(generation);
        for _ in 0..4 {
            let (_, current) = self.read_master(&manifest.hash).await?;
            if pin_holds(current.as_ref(), generation)
                && current.as_ref().is_some_and(|e| names(e, keys))
            {
                return Ok(());
            }
            tracing::info!(master = %manifest.hash, "a collection met this bind; pinning again");
            generation = self
                .pin_master(manifest, master, hold, keys, &mut ensured)
                .await?;
        }
        Err(StoreError::Unavailable(format!(
            "master {} kept being collected during this bind",
            manifest.hash
        )))
    }

    /// `key`'s write at revision `written` stopped naming `hash`: take `key`
    /// off the master's listing (see [`unname`]). Returns whether the entry
    /// still lists some key, i.e. whether collecting it is pointless (an
    /// entry with unknown references lists none: the caller's replica count
    /// decides). Best effort: a failure leaves an over-count, which only
    /// keeps blobs.
    pub(super) async fn unname_master(
        &self,
        hash: ContentHash,
        key: &IdentityHash,
        written: u64,
    ) -> Result<bool, StoreError> {
        let mkey = manifest_key(&hash);
        for _ in 0..8 {
            let (seq, current) = self.read_master(&hash).await?;
            let Some(current) = current else {
                return Ok(false);
            };
            let Some(next) = unname(&current, key, written) else {
                return Ok(listed(&current));
            };
            if let Some(rev) = self.write_if(&mkey, seq, Some(next.encode()?)).await? {
                let still = listed(&next);
                self.apply_master(hash, rev, Some(next));
                return Ok(still);
            }
        }
        Err(StoreError::Unavailable(format!(
            "master {hash}'s listing kept changing"
        )))
    }

    /// Give entries written before listings theirs, up to [`AUDIT_BATCH`]
    /// a pass, in two rounds of compare-and-sets over replica scans (see
    /// [`audit_listing`], [`audit_verified`]): a bind racing the first round
    /// is found by the second scan, or finds its key missing at its final
    /// check and pins again, which lists it. Runs in every node's sweep;
    /// concurrent passes meet in compare-and-sets. Returns how many entries
    /// it verified.
    pub(super) async fn audit_listings(&self) -> Result<usize, StoreError> {
        let todo = self.read_replica().unlisted_masters(AUDIT_BATCH);
        if todo.is_empty() {
            return Ok(0);
        }
        let mut read = Vec::new();
        for h in todo {
            if let (seq, Some(e)) = self.read_master(&h).await? {
                read.push((h, seq, e));
            }
        }
        let found = self
            .keys_naming_at(read.iter().map(|(h, seq, _)| (*h, *seq)))
            .await?;
        let mut verifying = Vec::new();
        for (h, seq, e) in read {
            let keys = found.get(&h).map(Vec::as_slice).unwrap_or(&[]);
            match audit_listing(&e, keys) {
                Some(next) => {
                    if let Some(c) = self
                        .write_if(&manifest_key(&h), seq, Some(next.encode()?))
                        .await?
                    {
                        self.apply_master(h, c, Some(next));
                        verifying.push((h, c));
                    }
                }
                None if listed(&e) => verifying.push((h, seq)),
                None => {}
            }
        }
        let found = self.keys_naming_at(verifying.iter().copied()).await?;
        let mut done = 0;
        for (h, _) in verifying {
            let keys = found.get(&h).map(Vec::as_slice).unwrap_or(&[]);
            for _ in 0..8 {
                let (seq, Some(e)) = self.read_master(&h).await? else {
                    break;
                };
                let Some(next) = audit_verified(&e, keys) else {
                    break;
                };
                if let Some(rev) = self
                    .write_if(&manifest_key(&h), seq, Some(next.encode()?))
                    .await?
                {
                    self.apply_master(h, rev, Some(next));
                    done += 1;
                    break;
                }
            }
        }
        Ok(done)
    }

    /// For each master, the keys whose values name it, once this replica
    /// has applied the index up to the revision given with it.
    async fn keys_naming_at(
        &self,
        at: impl Iterator<Item = (ContentHash, u64)>,
    ) -> Result<std::collections::HashMap<ContentHash, Vec<(IdentityHash, u64)>>, StoreError> {
        let mut top = 0;
        let hashes: std::collections::HashSet<ContentHash> = at
            .map(|(h, rev)| {
                top = top.max(rev);
                h
            })
            .collect();
        if hashes.is_empty() {
            return Ok(Default::default());
        }
        self.wait_position(top).await?;
        Ok(self.read_replica().keys_naming(&hashes))
    }

    /// Collect `hash` if nothing names it (see the module doc). `Ok` also
    /// when it was left alone.
    pub(super) async fn collect(&self, hash: ContentHash) -> Result<(), StoreError> {
        if !self.read_replica().masters_known() {
            // A bounded start still reading masters (`start.rs`) cannot tell
            // what `hash` shares; the replica holds it as unlisted (from that
            // read or the watch), for the sweep.
            return Ok(());
        }
        let key = manifest_key(&hash);
        let (seq, current) = self.read_master(&hash).await?;
        if self.inner.hot.is_some() && current.as_ref().is_some_and(|e| !e.manifest.salted) {
            // Issue 20: a master stored before salting may share rungs with
            // others, which only a node holding every master can tell.
            let left = &self.inner.stats.left_unsalted;
            left.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        let (rev, deleting) = match collect(current.as_ref(), now_ms()) {
            Collect::Leave => return Ok(()),
            Collect::Condemn(condemned) => {
                let Some(c) = self.write_if(&key, seq, Some(condemned.encode()?)).await? else {
                    return Ok(());
                };
                // The entry lists no key (else `collect` left it); until
                // every entry lists its keys (issue 20), the replica's count
                // must agree.
                self.wait_position(c).await?;
                let referenced = listed(&condemned) || self.read_replica().referenced(&hash);
                let next = verdict(&condemned, referenced, now_ms());
                let Some(rev) = self.write_if(&key, c, Some(next.encode()?)).await? else {
                    return Ok(());
                };
                if referenced {
                    return Ok(());
                }
                (rev, next)
            }
            Collect::Delete(deleting) => {
                match self.write_if(&key, seq, Some(deleting.encode()?)).await? {
                    Some(rev) => (rev, deleting),
                    None => return Ok(()),
                }
            }
        };
        let started = Instant::now();
        self.apply_master(hash, rev, Some(deleting.clone()));
        self.wait_position(rev).await?;
        let keep = self.read_replica().shared_rungs(&deleting.manifest);
        for r in &deleting.manifest.rungs {
            if keep.contains(&r.blob) {
                continue;
            }
            if started.elapsed() > DELETE_WINDOW {
                return Err(StoreError::Unavailable(format!(
                    "deleting master {hash} took too long; the next sweep finishes it"
                )));
            }
            self.delete_blob(&r.blob).await?;
        }
        if let Some(rev) = self.write_if(&key, rev, None).await? {
            self.apply_master(hash, rev, None);
        }
        tracing::debug!(master = %hash, "unreferenced master collected");
        Ok(())
    }
}

pub(super) mod pins;
mod sweep;

#[cfg(test)]
mod model;
#[cfg(test)]
mod model_audit;
#[cfg(test)]
mod tests;
