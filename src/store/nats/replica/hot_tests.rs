use std::collections::HashMap;

use super::*;
use crate::store::nats::keys::tests::stored;
use crate::store::nats::keys::{Forward, Stored};
use crate::store::nats::replica::Replica;

fn record(email: &str, version: u64) -> Value {
    Value::Held(Held::Record(stored(email, version, 1).record))
}

fn primary(email: &str) -> IdentityHash {
    stored(email, 1, 1).record.aliases[0]
}

#[test]
fn the_watch_updates_held_keys_and_never_adds_one() {
    let mut h = Hot::new(1 << 20);
    let (a, b) = (primary("a@example.org"), primary("b@example.org"));
    let (ka, kb) = (HotKey::Identity(a), HotKey::Identity(b));
    assert!(h.insert(0, ka, 3, record("a@example.org", 1)));
    h.applied(kb, 4, record("b@example.org", 1));
    assert!(!h.holds(&kb), "nobody asked for b");
    h.applied(ka, 5, record("a@example.org", 2));
    assert_eq!(h.get(&ka), Some(&record("a@example.org", 2)));
    h.applied(ka, 4, record("a@example.org", 9));
    assert_eq!(
        h.get(&ka),
        Some(&record("a@example.org", 2)),
        "an older revision never wins"
    );
    assert_eq!((h.len(), h.records()), (1, 1));
}

#[test]
fn a_held_absence_is_replaced_by_the_keys_first_write() {
    let mut h = Hot::new(1 << 20);
    let k = HotKey::Alias(primary("new@example.org"));
    assert!(h.insert(7, k, 0, Value::Absent));
    assert_eq!(h.get(&k), Some(&Value::Absent));
    h.applied(k, 9, Value::Names(primary("new@example.org")));
    assert_eq!(h.get(&k), Some(&Value::Names(primary("new@example.org"))));
}

#[test]
fn a_read_overtaken_by_a_change_of_its_key_is_not_held() {
    let mut h = Hot::new(1 << 20);
    let (a, b) = (primary("a@example.org"), primary("b@example.org"));
    let (ka, kb) = (HotKey::Identity(a), HotKey::Identity(b));
    // A read began at 10; the watch applied a's revision 12 (not held, so
    // dropped) before the read's older value came back.
    h.applied(ka, 12, record("a@example.org", 2));
    assert!(!h.insert(10, ka, 8, record("a@example.org", 1)));
    assert!(!h.holds(&ka));
    // Another key's change does not matter; one from before the read began
    // is in what the leader answered.
    assert!(h.insert(10, kb, 9, record("b@example.org", 1)));
    assert!(h.insert(12, ka, 12, record("a@example.org", 2)));
    // Once the ring no longer reaches back to the read's start, nothing can
    // be told: answered, not held.
    for i in 0..CHANGED_KEPT as u64 + 1 {
        h.applied(HotKey::Alias(b), 100 + i, Value::Names(b));
    }
    let c = HotKey::Identity(primary("c@example.org"));
    assert!(!h.insert(50, c, 0, Value::Absent));
    assert!(h.insert(100 + CHANGED_KEPT as u64, c, 0, Value::Absent));
}

#[test]
fn the_budget_bounds_held_bytes_and_the_least_recent_go_first() {
    let one = weight(&record("user0@example.org", 1));
    let mut h = Hot::new(10 * one);
    let keys: Vec<HotKey> = (0..30)
        .map(|i| HotKey::Identity(primary(&format!("user{i}@example.org"))))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        assert!(h.insert(0, *k, 1, record(&format!("user{i}@example.org"), 1)));
        // Key 0 is used all along, so it stays.
        assert!(h.get(&keys[0]).is_some());
        assert!(h.bytes() <= 10 * one);
    }
    assert_eq!(h.records(), 10);
    assert!(h.holds(&keys[0]) && h.holds(&keys[29]) && !h.holds(&keys[1]));
    // Absences and aliases weigh less than records.
    assert!(weight(&Value::Absent) < one && weight(&Value::Names(primary("x@y.z"))) < one);
}

/// The same bucket, read through the whole replica and through `resolve`.
fn both_answer_alike(messages: Vec<(HotKey, Value)>, asked: &[IdentityHash]) {
    let mut whole = Replica::default();
    let mut bucket: HashMap<HotKey, Value> = HashMap::new();
    for (rev, (k, v)) in messages.into_iter().enumerate() {
        match (&k, &v) {
            (HotKey::Identity(p), Value::Held(held)) => {
                let s = match held.clone() {
                    Held::Record(record) => {
                        Stored::Record(crate::store::nats::keys::StoredRecord {
                            record,
                            previous: None,
                        })
                    }
                    Held::Forward(moved) => Stored::Forward { moved },
                };
                whole.apply_record(*p, rev as u64 + 1, s, true);
            }
            (HotKey::Alias(a), Value::Names(p)) => whole.set_alias(*a, *p),
            _ => unreachable!(),
        }
        bucket.insert(k, v);
    }
    for a in asked {
        let cold = resolve(a, |k| Some(bucket.get(k).cloned().unwrap_or(Value::Absent)));
        assert_eq!(cold, Resolved::Found(whole.lookup(a).cloned()), "{a:?}");
    }
}

