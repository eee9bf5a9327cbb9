//! The cluster store: NATS JetStream behind the [`Store`] trait, so several
//! avatar-edge nodes share one index, one blob store and one event log. The
//! only module that talks to NATS.
//!
//! Layout (bucket names are fixed, replicas are a setting):
//! - KV bucket [`INDEX_BUCKET`] (history 64): `i.<primary hex>` → the identity
//!   record *and* its change event ([`StoredRecord`]), or a [`Forward`] once
//!   merged into another record (not an event); `a.<alias hex>` → the
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
//! - KV bucket [`FALLBACK_BUCKET`] (issue 17, `fallbacks`): identity hash →
//!   what the upstream avatar services said (fallback entry, expiry inside),
//!   shared by every node; its masters are stored like uploads' (`m.` key,
//!   object store).
//!
//! Invariants:
//! - every identity write is a compare-and-set on that identity's key alone
//!   (`Nats-Expected-Last-Subject-Sequence`, the record read from the stream
//!   leader at that revision), retried on conflict: two nodes changing one
//!   identity cannot lose an update, and writes to different identities
//!   never conflict. A bind joining several records first writes a
//!   [`Forward`] at each absorbed one (see `commit`), so the single node's
//!   merge rule holds here too. What a change does to the records is the
//!   one commit rule of [`crate::store::change`], as in the embedded store.
//!   (Per-key checks are safe on clustered streams from nats-server 2.9.21,
//!   nats-server#4320; the minimum supported server is [`MIN_SERVER`].)
//! - blobs and the manifest are durable (JetStream-acknowledged) before the
//!   record that references them is written; a master no identity names is
//!   unreachable at once (`/c/` answers from the replica's reference counts)
//!   and collected after a grace period: its blobs leave the object store,
//!   safely against a concurrent bind of the same content (see `gc`);
//! - each node keeps a replica of the bucket fed by a KV watch; identity and
//!   manifest look-ups answer from it and never leave the node (issue 20,
//!   `--nats-index-mb`: a bounded replica holds only the identities it
//!   looked up and reads the others at the stream leader, `cold`). A change
//!   arriving through the watch also prefetches the new master's small rungs
//!   (those renders up to 256 px read) into a byte-bounded cache, so the
//!   first such render here does not wait for the object store. Whoever
//!   applies a revision to the replica first (the watch, or the local commit)
//!   announces its event through the store's [`Publish`], once.
//!
//! Files: `connect` (connection, minimum server version, redaction), `keys`
//! (layout, buckets), `replica` (watch and replica; `replica/hot` the
//! bounded replica's hot set), `cold` (bounded look-ups and start), `replay` (event-stream resume from JetStream), `commit` (writes), `gc` (erasure: pins and collection), `objects` (blobs), `queue` (delivery consumers); this file holds
//! the connection, the [`Store`] implementation and the metrics.
//!
//! Failure: with the connection down, commits answer
//! [`StoreError::Unavailable`] at once (the HTTP layer turns that into 503 +
//! `Retry-After`), look-ups keep answering from the replica and
//! [`Store::index_stale`] says so; the client reconnects by itself.

mod cold;
mod commit;
mod connect;
mod fallbacks;
mod gc;
mod keys;
mod leader;
mod moderation;
mod objects;
mod queue;
mod replay;
mod replica;
mod start;
mod subscriptions;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use bytes::Bytes;

pub use connect::{check_version, redact, redacted_urls, MIN_SERVER};
pub use fallbacks::FALLBACK_BUCKET;
use keys::{open_blobs, open_kv};
pub use keys::{Forward, Stored, StoredRecord, BLOB_BUCKET, INDEX_BUCKET};
use objects::{BlobCache, BLOB_CACHE_BYTES, BLOB_CACHE_SHARDS};
pub use queue::durable_name;
use replica::Replica;
pub use subscriptions::{NatsSubscriptions, SUBSCRIPTION_BUCKET};

