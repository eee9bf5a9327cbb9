//! The collection rule checked on every interleaving of one binder, one
//! unlister (a write that stops naming the master, then takes its key off
//! the listing) and one collector, over a model of the `m.` key
//! (compare-and-set on its revision), the blobs, and one identity key. The
//! collector decides by the entry's listing, with or without also counting
//! the key's value as its replica has it at the condemnation (a value
//! written before it, nothing after: the least the replica guarantees).

use super::model_audit::{step_auditor, Auditor};
use super::tests::manifest;
use super::*;

/// The identity key every actor writes.
pub(super) const K: IdentityHash = IdentityHash::Md5([7; 16]);

/// The shared world: the global sequence, the `m.` key's revision and value,
/// whether the blobs are stored, the identity key `K`'s revision and its
/// history (revision, names the master?), whether the binder was answered.
#[derive(Clone, Debug)]
pub(super) struct World {
    seq: u64,
    pub(super) key_rev: u64,
    pub(super) entry: Option<MasterEntry>,
    blobs: bool,
    ident_rev: u64,
    history: Vec<(u64, bool)>,
    /// `K`'s current value is the binder's write.
    by_binder: bool,
    acked: bool,
    /// The audit verified its listing.
    pub(super) verified: bool,
}

impl World {
    pub(super) fn cas(&mut self, expect: u64, value: Option<MasterEntry>) -> Option<u64> {
        if self.key_rev != expect {
            return None;
        }
        self.seq += 1;
        self.key_rev = self.seq;
        self.entry = value;
        Some(self.seq)
    }

    /// Write `K` if its revision is still `expect`.
    fn write_key(&mut self, expect: u64, names: bool, by_binder: bool) -> Option<u64> {
        if self.ident_rev != expect {
            return None;
        }
        self.seq += 1;
        self.ident_rev = self.seq;
        self.history.push((self.seq, names));
        self.by_binder = by_binder;
        Some(self.seq)
    }

    /// Did `K`'s value as of revision `at` name the master (what a replica
    /// at `at` counts)?
    fn named_at(&self, at: u64) -> bool {
        self.naming_at(at).is_some()
    }

    /// `K` with its value's revision, if its value as of `at` named the
    /// master (what a replica scan at `at` finds).
    pub(super) fn naming_at(&self, at: u64) -> Option<(IdentityHash, u64)> {
        self.history
            .iter()
            .rev()
            .find(|(rev, _)| *rev <= at)
            .filter(|(_, names)| *names)
            .map(|(rev, _)| (K, *rev))
    }
}

/// The binder's program counter and locals: `basis` is the revision of `K`
/// its record write is compared against, `written` whether it wrote it.
#[derive(Clone, Debug)]
enum Binder {
    ReadKey {
        tries: u8,
    },
    Read {
        tries: u8,
        basis: u64,
        written: bool,
    },
    Pin {
        tries: u8,
        basis: u64,
        written: bool,
        seq: u64,
        entry: Option<MasterEntry>,
    },
    Check {
        tries: u8,
        basis: u64,
        written: bool,
        generation: u64,
    },
    Put {
        tries: u8,
        basis: u64,
        written: bool,
        generation: u64,
    },
    Record {
        tries: u8,
        basis: u64,
        generation: u64,
    },
    Confirm {
        tries: u8,
        basis: u64,
        generation: u64,
    },
    Done,
}

/// A writer that changes `K` to name something else, then takes `K` off
/// the master's listing (`unname`).
#[derive(Clone, Debug)]
enum Replacer {
    Read {
        tries: u8,
    },
    Write {
        tries: u8,
        basis: u64,
    },
    Unname {
        tries: u8,
        written: u64,
    },
    UnnameWrite {
        tries: u8,
        written: u64,
        seq: u64,
        next: MasterEntry,
    },
    Done,
}

