use super::super::keys::tests::stored;
use super::*;

#[test]
fn replica_applies_each_revision_once_and_in_order() {
    let mut r = Replica::keeping(3);
    let a1 = Stored::Record(stored("a@example.org", 1, 1));
    let a2 = stored("a@example.org", 2, 2);
    let p = a2.record.primary();
    assert_eq!(r.apply_record(p, 5, a1.clone(), true).unwrap().id, 5);
    assert!(
        r.apply_record(p, 5, a1.clone(), true).is_none(),
        "same revision twice"
    );
    let sha = a2.record.aliases[1];
    assert_eq!(
        r.apply_record(p, 9, Stored::Record(a2), true)
            .unwrap()
            .version,
        2
    );
    assert!(
        r.apply_record(p, 7, a1, true).is_none(),
        "an older revision never wins"
    );
    assert_eq!(r.lookup(&sha).unwrap().version, 2);
    // An event applied out of order still lands in id order.
    let b = stored("b@example.org", 1, 3);
    r.apply_record(b.record.primary(), 8, Stored::Record(b), true);
    let ids: Vec<u64> = r.recent.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![5, 8, 9]);
    assert_eq!(r.head, 9);
    // Past the limit the oldest events go, and the floor says how far.
    assert_eq!(r.recent_floor, 0);
    let c = stored("c@example.org", 1, 4);
    r.apply_record(c.record.primary(), 12, Stored::Record(c), true);
    let ids: Vec<u64> = r.recent.iter().map(|e| e.id).collect();
    assert_eq!((ids, r.recent_floor), (vec![8, 9, 12], 5));
}

#[test]
fn a_forward_answers_with_its_target_only_once_the_merge_is_done() {
    use super::super::keys::Forward;
    let mut r = Replica::default();
    // An md5-only identity and a sha256-only one, then the bind joining them.
    let full = stored("a@example.org", 1, 1).record;
    let (md5, sha) = (full.aliases[0], full.aliases[1]);
    let mut m = stored("a@example.org", 1, 1);
    m.record.aliases = vec![md5];
    let mut s = stored("a@example.org", 1, 2);
    s.record.aliases = vec![sha];
    r.apply_record(md5, 1, Stored::Record(m.clone()), true);
    r.apply_record(sha, 2, Stored::Record(s.clone()), true);
    r.set_alias(sha, sha);
    let fwd = Stored::Forward {
        moved: Box::new(Forward {
            to: md5,
            record: Some(s.record.clone()),
            aliases: full.aliases.clone(),
            avatar: full.avatar.clone().unwrap(),
        }),
    };
    assert!(r.apply_record(sha, 3, fwd, true).is_none(), "not an event");
    // Merge not finished: sha still answers with its own record.
    assert_eq!(r.lookup(&sha), Some(&s.record));
    let mut merged = stored("a@example.org", 2, 3);
    merged.record.aliases = vec![md5, sha];
    r.apply_record(md5, 4, Stored::Record(merged.clone()), true);
    assert_eq!(r.lookup(&sha), Some(&merged.record));
    assert_eq!(r.lookup(&md5), Some(&merged.record));
    assert_eq!(r.identities(), 1);
}

#[test]
fn the_alias_map_keeps_only_aliases_of_another_primary() {
    let mut r = Replica::default();
    let a = stored("a@example.org", 1, 1);
    let (md5, sha) = (a.record.aliases[0], a.record.aliases[1]);
    r.apply_record(md5, 1, Stored::Record(a.clone()), true);
    // The primary names itself without an entry; its other alias has one.
    assert_eq!(r.aliases.len(), 1);
    assert_eq!(r.aliases.get(&sha), Some(&md5));
    assert_eq!(r.lookup(&md5), Some(&a.record));
    assert_eq!(r.lookup(&sha), Some(&a.record));
    // `a.` entries: one naming another primary is kept, one naming itself
    // removes the alias's entry (absent means itself).
    let b = stored("b@example.org", 1, 2);
    let other = b.record.aliases[0];
    r.apply_record(other, 2, Stored::Record(b.clone()), true);
    r.set_alias(sha, other);
    assert_eq!(r.lookup(&sha), Some(&b.record));
    r.set_alias(sha, sha);
    assert!(!r.aliases.contains_key(&sha));
    r.set_alias(md5, md5);
    assert_eq!(r.aliases.len(), 1, "only b's other alias");
    assert_eq!(r.lookup(&md5), Some(&a.record));
}

#[test]
fn a_fallback_lease_keeps_an_unnamed_master_reachable_until_it_ends() {
    let m = stored("a@example.org", 1, 1).record.avatar.unwrap();
    let manifest = Manifest {
        hash: m.hash,
        has_alpha: false,
        source_format: "png".into(),
        rungs: Vec::new(),
        compression: None,
        animation: None,
        salted: false,
    };
    let entry = |held_until| MasterEntry {
        manifest: manifest.clone(),
        phase: Phase::Live,
        at: 1,
        generation: 1,
        held_until,
        refs: None,
    };
    let mut r = Replica::default();
    // A replica keeps whether an entry lists keys, not the listing.
    let mut listed = entry(0);
    listed.refs = Some(super::super::keys::Refs {
        by: [(IdentityHash::Md5([3; 16]), 7)].into_iter().collect(),
        verify: true,
        ..Default::default()
    });
    r.apply_master(m.hash, 1, Some(listed));
    let kept = r.masters[&m.hash].1.as_ref().unwrap().refs.clone().unwrap();
    assert!(kept.by.is_empty() && kept.verify);
    assert_eq!(
        r.unlisted_masters(10),
        vec![m.hash],
        "to verify: still audited"
    );
    r.masters.clear();
    r.apply_master(m.hash, 1, Some(entry(now_ms() + 60_000)));
    assert!(r.referenced(&m.hash));
    assert_eq!(r.bound_manifest(&m.hash), Some(manifest.clone()));
    assert!(r.sweep_candidates().is_empty(), "held: nothing to sweep");
    r.apply_master(m.hash, 2, Some(entry(now_ms() - 1)));
    assert!(!r.referenced(&m.hash), "the lease ended");
    assert_eq!(r.bound_manifest(&m.hash), None);
    assert_eq!(r.sweep_candidates(), vec![m.hash]);
}

proptest::proptest! {
    /// The maintained identity count (what `/metrics` reports) equals a
    /// count of the records, whatever order records, forwards and stale
    /// revisions arrive in.
    #[test]
    fn the_identity_count_is_the_number_of_records(
        ops in proptest::collection::vec((0u8..4, 1u64..24, proptest::bool::ANY), 0..40)
    ) {
        use super::super::keys::Forward;
        let mut r = Replica::default();
        for (who, revision, forward) in ops {
            let email = format!("u{who}@example.org");
            let s = stored(&email, revision, who);
            let primary = s.record.primary();
            let value = if forward {
                let target = stored("target@example.org", 1, 9).record;
                Stored::Forward {
                    moved: Box::new(Forward {
                        to: target.primary(),
                        record: Some(s.record.clone()),
                        aliases: target.aliases.clone(),
                        avatar: target.avatar.clone().unwrap(),
                    }),
                }
            } else {
                Stored::Record(s)
            };
            r.apply_record(primary, revision, value, true);
            let scanned = r
                .records
                .values()
                .filter(|(_, s)| matches!(s, Held::Record(_)))
                .count();
            proptest::prop_assert_eq!(r.identities(), scanned);
        }
    }
}
