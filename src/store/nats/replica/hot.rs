//! Issue 20: the bounded replica's hot set (`--nats-index-mb`). Instead of
//! every identity and master, a node holds the `i.`, `a.` and `m.` keys it
//! has looked up, least recently used out first, within a byte budget; a
//! key found absent is held too, as absent (the negative cache). A key not
//! held is read from the stream leader (`cold.rs`).
//!
//! Invariants:
//! - the watch and this node's commits only change keys already held, never
//!   add one: memory follows what is asked, not what is written;
//! - a value read from the leader is held only if no change of its key was
//!   applied here after the read began ([`Hot::insert`], the `changed`
//!   ring): a slow read never puts back a value the watch already replaced,
//!   and a held absence is replaced by the key's first write like any value;
//! - the estimated bytes of what is held ([`weight`]) never exceed the
//!   budget.

use std::collections::VecDeque;

use lru::LruCache;

use crate::model::{ContentHash, IdentityHash};
use crate::store::nats::keys::{Held, MasterEntry};
use crate::store::{IdentityRecord, RungRef};

/// A key of the index bucket the hot set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(in crate::store::nats) enum HotKey {
    /// `i.<primary>`: a record or a forward.
    Identity(IdentityHash),
    /// `a.<alias>`: the primary the alias names.
    Alias(IdentityHash),
    /// `m.<master>`: the master's entry, for `/c/` and renders (`Value::Master`).
    Master(ContentHash),
}

/// What a held key has: its value, or none (never written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store::nats) enum Value {
    Held(Held),
    Names(IdentityHash),
    /// A master's entry as a replica keeps it (`masters::kept`).
    Master(Box<MasterEntry>),
    Absent,
}

/// Changes applied here that a read in flight must not be overtaken by.
/// A read takes far less than the time the watch needs for this many
/// messages; if it did not, its value is answered but not held.
const CHANGED_KEPT: usize = 4_096;

/// The hot set: held keys by recency, and what they weigh.
pub(in crate::store::nats) struct Hot {
    map: LruCache<HotKey, (u64, Value)>,
    bytes: usize,
    budget: usize,
    /// Keys changed here, with their revisions, most recent last.
    changed: VecDeque<(u64, HotKey)>,
    /// The highest revision dropped from `changed`.
    floor: u64,
    /// Held keys that are records (identities answered from memory).
    records: usize,
}

/// Estimated bytes a held key costs: its node in the LRU list (key, value,
/// two links, the allocator's rounding), its slot in the hash table at
/// 7/8 load, and what the value holds on the heap.
pub(in crate::store::nats) fn weight(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<(HotKey, (u64, Value))>() + 2 * 8;
    const TABLE: usize = (8 + 1) * 8 / 7;
    let heap = match v {
        Value::Held(Held::Record(r)) => record_heap(r),
        Value::Held(Held::Forward(f)) => {
            std::mem::size_of_val(&**f)
                + f.record.as_ref().map_or(0, record_heap)
                + crate::cache::allocated(
                    f.aliases.capacity() * std::mem::size_of::<IdentityHash>(),
                )
        }
        Value::Master(e) => master_heap(e),
        Value::Names(_) | Value::Absent => 0,
    };
    crate::cache::allocated(NODE) + TABLE + heap
}

/// What a held master entry holds on the heap: the entry, its rung list,
/// its format name (a kept entry's listing is empty, see `masters::kept`).
fn master_heap(e: &MasterEntry) -> usize {
    let m = &e.manifest;
    crate::cache::allocated(std::mem::size_of::<MasterEntry>())
        + crate::cache::allocated(m.rungs.capacity() * std::mem::size_of::<RungRef>())
        + crate::cache::allocated(m.source_format.capacity())
}

fn record_heap(r: &IdentityRecord) -> usize {
    crate::cache::allocated(r.aliases.capacity() * std::mem::size_of::<IdentityHash>())
}

impl Hot {
    /// An empty hot set holding at most `budget` bytes.
    pub(in crate::store::nats) fn new(budget: usize) -> Hot {
        Hot {
            map: LruCache::unbounded(),
            bytes: 0,
            budget,
            changed: VecDeque::new(),
            floor: 0,
            records: 0,
        }
    }

    /// The held value of `k`, marked as just used.
    pub(in crate::store::nats) fn get(&mut self, k: &HotKey) -> Option<&Value> {
        self.map.get(k).map(|(_, v)| v)
    }

    /// Is `k` held? (Not a use.)
    pub(in crate::store::nats) fn holds(&self, k: &HotKey) -> bool {
        self.map.contains(k)
    }

    /// `k` changed to `v` at `revision` here (the watch, or this node's own
    /// commit): a held key takes it unless it holds a later revision; a key
    /// not held stays so. Either way, reads in flight learn of it.
    pub(in crate::store::nats) fn applied(&mut self, k: HotKey, revision: u64, v: Value) {
        self.changed(k, revision);
        if self.map.peek(&k).is_some_and(|(rev, _)| *rev < revision) {
            self.put(k, revision, v);
        }
    }

