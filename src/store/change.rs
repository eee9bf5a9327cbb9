//! The one commit rule of the identity index, shared by every store: what a
//! [`Change`] does to the records it names. Pure (no I/O, no clock: `now` is
//! an argument), so both stores apply exactly the same rule and it is
//! property-tested once.
//!
//! The rule:
//! - **alias merge**: a bind keeps every alias of every record its aliases
//!   resolve to, then adds its own; the first record found survives, the
//!   others are absorbed into it (their masters released, their aliases
//!   re-pointed);
//! - **not found**: unbinding or re-rating an identity without an avatar;
//! - **adoption** (issue 17): a bind of an avatar adopted from an upstream
//!   over an identity that has an avatar is a no-op (local always wins);
//! - **no-op**: a change that leaves avatar and aliases as they are (an
//!   identical re-upload, the same rating again) writes nothing: no new
//!   version, no event;
//! - otherwise the version is one more than the highest version among the
//!   records (so no alias ever sees its version go back), and the change time
//!   is `now`, but always later than every record's last change.

use super::{AvatarRef, AvatarSource, Change, IdentityRecord, StoreError};
use crate::model::{ChangeEvent, ContentHash, IdentityHash};

/// What a change does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changes: the current record, to answer with; no event.
    Unchanged(IdentityRecord),
    /// A new record to write, with its event.
    Changed(Transition),
}

/// A record to write and what follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub record: IdentityRecord,
    /// The avatar this change replaced (its content URLs are purged), if any
    /// differs from the new one.
    pub previous: Option<ContentHash>,
    /// Primaries of other records merged into this one: they are gone, every
    /// alias of theirs now names `record.primary()`.
    pub absorbed: Vec<IdentityHash>,
    /// Net change of each master's reference count (every record holds one
    /// reference to its avatar's master); zero changes are left out, the
    /// additions come first.
    pub refs: Vec<(ContentHash, i64)>,
}

impl Transition {
    /// The change event of this transition, once the store has given it `id`.
    pub fn event(&self, id: u64) -> ChangeEvent {
        event_of(&self.record, self.previous, id)
    }
}

/// The event describing `record` as written by change `id`.
pub fn event_of(record: &IdentityRecord, previous: Option<ContentHash>, id: u64) -> ChangeEvent {
    ChangeEvent {
        id,
        key: record.primary(),
        aliases: record.aliases.clone(),
        hash: record.avatar.as_ref().and_then(AvatarRef::visible),
        previous,
        version: record.version,
        at: record.updated_ms,
    }
}

/// The aliases a change looks its identity up by, in order.
pub fn lookup_aliases(change: &Change) -> Vec<IdentityHash> {
    match change {
        Change::Bind { aliases, .. } => aliases.clone(),
        Change::Unbind { alias }
        | Change::SetRating { alias, .. }
        | Change::Block { alias, .. } => vec![*alias],
    }
}

