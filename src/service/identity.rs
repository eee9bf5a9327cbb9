//! The identity-URL use case (`/avatar/{hash}`): the identity's avatar when
//! the page may show it, else the default [`super::defaults::plan`] picks,
//! with the surrogate keys the answer depends on.

use super::defaults::{self, Plan, Policy, Subject};
use super::{CacheOutcome, Service, ServiceError, Variant};
use crate::model::{Compression, ContentHash, IdentityHash};
use crate::negotiate::{negotiate, Offer};
use crate::spec::{ContentRequest, IdentityRef, IdentityRequest};
use crate::store::IdentityRecord;

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
    /// Issue 17: an avatar fetched from an upstream service (no local one).
    Fallback {
        variant: Variant,
        /// `/c/<hash>.<ext>?s=<size>`: the immutable URL of the same bytes.
        content_url: String,
        hash: ContentHash,
        /// Unix milliseconds of the fetch (`Last-Modified`).
        fetched_ms: u64,
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
    /// The answer comes from an index replica cut off from its cluster: keep
    /// it briefly and say so.
    pub stale: bool,
    /// How the variant cache answered (`None`: no image was looked up).
    pub cache: Option<CacheOutcome>,
    /// How long caches may keep the answer (issue 17: capped by a fallback
    /// entry's remaining life, or none after a failed upstream fetch).
    pub lifetime: Lifetime,
}

/// How long browsers and CDNs may keep an identity answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// The configured lifetimes (the answer is purged when it changes).
    #[default]
    Policy,
    /// The configured lifetimes, but at most this many seconds.
    AtMost(u32),
    /// Not at all: an upstream fetch failed; it is asked again soon.
    NoStore,
}

/// An answer and how the variant cache answered for it.
pub(super) type Answered = (IdentityAnswer, Option<CacheOutcome>);

impl Service {
    /// Answer an identity URL, with the surrogate keys the answer depends on
    /// (every alias of the identity, and the blob hash of an avatar). Errors
    /// only for overload (`Busy`) and render panics; every other problem
    /// becomes a default.
    pub async fn identity(
        &self,
        req: &IdentityRequest,
        accept: Option<&str>,
    ) -> Result<IdentityReply, ServiceError> {
        let ((answer, cache), lifetime) = self.identity_answer(req, accept).await?;
        let mut keys: Vec<String> = Vec::new();
        if let IdentityRef::Hash(h) = req.identity {
            keys.push(h.to_hex());
        }
        let record = match &answer {
            IdentityAnswer::Avatar { record, hash, .. } => {
                keys.push(hash.to_hex());
                Some(record)
            }
            IdentityAnswer::Fallback { hash, .. } => {
                keys.push(hash.to_hex());
                None
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
        Ok(IdentityReply {
            answer,
            keys,
            stale: self.store.index_stale(),
            cache,
            lifetime,
        })
    }

    async fn identity_answer(
        &self,
        req: &IdentityRequest,
        accept: Option<&str>,
    ) -> Result<(Answered, Lifetime), ServiceError> {
        let policy = |a: Answered| (a, Lifetime::Policy);
        let hash = match req.identity {
            IdentityRef::Invalid => {
                return self
                    .default_answer(req, Subject::InvalidKey, accept, None)
                    .await
                    .map(policy)
            }
            IdentityRef::NoIdentity => {
                return self
                    .default_answer(req, Subject::NoIdentity, accept, None)
                    .await
                    .map(policy)
            }
            IdentityRef::Hash(h) => h,
        };
        let record = match self.store.identity(&hash).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(identity = %hash, error = %e, "identity lookup failed; serving a fault default");
                return self.fault_default(req, &hash, accept).await.map(policy);
            }
        };
        let eligible = record
            .as_ref()
            .and_then(|r| r.avatar.as_ref())
            .filter(|a| !req.force_default && a.rating <= req.max_rating)
            // Issue 16: a taken-down avatar is not shown (the record's flag,
            // and the takedown itself for a bind that raced it).
            .filter(|a| !a.blocked && !self.store.blocked(&a.hash))
            .cloned();
        let Some(avatar) = eligible else {
            // Issue 17: no local avatar — the upstreams before the default.
            if self.fallback_applies(req, record.as_ref()) {
                // Boxed: an upstream fetch's state stays out of every hit's future.
                return Box::pin(self.fallback_answer(req, &hash, accept, record)).await;
            }
            return self
                .default_answer(req, Subject::Unbound(&hash), accept, record)
                .await
                .map(policy);
        };
        let record = record.expect("eligible implies a record");
        match self.master_variant(req, &avatar.hash, accept).await {
            Ok((variant, outcome, content_url)) => {
                let answer = IdentityAnswer::Avatar {
                    variant,
                    content_url,
                    hash: avatar.hash,
                    record,
                };
                Ok(((answer, Some(outcome)), Lifetime::Policy))
            }
            Err(ServiceError::Pool(e)) => Err(ServiceError::Pool(e)),
            Err(e) => {
                tracing::error!(identity = %hash, master = %avatar.hash, error = %e, "bound avatar unreadable or its render failed; serving a fault default");
                self.fault_default(req, &hash, accept).await.map(policy)
            }
        }
    }