use super::{
    Change, ChangeEvent, Committed, ContentGone, DeliveryQueue, IdentityRecord, Manifest,
    NewMaster, Publish, Store, StoreError, StoreStats,
};
use crate::metrics::{Exposition, Histogram};
use crate::model::{ContentHash, IdentityHash};
use crate::store::moderation::{AuditEntry, Takedown};

/// How to reach the cluster (a setting, defined with the configuration).
pub use crate::config::NatsOptions;

/// The longest a commit may take before it answers `Unavailable`.
const COMMIT_DEADLINE: Duration = Duration::from_millis(4_500);

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
    blobs_deleted: AtomicU64,
    /// Bytes of verified blobs read from the object store (render misses
    /// and prefetches).
    blob_fetched_bytes: AtomicU64,
    /// Bounded replica: keys read from the leader on a look-up, reads that
    /// failed, and values read but not held (overtaken by a change).
    cold_reads: AtomicU64,
    cold_read_errors: AtomicU64,
    cold_unheld: AtomicU64,
    /// Collections a bounded node left to a whole replica (masters stored
    /// before salting).
    left_unsalted: AtomicU64,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    kv: kv::Store,
    blobs: object_store::ObjectStore,
    /// The index bucket's stream (`KV_<bucket>`): the event log.
    stream: jetstream::stream::Stream,
    /// The blob bucket's stream (`OBJ_<bucket>`), for reads at its leader.
    blob_stream: jetstream::stream::Stream,
    /// The stream sequence up to which the replica has applied the index.
    position: tokio::sync::watch::Sender<u64>,
    /// Told of masters that stop being reachable ([`Store::on_content_gone`]).
    gone: OnceLock<ContentGone>,
    replica: RwLock<Replica>,
    /// Issue 20, `--nats-index-mb`: the identities this node looked up
    /// (`None`: the replica holds every identity).
    hot: Option<std::sync::Mutex<replica::hot::Hot>>,
    /// Pins being written, one batch per master at a time (`gc/pins.rs`).
    pins: gc::pins::Pins,
    /// Cold reads in flight, one per key: concurrent look-ups share it.
    reading: std::sync::Mutex<std::collections::HashMap<replica::hot::HotKey, cold::Reading>>,
    stats: Stats,
    /// Announces each revision the replica applies first (see [`Publish`]).
    publish: Publish,
    /// True while the replica is kept current: a watch is delivering, or
    /// catch-up reads succeed while no watch can be created.
    watching: AtomicBool,
    /// True once the current watch delivered this node's probe, written
    /// after the watch started: changes from other nodes arrive.
    live: AtomicBool,
    /// This node's probe key (`p.<random>`).
    probe: String,
    /// Blobs of recently bound masters, fetched when the change arrives so the
    /// first render on this node does not wait for the object store.
    blob_cache: BlobCache,
    /// Issue 16: the audit stream, once opened ([`NatsStore::open_audit`]).
    audit: std::sync::OnceLock<jetstream::stream::Stream>,
    /// Issue 17: the fallback-entry bucket, opened on first use.
    fallbacks: tokio::sync::OnceCell<kv::Store>,
}

/// NATS JetStream store; cheap to clone.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

/// Start-up fails when loading the replica makes no progress for this long.
const LOAD_STALL: Duration = Duration::from_secs(30);

