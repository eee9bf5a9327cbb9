//! Live event streams: what `/v1/events` sends, as a channel of ready
//! server-sent-event frames. Subscribes to the bus before replaying the
//! store's log, so nothing falls between the two; re-reads the log whenever
//! the live feed skips (out-of-order publishes, a lagging subscriber).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};

use super::Service;
use crate::events::{matches, sse_frame};
use crate::model::IdentityHash;
use crate::spec::EventsRequest;
use crate::store::{ChangeEvent, SharedStore};

/// Interval of the comment lines that keep idle event streams open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events read from the log per batch while replaying.
const REPLAY_BATCH: usize = 500;

impl Service {
    /// Start an event stream for `req`; frames arrive on the returned channel
    /// until the receiver is dropped or `shutdown` turns true.
    pub fn event_stream(
        &self,
        req: EventsRequest,
        shutdown: watch::Receiver<bool>,
    ) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        // Subscribe before replaying, so nothing falls between the two.
        let live = self.bus.subscribe();
        let store = self.store.clone();
        tokio::spawn(stream_events(store, live, shutdown, tx, req));
        rx
    }
}

/// Replay everything after `after` from the log; returns the new position
/// (`None` when the client went away or the store failed).
async fn replay(
    store: &SharedStore,
    tx: &mpsc::Sender<Bytes>,
    keys: &[IdentityHash],
    mut after: u64,
) -> Option<u64> {
    loop {
        let batch = store.events_after(after, REPLAY_BATCH).await.ok()?;
        for e in &batch {
            if matches(e, keys) {
                tx.send(sse_frame(e)).await.ok()?;
            }
            after = e.id;
        }
        if batch.len() < REPLAY_BATCH {
            return Some(after);
        }
    }
}

async fn stream_events(
    store: SharedStore,
    mut live: broadcast::Receiver<Arc<ChangeEvent>>,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Bytes>,
    req: EventsRequest,
) {
    // Sorted for `events::matches` (a binary search per alias).
    let mut keys = req.keys;
    keys.sort_unstable();
    keys.dedup();
    if tx
        .send(Bytes::from_static(b": connected\nretry: 1000\n\n"))
        .await
        .is_err()
    {
        return;
    }
    let mut last = match req.last_event_id {
        Some(id) => match replay(&store, &tx, &keys, id).await {
            Some(p) => p,
            None => return,
        },
        None => store.head().await.unwrap_or(0),
    };
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            r = live.recv() => match r {
                Ok(e) if e.id == last + 1 => {
                    last = e.id;
                    if matches(&e, &keys) && tx.send(sse_frame(&e)).await.is_err() {
                        return;
                    }
                }
                // Publishes of concurrent commits can arrive out of order: the
                // log has them all, in order, so read from there.
                Ok(e) if e.id > last => match replay(&store, &tx, &keys, last).await {
                    Some(p) => last = p,
                    None => return,
                },
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match replay(&store, &tx, &keys, last).await {
                        Some(p) => last = p,
                        None => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = beat.tick() => {
                if tx.send(Bytes::from_static(b": heartbeat\n\n")).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
