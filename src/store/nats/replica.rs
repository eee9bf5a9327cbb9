//! The node-local copy of the index, fed by a KV watch (liveness-checked,
//! restarted on failure, caught up by direct stream reads while no watch can
//! be created). Identity and manifest look-ups answer from it. Whoever applies
//! a revision first — the watch, or this node's own commit — announces its
//! event, once: local and remote changes are published the same way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;

use super::keys::{is_put, Key, Stored, INDEX_BUCKET};
use super::NatsStore;
use crate::model::{ChangeEvent, ContentHash, IdentityHash};
use crate::store::{now_ms, IdentityRecord, Manifest, StoreError};

/// Events kept in memory for SSE resume (`events_after`).
const RECENT_EVENTS: usize = 10_000;
/// How often the index watch is checked against the bucket's head.
const LIVENESS_EVERY: Duration = Duration::from_millis(250);

/// The node-local copy of the index.
#[derive(Default)]
pub(super) struct Replica {
    /// Primary → (revision, record or forward).
    pub(super) records: HashMap<IdentityHash, (u64, Stored)>,
    /// Alias → primary (from `a.` keys, else from records).
    pub(super) aliases: HashMap<IdentityHash, IdentityHash>,
    pub(super) manifests: HashMap<ContentHash, Manifest>,
    /// Recent events, oldest first, for SSE resume.
    pub(super) recent: VecDeque<ChangeEvent>,
    /// Highest event id applied.
    pub(super) head: u64,
    /// Issue 16: content taken down (`t.` keys).
    pub(super) takedowns: super::moderation::Takedowns,
}

