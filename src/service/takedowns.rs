//! Issue 16: takedowns by content. A takedown is a record in the store (so
//! `/c/<hash>` answers 410 on every node and no upload may bind the content:
//! 451), then a [`Change::Block`] through the one commit path for every
//! identity showing it — a new version whose event says "no avatar", which
//! purges the identity's keys and the content's, and tells open pages. A lift
//! removes the record, then shows the content again on the same identities
//! (events again, the same keys purged).
//!
//! Order matters for what pages see: the record goes first on a takedown
//! (an event never announces what is still served) and first on a lift
//! (an event never announces an avatar still refused). Serving also asks the
//! record (`Store::blocked`), so an identity a takedown's scan missed — a
//! bind racing it on another node — shows its default all the same.

use serde::Serialize;

use super::audit::{Actor, Audited};
use super::{Service, ServiceError};
use crate::model::ContentHash;
use crate::spec::{TakedownRequest, TakedownTarget};
use crate::store::moderation::{AuditAction, Takedown};
use crate::store::{now_ms, Change};

/// A takedown as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TakedownInfo {
    pub hash: ContentHash,
    pub url: String,
    pub reason: String,
    pub actor: String,
    /// Unix milliseconds.
    pub at: u64,
    /// Identities whose avatar this request hid (or, on a lift, showed again).
    pub identities: usize,
}

/// One page of `GET /v1/takedowns` (hash order).
#[derive(Debug, Clone, Serialize)]
pub struct TakedownPage {
    pub takedowns: Vec<TakedownInfo>,
    /// The `after=` of the next page; `null` on the last one.
    pub next: Option<ContentHash>,
}

fn info(t: Takedown, identities: usize) -> TakedownInfo {
    TakedownInfo {
        url: format!("/c/{}", t.hash),
        hash: t.hash,
        reason: t.reason,
        actor: t.actor,
        at: t.at,
        identities,
    }
}

impl Service {
    /// Take content down. Returns the takedown and whether this request
    /// created it (a repeated takedown answers the existing one, and finishes
    /// hiding it on any identity still showing it).
    pub async fn take_down(
        &self,
        actor: &Actor,
        req: TakedownRequest,
    ) -> Result<(TakedownInfo, bool), ServiceError> {
        let (hash, key) = match req.target {
            TakedownTarget::Hash(h) => (h, None),
            TakedownTarget::Key(keys) => {
                let record = self.store.identity(&keys.aliases[0]).await?;
                let avatar = record.as_ref().and_then(|r| r.avatar.as_ref());
                let hash = avatar.ok_or(ServiceError::NotFound("avatar"))?.hash;
                (hash, record.map(|r| r.primary().to_hex()))
            }
        };
        if !self.store.blocked(&hash) && self.store.manifest(&hash).await?.is_none() {
            return Err(ServiceError::NotFound("content"));
        }
        let new = Takedown {
            hash,
            reason: req.reason,
            actor: actor.name().to_string(),
            at: now_ms(),
        };
        let existing = self.store.put_takedown(new.clone()).await?;
        let created = existing.is_none();
        let t = existing.unwrap_or(new);
        let n = self.show(hash, false).await?;
        if created {
            let what = Audited {
                action: AuditAction::Takedown,
                key,
                hash: Some(hash),
                detail: Some(format!("{} (identities hidden: {n})", t.reason)),
            };
            self.audit(actor, what).await;
        }
        Ok((info(t, n), created))
    }

    /// Lift the takedown of `hash` (`NotFound` when there is none).
    pub async fn lift(
        &self,
        actor: &Actor,
        hash: ContentHash,
    ) -> Result<TakedownInfo, ServiceError> {
        let t = self
            .store
            .remove_takedown(&hash)
            .await?
            .ok_or(ServiceError::NotFound("takedown"))?;
        let n = self.show(hash, true).await?;
        let what = Audited {
            action: AuditAction::Lift,
            key: None,
            hash: Some(hash),
            detail: Some(format!("was: {} (identities restored: {n})", t.reason)),
        };
        self.audit(actor, what).await;
        Ok(info(t, n))
    }

    /// Takedowns after `after` in hash order, at most `limit`.
    pub async fn takedowns(
        &self,
        after: Option<ContentHash>,
        limit: usize,
    ) -> Result<TakedownPage, ServiceError> {
        let mut list = self.store.takedowns(after, limit + 1).await?;
        let next = if list.len() > limit {
            list.truncate(limit);
            list.last().map(|t| t.hash)
        } else {
            None
        };
        let takedowns = list.into_iter().map(|t| info(t, 0)).collect();
        Ok(TakedownPage { takedowns, next })
    }

    /// Hide (`visible` false) or show again `hash` on every identity bound
    /// to it, each through the one commit path; returns how many changed.
    async fn show(&self, hash: ContentHash, visible: bool) -> Result<usize, ServiceError> {
        let mut changed = 0;
        for alias in self.store.bound_to(&hash).await? {
            let change = Change::Block {
                alias,
                hash,
                blocked: !visible,
            };
            match self.apply(None, change).await {
                Ok(c) => changed += usize::from(c.event.is_some()),
                // Deleted meanwhile: nothing to hide any more.
                Err(ServiceError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// Issue 16: content taken down may not be uploaded again, under any key.
    pub(super) fn refuse_taken_down(&self, hash: &ContentHash) -> Result<(), ServiceError> {
        if self.store.blocked(hash) {
            return Err(ServiceError::Blocked(*hash));
        }
        Ok(())
    }
}
