//! The audit of masters stored before listings, as one more actor of the
//! model in `model` (its world, its key `K`).

use super::model::{World, TRIES};
use super::*;

/// The audit of an entry written before listings (`audit_listings`): a
/// scan of the replica at the entry's revision, the first write, a scan at
/// that write, the verifying write.
#[derive(Clone, Debug)]
pub(super) enum Auditor {
    Read,
    Write1 {
        seq: u64,
        next: MasterEntry,
    },
    Scan2 {
        c: u64,
    },
    Verify {
        tries: u8,
        keys: Vec<(IdentityHash, u64)>,
    },
    Done,
}

pub(super) fn step_auditor(a: &Auditor, w: &mut World) -> Auditor {
    match a.clone() {
        Auditor::Read => {
            let Some(e) = w.entry.clone() else {
                return Auditor::Done;
            };
            let seq = w.key_rev;
            let keys: Vec<_> = w.naming_at(seq).into_iter().collect();
            match audit_listing(&e, &keys) {
                Some(next) => Auditor::Write1 { seq, next },
                None if e.refs.as_ref().is_some_and(|r| r.verify) => Auditor::Scan2 { c: seq },
                None => Auditor::Done,
            }
        }
        Auditor::Write1 { seq, next } => match w.cas(seq, Some(next)) {
            Some(c) => Auditor::Scan2 { c },
            None => Auditor::Done,
        },
        Auditor::Scan2 { c } => Auditor::Verify {
            tries: TRIES,
            keys: w.naming_at(c).into_iter().collect(),
        },
        Auditor::Verify { tries, keys } => {
            let next = w.entry.as_ref().and_then(|e| audit_verified(e, &keys));
            match next {
                Some(next) => match w.cas(w.key_rev, Some(next)) {
                    Some(_) => {
                        w.verified = true;
                        Auditor::Done
                    }
                    None if tries > 0 => Auditor::Verify {
                        tries: tries - 1,
                        keys,
                    },
                    None => Auditor::Done,
                },
                None => Auditor::Done,
            }
        }
        Auditor::Done => Auditor::Done,
    }
}
