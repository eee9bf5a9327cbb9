//! Issue 17, the migration proxy: an identity without a local avatar is
//! looked up in the store's fallback entries, and when it has no fresh one,
//! fetched from the upstreams ([`crate::fallback::Upstreams`]) — one fetch per
//! hash for all concurrent requests, through the upload pipeline like any
//! upload, kept as a fallback entry (`--fallback-ttl`; "not found" for
//! `--fallback-negative-ttl`), or with `--fallback-adopt` stored as the
//! identity's own avatar. A failure serves the default uncacheable and is
//! retried after [`crate::fallback::RETRY_AFTER_FAILURE`].
//!
//! Local always wins: the identity use case asks here only when the identity
//! has no record (or, with `--fallback-after-delete`, only a tombstone).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::defaults::Subject;
use super::identity::{Answered, IdentityAnswer, Lifetime};
use super::{avatars, CacheOutcome, Service, ServiceError};
use crate::cache::{Cache, Weighted};
use crate::fallback::{
    expiry, FallbackError, Fetched, Outcomes, RecentFailures, Upstreams, MAX_FETCHES,
};
use crate::model::{ContentHash, IdentityHash, Rating};
use crate::pipeline;
use crate::spec::IdentityRequest;
use crate::store::{
    now_ms, AvatarRef, AvatarSource, Change, FallbackEntry, IdentityRecord, NewMaster,
};

/// The migration proxy's state on a service.
pub(super) struct FallbackState {
    upstreams: Upstreams,
    failures: RecentFailures,
    outcomes: Arc<Outcomes>,
    /// One fetch per hash for all concurrent requests: a cache of no bytes,
    /// used for its coalescing alone (the entry itself lives in the store).
    flights: Cache<IdentityHash, FallbackEntry, FallbackError>,
    /// At most [`MAX_FETCHES`] fetches at once (bodies held in memory).
    slots: tokio::sync::Semaphore,
}

impl Weighted for FallbackEntry {
    fn weight(&self) -> usize {
        1
    }
}

/// What the fallback says about an identity without a local avatar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lookup {
    /// An upstream's avatar, stored as `master`.
    Found(FallbackEntry, ContentHash),
    /// No upstream has it (until the entry expires).
    Missing(FallbackEntry),
    /// The upstreams could not be asked, or their answer not kept.
    Failed,
}

impl Lookup {
    fn of(entry: FallbackEntry) -> Lookup {
        match entry.master {
            Some(m) => Lookup::Found(entry, m),
            None => Lookup::Missing(entry),
        }
    }
}

/// Seconds an entry has left, for cache lifetimes (at least 1).
fn seconds_left(entry: &FallbackEntry, now_ms: u64) -> u32 {
    let ms = entry.expires_ms.saturating_sub(now_ms);
    u32::try_from(ms / 1000).unwrap_or(u32::MAX).max(1)
}

impl Service {
    /// The same service, falling back to `upstreams` for identities without a
    /// local avatar, counting fetches in `outcomes`.
    pub fn with_fallback(mut self, upstreams: Upstreams, outcomes: Arc<Outcomes>) -> Service {
        if upstreams.config().enabled() {
            self.fallback = Some(Arc::new(FallbackState {
                upstreams,
                failures: RecentFailures::default(),
                outcomes,
                flights: Cache::with_shards(0, 1),
                slots: tokio::sync::Semaphore::new(MAX_FETCHES),
            }));
        }
        self
    }

    /// Whether the upstreams are asked for an identity with `record`: never
    /// for `f=y`, nor over a local avatar (even one the page's rating hides),
    /// nor after a delete unless `--fallback-after-delete`.
    pub(super) fn fallback_applies(
        &self,
        req: &IdentityRequest,
        record: Option<&IdentityRecord>,
    ) -> bool {
        let Some(fb) = &self.fallback else {
            return false;
        };
        if req.force_default {
            return false;
        }
        match record {
            None => true,
            Some(r) => r.avatar.is_none() && fb.upstreams.config().after_delete,
        }
    }

