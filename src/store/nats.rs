//! The cluster store: NATS JetStream behind the [`Store`] trait, so several
//! avatar-edge nodes share one index, one blob store and one event log. The
//! only module that talks to NATS.
//!
//! Layout (bucket names are fixed, replicas are a setting):
//! - KV bucket [`INDEX_BUCKET`] (history 64): `i.<primary hex>` → the identity
//!   record *and* its change event ([`StoredRecord`]); `a.<alias hex>` → the
//!   primary hash (written with create-if-absent before the record names it);
//!   `m.<master hex>` → the master's manifest (immutable per hash).
//! - Object store bucket [`BLOB_BUCKET`]: rung blobs named by BLAKE3 hex
//!   (content addressing makes a write from two nodes idempotent).
//! - The event log is the KV bucket's own stream `KV_<bucket>`: an `i.` write
//!   *is* the event, its stream sequence the event id. There is no second
//!   client-side publish, so a node dying after the compare-and-set loses
//!   nothing. Purges and webhooks read it through one durable pull consumer
//!   per target (filter `i.>`), so each event is handed to one node cluster-wide
//!   and acknowledged after delivery (at least once; receivers dedupe by id).
//!
//! Invariants:
//! - every identity write is a compare-and-set on the bucket stream's last
//!   sequence (`Nats-Expected-Last-Sequence`), the record read from the stream
//!   leader as of that sequence, retried on conflict, so two nodes changing
//!   one identity cannot lose an update and the version grows by one per
//!   change. (The per-key revision check that `kv.update` uses is not safe
//!   against concurrent writers on clustered streams before nats-server
//!   2.9.21 — nats-server#4320 — and Debian ships 2.9.10.) The price: writes
//!   to *different* identities also conflict and retry;
//! - blobs and the manifest are durable (JetStream-acknowledged) before the
//!   record that references them is written; blobs are never deleted (no GC:
//!   unreferenced masters are an accepted leak, see README);
//! - each node keeps a replica of the bucket fed by a KV watch; identity and
//!   manifest look-ups answer from it and never leave the node. A change
//!   arriving through the watch also prefetches the new master's blobs into a
//!   small LRU, so the first render here does not wait for the object store. Whoever
//!   applies a revision to the replica first (the watch, or the local commit)
//!   publishes its event on the [`Bus`], once.
//!
//! Failure: with the connection down, commits answer
//! [`StoreError::Unavailable`] at once (the HTTP layer turns that into 503 +
//! `Retry-After`), look-ups keep answering from the replica and
//! [`Store::index_stale`] says so; the client reconnects by itself.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{
    now_ms, AvatarRef, Change, ChangeEvent, Committed, DeliveryQueue, IdentityRecord, Manifest,
    NewMaster, Store, StoreError, StoreStats,
};
use crate::events::Bus;
use crate::metrics::Histogram;
use crate::model::{ContentHash, IdentityHash};

/// The KV bucket holding identities, aliases and manifests.
pub const INDEX_BUCKET: &str = "avatar_edge_index";
/// The object store bucket holding rung blobs.
pub const BLOB_BUCKET: &str = "avatar_edge_blobs";
/// Revisions kept per KV key (the JetStream maximum).
const HISTORY: i64 = 64;
/// Events kept in memory for SSE resume (`events_after`).
const RECENT_EVENTS: usize = 10_000;
/// Byte budget of the node-local cache of recently changed masters' blobs.
const BLOB_CACHE_BYTES: usize = 64 << 20;
/// How often the index watch is checked against the bucket's head.
const LIVENESS_EVERY: Duration = Duration::from_millis(250);
/// Compare-and-set attempts before a commit gives up.
const CAS_ATTEMPTS: usize = 40;

/// How to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// `nats://host:port` seed URLs (the client learns the rest of the cluster).
    pub urls: Vec<String>,
    /// Replicas of each bucket (1 for a single dev server; 3 in production).
    pub replicas: usize,
}