/// The collector's program counter and locals.
#[derive(Clone, Debug)]
enum Collector {
    Read,
    Write {
        seq: u64,
        step: Collect,
    },
    Count {
        c: u64,
        condemned: MasterEntry,
    },
    Verdict {
        c: u64,
        next: MasterEntry,
        referenced: bool,
    },
    Delete {
        d: u64,
    },
    DropKey {
        d: u64,
    },
    Done,
}

const BINDER_NOW: u64 = 1_000_000;
/// The collector's clock: the binder's pin is past its grace (a slow binder).
const COLLECTOR_NOW: u64 = BINDER_NOW + GRACE_MS;
pub(super) const TRIES: u8 = 2;

fn step_binder(b: &Binder, w: &mut World) -> Binder {
    let m = manifest();
    match b.clone() {
        Binder::ReadKey { tries: 0 } => Binder::Done,
        Binder::ReadKey { tries } => Binder::Read {
            tries,
            basis: w.ident_rev,
            written: false,
        },
        Binder::Read { tries: 0, .. } => Binder::Done,
        Binder::Read {
            tries,
            basis,
            written,
        } => Binder::Pin {
            tries,
            basis,
            written,
            seq: w.key_rev,
            entry: w.entry.clone(),
        },
        Binder::Pin {
            tries,
            basis,
            written,
            seq,
            entry,
        } => {
            let again = Binder::Read {
                tries: tries - 1,
                basis,
                written,
            };
            match pin(entry.as_ref(), seq, &m, BINDER_NOW, &[(K, basis)]) {
                Some(e) => {
                    let generation = e.generation;
                    match w.cas(seq, Some(e)) {
                        Some(_) => Binder::Check {
                            tries,
                            basis,
                            written,
                            generation,
                        },
                        None => again,
                    }
                }
                None => again,
            }
        }
        // The blob check and the put are separate steps (a deletion can
        // fall between them).
        Binder::Check {
            tries,
            basis,
            written,
            generation,
        } if w.blobs => after_blobs(tries, basis, written, generation),
        Binder::Check {
            tries,
            basis,
            written,
            generation,
        } => Binder::Put {
            tries,
            basis,
            written,
            generation,
        },
        Binder::Put {
            tries,
            basis,
            written,
            generation,
        } => {
            w.blobs = true;
            after_blobs(tries, basis, written, generation)
        }
        Binder::Record {
            tries,
            basis,
            generation,
        } => match w.write_key(basis, true, true) {
            Some(_) => Binder::Confirm {
                tries: TRIES,
                basis,
                generation,
            },
            // Lost the race on `K`: read it again, pin with the new basis.
            None => Binder::ReadKey { tries: tries - 1 },
        },
        Binder::Confirm {
            tries,
            basis,
            generation,
        } => {
            let holds = pin_holds(w.entry.as_ref(), generation)
                && w.entry.as_ref().is_some_and(|e| names(e, &[(K, basis)]));
            if holds {
                w.acked = true;
                Binder::Done
            } else if tries == 0 {
                Binder::Done // answered 503: not acknowledged
            } else {
                Binder::Read {
                    tries: tries - 1,
                    basis,
                    written: true,
                }
            }
        }
        Binder::Done => Binder::Done,
    }
}

fn after_blobs(tries: u8, basis: u64, written: bool, generation: u64) -> Binder {
    if written {
        Binder::Confirm {
            tries,
            basis,
            generation,
        }
    } else {
        Binder::Record {
            tries,
            basis,
            generation,
        }
    }
}

