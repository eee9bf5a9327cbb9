//! Writes: the master's blobs and manifest first (durable before anything
//! names them), then the identity record by a compare-and-set on that
//! identity's key alone, applying the one commit rule
//! ([`crate::store::change`]) to the records as of the revisions the write
//! expects. Writes to different identities never conflict.
//!
//! A bind that joins several records (an md5-only and a sha256-only identity,
//! then the email naming both) writes in this order, each write a
//! compare-and-set on its own key's revision:
//! 1. claim unclaimed alias entries (`a.<alias>`, create-if-absent);
//! 2. a [`Forward`] at every other primary the bind resolves to (`i.<p>`:
//!    "merged into the survivor, by this bind, from this record") — from
//!    here on every writer that resolves to `p` is sent to the survivor, and
//!    any writer that finds the merge unfinished finishes it first;
//! 3. the survivor's record — the event, as for every change;
//! 4. alias entries re-pointed at the survivor (a shortcut: forwards already
//!    lead there).
//!
//! Readers (the replica) answer a forwarded alias with the record as it was
//! until the survivor lists it, so a crash between any two steps leaves every
//! answer correct: before step 3 the merge has not happened for anyone; after
//! it, it has for everyone.
//!
//! Every read a write decides on goes to the stream leader, never to a
//! replica a direct get may reach (it can lag the last acknowledged write).
//! A conditional write the server refuses because another write to the key
//! came first, or is still in flight, is a lost race: the change is re-read
//! and retried with jittered backoff, never answered 503. A write in doubt
//! (no answer, the stream between leaders) is sent again as it was, with
//! its message id ([`super::leader`]), so it lands at most once.

use std::time::Duration;

use bytes::Bytes;

use super::keys::{alias_key, identity_key, is_put, Forward, Stored, StoredRecord, INDEX_BUCKET};
use super::NatsStore;
use crate::backoff::Doubling;
use crate::model::{ContentHash, IdentityHash};
use crate::store::change::{self, Outcome};
use crate::store::{
    now_ms, AvatarRef, Change, Committed, IdentityRecord, Manifest, NewMaster, StoreError,
};

/// Compare-and-set attempts before a commit gives up.
const CAS_ATTEMPTS: usize = 40;