    /// This node's commit wrote a record at `revision` listing `alias` of
    /// `primary`: if `alias` is held as absent, it names `primary` now (its
    /// `a.` claim, written before the record, is still on its way here).
    pub(in crate::store::nats) fn listed(
        &mut self,
        alias: IdentityHash,
        primary: IdentityHash,
        revision: u64,
    ) {
        let k = HotKey::Alias(alias);
        self.changed(k, revision);
        if self
            .map
            .peek(&k)
            .is_some_and(|(rev, v)| *v == Value::Absent && *rev < revision)
        {
            self.put(k, revision, Value::Names(primary));
        }
    }

    fn changed(&mut self, k: HotKey, revision: u64) {
        self.changed.push_back((revision, k));
        while self.changed.len() > CHANGED_KEPT {
            if let Some((rev, _)) = self.changed.pop_front() {
                self.floor = self.floor.max(rev);
            }
        }
    }

    /// Hold `v`, read from the stream leader as `k`'s value at `revision`
    /// by a read that began when this node had applied the index up to
    /// `since`. Refused (`false`) when a change of `k` was applied here
    /// after `since`, or when that can no longer be told: the value may
    /// already be replaced, and nothing would replace it again.
    pub(in crate::store::nats) fn insert(
        &mut self,
        since: u64,
        k: HotKey,
        revision: u64,
        v: Value,
    ) -> bool {
        if self.changed_after(since, &k) {
            return false;
        }
        if self.map.peek(&k).is_some_and(|(rev, _)| *rev >= revision) {
            return true;
        }
        self.put(k, revision, v);
        true
    }

    /// Was a change of `k` applied here after `since`, or can that no
    /// longer be told?
    pub(in crate::store::nats) fn changed_after(&self, since: u64, k: &HotKey) -> bool {
        self.floor > since || self.changed.iter().any(|(rev, c)| c == k && *rev > since)
    }

    fn put(&mut self, k: HotKey, revision: u64, v: Value) {
        let w = weight(&v);
        if w > self.budget {
            self.remove(&k);
            return;
        }
        self.records += usize::from(is_record(&v));
        if let Some((_, old)) = self.map.put(k, (revision, v)) {
            self.forget(&old);
        }
        self.bytes += w;
        while self.bytes > self.budget {
            match self.map.pop_lru() {
                Some((_, (_, old))) => self.forget(&old),
                None => break,
            }
        }
    }

    fn remove(&mut self, k: &HotKey) {
        if let Some((_, old)) = self.map.pop(k) {
            self.forget(&old);
        }
    }

    fn forget(&mut self, old: &Value) {
        self.bytes -= weight(old);
        self.records -= usize::from(is_record(old));
    }

    /// Estimated bytes held.
    pub(in crate::store::nats) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keys held (records, aliases and absences).
    pub(in crate::store::nats) fn len(&self) -> usize {
        self.map.len()
    }

    /// Held keys that are records.
    pub(in crate::store::nats) fn records(&self) -> usize {
        self.records
    }
}

fn is_record(v: &Value) -> bool {
    matches!(v, Value::Held(Held::Record(_)))
}

/// A look-up's progress over what is known so far.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::store::nats) enum Resolved {
    /// The record `alias` names (`None`: no identity).
    Found(Option<IdentityRecord>),
    /// This key must be read first.
    Need(HotKey),
}

/// The record `alias` names, from the keys `get` knows: the same answer as
/// the whole replica's `Replica::lookup` over the same bucket (an absent
/// `a.` entry names the alias itself; a forward counts once its target
/// lists the forwarded primary, until then the forwarded record answers).
pub(in crate::store::nats) fn resolve(
    alias: &IdentityHash,
    mut get: impl FnMut(&HotKey) -> Option<Value>,
) -> Resolved {
    let mut primary = match get(&HotKey::Alias(*alias)) {
        None => return Resolved::Need(HotKey::Alias(*alias)),
        Some(Value::Names(p)) => p,
        Some(_) => *alias,
    };
    for _ in 0..4 {
        let moved = match get(&HotKey::Identity(primary)) {
            None => return Resolved::Need(HotKey::Identity(primary)),
            Some(Value::Held(Held::Record(r))) => return Resolved::Found(Some(r)),
            Some(Value::Held(Held::Forward(moved))) => moved,
            Some(_) => return Resolved::Found(None),
        };
        let done = match get(&HotKey::Identity(moved.to)) {
            None => return Resolved::Need(HotKey::Identity(moved.to)),
            Some(Value::Held(Held::Record(r))) => r.aliases.contains(&primary),
            Some(_) => false,
        };
        if !done {
            return Resolved::Found(moved.record);
        }
        primary = moved.to;
    }
    Resolved::Found(None)
}

#[cfg(test)]
#[path = "hot_tests.rs"]
mod tests;
