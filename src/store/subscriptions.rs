//! Where event-stream subscriptions live between `POST /v1/subscriptions`
//! and the `GET /v1/events?sub=<id>` that uses them (see
//! [`crate::model::subscription`]).
//!
//! Two implementations, chosen by the store ([`super::Store::subscriptions`]):
//! - [`MemorySubscriptions`] for the embedded store: one node, so a map in
//!   memory is shared by every request that can reach it. Deliberately not
//!   redb: a subscription is written on every page view and is worth nothing
//!   after a restart (the client re-creates it on the 404), so it costs no
//!   fsync and no disk. Bounded by [`MAX_MEMORY_KEYS`] keys in all.
//! - [`super::nats::NatsSubscriptions`] for a cluster: a KV bucket with `max_age`, so the
//!   `POST` may reach node A and the stream node B.
//!
//! Invariants: an entry lives [`SUBSCRIPTION_TTL`] after its last `put`, and
//! a `get` never returns an expired entry; since ids are content-addressed, a
//! `put` of an existing id stores the same keys and only refreshes the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::StoreError;
use crate::model::subscription::{KeySet, SubscriptionId, SUBSCRIPTION_TTL};

/// Keys held by all in-memory subscriptions together (about 33 bytes each);
/// beyond, the entries closest to expiry are dropped first.
pub const MAX_MEMORY_KEYS: usize = 2_000_000;

/// Storage of subscriptions, shared by every node that may serve the stream.
#[async_trait::async_trait]
pub trait SubscriptionStore: Send + Sync + 'static {
    /// Keep `keys` under `keys.id()` for [`SUBSCRIPTION_TTL`] from now.
    async fn put(&self, keys: &KeySet) -> Result<(), StoreError>;
    /// The keys of a live subscription; `None` when unknown or expired.
    async fn get(&self, id: &SubscriptionId) -> Result<Option<Arc<KeySet>>, StoreError>;
}

/// Node-local subscriptions (the embedded store).
pub struct MemorySubscriptions {
    ttl: Duration,
    max_keys: usize,
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    map: HashMap<SubscriptionId, (Instant, Arc<KeySet>)>,
    keys: usize,
}

impl Default for MemorySubscriptions {
    fn default() -> Self {
        MemorySubscriptions::new(SUBSCRIPTION_TTL, MAX_MEMORY_KEYS)
    }
}

impl MemorySubscriptions {
    pub fn new(ttl: Duration, max_keys: usize) -> MemorySubscriptions {
        MemorySubscriptions {
            ttl,
            max_keys,
            inner: Mutex::new(Memory::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store or refresh; synchronous core of [`SubscriptionStore::put`].
    pub fn put_at(&self, keys: &KeySet, now: Instant) {
        let id = keys.id();
        let mut m = self.lock();
        let expires = now + self.ttl;
        if let Some(entry) = m.map.get_mut(&id) {
            entry.0 = expires;
            return;
        }
        m.keys += keys.len();
        m.map.insert(id, (expires, Arc::new(keys.clone())));
        if m.keys > self.max_keys {
            m.map.retain(|_, (exp, _)| *exp > now);
            m.keys = m.map.values().map(|(_, k)| k.len()).sum();
            if m.keys > self.max_keys {
                // Still too many live ones: drop those closest to expiry
                // (never the one just stored, which expires last).
                let mut by_expiry: Vec<(Instant, SubscriptionId, usize)> =
                    m.map.iter().map(|(i, (e, k))| (*e, *i, k.len())).collect();
                by_expiry.sort_unstable();
                for (_, old, n) in by_expiry {
                    if m.keys <= self.max_keys || old == id {
                        break;
                    }
                    m.map.remove(&old);
                    m.keys -= n;
                }
            }
        }
    }

    /// Synchronous core of [`SubscriptionStore::get`].
    pub fn get_at(&self, id: &SubscriptionId, now: Instant) -> Option<Arc<KeySet>> {
        let mut m = self.lock();
        match m.map.get(id) {
            Some((exp, keys)) if *exp > now => Some(keys.clone()),
            Some((_, keys)) => {
                let n = keys.len();
                m.map.remove(id);
                m.keys -= n;
                None
            }
            None => None,
        }
    }

    /// Keys held now (tests, metrics).
    pub fn key_count(&self) -> usize {
        self.lock().keys
    }
}

#[async_trait::async_trait]
impl SubscriptionStore for MemorySubscriptions {
    async fn put(&self, keys: &KeySet) -> Result<(), StoreError> {
        self.put_at(keys, Instant::now());
        Ok(())
    }

    async fn get(&self, id: &SubscriptionId) -> Result<Option<Arc<KeySet>>, StoreError> {
        Ok(self.get_at(id, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdentityHash;

    fn set(n: usize, salt: u8) -> KeySet {
        KeySet::new(
            (0..n)
                .map(|i| {
                    let mut b = [salt; 16];
                    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    IdentityHash::Md5(b)
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn expiry_refresh_and_bounds() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let subs = MemorySubscriptions::new(ttl, 25);
        let a = set(10, 1);
        subs.put_at(&a, t0);
        assert_eq!(subs.get_at(&a.id(), t0).as_deref(), Some(&a));
        // Idempotent: the same set again only refreshes the expiry.
        subs.put_at(&a, t0 + Duration::from_secs(8));
        assert_eq!(subs.key_count(), 10);
        assert!(subs.get_at(&a.id(), t0 + Duration::from_secs(15)).is_some());
        assert!(subs.get_at(&a.id(), t0 + Duration::from_secs(18)).is_none());
        assert_eq!(subs.key_count(), 0, "an expired entry is dropped when met");
        // Over the key budget: expired entries go first, then the oldest.
        let (b, c, d) = (set(10, 2), set(10, 3), set(10, 4));
        subs.put_at(&b, t0);
        subs.put_at(&c, t0 + Duration::from_secs(1));
        subs.put_at(&d, t0 + Duration::from_secs(2));
        assert!(subs.key_count() <= 25);
        assert!(subs.get_at(&b.id(), t0 + Duration::from_secs(3)).is_none());
        assert!(subs.get_at(&c.id(), t0 + Duration::from_secs(3)).is_some());
        assert!(subs.get_at(&d.id(), t0 + Duration::from_secs(3)).is_some());
        let e = set(10, 5);
        subs.put_at(&e, t0 + Duration::from_secs(20));
        assert_eq!(subs.key_count(), 10, "expired c and d swept");
        // A set larger than the whole budget is still kept (it is the newest).
        let big = set(30, 6);
        subs.put_at(&big, t0 + Duration::from_secs(21));
        assert!(subs
            .get_at(&big.id(), t0 + Duration::from_secs(21))
            .is_some());
    }
}
