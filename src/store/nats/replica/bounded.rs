//! What the replica does differently when it is bounded (issue 20,
//! `--nats-index-mb`): it holds no records, so
//! - a revision is announced once by remembering which revisions this
//!   node's commits announced ahead of the watch (the watch applies every
//!   identity revision, in order), not by comparing with a held record;
//! - a master is named when its `m.` entry lists a key (binders list,
//!   unlisters unlist, see `gc`), not by counting the records naming it.
//!   An entry written before listings (`refs` absent) counts as named: the
//!   audit that lists those needs every record, so their blobs are kept
//!   (an over-count) until a node holding the whole index has run it;
//! - it holds no master entry a sweep need not look at: a master is looked
//!   up through the hot set like an identity (`cold.rs`), and `masters`
//!   keeps deletions and condemned salted masters; salted masters listing
//!   no key are kept as their hash and lease only (`unlisted`: fallbacks'
//!   masters, and candidates). Memory for masters is then the budget plus
//!   what is being collected and ~64 B per such master, not one entry per
//!   avatar stored.

use std::collections::HashMap;
use std::sync::Mutex;

use super::hot::Hot;
use super::Replica;
use crate::config::AUTO_INDEX_BYTES;
use crate::model::ContentHash;
use crate::store::nats::gc;
use crate::store::nats::keys::{MasterEntry, Phase};
use crate::store::now_ms;

/// The start's read of every `m.` entry, while it runs (`start.rs`).
pub(in crate::store::nats) struct Loading {
    /// When it began (ms since the epoch).
    pub(in crate::store::nats) since: u64,
    /// Master → the highest revision the watch or a commit applied since,
    /// which the read's older values do not undo.
    seen: HashMap<ContentHash, u64>,
}

impl Loading {
    /// The watch or a commit applied `hash` at `revision`.
    pub(super) fn applied(&mut self, hash: ContentHash, revision: u64) {
        let at = self.seen.entry(hash).or_default();
        *at = (*at).max(revision);
    }
}

impl Replica {
    /// A replica holding only the hot set (see the module doc).
    pub(in crate::store::nats) fn bounded(recent_limit: usize) -> Replica {
        Replica {
            bounded: true,
            ..Replica::keeping(recent_limit)
        }
    }

    /// The replica, and the hot set if bounded, for an index budget
    /// (`NatsOptions::index_bytes`: 0 the whole index; `None` bounded at
    /// [`AUTO_INDEX_BYTES`] in a bucket marked salted, else the whole index:
    /// there a bounded node would leave masters stored before salting and
    /// entries stored before listings to others, and make new content wait
    /// after a restart — docs/scaling.md).
    pub(in crate::store::nats) fn for_budget(
        budget: Option<usize>,
        salted: bool,
        resume_events: usize,
    ) -> (Replica, Option<Mutex<Hot>>) {
        let bytes = budget.unwrap_or(if salted { AUTO_INDEX_BYTES } else { 0 });
        tracing::info!(
            index_mb = bytes >> 20,
            salted_bucket = salted,
            "index replica: {}",
            if bytes > 0 {
                "bounded"
            } else {
                "every identity"
            }
        );
        let mut replica = match bytes {
            0 => Replica::keeping(resume_events),
            _ => Replica::bounded(resume_events),
        };
        replica.salted_bucket = salted;
        (replica, (bytes > 0).then(|| Mutex::new(Hot::new(bytes))))
    }

    /// Started at the bucket's `last` sequence: nothing up to it is held
    /// or announced here; events up to it are read from the stream.
    pub(in crate::store::nats) fn starts_at(&mut self, last: u64) {
        self.head = self.head.max(last);
        self.recent_floor = self.recent_floor.max(last);
        self.watched = self.watched.max(last);
    }

    /// The start's read of every `m.` entry begins (`start.rs`): from here
    /// until [`Replica::loaded`], what the watch and commits apply wins over
    /// what that read brings.
    pub(in crate::store::nats) fn loading(&mut self) {
        self.loading = Some(Loading {
            since: now_ms(),
            seen: HashMap::new(),
        });
    }