/// Apply `change` to `current`: the records the change's aliases resolve to
/// (each once, in the order of [`lookup_aliases`]). `claimed` is the primary
/// the alias index already names when no record exists yet (the NATS store
/// claims aliases before it writes the record); `None` means the change's
/// first alias. `now` is Unix milliseconds.
pub fn apply(
    current: &[IdentityRecord],
    claimed: Option<IdentityHash>,
    change: &Change,
    now: u64,
) -> Result<Outcome, StoreError> {
    let survivor = current.first();
    let (avatar, aliases) = match change {
        Change::Bind {
            aliases: want,
            avatar,
        } => {
            let mut all: Vec<IdentityHash> = match (survivor, claimed) {
                (Some(_), _) => Vec::new(),
                (None, Some(p)) => vec![p],
                (None, None) => Vec::new(),
            };
            let known = current.iter().flat_map(|r| r.aliases.iter());
            for a in known.chain(want) {
                if !all.contains(a) {
                    all.push(*a);
                }
            }
            if all.is_empty() {
                return Err(StoreError::Index("a bind names no alias".into()));
            }
            // Issue 17: an adopted upstream avatar never replaces a local one
            // (an upload that won the race keeps its place).
            let adopting = avatar.source == Some(AvatarSource::Fallback);
            if let (true, Some(r)) = (adopting, survivor) {
                if r.avatar.is_some() {
                    return Ok(Outcome::Unchanged(r.clone()));
                }
            }
            (Some(avatar.clone()), all)
        }
        Change::Unbind { .. } => match survivor {
            Some(r) if r.avatar.is_some() => (None, r.aliases.clone()),
            _ => return Err(StoreError::NotFound),
        },
        Change::SetRating { rating, .. } => match survivor {
            Some(IdentityRecord {
                avatar: Some(a),
                aliases,
                ..
            }) => (
                Some(AvatarRef {
                    rating: *rating,
                    ..a.clone()
                }),
                aliases.clone(),
            ),
            _ => return Err(StoreError::NotFound),
        },
        // A takedown (or its lift) touches only an identity still showing
        // that content; one rebound or deleted meanwhile stays as it is.
        Change::Block { hash, blocked, .. } => match survivor {
            Some(r) => match &r.avatar {
                Some(a) if a.hash == *hash => (
                    Some(AvatarRef {
                        blocked: *blocked,
                        ..a.clone()
                    }),
                    r.aliases.clone(),
                ),
                _ => return Ok(Outcome::Unchanged(r.clone())),
            },
            None => return Err(StoreError::NotFound),
        },
    };
    if let [only] = current {
        if only.avatar == avatar && only.aliases == aliases {
            return Ok(Outcome::Unchanged(only.clone()));
        }
    }
    let version = current
        .iter()
        .map(|r| r.version)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| StoreError::Index("identity version exhausted".into()))?;
    let updated_ms = current
        .iter()
        .map(|r| r.updated_ms.saturating_add(1))
        .fold(now, u64::max);
    let new_hash = avatar.as_ref().map(|a| a.hash);
    // What pages saw before (a hidden avatar is not seen), so a takedown
    // purges the content it hides.
    let shown = avatar.as_ref().and_then(AvatarRef::visible);
    let previous = current
        .iter()
        .filter_map(|r| r.avatar.as_ref().and_then(AvatarRef::visible))
        .find(|h| Some(*h) != shown);
    let mut refs: Vec<(ContentHash, i64)> = new_hash.map(|h| (h, 1)).into_iter().collect();
    for h in current
        .iter()
        .filter_map(|r| r.avatar.as_ref().map(|a| a.hash))
    {
        match refs.iter_mut().find(|(k, _)| *k == h) {
            Some((_, n)) => *n -= 1,
            None => refs.push((h, -1)),
        }
    }
    refs.retain(|(_, n)| *n != 0);
    refs.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    Ok(Outcome::Changed(Transition {
        record: IdentityRecord {
            aliases,
            avatar,
            version,
            updated_ms,
        },
        previous,
        absorbed: current.iter().skip(1).map(|r| r.primary()).collect(),
        refs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Rating;
    use proptest::prelude::*;

    fn alias(n: u8) -> IdentityHash {
        IdentityHash::Md5([n; 16])
    }

    fn avatar(n: u8, rating: Rating) -> AvatarRef {
        AvatarRef {
            hash: ContentHash([n; 32]),
            rating,
            blocked: false,
            source: None,
        }
    }

    fn record(aliases: &[u8], av: Option<u8>, version: u64, ms: u64) -> IdentityRecord {
        IdentityRecord {
            aliases: aliases.iter().map(|n| alias(*n)).collect(),
            avatar: av.map(|n| avatar(n, Rating::G)),
            version,
            updated_ms: ms,
        }
    }

    fn changed(o: Outcome) -> Transition {
        match o {
            Outcome::Changed(t) => t,
            Outcome::Unchanged(r) => panic!("expected a change, got none ({r:?})"),
        }
    }

    #[test]
    fn first_bind_creates_version_one_under_the_first_alias() {
        let c = Change::Bind {
            aliases: vec![alias(1), alias(2)],
            avatar: avatar(9, Rating::Pg),
        };
        let t = changed(apply(&[], None, &c, 500).unwrap());
        assert_eq!(t.record, record_with(&[1, 2], 9, Rating::Pg, 1, 500));
        assert_eq!((t.previous, t.absorbed.len()), (None, 0));
        assert_eq!(t.refs, vec![(ContentHash([9; 32]), 1)]);
        let e = t.event(7);
        assert_eq!((e.id, e.key, e.version, e.at), (7, alias(1), 1, 500));
    }

    fn record_with(aliases: &[u8], av: u8, rating: Rating, v: u64, ms: u64) -> IdentityRecord {
        IdentityRecord {
            avatar: Some(avatar(av, rating)),
            ..record(aliases, None, v, ms)
        }
    }

    #[test]
    fn an_adopted_upstream_avatar_never_replaces_a_local_one() {
        let adopted = AvatarRef {
            source: Some(AvatarSource::Fallback),
            ..avatar(9, Rating::G)
        };
        let c = Change::Bind {
            aliases: vec![alias(1)],
            avatar: adopted.clone(),
        };
        // (current records, Some(version written) or None: unchanged)
        let cases: [(Vec<IdentityRecord>, Option<u64>); 3] = [
            (vec![], Some(1)),
            (vec![record(&[1], None, 4, 10)], Some(5)),
            (vec![record(&[1], Some(5), 4, 10)], None),
        ];
        for (current, want) in cases {
            match (apply(&current, None, &c, 100).unwrap(), want) {
                (Outcome::Changed(t), Some(v)) => {
                    assert_eq!(t.record.version, v);
                    assert_eq!(t.record.avatar.as_ref(), Some(&adopted));
                }
                (Outcome::Unchanged(r), None) => assert_eq!(r, current[0]),
                (o, w) => panic!("{current:?}: got {o:?}, want {w:?}"),
            }
        }
        // A local upload over an adopted avatar replaces it, and re-rating
        // keeps where it came from.
        let mine = [IdentityRecord {
            avatar: Some(adopted.clone()),
            ..record(&[1], None, 1, 10)
        }];
        let upload = Change::Bind {
            aliases: vec![alias(1)],
            avatar: avatar(9, Rating::G),
        };
        let t = changed(apply(&mine, None, &upload, 100).unwrap());
        assert_eq!(t.record.avatar.unwrap().source, None);
        let rerate = Change::SetRating {
            alias: alias(1),
            rating: Rating::Pg,
        };
        let t = changed(apply(&mine, None, &rerate, 100).unwrap());
        assert_eq!(
            t.record.avatar.unwrap().source,
            Some(AvatarSource::Fallback)
        );
    }

    #[test]
    fn a_claimed_primary_leads_a_new_record() {
        let c = Change::Bind {
            aliases: vec![alias(2)],
            avatar: avatar(9, Rating::G),
        };
        let t = changed(apply(&[], Some(alias(1)), &c, 1).unwrap());
        assert_eq!(t.record.aliases, vec![alias(1), alias(2)]);
    }

    #[test]
    fn merging_two_records_keeps_every_alias_and_releases_both_masters() {
        let current = [
            record(&[1], Some(5), 3, 100),
            record(&[2, 3], Some(6), 8, 900),
        ];
        let c = Change::Bind {
            aliases: vec![alias(1), alias(2)],
            avatar: avatar(7, Rating::G),
        };
        let t = changed(apply(&current, None, &c, 50).unwrap());
        assert_eq!(t.record.aliases, vec![alias(1), alias(2), alias(3)]);
        assert_eq!(t.record.version, 9, "above every merged version");
        assert_eq!(t.record.updated_ms, 901, "after every merged change");
        assert_eq!(t.absorbed, vec![alias(2)]);
        assert_eq!(t.previous, Some(ContentHash([5; 32])));
        assert_eq!(
            t.refs,
            vec![
                (ContentHash([7; 32]), 1),
                (ContentHash([5; 32]), -1),
                (ContentHash([6; 32]), -1)
            ]
        );
    }

    #[test]
    fn unbind_and_rating_need_an_avatar() {
        let tomb = [record(&[1], None, 2, 10)];
        for c in [
            Change::Unbind { alias: alias(1) },
            Change::SetRating {
                alias: alias(1),
                rating: Rating::X,
            },
        ] {
            assert!(matches!(
                apply(&tomb, None, &c, 1),
                Err(StoreError::NotFound)
            ));
            assert!(matches!(apply(&[], None, &c, 1), Err(StoreError::NotFound)));
        }
        let live = [record(&[1], Some(4), 2, 10)];
        let t = changed(apply(&live, None, &Change::Unbind { alias: alias(1) }, 1).unwrap());
        assert_eq!((t.record.avatar, t.record.version), (None, 3));
        assert_eq!(t.previous, Some(ContentHash([4; 32])));
        assert_eq!(t.refs, vec![(ContentHash([4; 32]), -1)]);
    }

    #[test]
    fn a_new_rating_keeps_the_master_and_the_same_rating_is_a_no_op() {
        let live = [record(&[1], Some(4), 2, 10)];
        let same = Change::SetRating {
            alias: alias(1),
            rating: Rating::G,
        };
        assert_eq!(
            apply(&live, None, &same, 99).unwrap(),
            Outcome::Unchanged(live[0].clone())
        );
        let x = Change::SetRating {
            alias: alias(1),
            rating: Rating::X,
        };
        let t = changed(apply(&live, None, &x, 99).unwrap());
        assert_eq!(t.record.avatar.unwrap().rating, Rating::X);
        assert_eq!((t.previous, t.refs.len()), (None, 0));
    }

    #[test]
    fn a_takedown_hides_the_avatar_keeps_its_master_and_a_lift_shows_it_again() {
        let live = [record(&[1], Some(4), 2, 10)];
        let block = |hash: u8, blocked| Change::Block {
            alias: alias(1),
            hash: ContentHash([hash; 32]),
            blocked,
        };
        let t = changed(apply(&live, None, &block(4, true), 20).unwrap());
        assert!(t.record.avatar.as_ref().unwrap().blocked);
        assert_eq!((t.record.version, t.refs.len()), (3, 0), "master kept");
        let e = t.event(5);
        assert_eq!((e.hash, e.previous), (None, Some(ContentHash([4; 32]))));
        let hidden = std::slice::from_ref(&t.record);
        assert_eq!(
            apply(hidden, None, &block(4, true), 30).unwrap(),
            Outcome::Unchanged(t.record.clone()),
            "taking down twice changes nothing"
        );
        let r = Change::SetRating {
            alias: alias(1),
            rating: Rating::X,
        };
        assert!(
            changed(apply(hidden, None, &r, 30).unwrap())
                .record
                .avatar
                .unwrap()
                .blocked
        );
        let l = changed(apply(hidden, None, &block(4, false), 30).unwrap());
        assert_eq!((&l.record.avatar, l.record.version), (&live[0].avatar, 4));
        let e = l.event(6);
        assert_eq!((e.hash, e.previous), (Some(ContentHash([4; 32])), None));
        // Other content, or no identity: nothing to hide.
        assert_eq!(
            apply(&live, None, &block(5, true), 20).unwrap(),
            Outcome::Unchanged(live[0].clone())
        );
        assert!(matches!(
            apply(&[], None, &block(4, true), 1),
            Err(StoreError::NotFound)
        ));
    }

    /// Records over disjoint aliases drawn from 0..6, and a change on them.
    fn world() -> impl Strategy<Value = (Vec<IdentityRecord>, Change, u64)> {
        let rec = (
            1usize..=2,
            proptest::option::of(0u8..4),
            1u64..1_000_000,
            0u64..2_000_000,
            any::<bool>(),
        );
        let change = prop_oneof![
            (proptest::collection::vec(0u8..6, 1..=2), 0u8..4, 0u8..4).prop_map(|(a, av, r)| {
                Change::Bind {
                    aliases: {
                        let mut v: Vec<IdentityHash> = a.into_iter().map(alias).collect();
                        v.dedup();
                        v
                    },
                    avatar: avatar(av, rating(r)),
                }
            }),
            (0u8..6).prop_map(|a| Change::Unbind { alias: alias(a) }),
            (0u8..6, 0u8..4).prop_map(|(a, r)| Change::SetRating {
                alias: alias(a),
                rating: rating(r),
            }),
            (0u8..6, 0u8..4, any::<bool>()).prop_map(|(a, h, blocked)| Change::Block {
                alias: alias(a),
                hash: ContentHash([h; 32]),
                blocked,
            }),
        ];
        (
            proptest::collection::vec(rec, 0..4),
            change,
            0u64..3_000_000,
        )
            .prop_map(|(recs, change, now)| {
                let mut next = 0u8;
                let mut out = Vec::new();
                for (n, av, version, ms, hidden) in recs {
                    if next as usize + n > 6 {
                        break;
                    }
                    let aliases: Vec<u8> = (next..next + n as u8).collect();
                    next += n as u8;
                    let mut r = record(&aliases, av, version, ms);
                    if let Some(a) = r.avatar.as_mut() {
                        a.blocked = hidden; // taken down
                    }
                    out.push(r);
                }
                (out, change, now)
            })
    }

    fn rating(n: u8) -> Rating {
        [Rating::G, Rating::Pg, Rating::R, Rating::X][n as usize % 4]
    }

    /// The records `change` resolves to, as a store finds them.
    fn resolve(records: &[IdentityRecord], change: &Change) -> Vec<IdentityRecord> {
        let mut out: Vec<IdentityRecord> = Vec::new();
        for a in lookup_aliases(change) {
            if let Some(r) = records.iter().find(|r| r.aliases.contains(&a)) {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// The records `change` resolves to and its transition, if it changes any.
    fn transition(
        records: &[IdentityRecord],
        change: &Change,
        now: u64,
    ) -> Option<(Vec<IdentityRecord>, Transition)> {
        let current = resolve(records, change);
        match apply(&current, None, change, now) {
            Ok(Outcome::Changed(t)) => Some((current, t)),
            _ => None,
        }
    }

    proptest! {
        #[test]
        fn versions_grow_times_move_forward_and_aliases_are_never_lost(
            (records, change, now) in world()
        ) {
            let Some((current, t)) = transition(&records, &change, now) else {
                return Ok(());
            };
            for r in &current {
                prop_assert!(t.record.version > r.version);
                prop_assert!(t.record.updated_ms > r.updated_ms);
                for a in &r.aliases {
                    prop_assert!(t.record.aliases.contains(a), "lost alias {:?}", a);
                }
            }
            prop_assert!(t.record.updated_ms >= now);
            for a in lookup_aliases(&change) {
                prop_assert!(t.record.aliases.contains(&a));
            }
            let mut dedup = t.record.aliases.clone();
            dedup.sort();
            dedup.dedup();
            prop_assert_eq!(dedup.len(), t.record.aliases.len(), "no alias twice");
            prop_assert_eq!(t.absorbed.len() + 1, current.len().max(1));
            let e = t.event(1);
            prop_assert_eq!((e.version, e.at), (t.record.version, t.record.updated_ms));
            prop_assert!(e.previous.is_none() || e.previous != e.hash);
            // A hidden avatar is never announced; hiding moves no reference.
            prop_assert_eq!(e.hash, t.record.avatar.as_ref().and_then(AvatarRef::visible));
            if matches!(change, Change::Block { .. }) {
                prop_assert!(t.refs.is_empty(), "a takedown keeps its master");
            }
        }

        #[test]
        fn reference_deltas_turn_the_old_counts_into_the_new(
            (records, change, now) in world()
        ) {
            let Some((current, t)) = transition(&records, &change, now) else {
                return Ok(());
            };
            let count = |recs: &[&IdentityRecord], h: ContentHash| {
                recs.iter().filter(|r| r.avatar.as_ref().is_some_and(|a| a.hash == h)).count() as i64
            };
            let before: Vec<&IdentityRecord> = current.iter().collect();
            for n in 0u8..4 {
                let h = ContentHash([n; 32]);
                let delta = t.refs.iter().find(|(k, _)| *k == h).map_or(0, |(_, d)| *d);
                prop_assert_eq!(count(&before, h) + delta, count(&[&t.record], h));
            }
            prop_assert!(t.refs.iter().all(|(_, d)| *d != 0));
        }

        #[test]
        fn a_no_op_is_a_no_op_and_repeating_a_change_changes_nothing(
            (records, change, now) in world()
        ) {
            let current = resolve(&records, &change);
            match apply(&current, None, &change, now) {
                Ok(Outcome::Unchanged(r)) => {
                    prop_assert_eq!(current.len(), 1);
                    prop_assert_eq!(&r, &current[0], "same record: no version bump");
                }
                Ok(Outcome::Changed(t)) => {
                    let again = apply(std::slice::from_ref(&t.record), None, &change, now + 1);
                    match change {
                        Change::Unbind { .. } => {
                            prop_assert!(matches!(again, Err(StoreError::NotFound)));
                        }
                        _ => prop_assert_eq!(again.unwrap(), Outcome::Unchanged(t.record.clone())),
                    }
                }
                Err(StoreError::NotFound) => {
                    let bind = matches!(change, Change::Bind { .. });
                    prop_assert!(!bind, "a bind is never NotFound");
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
