//! A bounded replica's start (issue 20). It holds no identity, so it reads
//! none: the time to ready does not grow with them. Of the keys it keeps
//! whole, takedowns (`t.`) are read before the node is ready (taken-down
//! content is never served, not even for a moment); masters (`m.`) are
//! read after, in the background, so the time to ready does not grow with
//! the avatars stored either. Look-ups never need that read (a master is
//! read at the leader like an identity, `cold.rs`); what does waits for it:
//! - a sweep, and a collection (`gc::collect` leaves it to the sweep): the
//!   masters to look at, and whether one predates salting, are not known;
//! - a pin (`gc::pin_master`): a deletion begun before the start may share
//!   a rung with the master pinned (`Replica::shares_a_deletion` says
//!   yes until then, or until a lease (30 s) after the start, when such a
//!   deletion has stopped deleting; a pin waits, and answers `Unavailable`
//!   past its wait). So new content waits at most ~30 s after a restart,
//!   however many masters there are.
//!
//! The watch starts after `last`, the bucket's last sequence read first;
//! it and this node's commits apply changes while the masters are read,
//! and an older value that read brings is not applied over them
//! (`Replica::load_master`). Events up to `last` are read from the
//! stream on resume (`replay.rs`).

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Entry, Operation};
use async_nats::jetstream::stream::RawMessageErrorKind;
use futures_util::StreamExt;

use super::keys::{Key, INDEX_BUCKET};
use super::{NatsStore, LOAD_STALL};
use crate::store::StoreError;

/// The wait before the masters' read is tried again after it failed.
const RELOAD_AFTER: Duration = Duration::from_secs(1);

impl NatsStore {
    /// Read the takedowns, mark the replica as reading masters, and read
    /// those in the background (see the module doc).
    pub(super) async fn start_bounded(&self, last: u64) -> Result<(), StoreError> {
        self.read_prefix("t", |e| self.apply_entry(e)).await?;
        {
            let mut r = self.write_replica();
            r.loading();
            r.starts_at(last);
        }
        self.inner.position.send_replace(last);
        tokio::spawn(self.clone().load_masters());
        Ok(())
    }

    /// Read the last value of every `m.` key, until one read gets through.
    async fn load_masters(self) {
        let started = Instant::now();
        let mut n;
        loop {
            n = 0;
            let read = self.read_prefix("m", |e| {
                n += 1;
                self.load_master(e);
            });
            match read.await {
                Ok(()) => break,
                Err(e) => {
                    self.count_bucket_error();
                    tracing::warn!(error = %e, "reading the master entries at start; retrying");
                    tokio::time::sleep(RELOAD_AFTER).await;
                }
            }
        }
        self.write_replica().loaded();
        tracing::info!(
            entries = n,
            seconds = started.elapsed().as_secs_f64(),
            "master entries read"
        );
    }

    /// One read's master entry, unless the watch or a commit applied the
    /// key at that revision or later meanwhile.
    fn load_master(&self, e: &Entry) {
        let Some(Key::Manifest(hash)) = Key::parse(&e.key) else {
            return;
        };
        let put = e.operation == Operation::Put;
        let Some(entry) = super::replica::masters::decode_change(&e.key, put, &e.value) else {
            return;
        };
        let gone = {
            let mut r = self.write_replica();
            r.load_master(hash, e.revision, entry);
            std::mem::take(&mut r.gone)
        };
        self.content_gone(gone);
    }

    /// Pass the last value of every key under `prefix.` to `each` (an
    /// ordered consumer; nothing when there is none). Fails when the read
    /// stops making progress for [`LOAD_STALL`].
    async fn read_prefix(
        &self,
        prefix: &str,
        mut each: impl FnMut(&Entry),
    ) -> Result<(), StoreError> {
        let filter = format!("$KV.{INDEX_BUCKET}.{prefix}.>");
        match self
            .inner
            .stream
            .get_first_raw_message_by_subject(&filter, 1)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
            Err(e) => return Err(self.fail("index start")(e)),
        }
        let mut watch = self
            .inner
            .kv
            .watch_with_history(format!("{prefix}.>"))
            .await
            .map_err(self.fail("index start"))?;
        loop {
            let e = match tokio::time::timeout(LOAD_STALL, watch.next()).await {
                Ok(Some(Ok(e))) => e,
                Ok(Some(Err(e))) => return Err(self.fail("index start")(e)),
                Ok(None) | Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "loading the `{prefix}.` keys stalled"
                    )))
                }
            };
            each(&e);
            if e.delta == 0 {
                return Ok(());
            }
        }
    }
}
