//! The replica's view of masters for the collector (`gc`): rungs shared
//! with other masters, masters a sweep should look at, and the audit of
//! entries written before listings.

use std::collections::{HashMap, HashSet};

use super::Replica;
use crate::model::{ContentHash, IdentityHash};
use crate::store::nats::gc::LEASE_MS;
use crate::store::nats::keys::{MasterEntry, Phase};
use crate::store::{now_ms, Manifest};

/// A master entry as a replica keeps it: listings are read at the leader
/// when they matter, so a replica needs only whether there is one (saves a
/// ~0.5 KB tree node per master) and whether it names a key: `many` says so.
pub(in crate::store::nats) fn kept(mut e: MasterEntry) -> MasterEntry {
    if let Some(refs) = e.refs.as_mut() {
        refs.many |= !refs.by.is_empty();
        refs.by = Default::default();
    }
    e
}

impl Replica {
    /// Is a rung of `m` also a rung of another master being deleted? While
    /// a bounded replica's start still reads the masters, a deletion begun
    /// before the start may be unknown here: yes, until [`LEASE_MS`] after
    /// the start. By then such a deletion has stopped deleting blobs — the
    /// collector's takeover rule assumes the same of a deleter — and any
    /// later one (a takeover) is a new `Deleting` write the watch brings.
    /// A salted master on a bounded replica shares none unless a master
    /// stored before salting may exist ([`Replica::unsalted_possible`]):
    /// so in a bucket marked salted, pins never wait for the start's read.
    pub(in crate::store::nats) fn shares_a_deletion(&self, m: &Manifest) -> bool {
        if self.bounded && m.salted && !self.unsalted_possible() {
            return false;
        }
        let started = self.loading.as_ref().map(|l| l.since);
        if started.is_some_and(|since| now_ms() < since.saturating_add(LEASE_MS)) {
            return true;
        }
        self.deleting.iter().any(|d| {
            *d != m.hash
                && self.masters.get(d).is_some_and(|(_, e)| {
                    e.iter()
                        .flat_map(|e| &e.manifest.rungs)
                        .any(|r| m.rungs.iter().any(|x| x.blob == r.blob))
                })
        })
    }

    /// Rungs of `m` that another master not being deleted also lists. A
    /// bounded replica cannot tell (it holds no such master) and need not
    /// for a salted master (`Manifest::salted`): its rungs are its own, and
    /// its own blob can be another's rung only if a master stored before
    /// salting was seen. It collects no other (`gc::collect`): all kept.
    pub(in crate::store::nats) fn shared_rungs(&self, m: &Manifest) -> HashSet<ContentHash> {
        if self.bounded {
            return match (m.salted, self.unsalted_possible()) {
                (true, false) => HashSet::new(),
                (true, true) => HashSet::from([m.hash]),
                (false, _) => m.rungs.iter().map(|r| r.blob).collect(),
            };
        }
        let own: HashSet<ContentHash> = m.rungs.iter().map(|r| r.blob).collect();
        self.masters
            .iter()
            .filter(|(h, (_, e))| {
                **h != m.hash && e.as_ref().is_some_and(|e| e.phase != Phase::Deleting)
            })
            .flat_map(|(_, (_, e))| e.iter().flat_map(|e| &e.manifest.rungs))
            .filter(|r| own.contains(&r.blob))
            .map(|r| r.blob)
            .collect()
    }

    /// May a master stored before salting exist here (bounded)? Once one
    /// was seen; else not in a bucket marked salted (`keys::salted_bucket`),
    /// and elsewhere not known until the start's read of masters ends.
    fn unsalted_possible(&self) -> bool {
        self.unsalted || (!self.salted_bucket && !self.masters_known())
    }

    /// Up to `limit` live masters whose entries list no keys yet (written
    /// before listings, or listed by an audit not yet verified).
    /// A bounded replica has none to offer: the audit needs every record
    /// (their masters stay, counted as named).
    pub(in crate::store::nats) fn unlisted_masters(&self, limit: usize) -> Vec<ContentHash> {
        if self.bounded {
            return Vec::new();
        }
        self.masters
            .iter()
            .filter(|(_, (_, e))| {
                e.as_ref().is_some_and(|e| {
                    e.phase == Phase::Live && e.refs.as_ref().is_none_or(|r| r.verify)
                })
            })
            .map(|(h, _)| *h)
            .take(limit)
            .collect()
    }

    /// For each of `masters`, the keys whose values here name it, with
    /// their revisions (one scan of the index).
    pub(in crate::store::nats) fn keys_naming(
        &self,
        masters: &HashSet<ContentHash>,
    ) -> HashMap<ContentHash, Vec<(IdentityHash, u64)>> {
        let mut out: HashMap<ContentHash, Vec<(IdentityHash, u64)>> = HashMap::new();
        for (key, (rev, value)) in &self.records {
            for m in value.masters() {
                if masters.contains(&m) {
                    out.entry(m).or_default().push((*key, *rev));
                }
            }
        }
        out
    }

    /// Masters a sweep should look at: stored, and unreferenced or stuck in
    /// a collection phase.
    pub(in crate::store::nats) fn sweep_candidates(&self) -> Vec<ContentHash> {
        self.masters
            .iter()
            .filter(|(h, (_, e))| {
                e.as_ref()
                    .is_some_and(|e| e.phase != Phase::Live || !self.referenced(h))
            })
            .map(|(h, _)| *h)
            .chain(self.unleased().copied())
            .collect()
    }
}

/// The value a change of master entry `key` stores: `Some(None)` for a
/// delete, `None` when the value is corrupt (logged). The watch's and the
/// start's read of masters (`start.rs`) decode alike.
pub(in crate::store::nats) fn decode_change(
    key: &str,
    put: bool,
    value: &[u8],
) -> Option<Option<MasterEntry>> {
    if !put {
        return Some(None);
    }
    match MasterEntry::decode(value) {
        Ok(m) => Some(Some(m)),
        Err(err) => {
            tracing::error!(key = %key, error = %err, "corrupt manifest");
            None
        }
    }
}
