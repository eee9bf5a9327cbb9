//! Rung blobs in the object store: idempotent writes, verified reads, and a
//! node-local cache of recently bound masters' blobs (prefetched when a change
//! arrives, so the first render here does not wait for the object store).

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::object_store;
use bytes::Bytes;

use super::NatsStore;
use crate::model::ContentHash;
use crate::store::{Store, StoreError};

/// Byte budget of the node-local cache of recently changed masters' blobs.
pub(super) const BLOB_CACHE_BYTES: u64 = 64 << 20;
/// Shards of that cache: a blob up to a quarter of the budget is cached.
pub(super) const BLOB_CACHE_SHARDS: usize = 4;

/// Verified blobs by hash, bounded in bytes (the generic [`crate::cache`]).
pub(super) type BlobCache = crate::cache::Cache<ContentHash, Bytes, ()>;

impl NatsStore {
    /// Store a blob unless an object of that name and size is already there.
    pub(super) async fn put_blob(&self, bytes: &Bytes, len: u64) -> Result<(), StoreError> {
        let name = ContentHash::of(bytes).to_hex();
        if let Ok(info) = self.inner.blobs.info(&name).await {
            if info.size as u64 == len && !info.deleted {
                return Ok(());
            }
        }
        let mut reader: &[u8] = bytes;
        self.inner
            .blobs
            .put(name.as_str(), &mut reader)
            .await
            .map_err(self.fail("object store put"))?;
        self.inner
            .stats
            .blobs_written
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// [`Store::blob`]: from the node's blob cache, else the object store
    /// (verified against its hash; a mismatch is counted and missing).
    pub(super) async fn read_blob(&self, hash: &ContentHash) -> Result<Option<Bytes>, StoreError> {
        use tokio::io::AsyncReadExt;
        if let Some(b) = self.inner.blob_cache.get(hash) {
            return Ok(Some(b));
        }
        // In a task: the client library panics on some failures (an ordered
        // consumer it cannot create during a leader change); that must cost
        // this read, not the request's connection.
        let blobs = self.inner.blobs.clone();
        let name = hash.to_hex();
        let read = tokio::spawn(async move {
            let mut object = match blobs.get(name).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let mut buf = Vec::new();
            object
                .read_to_end(&mut buf)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Some(buf))
        });
        let buf = match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Ok(Ok(Some(buf)))) => buf,
            Ok(Ok(Ok(None))) => return Ok(None),
            Ok(Ok(Err(e))) => return Err(self.fail("object store read")(e)),
            Ok(Err(e)) => return Err(self.fail("object store read")(e)),
            Err(e) => return Err(self.fail("object store read")(e)),
        };
        if ContentHash::of(&buf) != *hash {
            self.inner
                .stats
                .corrupt_blobs
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(blob = %hash, "blob does not match its hash; not served");
            return Ok(None);
        }
        let bytes = Bytes::from(buf);
        self.inner.blob_cache.insert(*hash, bytes.clone());
        Ok(Some(bytes))
    }

    /// Fetch a newly bound master's rungs into the blob cache.
    pub(super) async fn prefetch(&self, master: &ContentHash) {
        let Ok(Some(m)) = self.manifest(master).await else {
            return;
        };
        for r in &m.rungs {
            if let Err(e) = self.blob(&r.blob).await {
                tracing::debug!(blob = %r.blob, error = %e, "prefetch failed");
                return;
            }
        }
    }
}