    /// Answer an identity URL from the fallback: the upstream's avatar (kept
    /// no longer than its entry), else the default the URL asks for (kept no
    /// longer than the "not found" entry; uncacheable after a failure).
    pub(super) async fn fallback_answer(
        &self,
        req: &IdentityRequest,
        hash: &IdentityHash,
        accept: Option<&str>,
        record: Option<IdentityRecord>,
    ) -> Result<(Answered, Lifetime), ServiceError> {
        let unbound = Subject::Unbound(hash);
        match self.fallback_lookup(hash).await {
            // Issue 16: taken-down content is never served from an upstream
            // either; the identity shows its default.
            Lookup::Found(entry, master) if self.store.blocked(&master) => {
                let a = self.default_answer(req, unbound, accept, record).await?;
                Ok((a, Lifetime::AtMost(seconds_left(&entry, now_ms()))))
            }
            Lookup::Found(entry, master) => match self.master_variant(req, &master, accept).await {
                Ok((variant, outcome, content_url)) => {
                    let answer = IdentityAnswer::Fallback {
                        variant,
                        content_url,
                        hash: master,
                        fetched_ms: entry.fetched_ms,
                    };
                    let life = Lifetime::AtMost(seconds_left(&entry, now_ms()));
                    Ok(((answer, Some(outcome)), life))
                }
                Err(ServiceError::Pool(e)) => Err(ServiceError::Pool(e)),
                Err(e) => {
                    tracing::error!(identity = %hash, %master, error = %e, "fallback master unreadable; serving the default, uncacheable");
                    let a = self.default_answer(req, unbound, accept, record).await?;
                    Ok((a, Lifetime::NoStore))
                }
            },
            Lookup::Missing(entry) => {
                let a = self.default_answer(req, unbound, accept, record).await?;
                Ok((a, Lifetime::AtMost(seconds_left(&entry, now_ms()))))
            }
            Lookup::Failed => {
                let a = self.default_answer(req, unbound, accept, record).await?;
                Ok((a, Lifetime::NoStore))
            }
        }
    }