fn step_replacer(r: &Replacer, w: &mut World) -> Replacer {
    match r.clone() {
        Replacer::Read { tries: 0 } | Replacer::Unname { tries: 0, .. } => Replacer::Done,
        Replacer::Read { tries } => Replacer::Write {
            tries,
            basis: w.ident_rev,
        },
        Replacer::Write { tries, basis } => match w.write_key(basis, false, false) {
            Some(written) => Replacer::Unname {
                tries: TRIES,
                written,
            },
            None => Replacer::Read { tries: tries - 1 },
        },
        Replacer::Unname { tries, written } => match &w.entry {
            Some(e) => match unname(e, &K, written) {
                Some(next) => Replacer::UnnameWrite {
                    tries,
                    written,
                    seq: w.key_rev,
                    next,
                },
                None => Replacer::Done,
            },
            None => Replacer::Done,
        },
        Replacer::UnnameWrite {
            tries,
            written,
            seq,
            next,
        } => match w.cas(seq, Some(next)) {
            Some(_) => Replacer::Done,
            None => Replacer::Unname {
                tries: tries - 1,
                written,
            },
        },
        Replacer::Done => Replacer::Done,
    }
}

/// `count`: the collector also counts `K`'s value as its replica has it at
/// the condemnation (today's second guard); without it, the listing alone
/// must keep an acknowledged bind's blobs.
fn step_collector(c: &Collector, w: &mut World, count: bool) -> Collector {
    match c.clone() {
        Collector::Read => match collect(w.entry.as_ref(), COLLECTOR_NOW) {
            Collect::Leave => Collector::Done,
            step => Collector::Write {
                seq: w.key_rev,
                step,
            },
        },
        Collector::Write { seq, step } => match step {
            Collect::Condemn(e) => match w.cas(seq, Some(e.clone())) {
                Some(c) => Collector::Count { c, condemned: e },
                None => Collector::Done,
            },
            Collect::Delete(e) => match w.cas(seq, Some(e)) {
                Some(d) => Collector::Delete { d },
                None => Collector::Done,
            },
            Collect::Leave => Collector::Done,
        },
        Collector::Count { c, condemned } => {
            // Entries written before listings are always counted.
            let counted = count || condemned.refs.is_none();
            let referenced = listed(&condemned) || (counted && w.named_at(c));
            Collector::Verdict {
                c,
                next: verdict(&condemned, referenced, COLLECTOR_NOW),
                referenced,
            }
        }
        Collector::Verdict {
            c,
            next,
            referenced,
        } => match w.cas(c, Some(next)) {
            Some(d) if !referenced => Collector::Delete { d },
            _ => Collector::Done,
        },
        Collector::Delete { d } => {
            w.blobs = false;
            Collector::DropKey { d }
        }
        Collector::DropKey { d } => {
            w.cas(d, None);
            Collector::Done
        }
        Collector::Done => Collector::Done,
    }
}

type State = (Binder, Replacer, Collector, Auditor, World);

/// Every interleaving from `s`: the distinct end worlds into `out`
/// (states already explored are skipped).
fn explore(
    s: State,
    count: bool,
    seen: &mut std::collections::HashSet<String>,
    out: &mut Vec<World>,
) {
    if !seen.insert(format!("{s:?}")) {
        return;
    }
    let (b, r, c, a, w) = s;
    let b_done = matches!(b, Binder::Done);
    let r_done = matches!(r, Replacer::Done);
    let c_done = matches!(c, Collector::Done);
    let a_done = matches!(a, Auditor::Done);
    if b_done && r_done && c_done && a_done {
        out.push(w);
        return;
    }
    if !b_done {
        let mut w2 = w.clone();
        let b2 = step_binder(&b, &mut w2);
        explore((b2, r.clone(), c.clone(), a.clone(), w2), count, seen, out);
    }
    if !r_done {
        let mut w2 = w.clone();
        let r2 = step_replacer(&r, &mut w2);
        explore((b.clone(), r2, c.clone(), a.clone(), w2), count, seen, out);
    }
    if !c_done {
        let mut w2 = w.clone();
        let c2 = step_collector(&c, &mut w2, count);
        explore((b.clone(), r.clone(), c2, a.clone(), w2), count, seen, out);
    }
    if !a_done {
        let mut w2 = w;
        let a2 = step_auditor(&a, &mut w2);
        explore((b, r, c, a2, w2), count, seen, out);
    }
}