impl NatsStore {
    /// Connect, create or open the buckets, and load the replica; every change
    /// the replica applies (this node's and other nodes') is announced through
    /// `publish`, once. Fails (naming the URLs) when no server answers.
    pub async fn connect(opts: &NatsOptions, publish: Publish) -> Result<NatsStore, StoreError> {
        let joined = connect::redacted_urls(&opts.urls);
        let reconnects = Arc::new(AtomicU64::new(0));
        let client = connect::connect(opts, reconnects.clone()).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(connect::REQUEST_TIMEOUT);
        let replicas = opts.replicas.max(1);
        let stream = |name: String, what: &'static str| {
            let js = &js;
            let joined = &joined;
            async move {
                js.get_stream(name)
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("NATS at {joined}: {what}: {e}")))
            }
        };
        let (kv, blobs, stream, blob_stream, salted) =
            connect::at_start("opening the buckets", || async {
                let kv = open_kv(&js, replicas).await?;
                let blobs = open_blobs(&js, replicas).await?;
                let events = stream(format!("KV_{INDEX_BUCKET}"), "event stream").await?;
                let blob_stream = stream(format!("OBJ_{BLOB_BUCKET}"), "blob stream").await?;
                let salted = keys::salted_bucket(&kv).await?;
                Ok((kv, blobs, events, blob_stream, salted))
            })
            .await?;
        let (replica, hot) = Replica::for_budget(opts.index_bytes, salted, opts.resume_events);
        let store = NatsStore {
            inner: Arc::new(Inner {
                client,
                js,
                kv,
                blobs,
                stream,
                blob_stream,
                position: tokio::sync::watch::Sender::new(0),
                gone: OnceLock::new(),
                replica: RwLock::new(replica),
                hot,
                reading: Default::default(),
                pins: Default::default(),
                stats: Stats {
                    reconnects,
                    ..Default::default()
                },
                publish,
                watching: AtomicBool::new(false),
                live: AtomicBool::new(false),
                probe: keys::probe_key(),
                blob_cache: BlobCache::with_shards(BLOB_CACHE_BYTES, BLOB_CACHE_SHARDS),
                audit: Default::default(),
                fallbacks: tokio::sync::OnceCell::new(),
            }),
        };
        let (ready_tx, mut ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(store.clone().watch(ready_tx));
        // The load takes as long as the index is large (~10,000 identities/s,
        // docs/scaling.md): give up only when it stops making progress.
        let mut loaded = 0;
        loop {
            match tokio::time::timeout(LOAD_STALL, &mut ready_rx).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return Err(StoreError::Unavailable("index watch ended".into())),
                Err(_) => {
                    let now = *store.inner.position.borrow();
                    if now == loaded {
                        return Err(StoreError::Unavailable(format!(
                            "NATS at {joined}: index replica did not load (no progress for {} s at revision {now})",
                            LOAD_STALL.as_secs()
                        )));
                    }
                    tracing::info!(revision = now, "loading the index replica");
                    loaded = now;
                }
            }
        }
        tokio::spawn(store.clone().sweep_forever());
        Ok(store)
    }

    /// Identities in the local replica (for tests and metrics): on a
    /// bounded replica, the records its hot set holds.
    pub fn replica_len(&self) -> usize {
        match self.hot() {
            Some(hot) => hot.records(),
            None => self.read_replica().identities(),
        }
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
            // Not every 503 is logged (http/mod.rs); this says which NATS
            // operation failed and how, for RUST_LOG=avatar_edge=debug.
            tracing::debug!(what, error = %e, "NATS operation failed");
            self.count_bucket_error();
            StoreError::Unavailable(format!("NATS {what}: {e}"))
        }
    }

    /// Count one failed bucket operation (`avatar_edge_bucket_errors_total`).
    fn count_bucket_error(&self) {
        self.inner
            .stats
            .bucket_errors
            .fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Store for NatsStore {
    async fn commit(
        &self,
        master: Option<NewMaster>,
        change: Change,
    ) -> Result<Committed, StoreError> {
        // Issue 15: no upload waits longer than this for its answer; past
        // it (a stream leader being elected) it is a 503 + Retry-After.
        tokio::time::timeout(COMMIT_DEADLINE, self.commit_change(master, change))
            .await
            .unwrap_or_else(|_| {
                self.count_bucket_error();
                Err(StoreError::Unavailable(format!(
                    "NATS did not complete the write within {COMMIT_DEADLINE:?}"
                )))
            })
    }

    // Issue 14: subscriptions in a KV bucket, so a POST to one node and the
    // stream on another agree.
    fn subscriptions(&self) -> Option<Arc<dyn super::subscriptions::SubscriptionStore>> {
        let replicas = self.inner.stream.cached_info().config.num_replicas;
        Some(Arc::new(NatsSubscriptions::new(
            self.inner.js.clone(),
            replicas,
        )))
    }

    async fn identity(&self, alias: &IdentityHash) -> Result<Option<IdentityRecord>, StoreError> {
        if self.inner.hot.is_some() {
            return self.identity_bounded(alias).await;
        }
        Ok(self.read_replica().lookup(alias).cloned())
    }

    /// Issue 15: only a master some identity names is served; one that
    /// nobody names here may have been bound a moment ago on another node,
    /// so the replica first catches up with the bucket's head.
    async fn manifest(&self, hash: &ContentHash) -> Result<Option<Manifest>, StoreError> {
        if self.inner.hot.is_some() {
            return self.manifest_bounded(hash).await;
        }
        if let Some(m) = self.read_replica().bound_manifest(hash) {
            return Ok(Some(m));
        }
        if self.connected() {
            if let Ok(s) = self.inner.kv.status().await {
                let _ = self.wait_position(s.info.state.last_sequence).await;
            }
        }
        if let Some(m) = self.read_replica().bound_manifest(hash) {
            return Ok(Some(m));
        }
        if self.read_replica().referenced(hash) {
            // Named, but its entry is not replicated yet: ask the leader.
            return self.stored_manifest(hash).await;
        }
        Ok(None)
    }

    async fn blob(&self, hash: &ContentHash) -> Result<Option<Bytes>, StoreError> {
        self.read_blob(hash).await
    }

    async fn fallback(
        &self,
        hash: &IdentityHash,
    ) -> Result<Option<super::FallbackEntry>, StoreError> {
        self.fallback_read(hash).await
    }

    async fn put_fallback(
        &self,
        hash: &IdentityHash,
        entry: super::FallbackEntry,
        master: Option<NewMaster>,
    ) -> Result<(), StoreError> {
        self.fallback_write(hash, entry, master).await
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        let mut events = Vec::new();
        let mut pos = after;
        loop {
            // Older than the events kept in memory: read those from the
            // stream, then look again (the ring may have moved on meanwhile).
            let floor = self.read_replica().recent_floor;
            if pos < floor {
                let want = limit - events.len();
                let got = self.events_in_stream(pos, floor, want).await?;
                let full = got.len() >= want;
                events.extend(got);
                if full {
                    return Ok(events);
                }
                pos = floor;
                continue;
            }
            let r = self.read_replica();
            if r.recent_floor > pos {
                continue;
            }
            let from = r.recent.partition_point(|e| e.id <= pos);
            let rest = limit - events.len();
            events.extend(r.recent.iter().skip(from).take(rest).cloned());
            return Ok(events);
        }
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
            blobs_deleted: s.blobs_deleted.load(Ordering::Relaxed),
        }
    }

    fn delivery_queue(&self, target: &str) -> Option<Box<dyn DeliveryQueue>> {
        Some(Box::new(queue::NatsQueue::new(self.clone(), target)))
    }

    fn index_stale(&self) -> bool {
        !self.connected() || !self.inner.watching.load(Ordering::Relaxed)
    }

    fn unready_reason(&self) -> Option<&'static str> {
        if !self.connected() {
            Some("NATS connection lost: the index replica may be stale")
        } else if !self.inner.watching.load(Ordering::Relaxed) {
            Some("index watch down: catching up")
        } else if !self.inner.live.load(Ordering::Relaxed) {
            Some("index watch starting: not yet confirmed live")
        } else {
            None
        }
    }

    fn on_content_gone(&self, f: ContentGone) {
        let _ = self.inner.gone.set(f);
    }

    fn collect_metrics(&self, out: &mut Exposition) {
        let s = &self.inner.stats;
        out.histogram(
            "avatar_edge_replica_lag_seconds",
            "Time from an index change (event time) to its application in this node's replica.",
            &s.replica_lag,
        );
        out.gauge(
            "avatar_edge_replica_last_lag_milliseconds",
            "Lag of the last change applied to the replica.",
            s.replica_lag_ms.load(Ordering::Relaxed),
        );
        out.gauge(
            "avatar_edge_replica_identities",
            "Identities in this node's replica of the index (bounded: those its hot set holds).",
            self.replica_len() as u64,
        );
        out.gauge(
            "avatar_edge_replica_masters",
            "Master entries in this node's replica (bounded: those a sweep must look at; the rest are looked up through the hot set).",
            {
                let r = self.read_replica();
                (r.masters.len() + r.unlisted.len()) as u64
            },
        );
        out.gauge(
            "avatar_edge_replica_masters_loading",
            "1 while a bounded node's start still reads every master entry in the background (sweeps wait, and pins in a bucket not marked salted).",
            u64::from(!self.read_replica().masters_known()),
        );
        if let Some(hot) = self.hot() {
            out.gauge(
                "avatar_edge_index_hot_bytes",
                "Estimated bytes of the bounded replica's hot set (--nats-index-mb).",
                hot.bytes() as u64,
            );
            out.gauge(
                "avatar_edge_index_hot_keys",
                "Index keys the hot set holds (records, aliases, and hashes known to be absent).",
                hot.len() as u64,
            );
        }
        out.counter(
            "avatar_edge_nats_reconnects_total",
            "Times the NATS connection was re-established.",
            // The first `Connected` is the initial connection.
            s.reconnects.load(Ordering::Relaxed).saturating_sub(1),
        );
        for (name, help, n) in [
            (
                "avatar_edge_index_cold_reads_total",
                "Index keys read from the stream leader by look-ups the hot set could not answer.",
                &s.cold_reads,
            ),
            (
                "avatar_edge_index_cold_read_errors_total",
                "Cold index reads that failed (answered with the fault default, no-store).",
                &s.cold_read_errors,
            ),
            (
                "avatar_edge_index_cold_unheld_total",
                "Cold index reads answered but not held: a change of the key arrived meanwhile.",
                &s.cold_unheld,
            ),
            (
                "avatar_edge_gc_left_unsalted_total",
                "Collections this bounded node left to a node holding every master: masters stored before salted rungs, which may share rungs.",
                &s.left_unsalted,
            ),
            (
                "avatar_edge_watch_restarts_total",
                "Times the index watch was restarted after a failure.",
                &s.watch_restarts,
            ),
            (
                "avatar_edge_bucket_errors_total",
                "Failed NATS bucket operations (index, objects).",
                &s.bucket_errors,
            ),
            (
                "avatar_edge_blob_fetched_bytes_total",
                "Bytes of blobs this node read from the object store (render misses and prefetches).",
                &s.blob_fetched_bytes,
            ),
        ] {
            out.counter(name, help, n.load(Ordering::Relaxed));
        }
        out.gauge(
            "avatar_edge_blob_cache_bytes",
            "Bytes in this node's byte-bounded cache of fetched blobs.",
            self.inner.blob_cache.bytes() as u64,
        );
        out.gauge(
            "avatar_edge_index_stale",
            "1 while identity answers come from a replica cut off from NATS.",
            u64::from(self.index_stale()),
        );
    }

    fn blocked(&self, hash: &ContentHash) -> bool {
        self.is_blocked(hash)
    }

    async fn put_takedown(&self, t: Takedown) -> Result<Option<Takedown>, StoreError> {
        self.put_takedown_now(t).await
    }

    async fn remove_takedown(&self, hash: &ContentHash) -> Result<Option<Takedown>, StoreError> {
        self.remove_takedown_now(*hash).await
    }

    async fn takedowns(
        &self,
        after: Option<ContentHash>,
        limit: usize,
    ) -> Result<Vec<Takedown>, StoreError> {
        Ok(self.takedowns_now(after, limit))
    }

    async fn bound_to(&self, hash: &ContentHash) -> Result<Vec<IdentityHash>, StoreError> {
        if self.inner.hot.is_some() {
            return self.bound_to_bounded(hash).await;
        }
        Ok(self.bound_to_now(hash))
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        self.append_audit_now(entry).await
    }

    async fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_after_now(after, limit).await
    }
}
