//! Event-stream subscriptions of a cluster (issue 14): a KV bucket whose
//! `max_age` is the subscription TTL, so a page's `POST /v1/subscriptions`
//! and its stream may reach different nodes. See
//! [`crate::store::subscriptions`] for the contract.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};

use super::keys::open_or_create;
use crate::model::subscription::{KeySet, SubscriptionId, SUBSCRIPTION_TTL};
use crate::store::subscriptions::SubscriptionStore;
use crate::store::StoreError;

/// The NATS bucket of subscriptions.
pub const SUBSCRIPTION_BUCKET: &str = "avatar_edge_subscriptions";
/// Size bound of that bucket (new entries are refused beyond: a 503).
const BUCKET_MAX_BYTES: i64 = 256 << 20;

/// Cluster-wide subscriptions in a NATS KV bucket whose `max_age` is the TTL.
/// The bucket is opened (or created) on first use.
pub struct NatsSubscriptions {
    js: jetstream::Context,
    replicas: usize,
    bucket: tokio::sync::OnceCell<kv::Store>,
}

impl NatsSubscriptions {
    pub fn new(js: jetstream::Context, replicas: usize) -> NatsSubscriptions {
        NatsSubscriptions {
            js,
            replicas: replicas.max(1),
            bucket: tokio::sync::OnceCell::new(),
        }
    }

    async fn bucket(&self) -> Result<&kv::Store, StoreError> {
        self.bucket
            .get_or_try_init(|| async {
                let config = |num_replicas| kv::Config {
                    bucket: SUBSCRIPTION_BUCKET.into(),
                    description: "avatar-edge event-stream subscriptions (key sets by id)".into(),
                    history: 1,
                    max_age: SUBSCRIPTION_TTL,
                    max_bytes: BUCKET_MAX_BYTES,
                    max_value_size: 1 << 20,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas,
                    ..Default::default()
                };
                open_or_create(
                    "subscription",
                    self.replicas,
                    || self.js.get_key_value(SUBSCRIPTION_BUCKET),
                    |n| self.js.create_key_value(config(n)),
                )
                .await
            })
            .await
    }
}

#[async_trait::async_trait]
impl SubscriptionStore for NatsSubscriptions {
    async fn put(&self, keys: &KeySet) -> Result<(), StoreError> {
        let bucket = self.bucket().await?;
        bucket
            .put(keys.id().to_string(), keys.encode().into())
            .await
            .map_err(|e| StoreError::Unavailable(format!("NATS subscription write: {e}")))?;
        Ok(())
    }

    async fn get(&self, id: &SubscriptionId) -> Result<Option<Arc<KeySet>>, StoreError> {
        let bucket = self.bucket().await?;
        let entry = bucket
            .entry(id.to_string())
            .await
            .map_err(|e| StoreError::Unavailable(format!("NATS subscription read: {e}")))?;
        let Some(entry) = entry else { return Ok(None) };
        // `max_age` removes expired entries on its own schedule; never hand
        // out one older than the TTL meanwhile.
        let now = (crate::store::now_ms() / 1000) as i64;
        let age = now.saturating_sub(entry.created.unix_timestamp());
        if entry.operation != kv::Operation::Put || age > SUBSCRIPTION_TTL.as_secs() as i64 {
            return Ok(None);
        }
        match KeySet::decode(&entry.value) {
            Some(keys) if keys.id() == *id => Ok(Some(Arc::new(keys))),
            _ => Err(StoreError::Index(format!("corrupt subscription {id}"))),
        }
    }
}
