//! Rendering: variants of stored content and generated defaults, cached by
//! content and coalesced (concurrent misses for one variant run one render);
//! the `/c/` use case ([`Service::content`]); the manifest cache in front of
//! the index.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;

use super::{Service, ServiceError};
use crate::cache::{Cache, Outcome, Weighted};
use crate::identicon;
use crate::model::{ContentHash, OutputFormat, Style};
use crate::negotiate::{negotiate, Offer};
use crate::pipeline::{self, Encoding, PIPELINE_VERSION};
use crate::spec::{ContentRequest, IfNoneMatch};
use crate::store::Manifest;

/// JPEG and PNG renders whose working memory ([`pipeline::render_cost`]) is
/// at most this run on the request's own thread (still admitted by the render
/// pool: a slot and their memory) instead of being handed to a blocking thread
/// and back: up to 128 px from a rung of up to 256 px, 0.1-0.3 ms of work,
/// where the two thread wake-ups cost a fifth of the request. Measured A-B-A-B
/// (`bench/compare.sh`, same binary): cold 128 px p50 over HTTP 0.571 / 0.436
/// ms handed off against 0.461 / 0.354 ms here; 32 px 0.323 / 0.272 against
/// 0.276 / 0.215 ms; renders/s at `-c4` +18 %. Larger PNG renders hold up
/// the other connections of that thread: they hand off, and so do WebP and
/// AVIF at every size ([`renders_here`]). JPEG goes further
/// ([`JPEG_RENDER_HERE_BYTES`]).
/// With local blobs the job also reads the rung (from the page cache); other
/// stores fetch it first (the NATS store from its blob cache, usually).
pub const RENDER_HERE_BYTES: u64 = 512 << 10;

/// [`RENDER_HERE_BYTES`] for JPEG: up to 256 px from the 256 px rung (a
/// baseline encode of ~0.3 ms when this was measured, ~0.17 ms since the
/// encoder's Huffman tokens). Measured (issue 19, twenty-first session,
/// one binary with the two limits, alternating): cold 256 px p50 over HTTP
/// 0.757 / 0.800 / 0.806 ms handed off against 0.712 / 0.752 / 0.691 ms
/// here; hits on a cached 128 px JPEG (`wrk -c16`) beside a stream of cold
/// 256 px renders: p99 4.81 / 4.13 ms handed off, 3.47 / 3.15 ms here, max
/// 16.3 / 11.3 against 9.4 / 8.4 ms — the hand-off's two wake-ups cost the
/// other connections more than the render's time on their thread.
pub const JPEG_RENDER_HERE_BYTES: u64 = 1 << 20;

/// Does a still render of `format` with working memory `cost` run on the
/// request's thread? Only JPEG and PNG are fast enough at any size: a cold
/// 128 px lossy WebP takes 0.7 ms (libwebp), an AVIF ~40 ms (rav1e), which on
/// the request's thread stalled every other connection that thread serves
/// (hit p99 under a stream of cold AVIF renders, BENCHMARKS.md).
pub fn renders_here(format: OutputFormat, cost: u64) -> bool {
    match format {
        OutputFormat::Jpeg => cost <= JPEG_RENDER_HERE_BYTES,
        OutputFormat::Png => cost <= RENDER_HERE_BYTES,
        _ => false,
    }
}

