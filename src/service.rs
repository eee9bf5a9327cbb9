//! The use cases: upload, describe, delete an avatar; answer a content URL; answer
//! an identity URL (avatar or generated default). Async orchestration of
//! cache → store → render pool; no HTTP types beyond header values.
//!
//! Invariants:
//! - rendered variants are cached by *content* (master hash or default style +
//!   seed, size, format, pipeline version), never by identity, so an identity
//!   change is visible to the very next request without invalidating anything
//!   (read-your-writes by construction);
//! - CPU work only runs on the bounded [`Pool`]; a full queue is `Busy`;
//! - an identity URL always answers an image (or the 404/redirect the page
//!   asked for); an internal fault yields a default marked `fault`, which the
//!   HTTP layer serves with `no-store`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use serde::Serialize;

use crate::cache::{Cache, Outcome, Weighted};
use crate::config::Config;
use crate::events::Bus;
use crate::identicon::{self, Style};
use crate::metrics::{Metrics, Snapshot};
use crate::model::{ContentHash, IdentityKeys, ParseError};
use crate::pipeline::{self, OutputFormat, PipelineError, PIPELINE_VERSION};
use crate::spec::{
    self, ContentRequest, DefaultChoice, IdentityRef, IdentityRequest, SpecError, UploadParams,
};
use crate::store::{
    AvatarRef, Change, IdentityRecord, Manifest, NewMaster, RungRef, SharedStore, StoreError,
};
use crate::workers::{Pool, PoolError};

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
            e => ServiceError::Store(Arc::new(e)),
        }
    }
}

/// What a variant is made from. Content-derived only (see module doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VariantKey {
    Content {
        hash: ContentHash,
        size: u32,
        format: OutputFormat,
    },
    Generated {
        style: Style,
        /// BLAKE3 of the seed bytes and the initials drawn.
        seed: [u8; 32],
        size: u32,
        format: OutputFormat,
    },
}

impl VariantKey {
    /// Strong ETag: a digest of everything that determines the bytes.
    pub fn etag(&self) -> HeaderValue {
        let mut h = blake3::Hasher::new();
        h.update(&PIPELINE_VERSION.to_le_bytes());
        match self {
            VariantKey::Content { hash, size, format } => {
                h.update(b"c");
                h.update(&hash.0);
                h.update(&size.to_le_bytes());
                h.update(format.extension().as_bytes());
            }
            VariantKey::Generated {
                style,
                seed,
                size,
                format,
            } => {
                h.update(b"g");
                h.update(style.as_str().as_bytes());
                h.update(seed);
                h.update(&size.to_le_bytes());
                h.update(format.extension().as_bytes());
            }
        }
        let hex = h.finalize().to_hex();
        HeaderValue::from_str(&format!("\"{}\"", &hex[..32])).expect("hex is a valid header value")
    }
}

/// A rendered, cacheable response body with its pre-built headers.
#[derive(Debug, Clone)]
pub struct Variant {
    pub body: Bytes,
    pub etag: HeaderValue,
    pub format: OutputFormat,
}

impl Weighted for Variant {
    fn weight(&self) -> usize {
        // The body as the allocator holds it, plus a rough allowance for the
        // key, the header and the LRU links.
        crate::cache::allocated(self.body.len()) + 160
    }
}

/// The JSON description of an identity's avatar (`/v1/avatars/{key}`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AvatarInfo {
    pub key: String,
    pub aliases: Vec<String>,
    pub hash: String,
    pub version: u64,
    pub url: String,
    pub width: u32,
    pub height: u32,
    /// Format the upload was sniffed as.
    pub format: String,
    pub rating: &'static str,
    /// Unix milliseconds of the last change.
    pub updated: u64,
}

/// How an identity URL is answered.
#[derive(Debug, Clone)]
pub enum IdentityAnswer {
    /// The identity's avatar.
    Avatar {
        variant: Variant,
        /// `/c/<hash>.<ext>?s=<size>`: the immutable URL of the same bytes.
        content_url: String,
        hash: ContentHash,
        record: IdentityRecord,
    },
    /// A generated default.
    Default {
        variant: Variant,
        /// `X-Avatar-Default` value.
        reason: &'static str,
        /// True when served because of an internal fault: must not be cached.
        fault: bool,
        /// The identity's record (a tombstone, say), for `Last-Modified`.
        record: Option<IdentityRecord>,
    },
    /// `d=404`.
    NotFound,
    /// `d=<allowed URL>`.
    Redirect(String),
}

