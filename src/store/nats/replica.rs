//! The node-local copy of the index, fed by a KV watch (liveness-checked,
//! restarted on failure, caught up by direct stream reads while no watch can
//! be created). Identity and manifest look-ups answer from it. Whoever applies
//! a revision first — the watch, or this node's own commit — announces its
//! event, once: local and remote changes are published the same way.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;

use super::keys::{is_put, Held, Key, MasterEntry, Phase, Stored, INDEX_BUCKET};
use super::NatsStore;
use crate::model::{ChangeEvent, ContentHash, IdentityHash};
use crate::store::{now_ms, Manifest, StoreError};
use hot::{HotKey, Value};

/// A change applied later than this after it was made (an index loaded at
/// start, a long catch-up) prefetches no blobs.
const PREFETCH_RECENT_MS: u64 = 60_000;
/// How often the index watch is checked against the bucket's head.
const LIVENESS_EVERY: Duration = Duration::from_millis(250);

/// The node-local copy of the index.
#[derive(Default)]
pub(super) struct Replica {
    /// Primary → (revision, record or forward).
    pub(super) records: HashMap<IdentityHash, (u64, Held)>,
    /// Alias → primary (from `a.` keys, else from records), for aliases
    /// that are not their own primary (an absent alias names itself; see
    /// `lookup.rs`).
    pub(super) aliases: HashMap<IdentityHash, IdentityHash>,
    /// Master → (revision, its `m.` entry; `None` once deleted).
    pub(super) masters: HashMap<ContentHash, (u64, Option<MasterEntry>)>,
    /// Master → how many identity values ([`Stored::masters`]) name it.
    pub(super) refs: HashMap<ContentHash, u32>,
    /// Masters whose blobs are being deleted.
    pub(super) deleting: HashSet<ContentHash>,
    /// Masters that stopped being reachable here since the last drain
    /// (no reference left, or their deletion began).
    pub(super) gone: Vec<ContentHash>,
    /// Recent events, oldest first, for SSE resume: at most
    /// `recent_limit` (`--nats-resume-events`).
    pub(super) recent: VecDeque<ChangeEvent>,
    pub(super) recent_limit: usize,
    /// The highest event id dropped from `recent`: a resume from before it
    /// reads the stream (`events_after`).
    pub(super) recent_floor: u64,
    /// Highest event id applied.
    pub(super) head: u64,
    /// Issue 16: content taken down (`t.` keys).
    pub(super) takedowns: super::moderation::Takedowns,
    /// Issue 20, `--nats-index-mb`: identities and masters are not held
    /// here but in the hot set (`hot.rs`); `records`, `aliases` and `refs`
    /// stay empty, `masters` holds only entries a sweep must look at, and a
    /// master is named when its `m.` entry lists a key (`bounded.rs`).
    pub(super) bounded: bool,
    /// Bounded: salted masters `Live` and listing no key (the sweep's
    /// candidates once unleased) → the lease's end (`held_until`, 0: none).
    /// A fallback's master (issue 17) is one while its entry lives, so
    /// they are kept as this pair, not as entries.
    pub(super) unlisted: HashMap<ContentHash, u64>,
    /// Bounded: an entry written before salting was seen (`Manifest::salted`):
    /// a salted master's own blob may then be another master's rung.
    pub(super) unsalted: bool,
    /// The bucket holds no such entry unless one is seen (`keys::salted_bucket`).
    pub(super) salted_bucket: bool,
    /// Bounded: `Some` while the start's read of every `m.` entry runs
    /// (`start.rs`, [`Replica::masters_known`]).
    pub(super) loading: Option<bounded::Loading>,
    /// Bounded: revisions this node's commits announced before the watch
    /// reached them (the watch then announces nothing).
    announced: BTreeSet<u64>,
    /// Bounded: the highest identity revision the watch applied.
    watched: u64,
    /// How many of `records` are records, not forwards: kept by
    /// [`Replica::apply_record`], the only writer of `records`, so `/metrics`
    /// never scans the index under the lock the watch needs.
    identities: usize,
}

impl Replica {
    /// An empty replica keeping `recent_limit` events for resume.
    pub(super) fn keeping(recent_limit: usize) -> Replica {
        Replica {
            recent_limit,
            ..Replica::default()
        }
    }

    /// The manifest of `hash` if some identity here names it and its blobs
    /// are not being deleted: what `/c/` may serve.
    pub(super) fn bound_manifest(&self, hash: &ContentHash) -> Option<Manifest> {
        if !self.referenced(hash) {
            return None;
        }
        match self.masters.get(hash) {
            Some((_, Some(e))) if e.phase != Phase::Deleting => Some(e.manifest.clone()),
            _ => None,
        }
    }

    /// Does some identity value in the replica name `hash` (a bounded
    /// replica: see `bounded.rs`), or a fallback entry's lease (issue 17,
    /// [`MasterEntry::held_until`]) hold it?
    pub(super) fn referenced(&self, hash: &ContentHash) -> bool {
        if self.bounded {
            return self.named_bounded(hash);
        }
        self.refs.get(hash).is_some_and(|n| *n > 0) || self.leased(hash)
    }