/// A record as stored under `i.<primary>`: the identity plus what its change
/// event needs beyond it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub record: IdentityRecord,
    /// The avatar this change replaced, if it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ContentHash>,
}

impl StoredRecord {
    /// The change event of the write that stored this record at `revision`.
    pub fn event(&self, revision: u64) -> ChangeEvent {
        let r = &self.record;
        ChangeEvent {
            id: revision,
            key: r.primary(),
            aliases: r.aliases.clone(),
            hash: r.avatar.as_ref().map(|a| a.hash),
            previous: self.previous,
            version: r.version,
            at: r.updated_ms,
        }
    }
}

/// What a KV key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Identity(IdentityHash),
    Alias(IdentityHash),
    Manifest(ContentHash),
}

impl Key {
    fn parse(key: &str) -> Option<Key> {
        let (kind, hex) = key.split_once('.')?;
        match kind {
            "i" => hex.parse().ok().map(Key::Identity),
            "a" => hex.parse().ok().map(Key::Alias),
            "m" => hex.parse().ok().map(Key::Manifest),
            _ => None,
        }
    }
}

/// Is this stored KV message a value (not a delete or purge marker)?
fn is_put(headers: &async_nats::HeaderMap) -> bool {
    headers
        .get("KV-Operation")
        .is_none_or(|op| op.as_str() == "PUT")
}

fn identity_key(h: &IdentityHash) -> String {
    format!("i.{}", h.to_hex())
}
fn alias_key(h: &IdentityHash) -> String {
    format!("a.{}", h.to_hex())
}
fn manifest_key(h: &ContentHash) -> String {
    format!("m.{}", h.to_hex())
}

/// The node-local copy of the index.
#[derive(Default)]
struct Replica {
    /// Primary → (revision, record).
    records: HashMap<IdentityHash, (u64, StoredRecord)>,
    /// Alias → primary (from `a.` keys, else from records).
    aliases: HashMap<IdentityHash, IdentityHash>,
    manifests: HashMap<ContentHash, Manifest>,
    /// Recent events, oldest first, for SSE resume.
    recent: VecDeque<ChangeEvent>,
    /// Highest event id applied.
    head: u64,
}

