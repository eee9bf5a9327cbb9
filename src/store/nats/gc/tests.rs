//! The collection rule checked on every interleaving of one binder and one
//! collector over a model of the `m.` key (compare-and-set on its revision),
//! the blobs, and the binder's identity record. The collector counts
//! references as its replica has them at the condemnation: a record written
//! before it, nothing after (the least the replica guarantees).

use super::*;
use crate::store::RungRef;

fn manifest() -> Manifest {
    Manifest {
        hash: ContentHash([1; 32]),
        has_alpha: false,
        source_format: "png".into(),
        rungs: vec![RungRef {
            side: 64,
            blob: ContentHash([1; 32]),
            len: 10,
        }],
        compression: None,
        animation: None,
    }
}

/// The shared world: the key's revision and value, the global sequence,
/// whether the blobs are stored, when the binder's record was written.
#[derive(Clone, Debug)]
struct World {
    seq: u64,
    key_rev: u64,
    entry: Option<MasterEntry>,
    blobs: bool,
    record: Option<u64>,
    acked: bool,
}

impl World {
    fn cas(&mut self, expect: u64, value: Option<MasterEntry>) -> Option<u64> {
        if self.key_rev != expect {
            return None;
        }
        self.seq += 1;
        self.key_rev = self.seq;
        self.entry = value;
        Some(self.seq)
    }
}

