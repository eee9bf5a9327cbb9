//! Issue 16 on NATS: takedowns as `t.<hash>` keys of the index bucket, so the
//! index watch that already carries every identity change to every node
//! carries them too (each node's replica holds the set: `/c/` asks memory),
//! and the audit log as the stream [`AUDIT_STREAM`] — append-only, its
//! sequence the entry id, `max_age` the retention.
//!
//! A takedown is written with create-if-absent, a lift with a delete that
//! expects the revision it read; both are applied to this node's replica at
//! once (read-your-writes) and, by revision, by the watch everywhere else.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use super::NatsStore;
use crate::model::{ContentHash, IdentityHash};
use crate::store::moderation::{AuditEntry, Takedown, AUDIT_STREAM, AUDIT_SUBJECT};
use crate::store::StoreError;

/// KV key of a takedown.
pub(super) fn takedown_key(h: &ContentHash) -> String {
    format!("t.{}", h.to_hex())
}

/// The replica's takedowns, with the revision that last wrote each key (a
/// late, older revision never undoes a newer one).
#[derive(Default)]
pub(super) struct Takedowns {
    current: BTreeMap<ContentHash, Takedown>,
    revisions: HashMap<ContentHash, u64>,
}

impl Takedowns {
    /// Apply `t.<hash>` at `revision`: a takedown, or `None` for its lift.
    pub(super) fn apply(&mut self, hash: ContentHash, revision: u64, t: Option<Takedown>) {
        let rev = self.revisions.entry(hash).or_insert(0);
        if *rev > revision {
            return;
        }
        *rev = revision;
        match t {
            Some(t) => self.current.insert(hash, t),
            None => self.current.remove(&hash),
        };
    }

    pub(super) fn contains(&self, hash: &ContentHash) -> bool {
        self.current.contains_key(hash)
    }