impl NatsStore {
    /// [`Store::commit`]: durable blobs and manifest, then the record by
    /// compare-and-set, retried with jittered backoff.
    pub(super) async fn commit_change(
        &self,
        master: Option<NewMaster>,
        change: Change,
    ) -> Result<Committed, StoreError> {
        if !self.connected() {
            return Err(StoreError::Unavailable("NATS is not connected".into()));
        }
        // A bind pins its master (the `m.` entry, listing the keys it
        // writes) and stores its blobs before the record names it, and checks
        // the pin after (see `gc`).
        let mut bind = None;
        if let Change::Bind { avatar, .. } = &change {
            // Issue 16: taken-down content binds nowhere.
            if self.is_blocked(&avatar.hash) {
                return Err(StoreError::Blocked(avatar.hash));
            }
            bind = Some(match &master {
                Some(m) if m.manifest.hash == avatar.hash => m.manifest.clone(),
                _ => self.stored_manifest(&avatar.hash).await?.ok_or_else(|| {
                    StoreError::Index(format!("master {} is not stored", avatar.hash))
                })?,
            });
        }
        let mut ensured = None;
        for attempt in 0..CAS_ATTEMPTS {
            let pin = bind.as_ref().map(|m| (m, master.as_ref()));
            if let Some((c, wrote)) = self.try_commit(&change, pin, &mut ensured).await? {
                if let (Some(manifest), Some((generation, keys))) = (&bind, &wrote.pinned) {
                    self.confirm_pin(manifest, master.as_ref(), *generation, 0, keys)
                        .await?;
                }
                // After the answer: the write is acknowledged either way.
                if !wrote.unnamed.is_empty() {
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.unname_all(wrote.primary, wrote.written, &wrote.unnamed)
                            .await;
                    });
                }
                return Ok(c);
            }
            // Lost a compare-and-set race on one of this change's keys:
            // back off with jitter so racing nodes spread out, then re-read:
            // 1 ms plus a random part of 2 ms doubling to 64 ms.
            const SPREAD: Doubling =
                Doubling::new(Duration::from_millis(2), Duration::from_millis(64));
            let cap = SPREAD.nth(attempt as u32).as_millis() as u64;
            let mut r = [0u8; 1];
            let _ = getrandom::fill(&mut r);
            tokio::time::sleep(Duration::from_millis(1 + u64::from(r[0]) % cap)).await;
        }
        Err(StoreError::Unavailable(format!(
            "an identity write lost {CAS_ATTEMPTS} compare-and-set races in a row"
        )))
    }

    /// `primary`'s write at revision `written` stopped naming `masters`:
    /// take it off their listings, and collect those nothing names any more
    /// (the collector checks again). Failures (and a crash first) leave an
    /// over-count, which only keeps blobs (the key's next unlisting removes
    /// it).
    async fn unname_all(&self, primary: IdentityHash, written: u64, masters: &[ContentHash]) {
        for m in masters {
            match self.unname_master(*m, &primary, written).await {
                Ok(true) => {}
                Ok(false) => {
                    // A bounded replica goes by the listing alone (it may
                    // not hold the entry); the collector checks again.
                    if self.inner.hot.is_some() || !self.read_replica().referenced(m) {
                        self.collect_later(*m);
                    }
                }
                Err(e) => tracing::debug!(master = %m, error = %e, "unlisting failed"),
            }
        }
    }

    /// KV key `key`'s last message, from the stream leader: its sequence
    /// (0: never written) and value (`None`: never written, or deleted).
    /// `STREAM.MSG.GET` is answered by the leader alone, which acknowledges
    /// a write only once it has applied it; a direct get (`kv.get`, the
    /// bucket allows them) may be answered by a replica that has not.
    pub(super) async fn read_last(&self, key: &str) -> Result<(u64, Option<Bytes>), StoreError> {
        let subject = format!("$KV.{INDEX_BUCKET}.{key}");
        let m = self
            .leader_last(&self.inner.stream, &subject, "index read")
            .await?;
        Ok(m.map_or((0, None), |m| {
            (m.sequence, is_put(&m.headers).then_some(m.payload))
        }))
    }

    /// The alias entry's primary, read from the stream leader.
    async fn primary_of(&self, alias: &IdentityHash) -> Result<Option<IdentityHash>, StoreError> {
        let (_, v) = self.read_last(&alias_key(alias)).await?;
        Ok(v.and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok())))
    }

    /// What `i.<primary>` holds and its revision (0: never written), read
    /// from the stream leader.
    async fn read_slot(&self, primary: IdentityHash) -> Result<Slot, StoreError> {
        let (seq, value) = self.read_last(&identity_key(&primary)).await?;
        Ok(Slot {
            primary,
            seq,
            value: value.as_deref().map(Stored::decode).transpose()?,
        })
    }

    /// Write `value` to `i.<primary>` if its revision is still `expect`
    /// (`Nats-Expected-Last-Subject-Sequence`; 0 = never written). `Ok(None)`:
    /// another write came first.
    async fn write_slot(
        &self,
        primary: &IdentityHash,
        expect: u64,
        value: &Stored,
    ) -> Result<Option<u64>, StoreError> {
        self.write_if(&identity_key(primary), expect, Some(value.encode()?))
            .await
    }

    /// Finish the merge a writer left half done (its forward at `from` is
    /// written, the survivor `target` does not list `from` yet): apply its
    /// bind to the survivor. Losing the race to another finisher is fine.
    async fn finish_merge(
        &self,
        from: IdentityHash,
        moved: &Forward,
        target: Slot,
    ) -> Result<(), StoreError> {
        let mut current: Vec<IdentityRecord> = Vec::new();
        if let Some(Stored::Record(r)) = &target.value {
            current.push(r.record.clone());
        }
        current.extend(moved.record.clone());
        let bind = Change::Bind {
            aliases: moved.aliases.clone(),
            avatar: moved.avatar.clone(),
        };
        let Outcome::Changed(t) = change::apply(&current, Some(moved.to), &bind, now_ms())? else {
            return Ok(());
        };
        if t.record.primary() != moved.to || !t.record.aliases.contains(&from) {
            return Err(StoreError::Index(format!(
                "forward from {from} to {} cannot be finished",
                moved.to
            )));
        }
        tracing::info!(%from, to = %moved.to, "finishing an interrupted identity merge");
        // The forward at `from` lists the bind's master (its writer pinned
        // it), so its blobs are there; the survivor's key joins the listing.
        let keys = [(moved.to, target.seq)];
        if let Some(manifest) = self.stored_manifest(&moved.avatar.hash).await? {
            self.pin_master(&manifest, None, 0, &keys, &mut None)
                .await?;
        }
        let stored = Stored::Record(StoredRecord {
            record: t.record,
            previous: t.previous,
        });
        if let Some(written) = self.write_slot(&moved.to, target.seq, &stored).await? {
            let unnamed = unnamed(target.value.as_ref(), &stored);
            self.apply_identity(moved.to, written, stored, false);
            self.unname_all(moved.to, written, &unnamed).await;
        }
        Ok(())
    }

    /// One attempt. `Ok(None)`: lost a race on one of its keys, try again.
    async fn try_commit(
        &self,
        change: &Change,
        bind: Option<(&Manifest, Option<&NewMaster>)>,
        ensured: &mut Option<u64>,
    ) -> Result<Option<(Committed, Wrote)>, StoreError> {
        let kv = &self.inner.kv;
        let lookup = change::lookup_aliases(change);
        // Alias entries: the first that names a primary names this identity's.
        let mut claimed = None;
        let mut entries: Vec<(IdentityHash, IdentityHash)> = Vec::new();
        let mut unclaimed = Vec::new();
        for a in &lookup {
            match self.primary_of(a).await? {
                Some(p) => {
                    claimed.get_or_insert(p);
                    entries.push((*a, p));
                }
                None => unclaimed.push(*a),
            }
        }
        let Some(&first) = lookup.first() else {
            return Err(StoreError::Index("a change names no alias".into()));
        };
        let claimed = claimed.unwrap_or(first);
        // Claim aliases nobody names yet, before a record names them.
        for a in unclaimed {
            match kv
                .create(alias_key(&a), Bytes::from(claimed.to_hex()))
                .await
            {
                Ok(_) => entries.push((a, claimed)),
                Err(e) if super::leader::claim_again(&e) => return Ok(None),
                Err(e) => return Err(self.fail("index write")(e)),
            }
        }
        let mut primaries = vec![claimed];
        for (_, p) in &entries {
            if !primaries.contains(p) {
                primaries.push(*p);
            }
        }
        // Each primary's slot, following finished merges; an unfinished one
        // is finished first (then this change starts over).
        let mut slots: Vec<Slot> = Vec::new();
        for mut p in primaries {
            for _ in 0..4 {
                if slots.iter().any(|s| s.primary == p) {
                    break;
                }
                let slot = self.read_slot(p).await?;
                let Some(Stored::Forward { moved }) = &slot.value else {
                    slots.push(slot);
                    break;
                };
                let target = self.read_slot(moved.to).await?;
                let done = matches!(&target.value,
                    Some(Stored::Record(r)) if r.record.aliases.contains(&p));
                if !done {
                    self.finish_merge(p, moved, target).await?;
                    return Ok(None);
                }
                p = moved.to;
            }
        }
        let current: Vec<IdentityRecord> = slots
            .iter()
            .filter_map(|s| match &s.value {
                Some(Stored::Record(r)) => Some(r.record.clone()),
                _ => None,
            })
            .collect();
        let t = match change::apply(&current, Some(claimed), change, now_ms())? {
            Outcome::Unchanged(record) => {
                let wrote = Wrote {
                    primary: claimed,
                    written: 0,
                    pinned: None,
                    unnamed: Vec::new(),
                };
                return Ok(Some((
                    Committed {
                        record,
                        event: None,
                    },
                    wrote,
                )));
            }
            Outcome::Changed(t) => t,
        };
        let primary = t.record.primary();
        let Some(expect) = slots.iter().find(|s| s.primary == primary).map(|s| s.seq) else {
            return Err(StoreError::Index(format!("{primary} was not read")));
        };
        // The bind's master lists every key this attempt writes, each with
        // the revision its write is compared against.
        let mut pinned = None;
        if let Some((manifest, master)) = bind {
            let keys: Vec<(IdentityHash, u64)> = slots.iter().map(|s| (s.primary, s.seq)).collect();
            let generation = self.pin_master(manifest, master, 0, &keys, ensured).await?;
            pinned = Some((generation, keys));
        }
        // Forwards at every other primary this change resolved to: only a
        // bind reaches more than one.
        let mut forwards = Vec::new();
        if let Change::Bind { aliases, avatar } = change {
            for s in slots.iter().filter(|s| s.primary != primary) {
                let record = match &s.value {
                    Some(Stored::Record(r)) => Some(r.record.clone()),
                    _ => None,
                };
                let fwd = forward(primary, record, aliases, avatar);
                match self.write_slot(&s.primary, s.seq, &fwd).await? {
                    Some(seq) => forwards.push((s.primary, seq, fwd)),
                    None => return Ok(None),
                }
            }
        }
        // Alias entries to point here once the record lists them: those that
        // name another primary, and every alias of an absorbed record.
        let mut repoint: Vec<IdentityHash> = entries
            .iter()
            .filter(|(_, p)| *p != primary)
            .map(|(a, _)| *a)
            .collect();
        for r in current.iter().filter(|r| t.absorbed.contains(&r.primary())) {
            for a in &r.aliases {
                if !repoint.contains(a) && !entries.iter().any(|(e, _)| e == a) {
                    repoint.push(*a);
                }
            }
        }
        let stored = StoredRecord {
            record: t.record,
            previous: t.previous,
        };
        let value = Stored::Record(stored.clone());
        let Some(written) = self.write_slot(&primary, expect, &value).await? else {
            // The forwards written above stay: the retry (or any writer
            // meeting them) finishes this merge.
            return Ok(None);
        };
        // After the record lists them, so no alias ever points at a record
        // without it.
        for a in repoint {
            self.put_index(&alias_key(&a), Bytes::from(primary.to_hex()))
                .await?;
        }
        // Read-your-writes on this node, without waiting for the watch (which
        // then finds the revisions applied and announces nothing).
        for (p, seq, fwd) in forwards {
            self.apply_identity(p, seq, fwd, false);
        }
        let record = stored.record.clone();
        let event = stored.event(written);
        let old = slots.iter().find(|s| s.primary == primary);
        let unnamed = unnamed(old.and_then(|s| s.value.as_ref()), &value);
        self.apply_identity(primary, written, value, false);
        let committed = Committed {
            record,
            event: Some(event),
        };
        Ok(Some((
            committed,
            Wrote {
                primary,
                written,
                pinned,
                unnamed,
            },
        )))
    }
}

