//! The node-local copy of the index, fed by a KV watch (liveness-checked,
//! restarted on failure, caught up by direct stream reads while no watch can
//! be created). Identity and manifest look-ups answer from it. Whoever applies
//! a revision first — the watch, or this node's own commit — announces its
//! event, once: local and remote changes are published the same way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use super::keys::{is_put, Key, StoredRecord, INDEX_BUCKET};
use super::NatsStore;
use crate::model::{ChangeEvent, ContentHash, IdentityHash};
use crate::store::{now_ms, Manifest, StoreError};

/// Events kept in memory for SSE resume (`events_after`).
const RECENT_EVENTS: usize = 10_000;
/// How often the index watch is checked against the bucket's head.
const LIVENESS_EVERY: Duration = Duration::from_millis(250);

/// The node-local copy of the index.
#[derive(Default)]
pub(super) struct Replica {
    /// Primary → (revision, record).
    pub(super) records: HashMap<IdentityHash, (u64, StoredRecord)>,
    /// Alias → primary (from `a.` keys, else from records).
    pub(super) aliases: HashMap<IdentityHash, IdentityHash>,
    pub(super) manifests: HashMap<ContentHash, Manifest>,
    /// Recent events, oldest first, for SSE resume.
    pub(super) recent: VecDeque<ChangeEvent>,
    /// Highest event id applied.
    pub(super) head: u64,
}

impl Replica {
    pub(super) fn lookup(&self, alias: &IdentityHash) -> Option<&(u64, StoredRecord)> {
        let primary = self.aliases.get(alias).unwrap_or(alias);
        self.records.get(primary)
    }

    /// Apply an identity record at `revision`; returns its event when it is new here.
    fn apply_record(&mut self, revision: u64, stored: StoredRecord) -> Option<ChangeEvent> {
        let primary = stored.record.primary();
        if self
            .records
            .get(&primary)
            .is_some_and(|(rev, _)| *rev >= revision)
        {
            return None;
        }
        for a in &stored.record.aliases {
            self.aliases.entry(*a).or_insert(primary);
        }
        let event = stored.event(revision);
        self.records.insert(primary, (revision, stored));
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
        revision: u64,
        stored: StoredRecord,
    ) -> Option<ChangeEvent> {
        let event = self.write_replica().apply_record(revision, stored)?;
        self.inner.publish.publish(event.clone());
        Some(event)
    }

    /// Apply one bucket message (from the watch or a catch-up read).
    fn apply(&self, key: &str, revision: u64, value: &[u8], put: bool) {
        if !put {
            return;
        }
        match Key::parse(key) {
            Some(Key::Identity(_)) => match serde_json::from_slice::<StoredRecord>(value) {
                Ok(stored) => {
                    let lag = now_ms().saturating_sub(stored.record.updated_ms);
                    if let Some(ev) = self.apply_identity(revision, stored) {
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
        let a1 = stored("a@example.org", 1, 1);
        let a2 = stored("a@example.org", 2, 2);
        assert_eq!(r.apply_record(5, a1.clone()).unwrap().id, 5);
        assert!(
            r.apply_record(5, a1.clone()).is_none(),
            "same revision twice"
        );
        assert_eq!(r.apply_record(9, a2.clone()).unwrap().version, 2);
        assert!(
            r.apply_record(7, a1).is_none(),
            "an older revision never wins"
        );
        let sha = a2.record.aliases[1];
        assert_eq!(r.lookup(&sha).unwrap().1.record.version, 2);
        // An event applied out of order still lands in id order.
        r.apply_record(8, stored("b@example.org", 1, 3));
        let ids: Vec<u64> = r.recent.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![5, 8, 9]);
        assert_eq!(r.head, 9);
    }
}
