//! The collection rules, case by case (the interleavings are in `model`).

use super::*;
use crate::store::RungRef;

pub(super) fn manifest() -> Manifest {
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
        salted: false,
    }
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
        refs: Some(Refs::default()),
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
    assert_eq!(pin(Some(&live(1)), 40, &m, 9, &[]).unwrap().generation, 7);
    let condemned = live(1).with(Phase::Condemned, 5);
    assert_eq!(pin(Some(&condemned), 41, &m, 9, &[]).unwrap().generation, 7);
    assert_eq!(pin(None, 42, &m, 9, &[]).unwrap().generation, 42);
    let deleting = live(1).with(Phase::Deleting, 5);
    assert_eq!(pin(Some(&deleting), 43, &m, 6, &[]), None);
    assert_eq!(
        pin(Some(&deleting), 43, &m, 5 + LEASE_MS, &[])
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
    assert_eq!(pin(Some(&held), 44, &m, 9, &[]).unwrap().held_until, 1_000);
    let held_condemned = held.with(Phase::Condemned, 5);
    assert_eq!(held_condemned.held_until, 1_000);
    assert_eq!(
        pin(Some(&held_condemned), 45, &m, 9, &[])
            .unwrap()
            .held_until,
        1_000
    );
    let abandoned = held.with(Phase::Deleting, 5);
    assert_eq!(
        pin(Some(&abandoned), 46, &m, 5 + LEASE_MS, &[])
            .unwrap()
            .held_until,
        0
    );
    assert!(!pin_holds(Some(&condemned), 7));
    assert!(!pin_holds(Some(&live(3)), 8));
    assert!(!pin_holds(None, 7));
    // Listings: a pin lists its keys (the later basis wins); a listed entry
    // is not condemned; an unlisting removes only a listing from before its
    // write; past MAX_REFS the entry stops listing, for good.
    let (a, b) = (IdentityHash::Md5([1; 16]), IdentityHash::Md5([2; 16]));
    let pinned = pin(Some(&live(1)), 47, &m, 9, &[(a, 10), (b, 12)]).unwrap();
    assert!(names(&pinned, &[(a, 10), (b, 12)]) && !names(&pinned, &[(a, 11)]));
    let stored = MasterEntry::decode(&pinned.encode().unwrap()).unwrap();
    assert_eq!(stored, pinned, "listings survive the JSON round trip");
    assert_eq!(collect(Some(&pinned), 9 + GRACE_MS), Collect::Leave);
    let again = pin(Some(&pinned), 48, &m, 9, &[(a, 11)]).unwrap();
    assert!(names(&again, &[(a, 11)]));
    assert_eq!(
        unname(&again, &a, 11),
        None,
        "a bind compared against 11 stays"
    );
    let only_b = unname(&again, &a, 12).unwrap();
    assert!(listed(&only_b) && !names(&only_b, &[(a, 0)]));
    let none = unname(&only_b, &b, 13).unwrap();
    assert!(!listed(&none));
    assert!(matches!(
        collect(Some(&none), 9 + GRACE_MS),
        Collect::Condemn(_)
    ));
    let mut crowded = live(1);
    let keys: Vec<_> = (0..=MAX_REFS as u64)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.to_le_bytes());
            (IdentityHash::Sha256(h), 1)
        })
        .collect();
    name(&mut crowded, &keys[..MAX_REFS]);
    assert!(!crowded.refs.as_ref().unwrap().many);
    name(&mut crowded, &keys[MAX_REFS..]);
    let refs = crowded.refs.as_ref().unwrap();
    assert!(refs.many && refs.by.is_empty() && listed(&crowded));
    assert_eq!(unname(&crowded, &keys[0].0, 99), None);
    // A new generation starts listing afresh; unknown listings stay unknown.
    let reborn = pin(Some(&deleting), 49, &m, 5 + LEASE_MS, &[(a, 3)]).unwrap();
    assert_eq!(reborn.refs.as_ref().unwrap().by.len(), 1);
    let unknown = MasterEntry {
        refs: None,
        ..live(1)
    };
    let pinned_unknown = pin(Some(&unknown), 50, &m, 9, &[(a, 3)]).unwrap();
    assert_eq!(pinned_unknown.refs, None);
    assert!(!listed(&pinned_unknown) && names(&pinned_unknown, &[(a, 3)]));
    // The audit of an entry written before listings: listed and to verify
    // (counts as listed), then verified with the keys found again; anything
    // else is left alone.
    let old = MasterEntry {
        refs: None,
        ..live(1)
    };
    let first = audit_listing(&old, &[(a, 5)]).unwrap();
    assert!(first.refs.as_ref().unwrap().verify && listed(&first));
    assert_eq!(audit_listing(&first, &[]), None);
    assert_eq!(audit_listing(&old.with(Phase::Condemned, 2), &[]), None);
    let verified = audit_verified(&first, &[(b, 7)]).unwrap();
    assert!(names(&verified, &[(a, 5), (b, 7)]) && !verified.refs.as_ref().unwrap().verify);
    assert_eq!(audit_verified(&verified, &[]), None);
    let empty = audit_verified(&audit_listing(&old, &[]).unwrap(), &[]).unwrap();
    assert!(
        !listed(&empty),
        "nothing names it: collectable after the audit"
    );
    // Entries written before collection existed are live, generation 0,
    // references unknown.
    let legacy = serde_json::to_vec(&m).unwrap();
    let e = MasterEntry::decode(&legacy).unwrap();
    assert_eq!(
        (e.phase, e.at, e.generation, e.refs),
        (Phase::Live, 0, 0, None)
    );
    assert_eq!(
        MasterEntry::decode(&live(3).encode().unwrap()).unwrap(),
        live(3)
    );
}