/// An identity answer and the surrogate keys that purge it.
#[derive(Debug, Clone)]
pub struct IdentityReply {
    pub answer: IdentityAnswer,
    pub keys: Vec<String>,
}

type VariantCache = Cache<VariantKey, Variant, ServiceError>;

/// A stored master's manifest as the `/c/` hot path needs it, built once per
/// hash and shared: manifests are immutable per hash, so the only way one goes
/// stale is being garbage-collected, which only a commit can do (see
/// `Service::forget_manifests`).
#[derive(Debug)]
pub struct ContentEntry {
    pub manifest: Manifest,
    /// The master's hash in hex as a header value (its surrogate key).
    pub surrogate_key: HeaderValue,
}

impl Weighted for Arc<ContentEntry> {
    fn weight(&self) -> usize {
        // Struct, rung list, format name, header, LRU links: a rough allowance.
        256usize.saturating_add(self.manifest.rungs.len().saturating_mul(80))
    }
}

/// Budget of the manifest cache (≈ 20,000 masters of 5 rungs).
const MANIFEST_CACHE_BYTES: u64 = 16 << 20;

/// The application: configuration, store, caches, render pool, metrics.
pub struct Service {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub metrics: Arc<Metrics>,
    /// Committed changes, for delivery workers and live pages.
    pub bus: Bus,
    cache: VariantCache,
    /// Manifests by master hash, so a `/c/` hit never touches the index.
    manifests: Cache<ContentHash, Arc<ContentEntry>, ServiceError>,
    /// Bumped by every commit; a manifest read that raced a commit is not kept.
    manifest_generation: std::sync::atomic::AtomicU64,
    /// Decode/resize/encode of variants and defaults.
    pool: Pool,
    /// Upload normalization: its own threads and queue, so a flood of cold
    /// renders cannot starve uploads (nor a burst of uploads stall renders).
    uploads: Pool,
}

impl Service {
    pub fn new(config: Arc<Config>, store: SharedStore, metrics: Arc<Metrics>) -> Service {
        Service::with_bus(config, store, metrics, Bus::new())
    }

    /// Like [`Service::new`], on a bus the store already publishes to.
    pub fn with_bus(
        config: Arc<Config>,
        store: SharedStore,
        metrics: Arc<Metrics>,
        bus: Bus,
    ) -> Service {
        Service {
            bus,
            cache: Cache::new(config.cache_bytes),
            manifests: Cache::new(MANIFEST_CACHE_BYTES),
            manifest_generation: Default::default(),
            pool: Pool::with_memory(
                config.render_threads,
                config.render_queue,
                config.render_memory,
            ),
            uploads: Pool::new(config.upload_threads, config.upload_queue),
            config,
            store,
            metrics,
        }
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

    /// Run a render holding about `bytes` of working memory on the render pool.
    async fn on_pool<T: Send + 'static>(
        &self,
        bytes: u64,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        self.run_on(&self.pool, bytes, job).await
    }

