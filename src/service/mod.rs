//! The use cases, one file each: [`avatars`] (upload, describe, rating,
//! delete — one post-commit path), `render` (content variants and generated
//! defaults, cached and coalesced; the `/c/` answer), `identity` (the
//! `/avatar/` answer), [`defaults`] (the pure default-avatar policy),
//! `events` (live event streams with replay), `fallback` (issue 17: the
//! upstreams asked for identities without a local avatar). Async orchestration of
//! cache → store → render pool; no HTTP types beyond header values.
//!
//! Invariants:
//! - rendered variants are cached by *content* (master hash or default style +
//!   seed, size, format, pipeline version), never by identity, so an identity
//!   change is visible to the very next request without invalidating anything
//!   (read-your-writes by construction);
//! - CPU work only runs on the bounded [`Pool`]s; a full queue is `Busy`;
//! - an identity URL always answers an image (or the 404/redirect the page
//!   asked for); an internal fault yields a default marked `fault`, which the
//!   HTTP layer serves with `no-store`;
//! - fields are private: callers (the HTTP layer, the import) use the
//!   methods here and never reach the store, the bus or the configuration.

mod animated;
mod audit;
pub mod avatars;
pub mod defaults;
mod events;
mod fallback;
mod identity;
mod policy;
mod render;
mod subscriptions;
mod takedowns;

use std::sync::Arc;

use crate::cache::Cache;
use crate::config::RenderConfig;
use crate::events::Bus;
use crate::metrics::{Metrics, Route, RouteClass, Snapshot};
use crate::model::{ContentHash, Fault, ParseError};
use crate::pipeline::PipelineError;
use crate::spec::SpecError;
use crate::store::backup::BackupWriter;
use crate::store::{SharedStore, StoreError};
use crate::workers::{Pool, PoolError};

pub use crate::cache::Outcome as CacheOutcome;
pub use audit::{Actor, AuditPage};
pub use avatars::AvatarInfo;
pub use fallback::Adopted;
pub use identity::{IdentityAnswer, IdentityReply, Lifetime};
pub use render::{ContentAnswer, ContentEntry, ContentReply, Variant, VariantKey};
pub use subscriptions::Subscribed;
pub use takedowns::{TakedownInfo, TakedownPage};

/// Everything a use case can fail with; `http::error` maps each to a status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("invalid key: {0}")]
    Key(#[from] ParseError),
    #[error(transparent)]
    Pipeline(Arc<PipelineError>),
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("stored content is unreadable")]
    ContentUnreadable,
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// Issue 16: an upload of content that is taken down.
    #[error("this content was taken down and may not be uploaded again")]
    Blocked(ContentHash),
    /// Issue 16: `/c/` of content that is taken down.
    #[error("this content was taken down")]
    Gone(ContentHash),
    /// Issue 16: the upload policy hook refused the upload or failed closed.
    #[error(transparent)]
    Policy(#[from] crate::policy::HookError),
}

impl ServiceError {
    /// Whose fault: the one classification the HTTP mapping reads.
    pub fn fault(&self) -> Fault {
        match self {
            ServiceError::Spec(_)
            | ServiceError::Key(_)
            | ServiceError::NotFound(_)
            | ServiceError::Blocked(_)
            | ServiceError::Gone(_) => Fault::Client,
            // Missing or corrupt stored content answers 404 (the URL names
            // nothing servable), and is counted as corrupt blobs by the store.
            ServiceError::ContentUnreadable => Fault::Client,
            ServiceError::Pipeline(p) => p.fault(),
            ServiceError::Policy(p) => p.fault(),
            ServiceError::Pool(PoolError::Busy) => Fault::Unavailable,
            ServiceError::Pool(PoolError::Panicked(_)) => Fault::Server,
            ServiceError::Store(s) => match s.as_ref() {
                StoreError::NotFound | StoreError::Blocked(_) => Fault::Client,
                StoreError::Full | StoreError::Unavailable(_) => Fault::Unavailable,
                StoreError::Index(_) | StoreError::Io(_) => Fault::Server,
            },
        }
    }
}

impl From<PipelineError> for ServiceError {
    fn from(e: PipelineError) -> Self {
        ServiceError::Pipeline(Arc::new(e))
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ServiceError::NotFound("avatar"),
            StoreError::Blocked(h) => ServiceError::Blocked(h),
            e => ServiceError::Store(Arc::new(e)),
        }
    }
}

/// Budget of the manifest cache (≈ 20,000 masters of 5 rungs).
const MANIFEST_CACHE_BYTES: u64 = 16 << 20;

/// The application: configuration, store, caches, render pools, metrics.
pub struct Service {
    config: RenderConfig,
    store: SharedStore,
    metrics: Arc<Metrics>,
    /// Committed changes, for delivery workers and live pages.
    bus: Bus,
    cache: Arc<render::VariantCache>,
    /// Manifests by master hash, so a `/c/` hit never touches the index.
    manifests: Arc<Cache<ContentHash, Arc<ContentEntry>, ServiceError>>,
    /// Bumped by every commit and erased master; a manifest read that raced
    /// one is not kept.
    manifest_generation: Arc<std::sync::atomic::AtomicU64>,
    /// Decode/resize/encode of variants and defaults.
    pool: Pool,
    /// Event-stream subscriptions (issue 14): the store's shared ones, or
    /// this node's memory.
    subscriptions: Arc<dyn crate::store::subscriptions::SubscriptionStore>,
    /// Upload normalization: its own threads and queue, so a flood of cold
    /// renders cannot starve uploads (nor a burst of uploads stall renders).
    uploads: Pool,
    /// Issue 16: the operator's upload policy hook, asked before a commit.
    hook: Option<Arc<crate::policy::UploadHook>>,
    /// Issue 17: the upstreams asked for identities without a local avatar
    /// (`None`: no `--fallback-upstream`).
    fallback: Option<Arc<fallback::FallbackState>>,
}