/// What a successful attempt wrote, for the steps after it.
struct Wrote {
    primary: IdentityHash,
    /// The record's revision.
    written: u64,
    /// The bind's pin: its generation and the keys it lists.
    pinned: Option<(u64, Vec<(IdentityHash, u64)>)>,
    /// Masters the primary's old value named and the new one does not.
    unnamed: Vec<ContentHash>,
}

/// Masters `old` named that `new` does not.
fn unnamed(old: Option<&Stored>, new: &Stored) -> Vec<ContentHash> {
    let keep = new.masters();
    let mut gone: Vec<ContentHash> = old
        .map(Stored::masters)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| !keep.contains(m))
        .collect();
    gone.dedup();
    gone
}

/// What `i.<primary>` holds, with the revision a write there must expect.
struct Slot {
    primary: IdentityHash,
    /// Revision of the key's last message (0: never written).
    seq: u64,
    /// `None`: no value (never written, or deleted).
    value: Option<Stored>,
}

fn forward(
    to: IdentityHash,
    record: Option<IdentityRecord>,
    aliases: &[IdentityHash],
    avatar: &AvatarRef,
) -> Stored {
    Stored::Forward {
        moved: Box::new(Forward {
            to,
            record,
            aliases: aliases.to_vec(),
            avatar: avatar.clone(),
        }),
    }
}