/// The binder's program counter and locals.
#[derive(Clone, Debug)]
enum Binder {
    Read {
        tries: u8,
    },
    Pin {
        tries: u8,
        seq: u64,
        entry: Option<MasterEntry>,
    },
    Check {
        tries: u8,
        generation: u64,
    },
    Put {
        tries: u8,
        generation: u64,
    },
    Record {
        generation: u64,
    },
    Confirm {
        tries: u8,
        generation: u64,
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
const TRIES: u8 = 3;

fn step_binder(b: &Binder, w: &mut World) -> Binder {
    let m = manifest();
    match b.clone() {
        Binder::Read { tries: 0 } => Binder::Done,
        Binder::Read { tries } => Binder::Pin {
            tries,
            seq: w.key_rev,
            entry: w.entry.clone(),
        },
        Binder::Pin { tries, seq, entry } => match pin(entry.as_ref(), seq, &m, BINDER_NOW) {
            Some(e) => {
                let generation = e.generation;
                match w.cas(seq, Some(e)) {
                    Some(_) => Binder::Check { tries, generation },
                    None => Binder::Read { tries: tries - 1 },
                }
            }
            None => Binder::Read { tries: tries - 1 },
        },
        // The blob check and the put are separate steps (a deletion can
        // fall between them).
        Binder::Check { tries, generation } if w.blobs => match w.record {
            Some(_) => Binder::Confirm { tries, generation },
            None => Binder::Record { generation },
        },
        Binder::Check { tries, generation } => Binder::Put { tries, generation },
        Binder::Put { tries, generation } => {
            w.blobs = true;
            match w.record {
                Some(_) => Binder::Confirm { tries, generation },
                None => Binder::Record { generation },
            }
        }
        Binder::Record { generation } => {
            w.seq += 1;
            w.record = Some(w.seq);
            Binder::Confirm {
                tries: TRIES,
                generation,
            }
        }
        Binder::Confirm { tries, generation } => {
            if pin_holds(w.entry.as_ref(), generation) {
                w.acked = true;
                Binder::Done
            } else if tries == 0 {
                Binder::Done // answered 503: not acknowledged
            } else {
                Binder::Read { tries: tries - 1 }
            }
        }
        Binder::Done => Binder::Done,
    }
}

fn step_collector(c: &Collector, w: &mut World) -> Collector {
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
            let referenced = w.record.is_some_and(|r| r < c);
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

/// Every interleaving from (`b`, `c`, `w`); returns how many ended.
fn explore(b: Binder, c: Collector, w: World, out: &mut Vec<World>) {
    let b_done = matches!(b, Binder::Done);
    let c_done = matches!(c, Collector::Done);
    if b_done && c_done {
        out.push(w);
        return;
    }
    if !b_done {
        let mut w2 = w.clone();
        let b2 = step_binder(&b, &mut w2);
        explore(b2, c.clone(), w2, out);
    }
    if !c_done {
        let mut w2 = w;
        let c2 = step_collector(&c, &mut w2);
        explore(b, c2, w2, out);
    }
}

fn start(entry: Option<MasterEntry>, blobs: bool) -> World {
    World {
        seq: 5,
        key_rev: if entry.is_some() { 5 } else { 3 },
        entry,
        blobs,
        record: None,
        acked: false,
    }
}

#[test]
fn an_acknowledged_bind_keeps_its_blobs_on_every_interleaving() {
    let old = |phase, at| MasterEntry {
        manifest: manifest(),
        phase,
        at,
        generation: 0,
        held_until: 0,
    };
    let starts = [
        // Another identity's delete left the master unreferenced.
        start(Some(old(Phase::Live, 0)), true),
        // Never stored, or collected earlier.
        start(None, false),
        // A collector died after condemning, or in the middle of deleting.
        start(Some(old(Phase::Condemned, 0)), true),
        start(Some(old(Phase::Deleting, 0)), false),
    ];
    let mut acked = 0;
    let mut total = 0;
    for w in starts {
        let mut ends = Vec::new();
        explore(
            Binder::Read { tries: TRIES },
            Collector::Read,
            w.clone(),
            &mut ends,
        );
        for end in &ends {
            if end.acked {
                acked += 1;
                assert!(
                    end.blobs,
                    "acknowledged bind lost its blobs: {w:?} → {end:?}"
                );
                assert!(
                    matches!(&end.entry, Some(e) if e.phase == Phase::Live),
                    "acknowledged bind's master not live: {end:?}"
                );
            }
        }
        total += ends.len();
    }
    assert!(total > 100, "explored {total} interleavings");
    assert!(
        acked > 0,
        "some interleavings acknowledge ({acked}/{total})"
    );
}

#[test]
fn unreferenced_masters_are_collected_and_pins_are_respected() {
    let m = manifest();
    let live = |at| MasterEntry {
        manifest: m.clone(),
        phase: Phase::Live,
        at,
        generation: 7,
        held_until: 0,
    };
    // A fresh pin is left alone; an old one is condemned.
    assert_eq!(
        collect(Some(&live(100)), 100 + GRACE_MS - 1),
        Collect::Leave
    );
    assert!(matches!(
        collect(Some(&live(100)), 100 + GRACE_MS),
        Collect::Condemn(_)
    ));
    assert_eq!(collect(None, 5), Collect::Leave);
    // Phases in progress are left to their collector until the lease ends.
    for phase in [Phase::Condemned, Phase::Deleting] {
        let e = live(100).with(phase, 100);
        assert_eq!(collect(Some(&e), 100 + LEASE_MS - 1), Collect::Leave);
        assert_ne!(collect(Some(&e), 100 + LEASE_MS), Collect::Leave);
    }
    // Pins: same generation over Live and Condemned; a new one over nothing
    // or an abandoned deletion; a running deletion is waited for.
    assert_eq!(pin(Some(&live(1)), 40, &m, 9).unwrap().generation, 7);
    let condemned = live(1).with(Phase::Condemned, 5);
    assert_eq!(pin(Some(&condemned), 41, &m, 9).unwrap().generation, 7);
    assert_eq!(pin(None, 42, &m, 9).unwrap().generation, 42);
    let deleting = live(1).with(Phase::Deleting, 5);
    assert_eq!(pin(Some(&deleting), 43, &m, 6), None);
    assert_eq!(
        pin(Some(&deleting), 43, &m, 5 + LEASE_MS)
            .unwrap()
            .generation,
        43
    );
    assert!(pin_holds(Some(&live(3)), 7));
    // A fallback entry's lease survives pins and phases of its generation,
    // not a new generation.
    let held = MasterEntry {
        held_until: 1_000,
        ..live(1)
    };
    assert_eq!(pin(Some(&held), 44, &m, 9).unwrap().held_until, 1_000);
    let held_condemned = held.with(Phase::Condemned, 5);
    assert_eq!(held_condemned.held_until, 1_000);
    assert_eq!(
        pin(Some(&held_condemned), 45, &m, 9).unwrap().held_until,
        1_000
    );
    let abandoned = held.with(Phase::Deleting, 5);
    assert_eq!(
        pin(Some(&abandoned), 46, &m, 5 + LEASE_MS)
            .unwrap()
            .held_until,
        0
    );
    assert!(!pin_holds(Some(&condemned), 7));
    assert!(!pin_holds(Some(&live(3)), 8));
    assert!(!pin_holds(None, 7));
    // Entries written before collection existed are live, generation 0.
    let legacy = serde_json::to_vec(&m).unwrap();
    let e = MasterEntry::decode(&legacy).unwrap();
    assert_eq!((e.phase, e.at, e.generation), (Phase::Live, 0, 0));
    assert_eq!(
        MasterEntry::decode(&live(3).encode().unwrap()).unwrap(),
        live(3)
    );
}
