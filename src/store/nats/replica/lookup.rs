//! Identity look-ups in the replica, and the alias map they start from.
//!
//! The alias map holds only aliases that name another primary: an alias
//! absent from it names itself. Most identities are a primary (sha256) and
//! one more alias (md5), so this keeps one alias entry per identity instead
//! of two (issue 20: the replica's bytes per identity).

use super::Replica;
use crate::model::IdentityHash;
use crate::store::nats::keys::Held;
use crate::store::IdentityRecord;

impl Replica {
    /// The record `alias` names. A forward counts once its target lists the
    /// forwarded primary (the merge finished); until then the forwarded
    /// record as it was answers, so no reader sees a half-done merge.
    pub(in crate::store::nats) fn lookup(&self, alias: &IdentityHash) -> Option<&IdentityRecord> {
        let mut primary = *self.aliases.get(alias).unwrap_or(alias);
        for _ in 0..4 {
            match &self.records.get(&primary)?.1 {
                Held::Record(r) => return Some(r),
                Held::Forward(moved) => {
                    let done = matches!(
                        self.records.get(&moved.to),
                        Some((_, Held::Record(r))) if r.aliases.contains(&primary)
                    );
                    if !done {
                        return moved.record.as_ref();
                    }
                    primary = moved.to;
                }
            }
        }
        None
    }

    /// A record at `primary` lists `alias`: kept unless an `a.` entry
    /// already placed it, and only if it names another primary.
    pub(in crate::store::nats) fn alias_listed(
        &mut self,
        alias: IdentityHash,
        primary: IdentityHash,
    ) {
        if alias != primary {
            self.aliases.entry(alias).or_insert(primary);
        }
    }

    /// The `a.<alias>` entry says `alias` names `primary`: an alias naming
    /// itself leaves the map (absent means itself), any other is recorded.
    pub(in crate::store::nats) fn set_alias(&mut self, alias: IdentityHash, primary: IdentityHash) {
        if alias == primary {
            self.aliases.remove(&alias);
        } else {
            self.aliases.insert(alias, primary);
        }
    }
}
