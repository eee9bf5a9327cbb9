//! Writes: the master's blobs and manifest first (durable before anything
//! names them), then the identity record by compare-and-set on the index
//! stream, applying the one commit rule ([`crate::store::change`]) to the
//! records as of the stream position the write expects.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;

use super::keys::{alias_key, identity_key, is_put, manifest_key, StoredRecord, INDEX_BUCKET};
use super::NatsStore;
use crate::model::IdentityHash;
use crate::store::change::{self, Outcome};
use crate::store::{now_ms, Change, Committed, IdentityRecord, NewMaster, Store, StoreError};

/// Compare-and-set attempts before a commit gives up.
const CAS_ATTEMPTS: usize = 40;

impl NatsStore {
    /// [`Store::commit`]: durable blobs and manifest, then the record by
    /// compare-and-set, retried with jittered backoff.
    pub(super) async fn commit_change(
        &self,
        master: Option<NewMaster>,
        change: Change,
    ) -> Result<Committed, StoreError> {
        if !self.connected() {
            return Err(StoreError::Unavailable("NATS is not connected".into()));
        }
        if let Some(m) = &master {
            for (r, bytes) in m.manifest.rungs.iter().zip(&m.rungs) {
                self.put_blob(bytes, r.len).await?;
            }
            let known = self.read_replica().manifests.contains_key(&m.manifest.hash);
            if !known {
                let value = Bytes::from(
                    serde_json::to_vec(&m.manifest)
                        .map_err(|e| StoreError::Index(e.to_string()))?,
                );
                match self
                    .inner
                    .kv
                    .create(manifest_key(&m.manifest.hash), value)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => return Err(self.fail("manifest write")(e)),
                }
                self.write_replica()
                    .manifests
                    .insert(m.manifest.hash, m.manifest.clone());
            }
        }
        if let Change::Bind { avatar, .. } = &change {
            if self.manifest(&avatar.hash).await?.is_none() {
                return Err(StoreError::Index(format!(
                    "master {} is not stored",
                    avatar.hash
                )));
            }
        }
        for attempt in 0..CAS_ATTEMPTS {
            if let Some(c) = self.try_commit(&change).await? {
                return Ok(c);
            }
            // Lost a compare-and-set race (any write to the bucket counts):
            // back off with jitter so racing nodes spread out, then re-read.
            let cap = 2u64 << attempt.min(5);
            let mut r = [0u8; 1];
            let _ = getrandom::fill(&mut r);
            tokio::time::sleep(Duration::from_millis(1 + u64::from(r[0]) % cap)).await;
        }
        Err(StoreError::Unavailable(
            "too much contention on one identity".into(),
        ))
    }

    /// The alias entry's primary, read from the bucket (not the replica).
    async fn primary_of(&self, alias: &IdentityHash) -> Result<Option<IdentityHash>, StoreError> {
        let v = self.kv_get(alias_key(alias), "index read").await?;
        Ok(v.and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok())))
    }

    /// The record stored under `i.<primary>`, with its stream sequence, read
    /// from the stream leader (not a possibly lagging replica).
    async fn read_record(
        &self,
        primary: &IdentityHash,
    ) -> Result<Option<(u64, StoredRecord)>, StoreError> {
        let subject = format!("$KV.{INDEX_BUCKET}.{}", identity_key(primary));
        match self
            .inner
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(m) if is_put(&m.headers) => Ok(Some((
                m.sequence,
                serde_json::from_slice(&m.payload)
                    .map_err(|err| StoreError::Index(format!("corrupt record: {err}")))?,
            ))),
            Ok(_) => Ok(None),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(e) => Err(self.fail("index read")(e)),
        }
    }

    /// One compare-and-set attempt. `Ok(None)`: lost a race, try again.
    async fn try_commit(&self, change: &Change) -> Result<Option<Committed>, StoreError> {
        let kv = &self.inner.kv;
        let lookup = change::lookup_aliases(change);
        // Alias entries: the first that names a primary names this identity's.
        let mut claimed = None;
        let mut entries: Vec<(IdentityHash, IdentityHash)> = Vec::new();
        let mut unclaimed = Vec::new();
        for a in &lookup {
            match self.primary_of(a).await? {
                Some(p) => {
                    claimed.get_or_insert(p);
                    entries.push((*a, p));
                }
                None => unclaimed.push(*a),
            }
        }
        let Some(&first) = lookup.first() else {
            return Err(StoreError::Index("a change names no alias".into()));
        };
        let claimed = claimed.unwrap_or(first);
        // Claim aliases nobody names yet, before a record names them.
        for a in unclaimed {
            match kv
                .create(alias_key(&a), Bytes::from(claimed.to_hex()))
                .await
            {
                Ok(_) => entries.push((a, claimed)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(None),
                Err(e) => return Err(self.fail("index write")(e)),
            }
        }
        // The stream's last sequence, then every record the entries name as of
        // it. The write below expects that last sequence: nothing may have
        // been written since.
        let last = self
            .inner
            .stream
            .clone()
            .info()
            .await
            .map_err(self.fail("index status"))?
            .state
            .last_sequence;
        let mut primaries = vec![claimed];
        for (_, p) in &entries {
            if !primaries.contains(p) {
                primaries.push(*p);
            }
        }
        let mut current: Vec<IdentityRecord> = Vec::new();
        for p in &primaries {
            match self.read_record(p).await? {
                Some((seq, _)) if seq > last => return Ok(None), // changed after `last`
                Some((_, stored)) => current.push(stored.record),
                None => {}
            }
        }
        let t = match change::apply(&current, Some(claimed), change, now_ms())? {
            Outcome::Unchanged(record) => {
                return Ok(Some(Committed {
                    record,
                    event: None,
                }))
            }
            Outcome::Changed(t) => t,
        };
        let primary = t.record.primary();
        // Alias entries to point here once the record lists them: those that
        // name another primary, and every alias of an absorbed record.
        let mut repoint: Vec<IdentityHash> = entries
            .iter()
            .filter(|(_, p)| *p != primary)
            .map(|(a, _)| *a)
            .collect();
        for r in current.iter().filter(|r| t.absorbed.contains(&r.primary())) {
            for a in &r.aliases {
                if !repoint.contains(a) && !entries.iter().any(|(e, _)| e == a) {
                    repoint.push(*a);
                }
            }
        }
        let stored = StoredRecord {
            record: t.record,
            previous: t.previous,
        };
        let value =
            Bytes::from(serde_json::to_vec(&stored).map_err(|e| StoreError::Index(e.to_string()))?);
        // Compare-and-set on the whole stream's last sequence. The per-subject
        // expectation (`kv.update`) is not safe against concurrent writers on
        // clustered streams before nats-server 2.9.21 (nats-server#4320);
        // the stream-wide one counts in-flight proposals.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            last.to_string().as_str(),
        );
        let subject = format!("$KV.{INDEX_BUCKET}.{}", identity_key(&primary));
        let ack = self
            .inner
            .js
            .publish_with_headers(subject, headers, value)
            .await
            .map_err(self.fail("index write"))?
            .await;
        let written = match ack {
            Ok(a) => a.sequence,
            Err(e)
                if e.kind()
                    == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence =>
            {
                return Ok(None)
            }
            Err(e) => return Err(self.fail("index write")(e)),
        };
        // After the record lists them, so no alias ever points at a record
        // without it.
        for a in repoint {
            kv.put(alias_key(&a), Bytes::from(primary.to_hex()))
                .await
                .map_err(self.fail("index write"))?;
        }
        let record = stored.record.clone();
        let event = stored.event(written);
        // Read-your-writes on this node, without waiting for the watch (which
        // then finds the revision applied and announces nothing).
        self.apply_identity(written, stored);
        Ok(Some(Committed {
            record,
            event: Some(event),
        }))
    }
}