impl Replica {
    /// The record `alias` names. A forward counts once its target lists the
    /// forwarded primary (the merge finished); until then the forwarded
    /// record as it was answers, so no reader sees a half-done merge.
    pub(super) fn lookup(&self, alias: &IdentityHash) -> Option<&IdentityRecord> {
        let mut primary = *self.aliases.get(alias).unwrap_or(alias);
        for _ in 0..4 {
            match &self.records.get(&primary)?.1 {
                Stored::Record(r) => return Some(&r.record),
                Stored::Forward { moved } => {
                    let done = matches!(
                        self.records.get(&moved.to),
                        Some((_, Stored::Record(r))) if r.record.aliases.contains(&primary)
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

    /// Identities (records, not forwards) in the replica.
    pub(super) fn identities(&self) -> usize {
        self.records
            .values()
            .filter(|(_, s)| matches!(s, Stored::Record(_)))
            .count()
    }

    /// Apply the value of `i.<primary>` at `revision`; returns its event
    /// when it is new here and a record (forwards are not events).
    fn apply_record(
        &mut self,
        primary: IdentityHash,
        revision: u64,
        stored: Stored,
    ) -> Option<ChangeEvent> {
        if self
            .records
            .get(&primary)
            .is_some_and(|(rev, _)| *rev >= revision)
        {
            return None;
        }
        let event = stored.event(revision);
        if let Stored::Record(r) = &stored {
            for a in &r.record.aliases {
                self.aliases.entry(*a).or_insert(primary);
            }
        }
        self.records.insert(primary, (revision, stored));
        let event = event?;
        if revision > self.head {
            self.head = revision;
        }
        // Keep `recent` ordered by id (a local commit may apply before an
        // older revision arrives through the watch).
        let at = self.recent.partition_point(|e| e.id < revision);
        self.recent.insert(at, event.clone());
        while self.recent.len() > RECENT_EVENTS {
            self.recent.pop_front();
        }
        Some(event)
    }
}

impl NatsStore {
    /// Feed the replica from a KV watch forever, restarting it when it fails.
    /// `ready` fires once the first watch has caught up.
    ///
    /// A watch whose consumer lived on a NATS server that died stays silent
    /// until the client notices missed heartbeats (seconds), so a liveness
    /// check compares the bucket's last sequence with the last one applied
    /// every [`LIVENESS_EVERY`]; behind twice in a row, the watch restarts from
    /// the next revision.
    pub(super) async fn watch(self, ready: tokio::sync::oneshot::Sender<()>) {
        let mut ready = Some(ready);
        // Highest stream sequence the replica has seen (any key); 0 = none.
        let mut applied: u64 = 0;
        let mut first = true;
        loop {
            if !first {
                self.inner
                    .stats
                    .watch_restarts
                    .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            first = false;
            // How much there is to catch up with (an empty bucket delivers nothing).
            let last = match self.inner.kv.status().await {
                Ok(s) => s.info.state.last_sequence,
                Err(e) => {
                    self.count_bucket_error();
                    tracing::warn!(error = %e, "reading the index bucket status; retrying");
                    continue;
                }
            };
            let started = if applied == 0 {
                self.inner.kv.watch_with_history(">").await
            } else {
                self.inner.kv.watch_all_from_revision(applied + 1).await
            };
            let mut watch = match started {
                Ok(w) => w,
                Err(e) => {
                    self.count_bucket_error();
                    tracing::warn!(error = %e, "starting the index watch; catching up by reads meanwhile");
                    if ready.is_none() {
                        // Reads keep the replica current (so not stale) until
                        // a watch can be created again.
                        let current = self.catch_up(&mut applied).await.is_ok();
                        self.inner.watching.store(current, Ordering::Relaxed);
                    }
                    continue;
                }
            };
            self.inner.watching.store(true, Ordering::Relaxed);
            self.inner.live.store(false, Ordering::Relaxed);
            self.probe().await;
            if last <= applied || last == 0 {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            let mut tick = tokio::time::interval(LIVENESS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut behind_since: Option<u64> = None;
            loop {
                tokio::select! {
                    entry = watch.next() => match entry {
                        Some(Ok(e)) => {
                            applied = applied.max(e.revision);
                            if e.key == self.inner.probe {
                                self.inner.live.store(true, Ordering::Relaxed);
                            }
                            self.apply_entry(&e);
                            if e.delta == 0 {
                                if let Some(r) = ready.take() {
                                    let _ = r.send(());
                                }
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "index watch failed; restarting it");
                            break;
                        }
                        None => break,
                    },
                    _ = tick.tick() => {
                        if ready.is_some() {
                            continue; // still loading
                        }
                        if !self.inner.live.load(Ordering::Relaxed) {
                            self.probe().await; // the last one may have failed
                        }
                        match self.behind(applied).await {
                            Some(true) => {
                                // Behind: fine once (in flight), not twice.
                                if behind_since.is_some_and(|b| b == applied) {
                                    tracing::warn!(applied, "index watch stalled; catching up and restarting it");
                                    if let Err(e) = self.catch_up(&mut applied).await {
                                        tracing::warn!(error = %e, "index catch-up failed");
                                    }
                                    break;
                                }
                                behind_since = Some(applied);
                            }
                            Some(false) => behind_since = None,
                            None => {}
                        }
                    }
                }
            }
            self.inner.watching.store(false, Ordering::Relaxed);
            self.inner.live.store(false, Ordering::Relaxed);
        }
    }

    /// Write this node's probe key; the watch marks itself live when the
    /// write comes back through it (`/readyz`).
    async fn probe(&self) {
        let at = Bytes::from(now_ms().to_string());
        if let Err(e) = self.inner.kv.put(self.inner.probe.clone(), at).await {
            self.count_bucket_error();
            tracing::warn!(error = %e, "writing the watch probe");
        }
    }

    /// Read and apply every bucket message after `applied` straight from the
    /// stream leader (no consumer needed: works while the JetStream meta
    /// layer that consumer creation needs is still recovering).
    async fn catch_up(&self, applied: &mut u64) -> Result<usize, StoreError> {
        let prefix = format!("$KV.{INDEX_BUCKET}.");
        let filter = format!("{prefix}>");
        let mut n = 0;
        loop {
            match self
                .inner
                .stream
                .get_first_raw_message_by_subject(&filter, *applied + 1)
                .await
            {
                Ok(m) => {
                    let key = m.subject.as_str().strip_prefix(&prefix).unwrap_or("");
                    self.apply(key, m.sequence, &m.payload, is_put(&m.headers));
                    *applied = (*applied).max(m.sequence);
                    n += 1;
                }
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
                {
                    return Ok(n)
                }
                Err(e) => return Err(self.fail("index catch-up")(e)),
            }
        }
    }

    /// Is there a bucket message after `applied`? (`None`: could not tell.)
    async fn behind(&self, applied: u64) -> Option<bool> {
        let filter = format!("$KV.{INDEX_BUCKET}.>");
        match self
            .inner
            .stream
            .get_first_raw_message_by_subject(&filter, applied + 1)
            .await
        {
            Ok(_) => Some(true),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                Some(false)
            }
            Err(_) => None,
        }
    }

    fn apply_entry(&self, e: &kv::Entry) {
        self.apply(
            &e.key,
            e.revision,
            &e.value,
            matches!(e.operation, kv::Operation::Put),
        );
    }

    /// Apply an identity record at `revision` to the replica and announce its
    /// event, unless the replica had it already. Returns the event when new.
    pub(super) fn apply_identity(
        &self,
        primary: IdentityHash,
        revision: u64,
        stored: Stored,
    ) -> Option<ChangeEvent> {
        let event = self
            .write_replica()
            .apply_record(primary, revision, stored)?;
        self.inner.publish.publish(event.clone());
        Some(event)
    }

    /// Apply one bucket message (from the watch or a catch-up read).
    fn apply(&self, key: &str, revision: u64, value: &[u8], put: bool) {
        if let Some(Key::Takedown(hash)) = Key::parse(key) {
            // A lift is a delete: both matter here.
            return self.apply_takedown(key, hash, revision, put.then_some(value));
        }
        if !put {
            return;
        }
        match Key::parse(key) {
            Some(Key::Identity(primary)) => match Stored::decode(value) {
                Ok(stored) => {
                    if let Some(ev) = self.apply_identity(primary, revision, stored) {
                        let lag = now_ms().saturating_sub(ev.at);
                        if let Some(h) = ev.hash {
                            let this = self.clone();
                            tokio::spawn(async move { this.prefetch(&h).await });
                        }
                        self.inner
                            .stats
                            .replica_lag_ms
                            .store(lag, Ordering::Relaxed);
                        self.inner
                            .stats
                            .replica_lag
                            .observe(Duration::from_millis(lag));
                    }
                }
                Err(err) => tracing::error!(key = %key, error = %err, "corrupt index record"),
            },
            Some(Key::Alias(alias)) => match std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<IdentityHash>().ok())
            {
                Some(primary) => {
                    self.write_replica().aliases.insert(alias, primary);
                }
                None => tracing::error!(key = %key, "corrupt alias entry"),
            },
            Some(Key::Manifest(hash)) => match serde_json::from_slice::<Manifest>(value) {
                Ok(m) => {
                    self.write_replica().manifests.insert(hash, m);
                }
                Err(err) => tracing::error!(key = %key, error = %err, "corrupt manifest"),
            },
            Some(Key::Probe) | Some(Key::Takedown(_)) => {}
            None => tracing::warn!(key = %key, "unknown key in the index bucket"),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::super::keys::tests::stored;
    use super::*;

    #[test]
    fn replica_applies_each_revision_once_and_in_order() {
        let mut r = Replica::default();
        let a1 = Stored::Record(stored("a@example.org", 1, 1));
        let a2 = stored("a@example.org", 2, 2);
        let p = a2.record.primary();
        assert_eq!(r.apply_record(p, 5, a1.clone()).unwrap().id, 5);
        assert!(
            r.apply_record(p, 5, a1.clone()).is_none(),
            "same revision twice"
        );
        let sha = a2.record.aliases[1];
        assert_eq!(r.apply_record(p, 9, Stored::Record(a2)).unwrap().version, 2);
        assert!(
            r.apply_record(p, 7, a1).is_none(),
            "an older revision never wins"
        );
        assert_eq!(r.lookup(&sha).unwrap().version, 2);
        // An event applied out of order still lands in id order.
        let b = stored("b@example.org", 1, 3);
        r.apply_record(b.record.primary(), 8, Stored::Record(b));
        let ids: Vec<u64> = r.recent.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![5, 8, 9]);
        assert_eq!(r.head, 9);
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
        r.apply_record(md5, 1, Stored::Record(m.clone()));
        r.apply_record(sha, 2, Stored::Record(s.clone()));
        r.aliases.insert(sha, sha);
        let fwd = Stored::Forward {
            moved: Forward {
                to: md5,
                record: Some(s.record.clone()),
                aliases: full.aliases.clone(),
                avatar: full.avatar.clone().unwrap(),
            },
        };
        assert!(r.apply_record(sha, 3, fwd).is_none(), "not an event");
        // Merge not finished: sha still answers with its own record.
        assert_eq!(r.lookup(&sha), Some(&s.record));
        let mut merged = stored("a@example.org", 2, 3);
        merged.record.aliases = vec![md5, sha];
        r.apply_record(md5, 4, Stored::Record(merged.clone()));
        assert_eq!(r.lookup(&sha), Some(&merged.record));
        assert_eq!(r.lookup(&md5), Some(&merged.record));
        assert_eq!(r.identities(), 1);
    }
}
