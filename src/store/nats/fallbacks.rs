//! Issue 17 on the cluster: fallback entries in the KV bucket
//! [`FALLBACK_BUCKET`] (identity hash → entry, its expiry in the value), so
//! the upstream is asked once per entry lifetime by the whole cluster, and
//! the fetched master stored like an upload's (object store + `m.` key of the
//! index bucket, pinned like a bind's, see `gc.rs`) and leased to the entry's
//! lifetime: unnamed and past the lease, the sweep collects it. The bucket is
//! opened (or created) on first use.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use super::keys::open_or_create;
use super::NatsStore;
use crate::model::IdentityHash;
use crate::store::{FallbackEntry, NewMaster, StoreError};

/// The NATS bucket of fallback entries.
pub const FALLBACK_BUCKET: &str = "avatar_edge_fallbacks";
/// Entries older than this leave the bucket whatever their own lifetime
/// (an entry that outlives it is fetched again: harmless).
const BUCKET_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// Size bound of that bucket (new entries are refused beyond: a failure,
/// answered with the default, uncacheable).
const BUCKET_MAX_BYTES: i64 = 256 << 20;
/// A fetched master is held this long past its entry's expiry (a request
/// that read the entry just before it expired is still rendering; clocks of
/// nodes differ a little).
const HOLD_MARGIN_MS: u64 = 60_000;

impl NatsStore {
    async fn fallback_bucket(&self) -> Result<&kv::Store, StoreError> {
        let js = &self.inner.js;
        let replicas = self.inner.stream.cached_info().config.num_replicas;
        self.inner
            .fallbacks
            .get_or_try_init(|| async {
                let config = |num_replicas| kv::Config {
                    bucket: FALLBACK_BUCKET.into(),
                    description: "avatar-edge upstream fallback entries (identity hash → entry)"
                        .into(),
                    history: 1,
                    max_age: BUCKET_MAX_AGE,
                    max_bytes: BUCKET_MAX_BYTES,
                    max_value_size: 1 << 10,
                    storage: jetstream::stream::StorageType::File,
                    num_replicas,
                    ..Default::default()
                };
                open_or_create(
                    "fallback",
                    replicas,
                    || js.get_key_value(FALLBACK_BUCKET),
                    |n| js.create_key_value(config(n)),
                )
                .await
            })
            .await
    }

    pub(super) async fn fallback_read(
        &self,
        hash: &IdentityHash,
    ) -> Result<Option<FallbackEntry>, StoreError> {
        let bucket = self.fallback_bucket().await?;
        let value = bucket
            .get(hash.to_hex())
            .await
            .map_err(self.fail("fallback read"))?;
        match value {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Index(format!("corrupt fallback entry: {e}"))),
            None => Ok(None),
        }
    }

    pub(super) async fn fallback_write(
        &self,
        hash: &IdentityHash,
        entry: FallbackEntry,
        master: Option<NewMaster>,
    ) -> Result<(), StoreError> {
        if !self.connected() {
            return Err(StoreError::Unavailable("NATS is not connected".into()));
        }
        // Issue 15: the master is pinned like a bind's (blobs stored first)
        // and leased to the entry's lifetime, so the collector keeps it while
        // the entry can be served, named by an identity or not.
        let hold = entry.expires_ms.saturating_add(HOLD_MARGIN_MS);
        let pinned = match master.filter(|m| Some(m.manifest.hash) == entry.master) {
            Some(m) => {
                let generation = self
                    .pin_master(&m.manifest, Some(&m), hold, &[], &mut None)
                    .await?;
                Some((m, generation))
            }
            None if entry.master.is_some() => {
                return Err(StoreError::Index(
                    "a fallback entry names a master it does not bring".into(),
                ))
            }
            None => None,
        };
        let value =
            Bytes::from(serde_json::to_vec(&entry).map_err(|e| StoreError::Index(e.to_string()))?);
        let bucket = self.fallback_bucket().await?;
        bucket
            .put(hash.to_hex(), value)
            .await
            .map_err(self.fail("fallback write"))?;
        if let Some((m, generation)) = pinned {
            self.confirm_pin(&m.manifest, Some(&m), generation, hold, &[])
                .await?;
        }
        Ok(())
    }
}