/// What a variant is made from. Content-derived only (see module doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VariantKey {
    Content {
        hash: ContentHash,
        size: u32,
        format: OutputFormat,
        /// Issue 22: rendered from the animated master (WebP or GIF of an
        /// animated upload, not asked `animated=0`).
        animated: bool,
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
            VariantKey::Content {
                hash,
                size,
                format,
                animated,
            } => {
                h.update(b"c");
                h.update(&hash.0);
                h.update(&size.to_le_bytes());
                h.update(format.extension().as_bytes());
                // Stills keep the ETags they always had.
                if *animated {
                    h.update(b"animated");
                }
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

pub(super) type VariantCache = Cache<VariantKey, Variant, ServiceError>;

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

/// How a content URL is answered.
#[derive(Debug, Clone)]
pub enum ContentAnswer {
    /// The client's `If-None-Match` matches: nothing was rendered.
    NotModified { etag: HeaderValue },
    /// The variant's bytes.
    Variant(Variant),
}

/// A content answer and the master's surrogate key (which purges it).
#[derive(Debug, Clone)]
pub struct ContentReply {
    pub answer: ContentAnswer,
    /// The master's hash in hex, pre-built as a header value.
    pub surrogate_key: HeaderValue,
    /// How the variant cache answered (`None`: nothing was looked up).
    pub cache: Option<Outcome>,
}

/// Issue 15: what the store calls when a master stops being reachable (on a
/// cluster: deleted or replaced on any node): its cached manifest and every
/// variant rendered from it go, so `/c/` answers 404 from the next request.
pub(super) fn forget_content(
    variants: &Arc<VariantCache>,
    manifests: &Arc<Cache<ContentHash, Arc<ContentEntry>, ServiceError>>,
    generation: &Arc<std::sync::atomic::AtomicU64>,
) -> crate::store::ContentGone {
    let (variants, manifests, generation) =
        (variants.clone(), manifests.clone(), generation.clone());
    Arc::new(move |gone: ContentHash| {
        generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        manifests.remove_where(|k| *k == gone);
        variants.remove_where(|k| matches!(k, VariantKey::Content { hash, .. } if *hash == gone));
    })
}

impl Service {
    /// Answer a content URL: manifest (from memory), format, then — unless
    /// the client's `If-None-Match` already matches, which needs no render —
    /// the variant. The ETag digest is computed only for a conditional
    /// request; a plain hit uses the cached variant's.
    pub async fn content(
        &self,
        req: &ContentRequest,
        accept: Option<&str>,
        if_none_match: Option<IfNoneMatch<'_>>,
    ) -> Result<ContentReply, ServiceError> {
        // Issue 16: taken-down content is gone, in every size and format.
        if self.store.blocked(&req.hash) {
            return Err(ServiceError::Gone(req.hash));
        }
        let entry = self.content_entry(&req.hash).await?;
        let key = self.content_key(req, &entry.manifest, accept);
        if let Some(inm) = if_none_match {
            let etag = key.etag();
            if inm.matches(etag.to_str().unwrap_or("")) {
                return Ok(ContentReply {
                    answer: ContentAnswer::NotModified { etag },
                    surrogate_key: entry.surrogate_key.clone(),
                    cache: None,
                });
            }
        }
        let (variant, outcome) = self.content_variant(&entry.manifest, key).await?;
        Ok(ContentReply {
            answer: ContentAnswer::Variant(variant),
            surrogate_key: entry.surrogate_key.clone(),
            cache: Some(outcome),
        })
    }

    /// The output format for a request, and the cache key of the variant.
    pub(super) fn content_key(
        &self,
        req: &ContentRequest,
        manifest: &Manifest,
        accept: Option<&str>,
    ) -> VariantKey {
        // Issue 22: an animated master moves in WebP and GIF; negotiation
        // then never picks AVIF (WebP, or a still PNG/JPEG without WebP).
        let moving = manifest.animation.is_some() && req.animated;
        let offer = Offer {
            has_alpha: manifest.has_alpha,
            compression: manifest.compression(),
            avif: self.config.avif_negotiate && !moving,
            size: req.size,
        };
        let format = req.format.unwrap_or_else(|| negotiate(accept, offer));
        VariantKey::Content {
            hash: manifest.hash,
            size: req.size,
            format,
            animated: moving && matches!(format, OutputFormat::Webp | OutputFormat::Gif),
        }
    }

    /// The manifest of a master, or `NotFound`.
    async fn manifest(&self, hash: &ContentHash) -> Result<Manifest, ServiceError> {
        self.store
            .manifest(hash)
            .await?
            .ok_or(ServiceError::NotFound("content"))
    }

    /// The manifest of a master from memory, or from the store (then kept),
    /// or `NotFound`. What the `/c/` route uses: a hit costs a shard lock and
    /// an `Arc` clone instead of an index read and a JSON parse.
    pub(super) async fn content_entry(
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
    pub(super) fn forget_manifests(&self) {
        self.manifest_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.manifests.remove_where(|_| true);
    }

    /// A rendered variant of stored content (cached, coalesced).
    pub(super) async fn content_variant(
        &self,
        manifest: &Manifest,
        key: VariantKey,
    ) -> Result<(Variant, Outcome), ServiceError> {
        let VariantKey::Content {
            size,
            format,
            animated,
            ..
        } = key
        else {
            unreachable!("content_variant takes content keys")
        };
        if animated {
            return Box::pin(self.animated_variant(manifest, key)).await;
        }
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
        let encoding = Encoding {
            compression: manifest.compression(),
            quality: self.config.quality,
        };
        // The ETag is only needed when rendering (a hit carries its own).
        let etag_key = key.clone();
        self.cache
            .get_or_produce(key, || async move {
                let etag = etag_key.etag();
                let started = Instant::now();
                // Local blobs are read inside the render job (no thread
                // hand-off for a small render, one instead of two for
                // others); other stores fetch first.
                let body = if self.store.blobs_are_local() {
                    let store = self.store.clone();
                    let job = move || -> Result<Vec<u8>, ServiceError> {
                        let mut out = None;
                        let mut render = |bytes: &[u8]| {
                            out = Some(pipeline::render(bytes, size, format, encoding));
                        };
                        store
                            .with_blob_blocking(&rung, &mut render)
                            .unwrap_or(Ok(false))?;
                        Ok(out.ok_or(ServiceError::ContentUnreadable)??)
                    };
                    self.render_result(self.run_render(format, cost, job).await.and_then(|r| r))?
                } else {
                    let bytes = self
                        .store
                        .blob(&rung)
                        .await?
                        .ok_or(ServiceError::ContentUnreadable)?;
                    let job = move || pipeline::render(&bytes, size, format, encoding);
                    self.render_result(
                        self.run_render(format, cost, job)
                            .await
                            .and_then(|r| Ok(r?)),
                    )?
                };
                Ok(self.rendered(started, body, etag, format))
            })
            .await
    }

    /// Run a still render's `job` of working memory `cost` to `format`: on
    /// this thread when small and fast ([`renders_here`]), else on the render
    /// pool.
    async fn run_render<T: Send + 'static>(
        &self,
        format: OutputFormat,
        cost: u64,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        if renders_here(format, cost) {
            self.run_here(cost, job).await
        } else {
            self.on_pool(cost, job).await
        }
    }

    /// A finished render as a variant, counted (still and animated alike).
    pub(super) fn rendered(
        &self,
        started: Instant,
        body: Vec<u8>,
        etag: HeaderValue,
        format: OutputFormat,
    ) -> Variant {
        self.metrics.render_seconds.observe(started.elapsed());
        self.metrics
            .renders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Variant {
            body: Bytes::from(body),
            etag,
            format,
        }
    }

    /// Counts a render whose decode or encode failed (a 500 for that request
    /// only, logged with its request id by the HTTP layer; the cache stores
    /// nothing for it).
    pub(super) fn render_result<T>(&self, r: Result<T, ServiceError>) -> Result<T, ServiceError> {
        if let Err(ServiceError::Pipeline(_)) = &r {
            self.metrics
                .render_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }

    /// A generated default (cached, coalesced).
    pub(super) async fn generated(
        &self,
        style: Style,
        seed: &[u8],
        initials: Option<String>,
        size: u32,
        format: OutputFormat,
    ) -> Result<(Variant, Outcome), ServiceError> {
        // In a block: the hasher (1.9 KB) must not live across the await
        // below, or it is part of every identity request's future.
        let digest = {
            let mut h = blake3::Hasher::new();
            h.update(&(seed.len() as u64).to_le_bytes());
            h.update(seed);
            if let Some(i) = &initials {
                h.update(i.as_bytes());
            }
            *h.finalize().as_bytes()
        };
        let key = VariantKey::Generated {
            style,
            seed: digest,
            size,
            format,
        };
        // The ETag and the seed copy only when rendering (a hit carries its own).
        let etag_key = key.clone();
        let encoding = Encoding::lossless(self.config.quality);
        let (v, outcome) = self
            .cache
            .get_or_produce(key, || async move {
                let etag = etag_key.etag();
                let seed = seed.to_vec();
                let job = self.on_pool(pipeline::render_cost(size, size), move || {
                    let px = identicon::render(style, &seed, size, initials.as_deref());
                    pipeline::encode(&px, format, encoding)
                });
                let body = self.render_result(job.await.and_then(|r| Ok(r?)))?;
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
        Ok((v, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::{renders_here, JPEG_RENDER_HERE_BYTES};
    use crate::model::OutputFormat;
    use crate::pipeline;
    use crate::store::Manifest;
    use proptest::prelude::*;

    #[test]
    fn only_small_jpeg_and_png_renders_run_on_the_request_thread() {
        let cost = |rung, size| pipeline::render_cost(rung, size);
        let cases = [
            (OutputFormat::Jpeg, cost(256, 128), true),
            (OutputFormat::Png, cost(128, 32), true),
            (OutputFormat::Jpeg, cost(256, 256), true),
            (OutputFormat::Png, cost(256, 256), false),
            (OutputFormat::Png, cost(256, 128), true),
            (OutputFormat::Jpeg, cost(512, 256), false),
            (OutputFormat::Jpeg, cost(512, 512), false),
            (OutputFormat::Webp, cost(64, 32), false),
            (OutputFormat::Avif, cost(64, 32), false),
            (OutputFormat::Gif, cost(64, 32), false),
        ];
        for (format, cost, here) in cases {
            assert!(cost <= 4 * JPEG_RENDER_HERE_BYTES, "{format:?}");
            assert_eq!(renders_here(format, cost), here, "{format:?} at {cost} B");
        }
    }

    proptest! {
        /// The rungs a prefetch up to `limit` takes
        /// (`Manifest::still_rungs_up_to`) hold the rung every still render
        /// of a size up to `limit` reads (`pipeline::pick_rung`).
        #[test]
        fn renders_up_to_a_size_read_only_the_rungs_prefetched_for_it(
            animated in 0usize..3,
            sides in proptest::collection::btree_set(1u32..2048, 1..8),
            limit in 1u32..2048,
        ) {
            // A ladder: animated rungs (side 0) first, then stills largest first.
            let sides: Vec<u32> = std::iter::repeat_n(0, animated)
                .chain(sides.into_iter().rev())
                .collect();
            let m = Manifest::with_sides(&sides);
            let prefetched: Vec<u32> = m.still_rungs_up_to(limit).map(|r| r.side).collect();
            for size in 1..=limit {
                let read = sides[pipeline::pick_rung(&sides, size)];
                prop_assert!(
                    prefetched.contains(&read),
                    "{:?}: {} px reads {}, prefetched {:?}", sides, size, read, prefetched
                );
            }
        }
    }
}