impl Service {
    /// The service on `store`, announcing on `bus` — the bus the store was
    /// given as its publisher (`cli::build_app_on` wires both), so event
    /// streams and delivery workers see every commit.
    pub fn new(
        config: RenderConfig,
        store: SharedStore,
        metrics: Arc<Metrics>,
        bus: Bus,
    ) -> Service {
        let cache: Arc<render::VariantCache> = Arc::new(Cache::new(config.cache_bytes));
        let manifests = Arc::new(Cache::new(MANIFEST_CACHE_BYTES));
        let manifest_generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        store.on_content_gone(render::forget_content(
            &cache,
            &manifests,
            &manifest_generation,
        ));
        Service {
            subscriptions: store.subscriptions().unwrap_or_else(|| {
                Arc::new(crate::store::subscriptions::MemorySubscriptions::default())
            }),
            bus,
            cache,
            manifests,
            manifest_generation,
            pool: Pool::with_memory(
                config.render_threads,
                config.render_queue,
                config.render_memory,
            ),
            uploads: Pool::new(config.upload_threads, config.upload_queue),
            hook: None,
            fallback: None,
            config,
            store,
            metrics,
        }
    }

    /// The counters and histograms this service and the HTTP layer write.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The bus committed changes are announced on (delivery workers wait on it).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Largest accepted upload body, bytes (checked before buffering it).
    pub fn max_upload_bytes(&self) -> usize {
        self.config.limits.max_upload_bytes
    }

    /// A live subscription to committed changes (no replay).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<crate::model::ChangeEvent>> {
        self.bus.subscribe()
    }

    /// Values for `/metrics` owned by the cache, pool and store.
    pub fn snapshot(&self) -> Snapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.cache.stats;
        let st = self.store.stats();
        Snapshot {
            cache_hits: s.hits.load(Relaxed),
            cache_misses: s.misses.load(Relaxed),
            cache_evictions: s.evictions.load(Relaxed),
            cache_inserts: s.inserts.load(Relaxed),
            cache_coalesced: s.coalesced.load(Relaxed),
            cache_bytes: self.cache.bytes() as u64,
            cache_entries: self.cache.len() as u64,
            cache_budget_bytes: self.config.cache_bytes,
            renders_inflight: self.cache.inflight() as u64,
            render_queue_depth: self.pool.depth() as u64,
            upload_queue_depth: self.uploads.depth() as u64,
            render_memory_reserved: self.pool.memory_reserved() << 10,
            blobs_corrupt: st.corrupt_blobs,
            blobs_written: st.blobs_written,
            blobs_deleted: st.blobs_deleted,
        }
    }

    /// Why this node cannot serve correct answers yet (`/readyz`), or `None`.
    pub fn unready_reason(&self) -> Option<&'static str> {
        self.store.unready_reason()
    }

    /// Count one answered request: by route and status, and its time to the
    /// response head by route class and status class.
    pub fn record_request(
        &self,
        route: Route,
        class: RouteClass,
        status: u16,
        took: std::time::Duration,
    ) {
        self.metrics.request(route, status);
        self.metrics.request_duration(class, status, took);
    }

    /// A consistent snapshot of the store for an online backup, taken on a
    /// blocking thread. It pins its data until written out
    /// ([`BackupWriter::write_to`], blocking too) or dropped.
    pub async fn backup_snapshot(&self) -> Result<Box<dyn BackupWriter>, ServiceError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.snapshot()).await {
            Ok(taken) => Ok(taken?),
            Err(e) => Err(PoolError::Panicked(format!("taking the backup snapshot: {e}")).into()),
        }
    }

    /// The Prometheus text of the service's metrics and the store's.
    pub fn metrics_text(&self) -> String {
        self.metrics.render(&self.snapshot())
    }

    /// Run a render holding about `bytes` of working memory on the render pool.
    async fn on_pool<T: Send + 'static>(
        &self,
        bytes: u64,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        self.run_on(&self.pool, bytes, job).await
    }

    /// [`Service::on_pool`] for a small job, run on this thread once the pool
    /// admits it ([`crate::workers::Pool::run_weighted_here`]).
    async fn run_here<T: Send + 'static>(
        &self,
        bytes: u64,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let r = self.pool.run_weighted_here(bytes, job).await;
        self.count_pool_result(r)
    }

    /// Run `job` on `pool`, counting refusals and panics. A panic's message
    /// travels in the error; the HTTP layer logs it with the request's id.
    async fn run_on<T: Send + 'static>(
        &self,
        pool: &Pool,
        bytes: u64,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let r = pool.run_weighted(bytes, job).await;
        self.count_pool_result(r)
    }

    fn count_pool_result<T>(&self, r: Result<T, PoolError>) -> Result<T, ServiceError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                let counter = match e {
                    PoolError::Busy => &self.metrics.render_rejected,
                    PoolError::Panicked(_) => &self.metrics.render_panics,
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(e.into())
            }
        }
    }
}