    async fn run_on<T: Send + 'static>(
        &self,
        pool: &Pool,
        bytes: u64,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        match pool.run_weighted(bytes, job).await {
            Ok(v) => Ok(v),
            Err(e) => {
                let counter = match e {
                    PoolError::Busy => &self.metrics.render_rejected,
                    PoolError::Panicked(ref msg) => {
                        tracing::error!(
                            request_id = crate::workers::request_id(),
                            panic = %msg,
                            "render job panicked; answering 500 for this request"
                        );
                        &self.metrics.render_panics
                    }
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    /// Normalize and store an upload, then bind it to the key's identity.
    pub async fn upload(
        &self,
        key: &str,
        params: UploadParams,
        body: Bytes,
    ) -> Result<AvatarInfo, ServiceError> {
        let result = self.upload_inner(key, params, body).await;
        let counter = match &result {
            Ok(_) => &self.metrics.uploads,
            Err(_) => &self.metrics.upload_rejected,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn upload_inner(
        &self,
        key: &str,
        params: UploadParams,
        body: Bytes,
    ) -> Result<AvatarInfo, ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let limits = self.config.limits;
        let crop = params.crop;
        let normalized = self
            .run_on(&self.uploads, 0, move || {
                pipeline::normalize(&body, crop, &limits)
            })
            .await??;
        let manifest = Manifest {
            hash: normalized.ladder[0].hash,
            has_alpha: normalized.has_alpha,
            source_format: source_format_name(normalized.source_format).into(),
            rungs: normalized
                .ladder
                .iter()
                .map(|r| RungRef {
                    side: r.side,
                    blob: r.hash,
                    len: r.bytes.len() as u64,
                })
                .collect(),
        };
        let master = NewMaster {
            manifest: manifest.clone(),
            rungs: normalized
                .ladder
                .into_iter()
                .map(|r| Bytes::from(r.bytes))
                .collect(),
        };
        let change = Change::Bind {
            aliases: keys.aliases.clone(),
            avatar: AvatarRef {
                hash: manifest.hash,
                rating: params.rating.unwrap_or_default(),
            },
        };
        let committed = self.store.commit(Some(master), change).await;
        self.forget_manifests();
        let committed = committed?;
        Ok(info(&keys.key, &committed.record, &manifest))
    }

    /// Describe the avatar bound to `key`.
    pub async fn describe(&self, key: &str) -> Result<AvatarInfo, ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let record = self
            .store
            .identity(&keys.aliases[0])
            .await?
            .filter(|r| r.avatar.is_some())
            .ok_or(ServiceError::NotFound("avatar"))?;
        let hash = record.avatar.as_ref().map(|a| a.hash).expect("filtered");
        let manifest = self
            .store
            .manifest(&hash)
            .await?
            .ok_or(ServiceError::ContentUnreadable)?;
        Ok(info(&keys.key, &record, &manifest))
    }

    /// Change the rating of `key`'s avatar (no re-upload needed).
    pub async fn set_rating(
        &self,
        key: &str,
        rating: crate::model::Rating,
    ) -> Result<AvatarInfo, ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let committed = self
            .store
            .commit(
                None,
                Change::SetRating {
                    alias: keys.aliases[0],
                    rating,
                },
            )
            .await?;
        let hash = committed
            .record
            .avatar
            .as_ref()
            .map(|a| a.hash)
            .ok_or(ServiceError::NotFound("avatar"))?;
        let manifest = self
            .store
            .manifest(&hash)
            .await?
            .ok_or(ServiceError::ContentUnreadable)?;
        Ok(info(&keys.key, &committed.record, &manifest))
    }

    /// Unbind `key`'s identity from its avatar.
    pub async fn delete(&self, key: &str) -> Result<(), ServiceError> {
        let keys = IdentityKeys::parse(key)?;
        let committed = self
            .store
            .commit(
                None,
                Change::Unbind {
                    alias: keys.aliases[0],
                },
            )
            .await;
        self.forget_manifests();
        committed?;
        Ok(())
    }

    /// The output format for a request, and the cache key of the variant.
    pub fn content_key(
        &self,
        req: &ContentRequest,
        manifest: &Manifest,
        accept: Option<&str>,
    ) -> VariantKey {
        let format = req
            .format
            .unwrap_or_else(|| spec::negotiate(accept, manifest.has_alpha));
        VariantKey::Content {
            hash: manifest.hash,
            size: req.size,
            format,
        }
    }

    /// The manifest of a master, or `NotFound`.
    pub async fn manifest(&self, hash: &ContentHash) -> Result<Manifest, ServiceError> {
        self.store
            .manifest(hash)
            .await?
            .ok_or(ServiceError::NotFound("content"))
    }

    /// The manifest of a master from memory, or from the store (then kept),
    /// or `NotFound`. What the `/c/` route uses: a hit costs a shard lock and
    /// an `Arc` clone instead of an index read and a JSON parse.
    pub async fn content_entry(
        &self,
        hash: &ContentHash,
    ) -> Result<Arc<ContentEntry>, ServiceError> {
        use std::sync::atomic::Ordering::SeqCst;
        if let Some(e) = self.manifests.get(hash) {
            return Ok(e);
        }
        let generation = self.manifest_generation.load(SeqCst);
        let manifest = self.manifest(hash).await?;
        let surrogate_key = HeaderValue::from_str(&manifest.hash.to_hex())
            .map_err(|_| ServiceError::ContentUnreadable)?;
        let entry = Arc::new(ContentEntry {
            manifest,
            surrogate_key,
        });
        self.manifests.insert(*hash, entry.clone());
        // A commit between the read and the insert may have collected this
        // master: then the insert is not trusted (the commit's own clear may
        // have run before it).
        if self.manifest_generation.load(SeqCst) != generation {
            self.manifests.remove_where(|k| k == hash);
        }
        Ok(entry)
    }

    /// Drops every cached manifest; called after each commit (any commit may
    /// garbage-collect a master). Commits are rare next to reads.
    fn forget_manifests(&self) {
        self.manifest_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.manifests.remove_where(|_| true);
    }

    /// A rendered variant of stored content (cached, coalesced).
    pub async fn content_variant(
        &self,
        manifest: &Manifest,
        key: VariantKey,
    ) -> Result<(Variant, Outcome), ServiceError> {
        let VariantKey::Content { size, format, .. } = key else {
            unreachable!("content_variant takes content keys")
        };
        // Rung choice without a heap allocation (ladders have ≤ 16 rungs).
        let mut buf = [0u32; 16];
        let rung_index = if manifest.rungs.len() <= buf.len() {
            for (b, r) in buf.iter_mut().zip(&manifest.rungs) {
                *b = r.side;
            }
            pipeline::pick_rung(&buf[..manifest.rungs.len()], size)
        } else {
            let sides: Vec<u32> = manifest.rungs.iter().map(|r| r.side).collect();
            pipeline::pick_rung(&sides, size)
        };
        let rung = manifest
            .rungs
            .get(rung_index)
            .ok_or(ServiceError::ContentUnreadable)?;
        let cost = pipeline::render_cost(rung.side, size);
        let rung = rung.blob;
        // The ETag is only needed when rendering (a hit carries its own).
        let etag_key = key.clone();
        self.cache
            .get_or_produce(key, || async move {
                let etag = etag_key.etag();
                let started = Instant::now();
                // Local blobs are read inside the render job (one thread
                // hand-off instead of two); other stores fetch first.
                let body = if self.store.blobs_are_local() {
                    let store = self.store.clone();
                    self.on_pool(cost, move || -> Result<Vec<u8>, ServiceError> {
                        let bytes = store
                            .blob_blocking(&rung)
                            .unwrap_or(Ok(None))?
                            .ok_or(ServiceError::ContentUnreadable)?;
                        Ok(pipeline::render(&bytes, size, format)?)
                    })
                    .await??
                } else {
                    let bytes = self
                        .store
                        .blob(&rung)
                        .await?
                        .ok_or(ServiceError::ContentUnreadable)?;
                    self.on_pool(cost, move || pipeline::render(&bytes, size, format))
                        .await??
                };
                self.metrics.render_seconds.observe(started.elapsed());
                self.metrics
                    .renders
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Variant {
                    body: Bytes::from(body),
                    etag,
                    format,
                })
            })
            .await
    }

    /// A generated default (cached, coalesced).
    pub async fn generated(
        &self,
        style: Style,
        seed: &[u8],
        initials: Option<String>,
        size: u32,
        format: OutputFormat,
    ) -> Result<Variant, ServiceError> {
        let mut h = blake3::Hasher::new();
        h.update(&(seed.len() as u64).to_le_bytes());
        h.update(seed);
        if let Some(i) = &initials {
            h.update(i.as_bytes());
        }
        let digest = *h.finalize().as_bytes();
        let key = VariantKey::Generated {
            style,
            seed: digest,
            size,
            format,
        };
        let etag = key.etag();
        let seed = seed.to_vec();
        let (v, _) = self
            .cache
            .get_or_produce(key, || async move {
                let body = self
                    .on_pool(pipeline::render_cost(size, size), move || {
                        let px = identicon::render(style, &seed, size, initials.as_deref());
                        pipeline::encode(&px, format)
                    })
                    .await??;
                Ok(Variant {
                    body: Bytes::from(body),
                    etag,
                    format,
                })
            })
            .await?;
        self.metrics
            .defaults_served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(v)
    }

    /// Answer an identity URL, with the surrogate keys the answer depends on
    /// (every alias of the identity, and the blob hash of an avatar). Errors
    /// only for overload (`Busy`) and render panics; every other problem
    /// becomes a default.
    pub async fn identity(
        &self,
        req: &IdentityRequest,
        accept: Option<&str>,
    ) -> Result<IdentityReply, ServiceError> {
        let answer = self.identity_answer(req, accept).await?;
        let mut keys: Vec<String> = Vec::new();
        if let IdentityRef::Hash(h) = req.identity {
            keys.push(h.to_hex());
        }
        let record = match &answer {
            IdentityAnswer::Avatar { record, hash, .. } => {
                keys.push(hash.to_hex());
                Some(record)
            }
            IdentityAnswer::Default { record, .. } => record.as_ref(),
            _ => None,
        };
        for a in record.map(|r| r.aliases.as_slice()).unwrap_or_default() {
            let hex = a.to_hex();
            if !keys.contains(&hex) {
                keys.push(hex);
            }
        }
        Ok(IdentityReply { answer, keys })
    }

    async fn identity_answer(
        &self,
        req: &IdentityRequest,
        accept: Option<&str>,
    ) -> Result<IdentityAnswer, ServiceError> {
        let hash = match req.identity {
            IdentityRef::Invalid => {
                let style = self.config.default_style;
                return self
                    .default_answer(
                        req,
                        style,
                        b"invalid-key",
                        accept,
                        "invalid-key",
                        false,
                        None,
                    )
                    .await;
            }
            IdentityRef::NoIdentity => return self.no_identity(req, accept).await,
            IdentityRef::Hash(h) => h,
        };
        let record = match self.store.identity(&hash).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(identity = %hash, error = %e, "identity lookup failed; serving a fault default");
                return self.fault_default(req, hash.as_bytes(), accept).await;
            }
        };
        let eligible = record
            .as_ref()
            .and_then(|r| r.avatar.as_ref())
            .filter(|a| !req.force_default && a.rating <= req.max_rating)
            .cloned();
        let Some(avatar) = eligible else {
            return self
                .requested_default(req, hash.as_bytes(), accept, record)
                .await;
        };
        let record = record.expect("eligible implies a record");
        let manifest = match self.store.manifest(&avatar.hash).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => {
                tracing::error!(identity = %hash, master = %avatar.hash, "bound master unreadable; serving a fault default");
                return self.fault_default(req, hash.as_bytes(), accept).await;
            }
        };
        let creq = ContentRequest {
            hash: manifest.hash,
            size: req.size,
            format: req.format,
        };
        let key = self.content_key(&creq, &manifest, accept);
        match self.content_variant(&manifest, key).await {
            Ok((variant, _)) => {
                let content_url = format!(
                    "/c/{}.{}?s={}",
                    manifest.hash,
                    variant.format.extension(),
                    req.size
                );
                Ok(IdentityAnswer::Avatar {
                    variant,
                    content_url,
                    hash: manifest.hash,
                    record,
                })
            }
            Err(ServiceError::Pool(e)) => Err(ServiceError::Pool(e)),
            Err(e) => {
                tracing::error!(identity = %hash, error = %e, "render of a bound avatar failed; serving a fault default");
                self.fault_default(req, hash.as_bytes(), accept).await
            }
        }
    }

    /// `/avatar/`, `/avatar/<md5 or sha256 of "">`: no identity.
    async fn no_identity(
        &self,
        req: &IdentityRequest,
        accept: Option<&str>,
    ) -> Result<IdentityAnswer, ServiceError> {
        match (&req.default, &req.name, &req.initials) {
            (DefaultChoice::NotFound, _, _) => Ok(IdentityAnswer::NotFound),
            (DefaultChoice::Style(Style::Blank), _, _) => {
                self.default_answer(req, Style::Blank, b"", accept, "blank", false, None)
                    .await
            }
            (_, None, None) => {
                self.default_answer(req, Style::Mp, b"", accept, "mp", false, None)
                    .await
            }
            (choice, name, initials) => {
                // Seed from the name so users without email differ from each other.
                let seed_text = name.as_deref().or(initials.as_deref()).unwrap_or("");
                let seed = blake3::hash(seed_text.as_bytes());
                let wants_initials = matches!(choice, DefaultChoice::Style(Style::Initials))
                    || (matches!(choice, DefaultChoice::ServerDefault)
                        && self.config.default_style == Style::Initials);
                let style = if wants_initials {
                    Style::Initials
                } else {
                    Style::Identicon
                };
                self.default_answer(
                    req,
                    style,
                    seed.as_bytes(),
                    accept,
                    style.as_str(),
                    false,
                    None,
                )
                .await
            }
        }
    }

    /// The default the URL asked for (or the server's).
    async fn requested_default(
        &self,
        req: &IdentityRequest,
        seed: &[u8],
        accept: Option<&str>,
        record: Option<IdentityRecord>,
    ) -> Result<IdentityAnswer, ServiceError> {
        let style = match &req.default {
            DefaultChoice::NotFound => return Ok(IdentityAnswer::NotFound),
            DefaultChoice::Url(url) => {
                let allowed =
                    spec::url_host(url).is_some_and(|h| self.config.default_url_allow.contains(&h));
                if allowed {
                    return Ok(IdentityAnswer::Redirect(url.clone()));
                }
                self.config.default_style
            }
            DefaultChoice::Style(s) => *s,
            DefaultChoice::ServerDefault => self.config.default_style,
        };
        self.default_answer(req, style, seed, accept, style.as_str(), false, record)
            .await
    }

    async fn fault_default(
        &self,
        req: &IdentityRequest,
        seed: &[u8],
        accept: Option<&str>,
    ) -> Result<IdentityAnswer, ServiceError> {
        self.metrics
            .fault_defaults
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let style = self.config.default_style;
        self.default_answer(req, style, seed, accept, style.as_str(), true, None)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn default_answer(
        &self,
        req: &IdentityRequest,
        style: Style,
        seed: &[u8],
        accept: Option<&str>,
        reason: &'static str,
        fault: bool,
        record: Option<IdentityRecord>,
    ) -> Result<IdentityAnswer, ServiceError> {
        // Initials without any letter fall back to an identicon.
        let (style, initials, reason) = if style == Style::Initials {
            let letters = req
                .initials
                .clone()
                .or_else(|| req.name.as_deref().map(identicon::initials_of))
                .filter(|s| !s.is_empty());
            match letters {
                Some(l) => (style, Some(l), reason),
                None => (Style::Identicon, None, Style::Identicon.as_str()),
            }
        } else {
            (style, None, reason)
        };
        // Generated images have hard edges: PNG unless WebP is accepted.
        let format = req.format.unwrap_or_else(|| spec::negotiate(accept, true));
        let variant = self
            .generated(style, seed, initials, req.size, format)
            .await?;
        Ok(IdentityAnswer::Default {
            variant,
            reason,
            fault,
            record,
        })
    }
}

fn source_format_name(f: pipeline::SourceFormat) -> &'static str {
    match f {
        pipeline::SourceFormat::Jpeg => "jpeg",
        pipeline::SourceFormat::Png => "png",
        pipeline::SourceFormat::Gif => "gif",
        pipeline::SourceFormat::Webp => "webp",
    }
}

fn info(key: &str, record: &IdentityRecord, manifest: &Manifest) -> AvatarInfo {
    let rating = record.avatar.as_ref().map(|a| a.rating).unwrap_or_default();
    AvatarInfo {
        key: key.to_string(),
        aliases: record.aliases.iter().map(|a| a.to_hex()).collect(),
        hash: manifest.hash.to_hex(),
        version: record.version,
        url: format!("/c/{}", manifest.hash),
        width: manifest.side(),
        height: manifest.side(),
        format: manifest.source_format.clone(),
        rating: rating.as_str(),
        updated: record.updated_ms,
    }
}