impl Replica {
    fn lookup(&self, alias: &IdentityHash) -> Option<&(u64, StoredRecord)> {
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

/// Per-node counters for `/metrics`.
#[derive(Default)]
struct Stats {
    replica_lag: Histogram,
    replica_lag_ms: AtomicU64,
    watch_restarts: AtomicU64,
    reconnects: Arc<AtomicU64>,
    bucket_errors: AtomicU64,
    corrupt_blobs: AtomicU64,
    blobs_written: AtomicU64,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    kv: kv::Store,
    blobs: object_store::ObjectStore,
    /// The index bucket's stream (`KV_<bucket>`): the event log.
    stream: jetstream::stream::Stream,
    replica: RwLock<Replica>,
    stats: Stats,
    bus: Bus,
    /// True while the replica is kept current: a watch is delivering, or
    /// catch-up reads succeed while no watch can be created.
    watching: AtomicBool,
    /// Blobs of recently bound masters, fetched when the change arrives so the
    /// first render on this node does not wait for the object store.
    blob_cache: std::sync::Mutex<BlobCache>,
}

/// A small LRU of verified blobs bounded by bytes.
struct BlobCache {
    lru: lru::LruCache<ContentHash, Bytes>,
    bytes: usize,
}

impl BlobCache {
    fn new() -> BlobCache {
        BlobCache {
            lru: lru::LruCache::unbounded(),
            bytes: 0,
        }
    }

    fn get(&mut self, h: &ContentHash) -> Option<Bytes> {
        self.lru.get(h).cloned()
    }

    fn insert(&mut self, h: ContentHash, b: Bytes) {
        if b.len() > BLOB_CACHE_BYTES / 4 {
            return;
        }
        self.bytes = self.bytes.saturating_add(b.len());
        if let Some(old) = self.lru.put(h, b) {
            self.bytes = self.bytes.saturating_sub(old.len());
        }
        while self.bytes > BLOB_CACHE_BYTES {
            match self.lru.pop_lru() {
                Some((_, old)) => self.bytes = self.bytes.saturating_sub(old.len()),
                None => break,
            }
        }
    }
}

/// NATS JetStream store; cheap to clone.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

impl NatsStore {
    /// Connect, create or open the buckets, and load the replica. Fails (naming
    /// the URLs) when no server answers.
    pub async fn connect(opts: &NatsOptions, bus: Bus) -> Result<NatsStore, StoreError> {
        let joined = opts.urls.join(",");
        let addrs = opts
            .urls
            .iter()
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Unavailable(format!("invalid NATS URL in {joined}: {e}")))?;
        let reconnects = Arc::new(AtomicU64::new(0));
        let counter = reconnects.clone();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(3))
            .request_timeout(Some(Duration::from_secs(3)))
            .max_reconnects(None)
            .reconnect_delay_callback(|n| Duration::from_millis((50u64 << n.min(4)).min(1000)))
            .event_callback(move |event| {
                let counter = counter.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            counter.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("NATS connection (re)established");
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS connection lost; reconnecting")
                        }
                        other => tracing::debug!(event = %other, "NATS event"),
                    }
                }
            })
            .connect(addrs)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to NATS at {joined}: {e}"))
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(3));
        let replicas = opts.replicas.max(1);
        let kv = open_kv(&js, replicas).await?;
        let blobs = open_blobs(&js, replicas).await?;
        let stream = js
            .get_stream(format!("KV_{INDEX_BUCKET}"))
            .await
            .map_err(|e| StoreError::Unavailable(format!("NATS at {joined}: event stream: {e}")))?;
        let store = NatsStore {
            inner: Arc::new(Inner {
                client,
                js,
                kv,
                blobs,
                stream,
                replica: RwLock::new(Replica::default()),
                stats: Stats {
                    reconnects,
                    ..Default::default()
                },
                bus,
                watching: AtomicBool::new(false),
                blob_cache: std::sync::Mutex::new(BlobCache::new()),
            }),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(store.clone().watch(ready_tx));
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("NATS at {joined}: index replica did not load"))
            })?
            .map_err(|_| StoreError::Unavailable("index watch ended".into()))?;
        Ok(store)
    }

    /// Identities in the local replica (for tests and metrics).
    pub fn replica_len(&self) -> usize {
        self.read_replica().records.len()
    }

    fn read_replica(&self) -> std::sync::RwLockReadGuard<'_, Replica> {
        self.inner.replica.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_replica(&self) -> std::sync::RwLockWriteGuard<'_, Replica> {
        self.inner
            .replica
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Maps a NATS failure to `Unavailable` (503 upstream) and counts it.
    fn fail<E: std::fmt::Display>(&self, what: &'static str) -> impl FnOnce(E) -> StoreError + '_ {
        move |e| {
            self.inner
                .stats
                .bucket_errors
                .fetch_add(1, Ordering::Relaxed);
            StoreError::Unavailable(format!("NATS {what}: {e}"))
        }
    }

    /// Feed the replica from a KV watch forever, restarting it when it fails.
    /// `ready` fires once the first watch has caught up.
    ///
    /// A watch whose consumer lived on a NATS server that died stays silent
    /// until the client notices missed heartbeats (seconds), so a liveness
    /// check compares the bucket's last sequence with the last one applied
    /// every [`LIVENESS_EVERY`]; behind twice in a row, the watch restarts from
    /// the next revision.
    async fn watch(self, ready: tokio::sync::oneshot::Sender<()>) {
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
                    self.inner
                        .stats
                        .bucket_errors
                        .fetch_add(1, Ordering::Relaxed);
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
                    self.inner
                        .stats
                        .bucket_errors
                        .fetch_add(1, Ordering::Relaxed);
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

    /// Apply one bucket message (from the watch or a catch-up read).
    fn apply(&self, key: &str, revision: u64, value: &[u8], put: bool) {
        if !put {
            return;
        }
        match Key::parse(key) {
            Some(Key::Identity(_)) => match serde_json::from_slice::<StoredRecord>(value) {
                Ok(stored) => {
                    let lag = now_ms().saturating_sub(stored.record.updated_ms);
                    let event = self.write_replica().apply_record(revision, stored);
                    if let Some(ev) = event {
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
                        self.inner.bus.publish(ev);
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

    /// Fetch a newly bound master's rungs into the blob cache.
    async fn prefetch(&self, master: &ContentHash) {
        let Ok(Some(m)) = self.manifest(master).await else {
            return;
        };
        for r in &m.rungs {
            if let Err(e) = self.blob(&r.blob).await {
                tracing::debug!(blob = %r.blob, error = %e, "prefetch failed");
                return;
            }
        }
    }

    fn blob_cache(&self) -> std::sync::MutexGuard<'_, BlobCache> {
        self.inner
            .blob_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Store a blob unless an object of that name and size is already there.
    async fn put_blob(&self, bytes: &Bytes, len: u64) -> Result<(), StoreError> {
        let name = ContentHash::of(bytes).to_hex();
        if let Ok(info) = self.inner.blobs.info(&name).await {
            if info.size as u64 == len && !info.deleted {
                return Ok(());
            }
        }
        let mut reader: &[u8] = bytes;
        self.inner
            .blobs
            .put(name.as_str(), &mut reader)
            .await
            .map_err(self.fail("object store put"))?;
        self.inner
            .stats
            .blobs_written
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The alias entry's primary, read from the bucket (not the replica).
    async fn primary_of(&self, alias: &IdentityHash) -> Result<Option<IdentityHash>, StoreError> {
        let v = self
            .inner
            .kv
            .get(alias_key(alias))
            .await
            .map_err(self.fail("index read"))?;
        Ok(v.and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok())))
    }

    /// One compare-and-set attempt. `Ok(None)`: lost a race, try again.
    async fn try_commit(&self, change: &Change) -> Result<Option<Committed>, StoreError> {
        let kv = &self.inner.kv;
        let lookup: Vec<IdentityHash> = match change {
            Change::Bind { aliases, .. } => aliases.clone(),
            Change::Unbind { alias } | Change::SetRating { alias, .. } => vec![*alias],
        };
        // The existing identity: the first alias that names a primary.
        let mut primary = None;
        let mut pointed: Vec<(IdentityHash, IdentityHash)> = Vec::new();
        let mut unclaimed = Vec::new();
        for a in &lookup {
            match self.primary_of(a).await? {
                Some(p) => {
                    primary.get_or_insert(p);
                    pointed.push((*a, p));
                }
                None => unclaimed.push(*a),
            }
        }
        let primary = primary.unwrap_or(lookup[0]);
        // Claim aliases nobody names yet, before the record names them.
        for a in &unclaimed {
            match kv.create(alias_key(a), Bytes::from(primary.to_hex())).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(None),
                Err(e) => return Err(self.fail("index write")(e)),
            }
        }
        // The stream's last sequence, then the record as of it (read from the
        // stream leader, not a possibly lagging replica). The write below
        // expects that last sequence: nothing may have been written since.
        let mut stream = self.inner.stream.clone();
        let last = stream
            .info()
            .await
            .map_err(self.fail("index status"))?
            .state
            .last_sequence;
        let subject = format!("$KV.{INDEX_BUCKET}.{}", identity_key(&primary));
        let existing: Option<(u64, StoredRecord)> = match stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(m) if is_put(&m.headers) => Some((
                m.sequence,
                serde_json::from_slice(&m.payload)
                    .map_err(|err| StoreError::Index(format!("corrupt record: {err}")))?,
            )),
            Ok(_) => None,
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                None
            }
            Err(e) => return Err(self.fail("index read")(e)),
        };
        if existing.as_ref().is_some_and(|(rev, _)| *rev > last) {
            return Ok(None); // changed after `last` was read
        }
        let prev = existing.as_ref().map(|(_, s)| &s.record);
        let (new_avatar, new_aliases) = match change {
            Change::Bind {
                aliases: want,
                avatar,
            } => {
                let mut all = prev.map(|r| r.aliases.clone()).unwrap_or_default();
                if all.is_empty() {
                    all.push(primary);
                }
                for a in want {
                    if !all.contains(a) {
                        all.push(*a);
                    }
                }
                (Some(avatar.clone()), all)
            }
            Change::Unbind { .. } => match prev {
                Some(r) if r.avatar.is_some() => (None, r.aliases.clone()),
                _ => return Err(StoreError::NotFound),
            },
            Change::SetRating { rating, .. } => match prev {
                Some(IdentityRecord {
                    avatar: Some(a),
                    aliases,
                    ..
                }) => (
                    Some(AvatarRef {
                        hash: a.hash,
                        rating: *rating,
                    }),
                    aliases.clone(),
                ),
                _ => return Err(StoreError::NotFound),
            },
        };
        if let Some(p) = prev {
            if p.avatar == new_avatar && p.aliases == new_aliases {
                return Ok(Some(Committed {
                    record: p.clone(),
                    event: None,
                }));
            }
        }
        let old_hash = prev.and_then(|r| r.avatar.as_ref()).map(|a| a.hash);
        let new_hash = new_avatar.as_ref().map(|a| a.hash);
        let stored = StoredRecord {
            record: IdentityRecord {
                aliases: new_aliases,
                avatar: new_avatar,
                version: prev.map_or(0, |r| r.version).saturating_add(1),
                updated_ms: now_ms().max(prev.map_or(0, |r| r.updated_ms).saturating_add(1)),
            },
            previous: old_hash.filter(|h| Some(*h) != new_hash),
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
        // Aliases that named another identity now name this one (after the
        // record lists them, so no alias ever points at a record without it).
        for (a, p) in pointed {
            if p != primary {
                kv.put(alias_key(&a), Bytes::from(primary.to_hex()))
                    .await
                    .map_err(self.fail("index write"))?;
            }
        }
        let record = stored.record.clone();
        let event = stored.event(written);
        // Read-your-writes on this node, without waiting for the watch.
        if let Some(ev) = self.write_replica().apply_record(written, stored) {
            self.inner.bus.publish(ev);
        }
        Ok(Some(Committed {
            record,
            event: Some(event),
        }))
    }
}

/// Opens a bucket, creating it when missing: with `replicas`, or with one on a
/// single non-clustered server; if creating fails because another node made
/// it meanwhile, opens that one.
pub(super) async fn open_or_create<T, GE, CE, G, C>(
    what: &str,
    replicas: usize,
    get: impl Fn() -> G,
    create: impl Fn(usize) -> C,
) -> Result<T, StoreError>
where
    CE: std::fmt::Display,
    G: std::future::Future<Output = Result<T, GE>>,
    C: std::future::Future<Output = Result<T, CE>>,
{
    if let Ok(bucket) = get().await {
        return Ok(bucket);
    }
    let created = match create(replicas).await {
        Err(e) if replicas > 1 && e.to_string().contains("non-clustered") => {
            tracing::warn!(
                "single NATS server: {what} bucket with 1 replica instead of {replicas}"
            );
            create(1).await
        }
        other => other,
    };
    match created {
        Ok(bucket) => Ok(bucket),
        Err(e) => get()
            .await
            .map_err(|_| StoreError::Unavailable(format!("creating the {what} bucket: {e}"))),
    }
}

async fn open_kv(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, StoreError> {
    let config = |num_replicas| kv::Config {
        bucket: INDEX_BUCKET.into(),
        description: "avatar-edge identity index, manifests and change events".into(),
        history: HISTORY,
        max_value_size: 1 << 20,
        storage: jetstream::stream::StorageType::File,
        num_replicas,
        ..Default::default()
    };
    open_or_create(
        "index",
        replicas,
        || js.get_key_value(INDEX_BUCKET),
        |n| js.create_key_value(config(n)),
    )
    .await
}

async fn open_blobs(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<object_store::ObjectStore, StoreError> {
    let config = |num_replicas| object_store::Config {
        bucket: BLOB_BUCKET.into(),
        description: Some("avatar-edge master rungs by BLAKE3".into()),
        storage: jetstream::stream::StorageType::File,
        num_replicas,
        ..Default::default()
    };
    open_or_create(
        "blob",
        replicas,
        || js.get_object_store(BLOB_BUCKET),
        |n| js.create_object_store(config(n)),
    )
    .await
}

#[async_trait::async_trait]
impl Store for NatsStore {
    async fn commit(
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

    // Issue 14: subscriptions in a KV bucket, so a POST to one node and the
    // stream on another agree.
    fn subscriptions(&self) -> Option<Arc<dyn super::subscriptions::SubscriptionStore>> {
        let replicas = self.inner.stream.cached_info().config.num_replicas;
        Some(Arc::new(super::subscriptions::NatsSubscriptions::new(
            self.inner.js.clone(),
            replicas,
        )))
    }

    async fn identity(&self, alias: &IdentityHash) -> Result<Option<IdentityRecord>, StoreError> {
        Ok(self
            .read_replica()
            .lookup(alias)
            .map(|(_, s)| s.record.clone()))
    }

    async fn manifest(&self, hash: &ContentHash) -> Result<Option<Manifest>, StoreError> {
        if let Some(m) = self.read_replica().manifests.get(hash) {
            return Ok(Some(m.clone()));
        }
        // Not replicated yet (or never stored): ask the bucket.
        let v = self
            .inner
            .kv
            .get(manifest_key(hash))
            .await
            .map_err(self.fail("manifest read"))?;
        match v {
            Some(b) => {
                let m: Manifest = serde_json::from_slice(&b)
                    .map_err(|e| StoreError::Index(format!("corrupt manifest: {e}")))?;
                self.write_replica().manifests.insert(*hash, m.clone());
                Ok(Some(m))
            }
            None => Ok(None),
        }
    }

    async fn blob(&self, hash: &ContentHash) -> Result<Option<Bytes>, StoreError> {
        use tokio::io::AsyncReadExt;
        if let Some(b) = self.blob_cache().get(hash) {
            return Ok(Some(b));
        }
        // In a task: the client library panics on some failures (an ordered
        // consumer it cannot create during a leader change); that must cost
        // this read, not the request's connection.
        let blobs = self.inner.blobs.clone();
        let name = hash.to_hex();
        let read = tokio::spawn(async move {
            let mut object = match blobs.get(name).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let mut buf = Vec::new();
            object
                .read_to_end(&mut buf)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Some(buf))
        });
        let buf = match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Ok(Ok(Some(buf)))) => buf,
            Ok(Ok(Ok(None))) => return Ok(None),
            Ok(Ok(Err(e))) => return Err(self.fail("object store read")(e)),
            Ok(Err(e)) => return Err(self.fail("object store read")(e)),
            Err(e) => return Err(self.fail("object store read")(e)),
        };
        if ContentHash::of(&buf) != *hash {
            self.inner
                .stats
                .corrupt_blobs
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(blob = %hash, "blob does not match its hash; not served");
            return Ok(None);
        }
        let bytes = Bytes::from(buf);
        self.blob_cache().insert(*hash, bytes.clone());
        Ok(Some(bytes))
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        let r = self.read_replica();
        let from = r.recent.partition_point(|e| e.id <= after);
        Ok(r.recent.iter().skip(from).take(limit).cloned().collect())
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.read_replica().head)
    }

    async fn cursor(&self, _target: &str) -> Result<Option<u64>, StoreError> {
        // Delivery runs on durable consumers (see `delivery_queue`).
        Ok(None)
    }

    async fn set_cursor(&self, _target: &str, _id: u64) -> Result<(), StoreError> {
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        let s = &self.inner.stats;
        StoreStats {
            corrupt_blobs: s.corrupt_blobs.load(Ordering::Relaxed),
            blobs_written: s.blobs_written.load(Ordering::Relaxed),
            blobs_deleted: 0,
        }
    }

    fn delivery_queue(&self, target: &str) -> Option<Box<dyn DeliveryQueue>> {
        Some(Box::new(NatsQueue {
            store: self.clone(),
            durable: durable_name(target),
            consumer: None,
            inflight: Vec::new(),
        }))
    }

    fn publishes_events(&self) -> bool {
        true
    }

    fn index_stale(&self) -> bool {
        !self.connected() || !self.inner.watching.load(Ordering::Relaxed)
    }

    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.inner.stats;
        s.replica_lag.write(
            out,
            "avatar_edge_replica_lag_seconds",
            "Time from an index change (event time) to its application in this node's replica.",
        );
        let gauges: [(&str, &str, &str, u64); 5] = [
            (
                "avatar_edge_replica_last_lag_milliseconds",
                "gauge",
                "Lag of the last change applied to the replica.",
                s.replica_lag_ms.load(Ordering::Relaxed),
            ),
            (
                "avatar_edge_replica_identities",
                "gauge",
                "Identities in this node's replica of the index.",
                self.replica_len() as u64,
            ),
            (
                "avatar_edge_nats_reconnects_total",
                "counter",
                "Times the NATS connection was re-established.",
                // The first `Connected` is the initial connection.
                s.reconnects.load(Ordering::Relaxed).saturating_sub(1),
            ),
            (
                "avatar_edge_watch_restarts_total",
                "counter",
                "Times the index watch was restarted after a failure.",
                s.watch_restarts.load(Ordering::Relaxed),
            ),
            (
                "avatar_edge_bucket_errors_total",
                "counter",
                "Failed NATS bucket operations (index, objects).",
                s.bucket_errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP avatar_edge_index_stale 1 while identity answers come from a replica cut off from NATS.\n# TYPE avatar_edge_index_stale gauge\navatar_edge_index_stale {}",
            u8::from(self.index_stale())
        );
    }
}

/// A consumer name for a delivery target (NATS names allow no `.`, `*`, `>`, spaces).
pub fn durable_name(target: &str) -> String {
    let digest = blake3::hash(target.as_bytes()).to_hex();
    format!("deliver_{}", &digest[..24])
}

/// One delivery target's durable pull consumer on the event log.
struct NatsQueue {
    store: NatsStore,
    durable: String,
    consumer: Option<consumer::PullConsumer>,
    inflight: Vec<jetstream::Message>,
}

impl NatsQueue {
    async fn consumer(&mut self) -> Result<consumer::PullConsumer, StoreError> {
        if let Some(c) = &self.consumer {
            return Ok(c.clone());
        }
        let c = self.store.delivery_consumer(&self.durable).await?;
        self.consumer = Some(c.clone());
        Ok(c)
    }
}

impl NatsStore {
    /// The durable pull consumer of one delivery target, created on first use.
    async fn delivery_consumer(&self, durable: &str) -> Result<consumer::PullConsumer, StoreError> {
        let stream = self
            .inner
            .js
            .get_stream(format!("KV_{INDEX_BUCKET}"))
            .await
            .map_err(self.fail("event stream"))?;
        stream
            .get_or_create_consumer(
                durable,
                consumer::pull::Config {
                    durable_name: Some(durable.to_string()),
                    description: Some("avatar-edge delivery (purges / webhooks)".into()),
                    filter_subject: format!("$KV.{INDEX_BUCKET}.i.>"),
                    // A target seen for the first time starts at the head.
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(120),
                    ..Default::default()
                },
            )
            .await
            .map_err(self.fail("event consumer"))
    }

    /// Create the delivery consumers of `targets` now, so that every change
    /// committed after start-up is delivered (a consumer starts at the head).
    pub async fn prepare_delivery(&self, targets: &[String]) -> Result<(), StoreError> {
        for t in targets {
            self.delivery_consumer(&durable_name(t)).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for NatsQueue {
    async fn fetch(
        &mut self,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<ChangeEvent>, StoreError> {
        let c = self.consumer().await?;
        let mut batch = match c
            .fetch()
            .max_messages(limit.max(1))
            .expires(wait)
            .messages()
            .await
        {
            Ok(b) => b,
            Err(e) => {
                self.consumer = None;
                return Err(self.store.fail("event fetch")(e));
            }
        };
        let mut events = Vec::new();
        while let Some(m) = batch.next().await {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "event fetch interrupted");
                    break;
                }
            };
            let seq = m.info().map(|i| i.stream_sequence);
            let parsed = serde_json::from_slice::<StoredRecord>(&m.payload);
            match (seq, parsed) {
                (Ok(seq), Ok(stored)) => {
                    events.push(stored.event(seq));
                    self.inflight.push(m);
                }
                _ => {
                    // Not an event (corrupt): acknowledge so it never blocks the queue.
                    tracing::error!(subject = %m.subject, "undecodable event skipped");
                    let _ = m.ack().await;
                }
            }
        }
        Ok(events)
    }

    async fn ack(&mut self) -> Result<(), StoreError> {
        while let Some(m) = self.inflight.last() {
            m.double_ack()
                .await
                .map_err(|e| StoreError::Unavailable(format!("NATS ack: {e}")))?;
            self.inflight.pop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdentityKeys, Rating};

    fn stored(email: &str, version: u64, seed: u8) -> StoredRecord {
        let k = IdentityKeys::parse(email).unwrap();
        StoredRecord {
            record: IdentityRecord {
                aliases: k.aliases,
                avatar: Some(AvatarRef {
                    hash: ContentHash([seed; 32]),
                    rating: Rating::G,
                }),
                version,
                updated_ms: 1000 + version,
            },
            previous: None,
        }
    }

    #[test]
    fn keys_round_trip_and_reject_junk() {
        let k = IdentityKeys::parse("a@example.org").unwrap();
        let h = k.aliases[1];
        assert_eq!(Key::parse(&identity_key(&h)), Some(Key::Identity(h)));
        assert_eq!(Key::parse(&alias_key(&h)), Some(Key::Alias(h)));
        let c = ContentHash([7; 32]);
        assert_eq!(Key::parse(&manifest_key(&c)), Some(Key::Manifest(c)));
        for junk in ["", "i", "x.00", "i.zz", "m.00"] {
            assert_eq!(Key::parse(junk), None, "{junk}");
        }
    }

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

    #[test]
    fn events_carry_the_record_and_the_replaced_avatar() {
        let mut s = stored("a@example.org", 3, 1);
        s.previous = Some(ContentHash([9; 32]));
        let e = s.event(42);
        assert_eq!(
            (e.id, e.version, e.at, e.hash, e.previous),
            (
                42,
                3,
                1003,
                Some(ContentHash([1; 32])),
                Some(ContentHash([9; 32]))
            )
        );
        assert_eq!(e.key, s.record.aliases[0]);
    }

    #[test]
    fn durable_names_are_stable_and_legal() {
        let a = durable_name("purge:http://127.0.0.1:6081/");
        assert_eq!(a, durable_name("purge:http://127.0.0.1:6081/"));
        assert_ne!(a, durable_name("webhook:http://127.0.0.1:6081/"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