    fn page(&self, after: Option<ContentHash>, limit: usize) -> Vec<Takedown> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.current
            .range((from, Unbounded))
            .take(limit)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

impl NatsStore {
    /// Apply a `t.` message from the watch or a catch-up read.
    pub(super) fn apply_takedown(
        &self,
        key: &str,
        hash: ContentHash,
        revision: u64,
        value: Option<&[u8]>,
    ) {
        let t = match value.map(serde_json::from_slice::<Takedown>) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                tracing::error!(key = %key, error = %e, "corrupt takedown record");
                return;
            }
            None => None,
        };
        self.write_replica().takedowns.apply(hash, revision, t);
    }

    pub(super) fn is_blocked(&self, hash: &ContentHash) -> bool {
        self.read_replica().takedowns.contains(hash)
    }

    pub(super) async fn put_takedown_now(
        &self,
        t: Takedown,
    ) -> Result<Option<Takedown>, StoreError> {
        let key = takedown_key(&t.hash);
        let value =
            Bytes::from(serde_json::to_vec(&t).map_err(|e| StoreError::Index(e.to_string()))?);
        match self.inner.kv.create(&key, value).await {
            Ok(revision) => {
                self.write_replica()
                    .takedowns
                    .apply(t.hash, revision, Some(t));
                Ok(None)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let (revision, value) = self.read_last(&key).await?;
                let existing: Option<Takedown> = value
                    .map(|v| serde_json::from_slice(&v))
                    .transpose()
                    .map_err(|e| StoreError::Index(format!("corrupt takedown: {e}")))?;
                if let Some(x) = &existing {
                    self.write_replica()
                        .takedowns
                        .apply(t.hash, revision, Some(x.clone()));
                }
                Ok(existing)
            }
            Err(e) => Err(self.fail("takedown write")(e)),
        }
    }

    pub(super) async fn remove_takedown_now(
        &self,
        hash: ContentHash,
    ) -> Result<Option<Takedown>, StoreError> {
        let key = takedown_key(&hash);
        let (revision, value) = self.read_last(&key).await?;
        let Some(value) = value else {
            return Ok(None);
        };
        let removed: Takedown = serde_json::from_slice(&value)
            .map_err(|e| StoreError::Index(format!("corrupt takedown: {e}")))?;
        self.inner
            .kv
            .delete_expect_revision(&key, Some(revision))
            .await
            .map_err(self.fail("takedown lift"))?;
        let (revision, _) = self.read_last(&key).await?;
        self.write_replica().takedowns.apply(hash, revision, None);
        Ok(Some(removed))
    }

    pub(super) fn takedowns_now(&self, after: Option<ContentHash>, limit: usize) -> Vec<Takedown> {
        self.read_replica().takedowns.page(after, limit)
    }

    /// From the replica, which holds every identity.
    pub(super) fn bound_to_now(&self, hash: &ContentHash) -> Vec<IdentityHash> {
        let r = self.read_replica();
        r.records
            .iter()
            .filter_map(|(p, (_, s))| match s {
                super::keys::Held::Record(rec)
                    if rec.avatar.as_ref().is_some_and(|a| a.hash == *hash) =>
                {
                    Some(*p)
                }
                _ => None,
            })
            .collect()
    }

    /// Create (or update, when the retention changed) the audit stream, with
    /// as many replicas as the index. Called once at start-up.
    pub async fn open_audit(&self, retention: Duration) -> Result<(), StoreError> {
        let replicas = self.inner.stream.cached_info().config.num_replicas;
        let config = jetstream::stream::Config {
            name: AUDIT_STREAM.into(),
            description: Some("avatar-edge audit log (issue 16)".into()),
            subjects: vec![AUDIT_SUBJECT.into()],
            max_age: retention,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let js = &self.inner.js;
        let stream = super::connect::at_start("opening the audit stream", || async {
            js.create_or_update_stream(config.clone())
                .await
                .map_err(self.fail("audit stream"))?;
            js.get_stream(AUDIT_STREAM)
                .await
                .map_err(self.fail("audit stream"))
        })
        .await?;
        let _ = self.inner.audit.set(stream);
        Ok(())
    }

    fn audit_stream(&self) -> Result<&jetstream::stream::Stream, StoreError> {
        self.inner
            .audit
            .get()
            .ok_or_else(|| StoreError::Unavailable("the audit stream is not open".into()))
    }

    pub(super) async fn append_audit_now(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        self.audit_stream()?;
        let payload =
            Bytes::from(serde_json::to_vec(&entry).map_err(|e| StoreError::Index(e.to_string()))?);
        let ack = self
            .inner
            .js
            .publish(AUDIT_SUBJECT, payload)
            .await
            .map_err(self.fail("audit append"))?
            .await
            .map_err(self.fail("audit append"))?;
        Ok(ack.sequence)
    }

    /// Entry by entry from the stream leader (a page is at most a few
    /// hundred reads; the id is the stream sequence).
    pub(super) async fn audit_after_now(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let stream = self.audit_stream()?;
        let mut out = Vec::new();
        let mut next = after.saturating_add(1);
        while out.len() < limit {
            match stream
                .get_first_raw_message_by_subject(AUDIT_SUBJECT, next)
                .await
            {
                Ok(m) => {
                    let mut e: AuditEntry = serde_json::from_slice(&m.payload)
                        .map_err(|e| StoreError::Index(format!("corrupt audit entry: {e}")))?;
                    e.id = m.sequence;
                    next = m.sequence + 1;
                    out.push(e);
                }
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                    break
                }
                Err(e) => return Err(self.fail("audit read")(e)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u8) -> Takedown {
        Takedown {
            hash: ContentHash([n; 32]),
            reason: format!("r{n}"),
            actor: "admin".into(),
            at: 1,
        }
    }

    #[test]
    fn an_older_revision_never_undoes_a_newer_one_and_pages_follow_hash_order() {
        let mut s = Takedowns::default();
        let h = ContentHash([1; 32]);
        s.apply(h, 5, Some(t(1)));
        s.apply(h, 7, None);
        s.apply(h, 5, Some(t(1)));
        assert!(!s.contains(&h), "the lift at 7 stands");
        s.apply(h, 9, Some(t(1)));
        assert!(s.contains(&h), "taken down again later");
        for n in [4, 2, 3] {
            s.apply(ContentHash([n; 32]), 10 + u64::from(n), Some(t(n)));
        }
        let hashes = |v: Vec<Takedown>| v.into_iter().map(|t| t.hash.0[0]).collect::<Vec<_>>();
        assert_eq!(hashes(s.page(None, 2)), vec![1, 2]);
        assert_eq!(hashes(s.page(Some(ContentHash([2; 32])), 5)), vec![3, 4]);
    }
}
