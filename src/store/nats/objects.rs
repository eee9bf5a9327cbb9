//! Rung blobs in the object store: idempotent writes, verified reads, and a
//! node-local cache of recently bound masters' blobs (prefetched when a change
//! arrives, so the first render here does not wait for the object store).

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::object_store;
use bytes::Bytes;

use super::keys::BLOB_BUCKET;
use super::NatsStore;
use crate::model::ContentHash;
use crate::store::{Store, StoreError};

/// Byte budget of the node-local cache of recently changed masters' blobs.
pub(super) const BLOB_CACHE_BYTES: u64 = 64 << 20;
/// Shards of that cache: a blob up to a quarter of the budget is cached.
pub(super) const BLOB_CACHE_SHARDS: usize = 4;

/// A change prefetches the still rungs a render up to this side reads
/// ([`Manifest::still_rungs_up_to`]): the sizes pages ask most (lists and
/// comments, 128 px at 2x): 0.27 MB of the 5.2 MB ladder of a 1024 px
/// noise master (tests/cluster.rs), whose rungs barely compress. Larger
/// rungs and animated ones (up to megabytes) are read by their first render
/// on the node instead of by every node on every change.
///
/// [`Manifest::still_rungs_up_to`]: crate::store::Manifest::still_rungs_up_to
pub(super) const PREFETCH_UP_TO: u32 = 256;

/// Verified blobs by hash, bounded in bytes (the generic [`crate::cache`]).
pub(super) type BlobCache = crate::cache::Cache<ContentHash, Bytes, ()>;

impl NatsStore {
    /// Is blob `hash` stored with `len` bytes? Read at the blob stream's
    /// leader (`ObjectStore::info` may ask a replica that lags a deletion).
    pub(super) async fn blob_stored(
        &self,
        hash: &ContentHash,
        len: u64,
    ) -> Result<bool, StoreError> {
        use base64::Engine;
        let name = base64::engine::general_purpose::URL_SAFE.encode(hash.to_hex());
        let subject = format!("$O.{BLOB_BUCKET}.M.{name}");
        let m = self
            .leader_last(&self.inner.blob_stream, &subject, "object store info")
            .await?;
        let Some(m) = m else { return Ok(false) };
        let info: object_store::ObjectInfo = serde_json::from_slice(&m.payload)
            .map_err(|e| StoreError::Index(format!("corrupt object info: {e}")))?;
        Ok(!info.deleted && info.size as u64 == len)
    }

    /// Store a blob (callers check [`NatsStore::blob_stored`] first). A put
    /// whose chunks or description got no answer or no taker (the blob
    /// stream's leader stepping down) is put again, on the leader requests'
    /// plan ([`super::leader`]): a blob is named by its content, so a second
    /// put stores the same object. The chunks a failed put sent stay in the
    /// stream unnamed (the client names them by a random id it does not
    /// return).
    pub(super) async fn put_blob(&self, bytes: &Bytes) -> Result<(), StoreError> {
        use super::leader::Answer;
        use object_store::PutErrorKind as Kind;
        let name = ContentHash::of(bytes).to_hex();
        let blobs = &self.inner.blobs;
        let name = name.as_str();
        // No bound of its own: a large blob's chunks take longer than the
        // plan's first wait; each chunk's ack has the request timeout.
        self.on_plan(
            "object store put",
            "object store put failed; putting it again",
            |_| async move {
                let mut reader: &[u8] = bytes;
                match blobs.put(name, &mut reader).await {
                    // Stored; at worst an older copy's chunks were not purged.
                    Ok(_) => Answer::Done(Ok(())),
                    Err(e) if e.kind() == Kind::PurgeOldChunks => Answer::Done(Ok(())),
                    Err(e)
                        if [Kind::PublishChunks, Kind::PublishMetadata, Kind::TimedOut]
                            .contains(&e.kind()) =>
                    {
                        Answer::Again(format!("blob {name}: {e}"))
                    }
                    Err(e) => Answer::Done(Err(self.fail("object store put")(e))),
                }
            },
        )
        .await?;
        self.inner
            .stats
            .blobs_written
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Delete blob `hash` from the object store (its chunks are purged) and
    /// from this node's blob cache. Missing is fine.
    pub(super) async fn delete_blob(&self, hash: &ContentHash) -> Result<(), StoreError> {
        self.inner.blob_cache.remove_where(|k| k == hash);
        match self.inner.blobs.delete(hash.to_hex()).await {
            Ok(()) => {}
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => {}
            Err(e) => return Err(self.fail("object store delete")(e)),
        }
        self.inner
            .stats
            .blobs_deleted
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
        let stream = self.inner.blob_stream.clone();
        let name = hash.to_hex();
        let read = tokio::spawn(async move {
            // Issue 15: direct gets first — any replica of the blob stream
            // answers, so reads go on while a leader is being elected.
            if let Ok(Some(buf)) = read_direct(&stream, &name).await {
                return Ok(Some(buf));
            }
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
        self.inner
            .stats
            .blob_fetched_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        let bytes = Bytes::from(buf);
        self.inner.blob_cache.insert(*hash, bytes.clone());
        Ok(Some(bytes))
    }

    /// Fetch a newly bound master's small rungs ([`PREFETCH_UP_TO`]) into
    /// the blob cache.
    pub(super) async fn prefetch(&self, master: &ContentHash) {
        let Ok(Some(m)) = self.manifest(master).await else {
            return;
        };
        for r in m.still_rungs_up_to(PREFETCH_UP_TO) {
            if let Err(e) = self.blob(&r.blob).await {
                tracing::debug!(blob = %r.blob, error = %e, "prefetch failed");
                return;
            }
        }
    }
}

/// Object `name` read by direct gets (its info, then its chunks in order),
/// no consumer needed. `Ok(None)`: this replica does not have it (deleted,
/// or not yet replicated: the caller asks the leader).
async fn read_direct(
    stream: &async_nats::jetstream::stream::Stream,
    name: &str,
) -> Result<Option<Vec<u8>>, String> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::URL_SAFE.encode(name);
    let meta = match stream
        .direct_get_last_for_subject(format!("$O.{BLOB_BUCKET}.M.{encoded}"))
        .await
    {
        Ok(m) => m,
        Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e.to_string()),
    };
    let info: object_store::ObjectInfo =
        serde_json::from_slice(&meta.payload).map_err(|e| e.to_string())?;
    if info.deleted {
        return Ok(None);
    }
    let subject = format!("$O.{BLOB_BUCKET}.C.{}", info.nuid);
    let mut buf = Vec::with_capacity(info.size);
    let mut next = None;
    for _ in 0..info.chunks {
        let chunk = match stream.direct_get_next_for_subject(&subject, next).await {
            Ok(c) => c,
            Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e.to_string()),
        };
        next = Some(chunk.sequence + 1);
        buf.extend_from_slice(&chunk.payload);
    }
    Ok((buf.len() == info.size).then_some(buf))
}
