//! Change events after they are committed: the in-process bus that wakes
//! delivery workers and server-sent-event streams, the public JSON shape of
//! an event, and the purge keys it invalidates.
//!
//! A leaf: it depends only on [`crate::model`] (where [`ChangeEvent`] lives).
//! The outbox itself lives in the store (written in the same transaction as
//! the index change), and each store announces its commits through the
//! [`crate::store::Publish`] the composition root wires to [`Bus::publish`];
//! this module never decides *whether* something changed, only who hears
//! about it. Delivery (purges, webhooks) is in [`crate::delivery`].

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, Notify};

pub use crate::model::ChangeEvent;
use crate::model::{ContentHash, IdentityHash};

/// Fan-out of committed events inside one process.
#[derive(Clone)]
pub struct Bus {
    live: broadcast::Sender<Arc<ChangeEvent>>,
    wake: Arc<Notify>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        Bus {
            live: broadcast::channel(1024).0,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Announce a committed event (never blocks; slow listeners resync from the store).
    pub fn publish(&self, event: ChangeEvent) {
        let _ = self.live.send(Arc::new(event));
        self.wake.notify_waiters();
    }

    /// A live subscription (SSE streams).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.live.subscribe()
    }

    /// Resolves at the next publish (delivery workers).
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

/// The JSON of an event as webhooks and pages see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventView<'a> {
    pub id: u64,
    pub key: &'a IdentityHash,
    pub aliases: &'a [IdentityHash],
    pub hash: Option<&'a ContentHash>,
    pub version: u64,
    pub at: u64,
    /// The new immutable content URL (`/c/<hash>`), or `null` when unbound.
    pub url: Option<String>,
}

impl<'a> From<&'a ChangeEvent> for EventView<'a> {
    fn from(e: &'a ChangeEvent) -> Self {
        EventView {
            id: e.id,
            key: &e.key,
            aliases: &e.aliases,
            hash: e.hash.as_ref(),
            version: e.version,
            at: e.at,
            url: e.hash.map(|h| format!("/c/{h}")),
        }
    }
}

/// The event's JSON body.
pub fn event_json(e: &ChangeEvent) -> Vec<u8> {
    serde_json::to_vec(&EventView::from(e)).expect("events serialize")
}

/// One server-sent-event frame: `id:`, `event: avatar`, `data:`.
pub fn sse_frame(e: &ChangeEvent) -> Bytes {
    let mut out = format!("id: {}\nevent: avatar\ndata: ", e.id).into_bytes();
    out.extend_from_slice(&event_json(e));
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Does the event concern any of `keys` (empty = every event)? `keys` must
/// be sorted (subscriptions hold up to 10,000).
pub fn matches(e: &ChangeEvent, keys: &[IdentityHash]) -> bool {
    keys.is_empty() || e.aliases.iter().any(|a| keys.binary_search(a).is_ok())
}

/// The surrogate keys a change invalidates: every alias, plus the content
/// hashes of the new and the replaced avatar (the new one's `/c/` URLs may
/// hold a cached 410 from a takedown this change lifts, issue 16).
pub fn purge_keys(e: &ChangeEvent) -> Vec<String> {
    let mut keys: Vec<String> = e.aliases.iter().map(|a| a.to_hex()).collect();
    keys.extend(e.hash.iter().chain(&e.previous).map(|h| h.to_hex()));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ChangeEvent {
        let keys = crate::model::IdentityKeys::parse("a@example.org").unwrap();
        ChangeEvent {
            id: 7,
            key: keys.aliases[0],
            aliases: keys.aliases.clone(),
            hash: Some(ContentHash([1; 32])),
            previous: Some(ContentHash([2; 32])),
            version: 3,
            at: 1000,
        }
    }

    #[test]
    fn sse_frame_has_id_event_and_json_data() {
        let f = sse_frame(&event());
        let text = std::str::from_utf8(&f).unwrap();
        assert!(text.starts_with("id: 7\nevent: avatar\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        let data: serde_json::Value =
            serde_json::from_str(text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(data["version"], 3);
        assert_eq!(data["url"], format!("/c/{}", "01".repeat(32)));
        assert_eq!(data["aliases"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn filters_and_purge_keys() {
        let e = event();
        assert!(matches(&e, &[]));
        assert!(matches(&e, &[e.aliases[1]]));
        let other = crate::model::IdentityKeys::parse("b@example.org").unwrap();
        assert!(!matches(&e, &other.aliases));
        let keys = purge_keys(&e);
        assert_eq!(keys.len(), 4);
        assert!(keys.contains(&"01".repeat(32)) && keys.contains(&"02".repeat(32)));
    }
}