    /// The fresh entry for `hash`, else one fetch shared by every concurrent
    /// request for it.
    pub(super) async fn fallback_lookup(&self, hash: &IdentityHash) -> Lookup {
        let Some(fb) = &self.fallback else {
            return Lookup::Failed;
        };
        match self.store.fallback(hash).await {
            Ok(Some(e)) if e.fresh(now_ms()) => return Lookup::of(e),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(identity = %hash, error = %e, "fallback entry unreadable");
                return Lookup::Failed;
            }
        }
        if fb.failures.recent(hash) {
            return Lookup::Failed;
        }
        let flight = fb
            .flights
            .get_or_produce(*hash, || self.fallback_fetch(fb, *hash))
            .await;
        match flight {
            Ok((entry, outcome)) => {
                if outcome == CacheOutcome::Coalesced {
                    fb.outcomes.coalesced.fetch_add(1, Relaxed);
                }
                Lookup::of(entry)
            }
            Err(_) => Lookup::Failed,
        }
    }

    /// One flight: fetch, check, keep; count the outcome.
    async fn fallback_fetch(
        &self,
        fb: &FallbackState,
        hash: IdentityHash,
    ) -> Result<FallbackEntry, FallbackError> {
        // A flight that ended just before this one started has stored it.
        if let Ok(Some(e)) = self.store.fallback(&hash).await {
            if e.fresh(now_ms()) {
                return Ok(e);
            }
        }
        let result = match fb.slots.try_acquire() {
            Ok(_slot) => self.fetch_and_keep(fb, hash).await,
            Err(_) => Err(FallbackError::Busy),
        };
        match &result {
            Ok(e) if e.master.is_some() => fb.outcomes.found(),
            Ok(_) => fb.outcomes.missing(),
            Err(e) => {
                fb.outcomes.failed(e);
                fb.failures.note(hash);
                tracing::warn!(identity = %hash, error = %e, "upstream fallback failed; serving the default, uncacheable");
            }
        }
        result
    }

    async fn fetch_and_keep(
        &self,
        fb: &FallbackState,
        hash: IdentityHash,
    ) -> Result<FallbackEntry, FallbackError> {
        let config = fb.upstreams.config();
        let fetched = self.fetch_master(&fb.upstreams, &hash).await?;
        let local = |e: crate::store::StoreError| FallbackError::Local(e.to_string());
        let now = now_ms();
        let Some(master) = fetched else {
            let entry = FallbackEntry {
                master: None,
                fetched_ms: now,
                expires_ms: expiry(now, config.negative_ttl),
            };
            self.store
                .put_fallback(&hash, entry.clone(), None)
                .await
                .map_err(local)?;
            return Ok(entry);
        };
        let entry = FallbackEntry {
            master: Some(master.manifest.hash),
            fetched_ms: now,
            expires_ms: expiry(now, config.ttl),
        };
        if config.adopt {
            // The identity's own from now on (its record and event; this
            // answer is the last one served as a fallback).
            let record = self.adopt(hash, master).await?;
            if record.avatar.map(|a| a.hash) != entry.master {
                return Err(FallbackError::Local(
                    "a local avatar arrived during the fetch".into(),
                ));
            }
            return Ok(entry);
        }
        self.store
            .put_fallback(&hash, entry.clone(), Some(master))
            .await
            .map_err(local)?;
        Ok(entry)
    }

    /// Fetch `hash` from `upstreams` (`None`: none has it) and check and
    /// normalize it like an upload: sniff, limits, EXIF, ICC, the ladder.
    async fn fetch_master(
        &self,
        upstreams: &Upstreams,
        hash: &IdentityHash,
    ) -> Result<Option<NewMaster>, FallbackError> {
        let limits = self.config.limits;
        let fetched = upstreams
            .fetch(hash, limits.master_side, limits.max_upload_bytes)
            .await?;
        let Fetched::Found(body) = fetched else {
            return Ok(None);
        };
        let normalized = self
            .run_on(&self.uploads, 0, move || {
                pipeline::normalize(&body, None, &limits)
            })
            .await
            .map_err(|e| FallbackError::Local(e.to_string()))?
            .map_err(|e| FallbackError::Image(e.to_string()))?;
        Ok(Some(avatars::new_master(normalized)))
    }

    /// Bind `master` to `hash` as adopted from an upstream (version 1 on a
    /// new identity; a no-op over a local avatar, see the commit rule).
    async fn adopt(
        &self,
        hash: IdentityHash,
        master: NewMaster,
    ) -> Result<IdentityRecord, FallbackError> {
        let change = Change::Bind {
            aliases: vec![hash],
            avatar: AvatarRef {
                hash: master.manifest.hash,
                // What an upstream answers without `r=`: rated g.
                rating: Rating::G,
                blocked: false,
                source: Some(AvatarSource::Fallback),
            },
        };
        // Taken-down content is refused by the commit rule (issue 16).
        self.apply(Some(master), change)
            .await
            .map(|c| c.record)
            .map_err(|e| FallbackError::Local(e.to_string()))
    }

    /// `import --from-upstream`: adopt `hash`'s avatar from `upstreams`
    /// unless the identity has a local record (an avatar, or a delete).
    pub async fn adopt_from(
        &self,
        upstreams: &Upstreams,
        hash: &IdentityHash,
    ) -> Result<Adopted, FallbackError> {
        let local = |e: crate::store::StoreError| FallbackError::Local(e.to_string());
        if self.store.identity(hash).await.map_err(local)?.is_some() {
            return Ok(Adopted::Present);
        }
        let Some(master) = self.fetch_master(upstreams, hash).await? else {
            return Ok(Adopted::Missing);
        };
        let wanted = master.manifest.hash;
        let record = self.adopt(*hash, master).await?;
        match record.avatar {
            Some(a) if a.hash == wanted && a.source == Some(AvatarSource::Fallback) => {
                Ok(Adopted::Imported {
                    version: record.version,
                })
            }
            _ => Ok(Adopted::Present),
        }
    }
}

/// What `import --from-upstream` did with one hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Stored as the identity's own, at this version.
    Imported { version: u64 },
    /// The identity has a local record already (left alone: resumable).
    Present,
    /// No upstream has it.
    Missing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_never_outlive_the_entry() {
        let e = |expires_ms| FallbackEntry {
            master: None,
            fetched_ms: 0,
            expires_ms,
        };
        // (expiry, now, seconds left)
        let cases = [
            (10_000, 0, 10),
            (10_999, 0, 10),
            (10_000, 9_500, 1),
            (10_000, 20_000, 1),
            (u64::MAX, 0, u32::MAX),
        ];
        for (expires, now, want) in cases {
            assert_eq!(seconds_left(&e(expires), now), want, "{expires} {now}");
        }
        assert_eq!(Lookup::of(e(1)), Lookup::Missing(e(1)));
    }
}