#[test]
fn resolving_from_the_bucket_answers_as_the_whole_replica() {
    let full = stored("a@example.org", 1, 1).record;
    let (md5, sha) = (full.aliases[0], full.aliases[1]);
    let other = primary("b@example.org");
    let mut m = stored("a@example.org", 1, 1).record;
    m.aliases = vec![md5];
    let mut s = stored("a@example.org", 1, 2).record;
    s.aliases = vec![sha];
    let forward = Value::Held(Held::Forward(Box::new(Forward {
        to: md5,
        record: Some(s.clone()),
        aliases: full.aliases.clone(),
        avatar: full.avatar.clone().unwrap(),
    })));
    let mut merged = stored("a@example.org", 2, 3).record;
    merged.aliases = vec![md5, sha];
    let asked = [md5, sha, other, primary("nobody@example.org")];
    let claims = |p: IdentityHash| {
        vec![
            (HotKey::Alias(md5), Value::Names(md5)),
            (HotKey::Alias(sha), Value::Names(p)),
        ]
    };
    // One identity with both aliases.
    let mut plain = claims(md5);
    plain.push((HotKey::Identity(md5), record("a@example.org", 1)));
    plain.push((HotKey::Alias(other), Value::Names(other)));
    plain.push((HotKey::Identity(other), record("b@example.org", 1)));
    both_answer_alike(plain, &asked);
    // An md5-only and a sha256-only identity, a merge half done, then done.
    let mut halves = claims(sha);
    halves.push((HotKey::Identity(md5), Value::Held(Held::Record(m))));
    halves.push((HotKey::Identity(sha), Value::Held(Held::Record(s))));
    both_answer_alike(halves.clone(), &asked);
    halves.push((HotKey::Identity(sha), forward));
    both_answer_alike(halves.clone(), &asked);
    halves.push((HotKey::Identity(md5), Value::Held(Held::Record(merged))));
    both_answer_alike(halves.clone(), &asked);
    halves.push((HotKey::Alias(sha), Value::Names(md5)));
    both_answer_alike(halves, &asked);
}

#[test]
fn resolve_asks_for_each_key_it_needs_in_turn() {
    let a = stored("a@example.org", 1, 1).record;
    let (md5, sha) = (a.aliases[0], a.aliases[1]);
    let mut known: HashMap<HotKey, Value> = HashMap::new();
    let mut asked = Vec::new();
    loop {
        match resolve(&sha, |k| known.get(k).cloned()) {
            Resolved::Need(k) => {
                asked.push(k);
                let v = match k {
                    HotKey::Alias(_) => Value::Names(md5),
                    HotKey::Identity(_) => Value::Held(Held::Record(a.clone())),
                    HotKey::Master(_) => unreachable!("a look-up reads no master"),
                };
                known.insert(k, v);
            }
            Resolved::Found(r) => {
                assert_eq!(r, Some(a.clone()));
                break;
            }
        }
    }
    assert_eq!(asked, vec![HotKey::Alias(sha), HotKey::Identity(md5)]);
}

#[test]
fn master_entries_are_held_like_identities() {
    use crate::store::nats::keys::{MasterEntry, Phase};
    use crate::store::{Manifest, RungRef};
    let entry = |phase| {
        let mut manifest = Manifest::with_sides(&[1024, 512, 256, 128, 64, 32, 16]);
        manifest.salted = true;
        Value::Master(Box::new(MasterEntry {
            manifest,
            phase,
            at: 0,
            generation: 1,
            held_until: 0,
            refs: None,
        }))
    };
    let w = weight(&entry(Phase::Live));
    // The entry, seven rungs of 48 bytes, the LRU node and table slot.
    let rungs = 7 * std::mem::size_of::<RungRef>();
    assert!(
        w > rungs + std::mem::size_of::<MasterEntry>() && w < 1_000,
        "{w}"
    );
    let k = HotKey::Master(crate::model::ContentHash([5; 32]));
    let mut h = Hot::new(100 * w);
    // The watch adds nothing; a read does; the watch then keeps it current.
    h.applied(k, 1, entry(Phase::Live));
    assert!(!h.holds(&k));
    assert!(h.insert(1, k, 1, Value::Absent));
    h.applied(k, 2, entry(Phase::Live));
    assert_eq!(h.get(&k), Some(&entry(Phase::Live)));
    h.applied(k, 3, entry(Phase::Deleting));
    assert_eq!(h.get(&k), Some(&entry(Phase::Deleting)));
    assert_eq!(h.records(), 0, "not an identity");
}