    /// Are the masters known — the sweep's candidates, the deletions in
    /// progress, whether any master predates salting? Not while the start's
    /// read of every `m.` entry runs: then the sweep waits, `gc::collect`
    /// leaves a master to it, and `shared_rungs` assumes an unsalted master
    /// may exist. Always on a whole-index replica.
    pub(in crate::store::nats) fn masters_known(&self) -> bool {
        self.loading.is_none()
    }

    /// The `m.<hash>` entry at `revision` as the start's read found it:
    /// applied unless the watch or a commit applied it at that revision or
    /// a later one meanwhile.
    pub(in crate::store::nats) fn load_master(
        &mut self,
        hash: ContentHash,
        revision: u64,
        entry: Option<MasterEntry>,
    ) {
        let newer = self.loading.as_ref().and_then(|l| l.seen.get(&hash));
        if newer.is_some_and(|at| *at >= revision) {
            return;
        }
        self.put_master(hash, revision, entry);
    }

    /// The start's read of every `m.` entry ended: deletions, condemned and
    /// unlisted masters, and whether any master predates salting are known.
    pub(in crate::store::nats) fn loaded(&mut self) {
        self.loading = None;
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

    /// Is `hash` named, as far as this replica can tell? An entry it does
    /// not hold is `Live` and listed (or was never stored: callers ask
    /// about stored masters), see [`Replica::hold_master`].
    pub(super) fn named_bounded(&self, hash: &ContentHash) -> bool {
        if let Some(until) = self.unlisted.get(hash) {
            return *until > now_ms();
        }
        match self.masters.get(hash) {
            None => true,
            Some((_, e)) => e.as_ref().is_some_and(|e| named(e, now_ms())),
        }
    }

    /// Salted masters listing no key whose lease (if any) has ended.
    pub(super) fn unleased(&self) -> impl Iterator<Item = &ContentHash> {
        let now = now_ms();
        self.unlisted
            .iter()
            .filter(move |(_, until)| **until <= now)
            .map(|(h, _)| h)
    }

    /// Keep the `m.<hash>` entry at `revision` (already `masters::kept`)
    /// only while a sweep here must look at it: a deletion (binders wait for
    /// those sharing a rung), or a condemned salted master; of a salted
    /// master listing no key, only its lease. Masters stored before salting
    /// are left to a node holding every master (`gc::collect`), so only
    /// their deletions are kept.
    pub(super) fn hold_master(
        &mut self,
        hash: ContentHash,
        revision: u64,
        entry: Option<MasterEntry>,
    ) {
        // A deletion was announced by the caller; a live entry naming no
        // key (nor leased) is unreachable here from now on too.
        if entry
            .as_ref()
            .is_some_and(|e| e.phase != Phase::Deleting && !named(e, now_ms()))
        {
            self.gone.push(hash);
        }
        self.unsalted |= entry.as_ref().is_some_and(|e| !e.manifest.salted);
        self.masters.remove(&hash);
        self.unlisted.remove(&hash);
        let Some(e) = entry else { return };
        let salted = e.manifest.salted;
        let listed = e.refs.is_none() || gc::listed(&e);
        match e.phase {
            Phase::Deleting => {}
            Phase::Condemned if salted => {}
            Phase::Live if salted && !listed => {
                self.unlisted.insert(hash, e.held_until);
                return;
            }
            _ => return,
        }
        self.masters.insert(hash, (revision, Some(e)));
    }
}

/// Is a master with entry `e` named at `now`: listed, written before
/// listings (counted as named: their audit needs every record), or held by
/// a fallback entry's lease?
pub(in crate::store::nats) fn named(e: &MasterEntry, now: u64) -> bool {
    e.refs.is_none() || gc::listed(e) || e.held_until > now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::nats::keys::tests::stored;
    use crate::store::nats::keys::{Refs, Stored};
    use crate::store::{Manifest, RungRef};
    use std::collections::HashSet;

    /// A master `[hash; 32]` with a rung per blob `[b; 32]`.
    fn manifest(hash: u8, blobs: &[u8], salted: bool) -> Manifest {
        Manifest {
            hash: ContentHash([hash; 32]),
            has_alpha: false,
            source_format: "png".into(),
            rungs: blobs
                .iter()
                .map(|b| RungRef {
                    side: 64,
                    blob: ContentHash([*b; 32]),
                    len: 1,
                })
                .collect(),
            compression: None,
            animation: None,
            salted,
        }
    }

    fn entry(m: &Manifest, phase: Phase, refs: Option<Refs>) -> MasterEntry {
        MasterEntry {
            manifest: m.clone(),
            phase,
            at: 0,
            generation: 1,
            held_until: 0,
            refs,
        }
    }

    /// A listing of one key.
    fn listing() -> Refs {
        let mut one = Refs::default();
        one.by
            .insert(stored("a@example.org", 1, 1).record.primary(), 4);
        one
    }

    #[test]
    fn the_start_read_of_masters_never_undoes_what_the_watch_applied() {
        let mut r = Replica::bounded(10);
        r.loading();
        let m = manifest(3, &[3, 4, 5], true);
        // Until the read ends: a collection keeps the own blob, and pins
        // wait — for a lease's time at most (a deletion begun before the
        // start has stopped deleting by then).
        assert!(r.shares_a_deletion(&m));
        assert_eq!(r.shared_rungs(&m), HashSet::from([m.hash]));
        r.loading.as_mut().unwrap().since -= gc::LEASE_MS;
        assert!(!r.shares_a_deletion(&m));
        assert_eq!(r.shared_rungs(&m), HashSet::from([m.hash]));
        r.loading.as_mut().unwrap().since += gc::LEASE_MS;
        // The watch listed `m` at 10; the read brings it unlisted at 5.
        r.apply_master(m.hash, 10, Some(entry(&m, Phase::Live, Some(listing()))));
        r.load_master(
            m.hash,
            5,
            Some(entry(&m, Phase::Live, Some(Refs::default()))),
        );
        assert!(r.unlisted.is_empty() && r.referenced(&m.hash));
        // A deletion begun before the start, of a master stored before
        // salting that shares rung 4: held.
        let old = manifest(9, &[9, 4], false);
        r.load_master(old.hash, 3, Some(entry(&old, Phase::Deleting, None)));
        assert!(r.deleting.contains(&old.hash));
        // One whose end the watch applied before the read got to it: not.
        let ended = manifest(7, &[7, 3], false);
        r.apply_master(ended.hash, 12, None);
        r.load_master(ended.hash, 4, Some(entry(&ended, Phase::Deleting, None)));
        assert!(!r.deleting.contains(&ended.hash));
        // A salted master unlisted at start: the sweep's.
        let idle = manifest(6, &[6, 8], true);
        r.load_master(
            idle.hash,
            2,
            Some(entry(&idle, Phase::Live, Some(Refs::default()))),
        );
        r.loaded();
        assert!(r.shares_a_deletion(&m), "`old` lists rung 4");
        r.apply_master(old.hash, 13, None);
        assert!(!r.shares_a_deletion(&m));
        assert_eq!(r.shared_rungs(&m), HashSet::from([m.hash]), "unsalted seen");
        assert_eq!(r.sweep_candidates(), vec![idle.hash]);
    }

    #[test]
    fn the_default_budget_is_bounded_only_in_a_bucket_marked_salted() {
        for (budget, salted, bounded) in [
            (None, true, true),
            (None, false, false),
            (Some(0), true, false),
            (Some(1 << 20), false, true),
        ] {
            let (r, hot) = Replica::for_budget(budget, salted, 10);
            assert_eq!(
                (r.bounded, hot.is_some()),
                (bounded, bounded),
                "{budget:?} {salted}"
            );
            assert_eq!(r.salted_bucket, salted);
        }
    }

    #[test]
    fn in_a_bucket_marked_salted_pins_never_wait_for_the_start_read() {
        let mut r = Replica::bounded(10);
        r.salted_bucket = true;
        r.loading();
        let m = manifest(3, &[3, 4, 5], true);
        assert!(!r.shares_a_deletion(&m), "a salted master shares no rung");
        assert!(r.shared_rungs(&m).is_empty(), "not even its own blob");
        // A master stored before salting, pinned: waits as anywhere.
        let old = manifest(9, &[9, 4], false);
        assert!(r.shares_a_deletion(&old));
        // One seen after all, the marker notwithstanding: the rules of an
        // unmarked bucket apply.
        r.load_master(old.hash, 3, Some(entry(&old, Phase::Live, Some(listing()))));
        assert!(r.shares_a_deletion(&m), "until a lease after the start");
        assert_eq!(r.shared_rungs(&m), HashSet::from([m.hash]));
        // Unmarked: the start's read is waited for.
        let mut r = Replica::bounded(10);
        r.loading();
        assert!(r.shares_a_deletion(&m));
        assert_eq!(r.shared_rungs(&m), HashSet::from([m.hash]));
    }

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
    fn only_masters_a_sweep_must_look_at_are_held() {
        let mut r = Replica::bounded(10);
        let m = manifest(3, &[3, 4, 5], true);
        let (one, none) = (listing(), Refs::default());
        let held = |r: &Replica| r.masters.len() + r.unlisted.len();

        // Listed: not held, named.
        r.apply_master(m.hash, 1, Some(entry(&m, Phase::Live, Some(one.clone()))));
        assert_eq!(held(&r), 0);
        assert!(r.referenced(&m.hash) && r.gone.is_empty());
        // Unlisted: held for the sweep, unreachable here at once.
        r.apply_master(m.hash, 2, Some(entry(&m, Phase::Live, Some(none.clone()))));
        assert_eq!(held(&r), 1);
        assert!(r.masters.is_empty(), "as its hash and lease only");
        assert!(!r.referenced(&m.hash));
        assert_eq!(std::mem::take(&mut r.gone), vec![m.hash]);
        assert_eq!(r.sweep_candidates(), vec![m.hash]);
        // A fallback's master: listing no key, named while its lease lasts.
        let leased = |until| MasterEntry {
            held_until: until,
            ..entry(&m, Phase::Live, Some(none.clone()))
        };
        r.apply_master(m.hash, 3, Some(leased(now_ms() + 60_000)));
        assert!(r.referenced(&m.hash) && r.sweep_candidates().is_empty());
        assert!(r.gone.is_empty(), "still reachable");
        r.apply_master(m.hash, 4, Some(leased(now_ms() - 1)));
        assert!(!r.referenced(&m.hash));
        assert_eq!(r.sweep_candidates(), vec![m.hash], "the lease ended");
        r.gone.clear();
        // Listed again: let go.
        r.apply_master(m.hash, 3, Some(entry(&m, Phase::Live, Some(one.clone()))));
        assert_eq!(held(&r), 0);
        assert!(r.referenced(&m.hash) && r.sweep_candidates().is_empty());
        // Condemned, deleting, deleted.
        r.apply_master(
            m.hash,
            4,
            Some(entry(&m, Phase::Condemned, Some(none.clone()))),
        );
        assert_eq!(r.sweep_candidates(), vec![m.hash]);
        r.apply_master(
            m.hash,
            5,
            Some(entry(&m, Phase::Deleting, Some(none.clone()))),
        );
        assert!(r.deleting.contains(&m.hash) && held(&r) == 1);
        assert_eq!(r.gone.pop(), Some(m.hash));
        assert_eq!(
            r.gone.pop(),
            Some(m.hash),
            "condemned, then deleting: once each"
        );
        assert!(r.gone.is_empty());
        r.apply_master(m.hash, 6, None);
        assert!(r.deleting.is_empty() && held(&r) == 0);
        assert!(r.unlisted_masters(10).is_empty());

        // A salted master's rungs are its own.
        assert!(r.shared_rungs(&m).is_empty());
        // Masters stored before salting: left to a node holding every
        // master (not held unless being deleted), and once one is seen a
        // salted master's own blob may be one of its rungs.
        let old = manifest(9, &[9, 3], false);
        r.apply_master(
            old.hash,
            7,
            Some(entry(&old, Phase::Live, Some(none.clone()))),
        );
        assert_eq!(held(&r), 0, "not swept here");
        assert_eq!(r.shared_rungs(&m), HashSet::from([m.hash]));
        assert_eq!(r.shared_rungs(&old).len(), 2, "all kept");
        r.apply_master(old.hash, 8, Some(entry(&old, Phase::Deleting, Some(none))));
        assert!(r.shares_a_deletion(&m), "binders of a rung it lists wait");
        // Written before listings: named.
        r.apply_master(old.hash, 9, Some(entry(&old, Phase::Live, None)));
        assert!(r.referenced(&old.hash) && !r.shares_a_deletion(&m));
    }
}
