//! The delivery workers: one per target, from the store's durable cursor or
//! from a cluster-wide queue, retrying with exponential backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Deliveries, Target, TargetStats, Transport};
use crate::backoff::Doubling;
use crate::events::Bus;
use crate::model::ChangeEvent;
use crate::store::{DeliveryQueue, SharedStore};

/// Backoff before retry `attempt` (1-based): 100 ms doubling, capped at 60 s.
pub fn backoff(attempt: u32) -> Duration {
    const DELIVERY: Doubling = Doubling::new(Duration::from_millis(100), Duration::from_secs(60));
    DELIVERY.nth(attempt.saturating_sub(1))
}

/// Start one worker per target; they stop when `shutdown` turns true.
pub fn spawn(
    targets: Vec<Target>,
    store: SharedStore,
    bus: Bus,
    transport: Arc<dyn Transport>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Arc<Deliveries> {
    let deliveries = Arc::new(Deliveries {
        targets: targets
            .iter()
            .map(|t| {
                Arc::new(TargetStats {
                    name: t.name(),
                    ..Default::default()
                })
            })
            .collect(),
        ..Default::default()
    });
    for (i, target) in targets.into_iter().enumerate() {
        let w = Worker {
            stats: deliveries.targets[i].clone(),
            deliveries: deliveries.clone(),
            target,
            store: store.clone(),
            bus: bus.clone(),
            transport: transport.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(w.run());
    }
    deliveries
}

struct Worker {
    target: Target,
    stats: Arc<TargetStats>,
    deliveries: Arc<Deliveries>,
    store: SharedStore,
    bus: Bus,
    transport: Arc<dyn Transport>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        let name = self.target.name();
        if let Some(queue) = self.store.delivery_queue(&name) {
            return self.run_queue(queue).await;
        }
        let mut cursor = loop {
            match self.store.cursor(&name).await {
                Ok(Some(c)) => break c,
                Ok(None) => match self.store.head().await {
                    Ok(h) => {
                        if self.store.set_cursor(&name, h).await.is_ok() {
                            break h;
                        }
                    }
                    Err(e) => tracing::warn!(target = %name, error = %e, "reading outbox head"),
                },
                Err(e) => tracing::warn!(target = %name, error = %e, "reading delivery cursor"),
            }
            if self.pause(Duration::from_secs(1)).await {
                return;
            }
        };
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            // Register for a wake-up before looking, so no publish is missed.
            let bus = self.bus.clone();
            let woken = bus.woken();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let events = match self.store.events_after(cursor, self.target.batch()).await {
                Ok(ev) => ev,
                Err(e) => {
                    if self.failed("reading outbox", e).await {
                        return;
                    }
                    continue;
                }
            };
            if let Ok(head) = self.store.head().await {
                self.stats
                    .depth
                    .store(head.saturating_sub(cursor), Ordering::Relaxed);
            }
            if events.is_empty() {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = self.shutdown.changed() => return,
                }
                continue;
            }
            if self.send_until_accepted(&events).await {
                return;
            }
            let last = events.last().map_or(cursor, |e| e.id);
            // The acknowledgement is durable before we move on; if this write
            // fails we deliver again (at-least-once), never skip.
            while let Err(e) = self.store.set_cursor(&name, last).await {
                if self.failed("saving delivery cursor", e).await {
                    return;
                }
            }
            cursor = last;
            self.record_delivered(&events);
        }
    }

    /// Count a batch the target acknowledged (metrics, propagation times).
    fn record_delivered(&self, events: &[ChangeEvent]) {
        for e in events {
            self.deliveries.acked(e);
        }
        self.stats
            .delivered
            .fetch_add(events.len() as u64, Ordering::Relaxed);
    }

    /// Send `events` until the target answers 2xx, backing off between
    /// attempts. True when shutdown came first.
    async fn send_until_accepted(&mut self, events: &[ChangeEvent]) -> bool {
        let name = self.stats.name.clone();
        let req = self.target.request(events);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            match self.transport.send(req.clone()).await {
                Ok(status) if (200..300).contains(&status) => return false,
                Ok(status) => {
                    tracing::warn!(target = %name, status, attempt, "delivery refused; will retry")
                }
                Err(e) => {
                    tracing::warn!(target = %name, error = %e, attempt, "delivery failed; will retry")
                }
            }
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            if self.pause(backoff(attempt)).await {
                return true;
            }
        }
    }

    /// Delivery from a cluster-wide queue: fetch, send, acknowledge. An event
    /// a node fetched but did not acknowledge (it died) is handed out again.
    async fn run_queue(mut self, mut queue: Box<dyn DeliveryQueue>) {
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let fetched = tokio::select! {
                r = queue.fetch(self.target.batch(), Duration::from_secs(1)) => r,
                _ = self.shutdown.changed() => return,
            };
            let events = match fetched {
                Ok(ev) => ev,
                Err(e) => {
                    if self.failed("reading the delivery queue", e).await {
                        return;
                    }
                    continue;
                }
            };
            self.stats
                .depth
                .store(events.len() as u64, Ordering::Relaxed);
            if events.is_empty() {
                continue;
            }
            if self.send_until_accepted(&events).await {
                return;
            }
            // Unacknowledged events come back (to any node): at-least-once.
            while let Err(e) = queue.ack().await {
                if self.failed("acknowledging delivered events", e).await {
                    return;
                }
            }
            self.stats.depth.store(0, Ordering::Relaxed);
            self.record_delivered(&events);
        }
    }

    /// Log a failed store or queue operation and wait a second before the
    /// retry. True when shutdown came first.
    async fn failed(&mut self, what: &str, e: crate::store::StoreError) -> bool {
        tracing::warn!(target = %self.stats.name, error = %e, "{what}");
        self.pause(Duration::from_secs(1)).await
    }

    /// Sleep, unless shutdown comes first (then true).
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => *self.shutdown.borrow(),
            _ = self.shutdown.changed() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::target::tests::event;
    use super::super::{Outbound, PurgeStyle};
    use super::*;
    use crate::model::ContentHash;
    use bytes::Bytes;
    use std::sync::Mutex;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(40), Duration::from_secs(60));
    }

    /// A queue handing out fixed batches and recording acknowledgements.
    struct FakeQueue {
        batches: std::collections::VecDeque<Vec<ChangeEvent>>,
        last: Vec<u64>,
        acked: Arc<Mutex<Vec<u64>>>,
    }

    #[async_trait::async_trait]
    impl DeliveryQueue for FakeQueue {
        async fn fetch(
            &mut self,
            _limit: usize,
            wait: Duration,
        ) -> Result<Vec<ChangeEvent>, crate::store::StoreError> {
            match self.batches.pop_front() {
                Some(b) => {
                    self.last = b.iter().map(|e| e.id).collect();
                    Ok(b)
                }
                None => {
                    tokio::time::sleep(wait).await;
                    Ok(Vec::new())
                }
            }
        }
        async fn ack(&mut self) -> Result<(), crate::store::StoreError> {
            self.acked.lock().unwrap().append(&mut self.last);
            Ok(())
        }
    }

    use crate::store::moderation::{AuditEntry, Takedown};
    use crate::store::StoreError;

    /// An embedded store that offers one fake delivery queue.
    struct QueueStore {
        inner: crate::store::embedded::EmbeddedStore,
        queue: Mutex<Option<Box<dyn DeliveryQueue>>>,
    }

    #[async_trait::async_trait]
    impl crate::store::Store for QueueStore {
        async fn commit(
            &self,
            m: Option<crate::store::NewMaster>,
            c: crate::store::Change,
        ) -> Result<crate::store::Committed, crate::store::StoreError> {
            self.inner.commit(m, c).await
        }
        async fn identity(
            &self,
            a: &crate::model::IdentityHash,
        ) -> Result<Option<crate::store::IdentityRecord>, crate::store::StoreError> {
            self.inner.identity(a).await
        }
        async fn manifest(
            &self,
            h: &ContentHash,
        ) -> Result<Option<crate::store::Manifest>, crate::store::StoreError> {
            self.inner.manifest(h).await
        }
        async fn blob(&self, h: &ContentHash) -> Result<Option<Bytes>, crate::store::StoreError> {
            self.inner.blob(h).await
        }
        async fn events_after(
            &self,
            a: u64,
            l: usize,
        ) -> Result<Vec<ChangeEvent>, crate::store::StoreError> {
            self.inner.events_after(a, l).await
        }
        async fn head(&self) -> Result<u64, crate::store::StoreError> {
            self.inner.head().await
        }
        async fn cursor(&self, t: &str) -> Result<Option<u64>, crate::store::StoreError> {
            self.inner.cursor(t).await
        }
        async fn set_cursor(&self, t: &str, id: u64) -> Result<(), crate::store::StoreError> {
            self.inner.set_cursor(t, id).await
        }
        fn stats(&self) -> crate::store::StoreStats {
            self.inner.stats()
        }
        fn delivery_queue(&self, _target: &str) -> Option<Box<dyn DeliveryQueue>> {
            self.queue.lock().unwrap().take()
        }
        // Issue 16: moderation, as the embedded store does it.
        fn blocked(&self, h: &ContentHash) -> bool {
            self.inner.blocked(h)
        }
        async fn put_takedown(&self, t: Takedown) -> Result<Option<Takedown>, StoreError> {
            self.inner.put_takedown(t).await
        }
        async fn remove_takedown(&self, h: &ContentHash) -> Result<Option<Takedown>, StoreError> {
            self.inner.remove_takedown(h).await
        }
        async fn takedowns(
            &self,
            after: Option<ContentHash>,
            limit: usize,
        ) -> Result<Vec<Takedown>, StoreError> {
            self.inner.takedowns(after, limit).await
        }
        async fn bound_to(
            &self,
            h: &ContentHash,
        ) -> Result<Vec<crate::model::IdentityHash>, StoreError> {
            self.inner.bound_to(h).await
        }
        async fn append_audit(&self, e: AuditEntry) -> Result<u64, StoreError> {
            self.inner.append_audit(e).await
        }
        async fn audit_after(&self, after: u64, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
            self.inner.audit_after(after, n).await
        }
        async fn fallback(
            &self,
            h: &crate::model::IdentityHash,
        ) -> Result<Option<crate::store::FallbackEntry>, crate::store::StoreError> {
            self.inner.fallback(h).await
        }
        async fn put_fallback(
            &self,
            h: &crate::model::IdentityHash,
            e: crate::store::FallbackEntry,
            m: Option<crate::store::NewMaster>,
        ) -> Result<(), crate::store::StoreError> {
            self.inner.put_fallback(h, e, m).await
        }
    }

    /// Refuses the first request, accepts the rest; records what it sent.
    struct Flaky {
        sent: Mutex<Vec<Outbound>>,
    }

    #[async_trait::async_trait]
    impl Transport for Flaky {
        async fn send(&self, req: Outbound) -> Result<u16, String> {
            let mut sent = self.sent.lock().unwrap();
            sent.push(req);
            Ok(if sent.len() == 1 { 503 } else { 200 })
        }
    }

    #[tokio::test]
    async fn queue_delivery_retries_then_acknowledges_each_batch_once() {
        let dir = tempfile::tempdir().unwrap();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let queue = FakeQueue {
            batches: [vec![event(1), event(2)], vec![event(3)]].into(),
            last: Vec::new(),
            acked: acked.clone(),
        };
        let store: SharedStore = Arc::new(QueueStore {
            inner: crate::store::embedded::EmbeddedStore::open(dir.path()).unwrap(),
            queue: Mutex::new(Some(Box::new(queue))),
        });
        let transport = Arc::new(Flaky {
            sent: Mutex::new(Vec::new()),
        });
        let (stop, rx) = tokio::sync::watch::channel(false);
        let target = Target::Purge {
            url: "http://127.0.0.1:1/".into(),
            style: PurgeStyle::Xkey,
            token: None,
        };
        let d = spawn(vec![target], store, Bus::new(), transport.clone(), rx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while acked.lock().unwrap().len() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "all events acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(true);
        assert_eq!(*acked.lock().unwrap(), vec![1, 2, 3]);
        let sent = transport.sent.lock().unwrap();
        assert_eq!(
            sent.len(),
            3,
            "first batch twice (refused once), then the second"
        );
        assert_eq!(sent[0], sent[1], "the retry resends the same batch");
        let stats = &d.targets[0];
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 3);
        assert_eq!(stats.failures.load(Ordering::Relaxed), 1);
    }
}