    /// The variant of master `master` that `req` asks for, how the variant
    /// cache answered, and its immutable `/c/` URL. An unreadable master is
    /// [`ServiceError::ContentUnreadable`].
    pub(super) async fn master_variant(
        &self,
        req: &IdentityRequest,
        master: &ContentHash,
        accept: Option<&str>,
    ) -> Result<(Variant, CacheOutcome, String), ServiceError> {
        // From the manifest cache, as on `/c/` (a hit reads no index).
        let entry = self
            .content_entry(master)
            .await
            .map_err(|_| ServiceError::ContentUnreadable)?;
        let manifest = &entry.manifest;
        let creq = ContentRequest {
            hash: manifest.hash,
            size: req.size,
            format: req.format,
            animated: req.animated,
        };
        let key = self.content_key(&creq, manifest, accept);
        let (variant, outcome) = self.content_variant(manifest, key).await?;
        let still = manifest.animation.is_some() && !req.animated;
        let content_url = format!(
            "/c/{}.{}?s={}{}",
            manifest.hash,
            variant.format.extension(),
            req.size,
            if still { "&animated=0" } else { "" }
        );
        Ok((variant, outcome, content_url))
    }

    pub(super) async fn fault_default(
        &self,
        req: &IdentityRequest,
        hash: &IdentityHash,
        accept: Option<&str>,
    ) -> Result<Answered, ServiceError> {
        self.metrics
            .fault_defaults
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.default_answer(req, Subject::Fault(hash), accept, None)
            .await
    }

    /// Render what the default policy plans for `subject`.
    pub(super) async fn default_answer(
        &self,
        req: &IdentityRequest,
        subject: Subject<'_>,
        accept: Option<&str>,
        record: Option<IdentityRecord>,
    ) -> Result<Answered, ServiceError> {
        let policy = Policy {
            style: self.config.default_style,
            url_allow: &self.config.default_url_allow,
        };
        let g = match defaults::plan(req, subject, &policy) {
            Plan::NotFound => return Ok((IdentityAnswer::NotFound, None)),
            Plan::Redirect(url) => return Ok((IdentityAnswer::Redirect(url), None)),
            Plan::Generate(g) => g,
        };
        // Generated images have hard edges: lossless, PNG unless WebP is
        // accepted (never a negotiated AVIF).
        let offer = Offer {
            has_alpha: true,
            compression: Compression::Lossless,
            avif: false,
            size: req.size,
        };
        let format = req.format.unwrap_or_else(|| negotiate(accept, offer));
        let (variant, outcome) = self
            .generated(g.style, g.seed.as_slice(), g.initials, req.size, format)
            .await?;
        let answer = IdentityAnswer::Default {
            variant,
            reason: g.reason,
            fault: !g.cacheable,
            record,
        };
        Ok((answer, Some(outcome)))
    }
}