    /// Does a fallback entry's lease hold `hash`?
    fn leased(&self, hash: &ContentHash) -> bool {
        self.masters
            .get(hash)
            .is_some_and(|(_, e)| e.as_ref().is_some_and(|e| e.held_until > now_ms()))
    }

    /// Apply the `m.<hash>` entry at `revision` (`None`: deleted).
    pub(super) fn apply_master(
        &mut self,
        hash: ContentHash,
        revision: u64,
        entry: Option<MasterEntry>,
    ) {
        if let Some(loading) = self.loading.as_mut() {
            loading.applied(hash, revision);
        }
        self.put_master(hash, revision, entry);
    }

    /// [`Replica::apply_master`] without noting the revision for a load.
    fn put_master(&mut self, hash: ContentHash, revision: u64, entry: Option<MasterEntry>) {
        if self
            .masters
            .get(&hash)
            .is_some_and(|(rev, _)| *rev >= revision)
        {
            return;
        }
        let entry = entry.map(masters::kept);
        let live = entry.as_ref().is_some_and(|e| e.phase != Phase::Deleting);
        if live {
            self.deleting.remove(&hash);
        } else {
            if entry.is_some() {
                self.deleting.insert(hash);
            } else {
                self.deleting.remove(&hash);
            }
            self.gone.push(hash);
        }
        if self.bounded {
            return self.hold_master(hash, revision, entry);
        }
        self.masters.insert(hash, (revision, entry));
    }

    /// Identities (records, not forwards) in the replica.
    pub(super) fn identities(&self) -> usize {
        self.identities
    }

    /// Apply the value of `i.<primary>` at `revision` as the watch delivered
    /// it (`watched`) or this node's commit wrote it; returns its event when
    /// it is new here and a record (forwards are not events).
    pub(super) fn apply_record(
        &mut self,
        primary: IdentityHash,
        revision: u64,
        stored: Stored,
        watched: bool,
    ) -> Option<ChangeEvent> {
        let event = stored.event(revision);
        let new = if self.bounded {
            self.first_time(revision, watched)
        } else {
            self.hold_record(primary, revision, stored)
        };
        if !new {
            return None;
        }
        let event = event?;
        if revision > self.head {
            self.head = revision;
        }
        // Keep `recent` ordered by id (a local commit may apply before an
        // older revision arrives through the watch).
        let at = self.recent.partition_point(|e| e.id < revision);
        self.recent.insert(at, event.clone());
        while self.recent.len() > self.recent_limit.max(1) {
            if let Some(e) = self.recent.pop_front() {
                self.recent_floor = self.recent_floor.max(e.id);
            }
        }
        Some(event)
    }

