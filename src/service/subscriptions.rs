//! Subscriptions for live pages (issue 14): store a page's key set, tell it
//! where to resume and what changed recently; resolve a `sub=` for a stream;
//! and answer a versioned identity URL only once this node has that version.

use std::sync::Arc;
use std::time::Duration;

use super::{IdentityAnswer, IdentityReply, Service, ServiceError};
use crate::model::subscription::{KeySet, SubscriptionId, VERSION_WAIT};
use crate::spec::{IdentityRef, IdentityRequest};

/// Identity look-ups between two yields to the reactor while building `recent`.
const LOOKUPS_PER_YIELD: usize = 256;

/// What `POST /v1/subscriptions` answers (besides the id and the set's size).
#[derive(Debug, Clone)]
pub struct Subscribed {
    pub id: SubscriptionId,
    pub keys: usize,
    /// The event log's position when the subscription was stored: resume there.
    pub last_event_id: u64,
    /// Subscribed keys that changed at or after `since_ms`: (key, version,
    /// content hash or none).
    pub recent: Vec<(String, u64, Option<String>)>,
}

impl Service {
    /// Store `keys` (idempotent: the id is their hash) and report the
    /// subscribed identities changed at or after `since_ms`.
    pub async fn create_subscription(
        &self,
        keys: &KeySet,
        since_ms: u64,
    ) -> Result<Subscribed, ServiceError> {
        // The log position first: every later change reaches the stream (which
        // resumes from here), every earlier one is in `recent` if it matters.
        let head = self.store.head().await?;
        self.subscriptions.put(keys).await?;
        let mut recent = Vec::new();
        for (i, key) in keys.keys().iter().enumerate() {
            if i % LOOKUPS_PER_YIELD == LOOKUPS_PER_YIELD - 1 {
                tokio::task::yield_now().await;
            }
            if let Some(r) = self.store.identity(key).await? {
                if r.updated_ms >= since_ms {
                    let hash = r.avatar.map(|a| a.hash.to_string());
                    recent.push((key.to_hex(), r.version, hash));
                }
            }
        }
        Ok(Subscribed {
            id: keys.id(),
            keys: keys.len(),
            last_event_id: head,
            recent,
        })
    }

    /// The keys of a live subscription; `None` when unknown or expired.
    pub async fn subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Arc<KeySet>>, ServiceError> {
        Ok(self.subscriptions.get(id).await?)
    }

    /// [`Service::identity`] for a live page that asks for version `v=` (what
    /// the client puts in the URL after an event): on a cluster node whose
    /// replica is still behind that version, wait up to [`VERSION_WAIT`] for
    /// it rather than let caches keep the old picture under the new URL.
    /// Returns the reply and whether it is still behind (then it must not be
    /// cached).
    pub async fn identity_at_version(
        &self,
        req: &IdentityRequest,
        accept: Option<&str>,
    ) -> Result<(IdentityReply, bool), ServiceError> {
        match req.version {
            None => Ok((self.identity(req, accept).await?, false)),
            // Boxed: the waiting path's state stays out of every plain
            // identity request's future.
            Some(want) => Box::pin(self.identity_when_at(req, accept, want)).await,
        }
    }

    /// [`Service::identity_at_version`] for a versioned URL.
    async fn identity_when_at(
        &self,
        req: &IdentityRequest,
        accept: Option<&str>,
        want: u64,
    ) -> Result<(IdentityReply, bool), ServiceError> {
        // Wait on the record's version alone (one index look-up a round),
        // then answer once: no identity answer is built while waiting.
        if let IdentityRef::Hash(hash) = req.identity {
            let deadline = tokio::time::Instant::now() + VERSION_WAIT;
            loop {
                let have = match self.store.identity(&hash).await {
                    Ok(r) => r.map_or(0, |r| r.version),
                    // The answer below turns a failing look-up into a fault default.
                    Err(_) => break,
                };
                if have >= want || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let reply = self.identity(req, accept).await?;
        let have = match &reply.answer {
            IdentityAnswer::Avatar { record, .. } => record.version,
            IdentityAnswer::Default { record, .. } => record.as_ref().map_or(0, |r| r.version),
            _ => return Ok((reply, false)),
        };
        Ok((reply, have < want))
    }
}