/// `entry` at revision 5 (or none, the key last deleted at 4); `K` at
/// revision 3, naming the master or not.
fn start(entry: Option<MasterEntry>, blobs: bool, named: bool) -> World {
    World {
        seq: 5,
        key_rev: if entry.is_some() { 5 } else { 4 },
        entry,
        blobs,
        ident_rev: 3,
        history: vec![(3, named)],
        by_binder: false,
        acked: false,
        verified: false,
    }
}

fn entry(phase: Phase, refs: Option<&[(IdentityHash, u64)]>) -> MasterEntry {
    MasterEntry {
        manifest: manifest(),
        phase,
        at: 0,
        generation: 0,
        held_until: 0,
        refs: refs.map(|keys| Refs {
            by: keys.iter().copied().collect(),
            ..Refs::default()
        }),
    }
}

/// Explore every start, with and without a replacer; returns (ends,
/// acknowledged ends).
fn check_every_interleaving(count: bool) -> (usize, usize) {
    let listed_k: &[(IdentityHash, u64)] = &[(K, 2)];
    let starts = [
        // Another identity's change left the master unlisted.
        start(Some(entry(Phase::Live, Some(&[]))), true, false),
        // A stale listing of `K` (an unlisting that never ran).
        start(Some(entry(Phase::Live, Some(listed_k))), true, false),
        // `K` names it now, listed; the replacer takes it away.
        start(Some(entry(Phase::Live, Some(listed_k))), true, true),
        // Never stored, or collected earlier.
        start(None, false, false),
        // A collector died after condemning, or in the middle of deleting.
        start(Some(entry(Phase::Condemned, Some(&[]))), true, false),
        start(Some(entry(Phase::Deleting, Some(&[]))), false, false),
        // Written before listings: `K` names it, or nothing does; the audit
        // runs (below).
        start(Some(entry(Phase::Live, None)), true, true),
        start(Some(entry(Phase::Live, None)), true, false),
    ];
    let (mut total, mut acked) = (0, 0);
    for w in starts {
        let legacy = w.entry.as_ref().is_some_and(|e| e.refs.is_none());
        for replacer in [Replacer::Done, Replacer::Read { tries: TRIES }] {
            let mut ends = Vec::new();
            let auditor = if legacy { Auditor::Read } else { Auditor::Done };
            let s = (
                Binder::ReadKey { tries: TRIES },
                replacer,
                Collector::Read,
                auditor,
                w.clone(),
            );
            explore(s, count, &mut Default::default(), &mut ends);
            for end in &ends {
                // A verified audit lists every key naming the master now
                // (but a bind answered 503).
                let names_now = end.history.last().is_some_and(|(_, n)| *n);
                if end.verified && names_now && (end.acked || !end.by_binder) {
                    let lists_k = end.entry.as_ref().and_then(|e| e.refs.as_ref());
                    assert!(
                        lists_k.is_some_and(|r| r.many || r.by.contains_key(&K)),
                        "a verified audit misses a key naming the master: {w:?} → {end:?}"
                    );
                }
                if !(end.acked && end.by_binder) {
                    continue;
                }
                acked += 1;
                assert!(
                    end.blobs,
                    "acknowledged bind lost its blobs: {w:?} → {end:?}"
                );
                let e = end.entry.as_ref().expect("entry kept");
                assert_eq!(
                    e.phase,
                    Phase::Live,
                    "acknowledged bind's master not live: {end:?}"
                );
                assert!(
                    listed(e) || e.refs.is_none(),
                    "acknowledged bind's key not listed: {end:?}"
                );
            }
            total += ends.len();
        }
    }
    (total, acked)
}

#[test]
fn an_acknowledged_bind_keeps_its_blobs_on_every_interleaving() {
    // Today's rule (listing and the replica's count), and the listing alone
    // (what the bounded replica will rely on).
    for count in [true, false] {
        let (total, acked) = check_every_interleaving(count);
        assert!(total > 100, "explored {total} end states");
        assert!(
            acked > 0,
            "some interleavings acknowledge ({acked}/{total})"
        );
    }
}
