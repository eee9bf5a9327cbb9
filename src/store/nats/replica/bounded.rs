//! What the replica does differently when it is bounded (issue 20,
//! `--nats-index-mb`): it holds no records, so
//! - a revision is announced once by remembering which revisions this
//!   node's commits announced ahead of the watch (the watch applies every
//!   identity revision, in order), not by comparing with a held record;
//! - a master is named when its `m.` entry lists a key (binders list,
//!   unlisters unlist, see `gc`), not by counting the records naming it.
//!   An entry written before listings (`refs` absent) counts as named: the
//!   audit that lists those needs every record, so their blobs are kept
//!   (an over-count) until a node holding the whole index has run it.

use super::Replica;
use crate::model::ContentHash;

impl Replica {
    /// A replica holding only the hot set (see the module doc).
    pub(in crate::store::nats) fn bounded(recent_limit: usize) -> Replica {
        Replica {
            bounded: true,
            ..Replica::keeping(recent_limit)
        }
    }

    /// Started at the bucket's `last` sequence: nothing up to it is held
    /// or announced here; events up to it are read from the stream.
    pub(in crate::store::nats) fn starts_at(&mut self, last: u64) {
        self.head = self.head.max(last);
        self.recent_floor = self.recent_floor.max(last);
        self.watched = self.watched.max(last);
    }

    /// Is identity revision `revision` applied here for the first time?
    /// The watch delivers each revision once, in order; a commit of this
    /// node may apply its own before the watch reaches it.
    pub(super) fn first_time(&mut self, revision: u64, watched: bool) -> bool {
        if watched {
            self.watched = self.watched.max(revision);
            let announced = self.announced.remove(&revision);
            // Anything older was passed by the watch: never asked again.
            self.announced = self.announced.split_off(&revision);
            !announced
        } else {
            revision > self.watched && self.announced.insert(revision)
        }
    }

    /// Does `hash`'s entry here list a key? (The replica keeps `many` for
    /// "lists at least one", see `apply_master`.)
    pub(super) fn listed(&self, hash: &ContentHash) -> bool {
        self.masters.get(hash).is_some_and(|(_, e)| {
            e.as_ref()
                .is_some_and(|e| e.refs.is_none() || crate::store::nats::gc::listed(e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::nats::keys::tests::stored;
    use crate::store::nats::keys::{MasterEntry, Phase, Refs, Stored};
    use crate::store::Manifest;

    #[test]
    fn each_revision_is_announced_once_whoever_applies_it_first() {
        let mut r = Replica::bounded(10);
        let a = stored("a@example.org", 1, 1);
        let p = a.record.primary();
        let rec = |v| Stored::Record(stored("a@example.org", v, 1));
        // The commit first, then the watch.
        assert!(r.apply_record(p, 5, rec(1), false).is_some());
        assert!(r.apply_record(p, 5, rec(1), true).is_none());
        // The watch first, then the commit.
        assert!(r.apply_record(p, 6, rec(2), true).is_some());
        assert!(r.apply_record(p, 6, rec(2), false).is_none());
        // A commit ahead of the watch, and others' revisions in between.
        assert!(r.apply_record(p, 9, rec(4), false).is_some());
        assert!(r.apply_record(p, 8, rec(3), true).is_some());
        assert!(r.apply_record(p, 9, rec(4), true).is_none());
        assert!(r.announced.is_empty());
        assert!(r.records.is_empty() && r.refs.is_empty(), "nothing held");
        let ids: Vec<u64> = r.recent.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![5, 6, 8, 9]);
    }

    #[test]
    fn a_master_is_named_while_its_entry_lists_a_key() {
        let mut r = Replica::bounded(10);
        let m = Manifest {
            hash: ContentHash([3; 32]),
            has_alpha: false,
            source_format: "png".into(),
            rungs: Vec::new(),
            compression: None,
            animation: None,
            salted: false,
        };
        let entry = |refs: Option<Refs>| MasterEntry {
            manifest: m.clone(),
            phase: Phase::Live,
            at: 0,
            generation: 1,
            held_until: 0,
            refs,
        };
        let key = stored("a@example.org", 1, 1).record.primary();
        let mut one = Refs::default();
        one.by.insert(key, 4);
        r.apply_master(m.hash, 1, Some(entry(None)));
        assert!(r.referenced(&m.hash), "before listings: kept");
        r.apply_master(m.hash, 2, Some(entry(Some(one))));
        assert!(r.referenced(&m.hash) && r.bound_manifest(&m.hash).is_some());
        assert!(r.gone.is_empty());
        r.apply_master(m.hash, 3, Some(entry(Some(Refs::default()))));
        assert!(!r.referenced(&m.hash) && r.bound_manifest(&m.hash).is_none());
        assert_eq!(r.gone, vec![m.hash], "unreachable here at once");
        assert_eq!(r.sweep_candidates(), vec![m.hash]);
        assert!(r.unlisted_masters(10).is_empty());
    }
}