    /// The whole replica: hold the value, keep the reference counts; `false`
    /// when the replica has this revision or a later one.
    fn hold_record(&mut self, primary: IdentityHash, revision: u64, stored: Stored) -> bool {
        if self
            .records
            .get(&primary)
            .is_some_and(|(rev, _)| *rev >= revision)
        {
            return false;
        }
        // References: the new value's first, so a master both name never
        // drops to zero on the way.
        for h in stored.masters() {
            *self.refs.entry(h).or_default() += 1;
        }
        if let Some((_, old)) = self.records.get(&primary) {
            for h in old.masters() {
                if let Some(n) = self.refs.get_mut(&h) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.refs.remove(&h);
                        self.gone.push(h);
                    }
                }
            }
        }
        if let Stored::Record(r) = &stored {
            for a in &r.record.aliases {
                self.alias_listed(*a, primary);
            }
        }
        let held = Held::from(stored);
        let is_record = |s: &Held| matches!(s, Held::Record(_));
        let was = self
            .records
            .get(&primary)
            .is_some_and(|(_, s)| is_record(s));
        match (was, is_record(&held)) {
            (false, true) => self.identities += 1,
            (true, false) => self.identities -= 1,
            _ => {}
        }
        self.records.insert(primary, (revision, held));
        true
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
            // At start, how much there is to load (an empty bucket delivers
            // nothing).
            let last = if ready.is_some() {
                match self.inner.kv.status().await {
                    Ok(s) => s.info.state.last_sequence,
                    Err(e) => {
                        self.count_bucket_error();
                        tracing::warn!(error = %e, "reading the index bucket status; retrying");
                        continue;
                    }
                }
            } else {
                0
            };
            // Issue 20: a bounded replica starts at the head, with only the
            // keys it holds whole (constant in the number of identities).
            if applied == 0 && last > 0 && self.inner.hot.is_some() {
                if let Err(e) = self.start_bounded(last).await {
                    tracing::warn!(error = %e, "loading masters and takedowns; retrying");
                    continue;
                }
                applied = last;
            }
            let (initial, from) = (applied == 0, applied + 1);
            let kv = self.inner.kv.clone();
            let create = async move {
                if initial {
                    kv.watch_with_history(">").await
                } else {
                    kv.watch_all_from_revision(from).await
                }
            };
            tokio::pin!(create);
            // Issue 15: creating a watch needs the JetStream meta leader,
            // which may be being elected after a server died; meanwhile
            // direct reads keep the replica current, so changes keep arriving.
            let mut reads = tokio::time::interval(LIVENESS_EVERY);
            let started = loop {
                tokio::select! {
                    w = &mut create => break w,
                    _ = reads.tick(), if ready.is_none() => {
                        let current = self.catch_up(&mut applied).await.is_ok();
                        self.inner.watching.store(current, Ordering::Relaxed);
                    }
                }
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
                            if ready.is_none() && e.revision <= applied {
                                continue; // read meanwhile by catch-up
                            }
                            applied = applied.max(e.revision);
                            if e.key == self.inner.probe {
                                self.inner.live.store(true, Ordering::Relaxed);
                            }
                            self.apply_entry(&e);
                            self.inner.position.send_replace(applied);
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
                    self.inner.position.send_replace(*applied);
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

    pub(super) fn apply_entry(&self, e: &kv::Entry) {
        self.apply(
            &e.key,
            e.revision,
            &e.value,
            matches!(e.operation, kv::Operation::Put),
        );
    }

    /// Apply an identity record at `revision` to the replica and announce its
    /// event, unless the replica had it already. Returns the event when new.
    /// `watched`: delivered by the watch (or a catch-up read), not written
    /// by this node's commit.
    pub(super) fn apply_identity(
        &self,
        primary: IdentityHash,
        revision: u64,
        stored: Stored,
        watched: bool,
    ) -> Option<ChangeEvent> {
        self.hot_record(primary, revision, &stored, watched);
        let (event, gone) = {
            let mut r = self.write_replica();
            let event = r.apply_record(primary, revision, stored, watched);
            (event, std::mem::take(&mut r.gone))
        };
        self.content_gone(gone);
        let event = event?;
        self.inner.publish.publish(event.clone());
        Some(event)
    }

    /// Apply the `m.<hash>` entry at `revision` (`None`: deleted).
    pub(super) fn apply_master(
        &self,
        hash: ContentHash,
        revision: u64,
        entry: Option<MasterEntry>,
    ) {
        // Stripped once, before the hot set's copy is made.
        let entry = entry.map(masters::kept);
        if let Some(mut hot) = self.hot() {
            let v = entry
                .clone()
                .map_or(Value::Absent, |e| Value::Master(Box::new(e)));
            hot.applied(HotKey::Master(hash), revision, v);
        }
        let gone = {
            let mut r = self.write_replica();
            r.apply_master(hash, revision, entry);
            std::mem::take(&mut r.gone)
        };
        self.content_gone(gone);
    }

    /// Tell the service (`Store::on_content_gone`) which masters stopped
    /// being reachable here, so it drops their cached manifests and variants.
    pub(super) fn content_gone(&self, gone: Vec<ContentHash>) {
        if let Some(f) = self.inner.gone.get() {
            for h in gone {
                f(h);
            }
        }
    }

    /// Apply one bucket message (from the watch or a catch-up read).
    fn apply(&self, key: &str, revision: u64, value: &[u8], put: bool) {
        let parsed = Key::parse(key);
        match parsed {
            // A lift is a delete: both matter here.
            Some(Key::Takedown(hash)) => {
                return self.apply_takedown(key, hash, revision, put.then_some(value))
            }
            // Deleted once their blobs are gone.
            Some(Key::Manifest(hash)) => {
                if let Some(entry) = masters::decode_change(key, put, value) {
                    self.apply_master(hash, revision, entry);
                }
                return;
            }
            // Nothing else is ever deleted.
            _ if !put => return,
            _ => {}
        }
        match parsed {
            Some(Key::Identity(primary)) => match Stored::decode(value) {
                Ok(stored) => {
                    if let Some(ev) = self.apply_identity(primary, revision, stored, true) {
                        let lag = now_ms().saturating_sub(ev.at);
                        // Only a recent change is about to be asked for
                        // (open pages follow it), and on a bounded replica
                        // only one of an identity looked up here; loading
                        // the index at start must not read the whole object
                        // store.
                        let wanted = self
                            .hot()
                            .is_none_or(|h| h.holds(&HotKey::Identity(primary)));
                        if let Some(h) = ev.hash.filter(|_| lag < PREFETCH_RECENT_MS && wanted) {
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
                Some(primary) => match self.hot() {
                    Some(mut hot) => {
                        hot.applied(HotKey::Alias(alias), revision, Value::Names(primary))
                    }
                    None => self.write_replica().set_alias(alias, primary),
                },
                None => tracing::error!(key = %key, "corrupt alias entry"),
            },
            Some(Key::Probe | Key::Takedown(_) | Key::Manifest(_) | Key::Format) => {}
            None => tracing::warn!(key = %key, "unknown key in the index bucket"),
        }
    }
}

pub(super) mod bounded;
pub(super) mod hot;
mod lookup;
pub(super) mod masters;
#[cfg(test)]
mod tests;
