//! Outbox delivery: one worker per target (a CDN purge endpoint or a
//! webhook) walks the store's event log from its durable cursor, sends,
//! retries with exponential backoff until a 2xx, then advances the cursor.
//!
//! Guarantees: at-least-once (the cursor moves only after an acknowledgement,
//! and survives restarts), ordered per target and therefore per identity, and
//! nothing is skipped (a failing event blocks the ones behind it for that
//! target only). Receivers deduplicate by event id. A target seen for the
//! first time starts at the current head (no replay of old history).
//!
//! A store with a cluster-wide queue ([`crate::store::Store::delivery_queue`],
//! NATS) is read through it instead of cursors: each event goes to one node,
//! and comes back if that node dies before acknowledging it.
//!
//! The transport is a trait so this module stays free of hyper; `http::client`
//! implements it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{event_json, purge_keys, Bus};
use crate::metrics::Histogram;
use crate::store::{now_ms, ChangeEvent, DeliveryQueue, SharedStore};

// The settings types are the configuration's; how to deliver to them is here.
pub use crate::config::{PurgeStyle, Target};

impl Target {
    /// Stable name: the cursor's key and the metrics label.
    pub fn name(&self) -> String {
        match self {
            Target::Purge { url, .. } => format!("purge:{url}"),
            Target::Webhook { url, .. } => format!("webhook:{url}"),
        }
    }

    /// Events sent per request: purges batch keys, webhooks send one event each.
    fn batch(&self) -> usize {
        match self {
            Target::Purge { .. } => 64,
            Target::Webhook { .. } => 1,
        }
    }

    /// The request that delivers `events`.
    pub fn request(&self, events: &[ChangeEvent]) -> Outbound {
        match self {
            Target::Purge { url, style, token } => {
                let mut keys: Vec<String> = events.iter().flat_map(purge_keys).collect();
                keys.sort();
                keys.dedup();
                let joined = keys.join(" ");
                match style {
                    PurgeStyle::Xkey => Outbound {
                        method: "PURGE",
                        url: url.clone(),
                        headers: vec![("xkey-purge".into(), joined)],
                        body: Bytes::new(),
                    },
                    PurgeStyle::Fastly => {
                        let mut headers = vec![("surrogate-key".into(), joined)];
                        if let Some(t) = token {
                            headers.push(("fastly-key".into(), t.clone()));
                        }
                        Outbound {
                            method: "POST",
                            url: url.clone(),
                            headers,
                            body: Bytes::new(),
                        }
                    }
                    PurgeStyle::Cloudflare => {
                        let mut headers = vec![("content-type".into(), "application/json".into())];
                        if let Some(t) = token {
                            headers.push(("authorization".into(), format!("Bearer {t}")));
                        }
                        let body =
                            serde_json::to_vec(&serde_json::json!({ "tags": keys })).expect("json");
                        Outbound {
                            method: "POST",
                            url: url.clone(),
                            headers,
                            body: Bytes::from(body),
                        }
                    }
                }
            }
            Target::Webhook { url, secret } => {
                let e = &events[0];
                let body = event_json(e);
                let mut headers = vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-avatar-edge-event-id".into(), e.id.to_string()),
                ];
                if let Some(s) = secret {
                    headers.push(("x-avatar-edge-signature".into(), signature(s, &body)));
                }
                Outbound {
                    method: "POST",
                    url: url.clone(),
                    headers,
                    body: Bytes::from(body),
                }
            }
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A request to send, in plain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Sends outbound requests; answers the status code or a transport error.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn send(&self, req: Outbound) -> Result<u16, String>;
}

/// Per-target counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TargetStats {
    pub name: String,
    pub depth: AtomicU64,
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
    pub delivered: AtomicU64,
}

/// Shared delivery state: per-target stats and the propagation histogram
/// (commit → the last target's acknowledgement).
#[derive(Default)]
pub struct Deliveries {
    pub targets: Vec<Arc<TargetStats>>,
    pub propagation: Histogram,
    pending: Mutex<HashMap<u64, usize>>,
}

impl Deliveries {
    /// Append this state's Prometheus text to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&TargetStats) -> &AtomicU64,
        );
        let families: [Family; 4] = [
            (
                "avatar_edge_outbox_depth",
                "gauge",
                "Events not yet acknowledged by the target.",
                |t| &t.depth,
            ),
            (
                "avatar_edge_delivery_attempts_total",
                "counter",
                "Delivery requests sent.",
                |t| &t.attempts,
            ),
            (
                "avatar_edge_delivery_failures_total",
                "counter",
                "Delivery requests that failed or were refused.",
                |t| &t.failures,
            ),
            (
                "avatar_edge_delivered_events_total",
                "counter",
                "Events acknowledged by the target.",
                |t| &t.delivered,
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for t in &self.targets {
                let label = t.name.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{label}\"}} {}",
                    get(t).load(Ordering::Relaxed)
                );
            }
        }
        self.propagation.write(
            out,
            "avatar_edge_propagation_seconds",
            "Time from a change's commit to its acknowledgement by the last target.",
        );
    }

    fn acked(&self, e: &ChangeEvent) {
        let n = self.targets.len();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let left = pending.entry(e.id).or_insert(n);
        *left -= 1;
        if *left == 0 {
            pending.remove(&e.id);
            let lag = now_ms().saturating_sub(e.at);
            self.propagation.observe(Duration::from_millis(lag));
        }
    }
}

/// Backoff before retry `attempt` (1-based): 100 ms doubling, capped at 60 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    Duration::from_millis(ms.min(60_000))
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
                    tracing::warn!(target = %name, error = %e, "reading outbox");
                    if self.pause(Duration::from_secs(1)).await {
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
                tracing::warn!(target = %name, error = %e, "saving delivery cursor");
                if self.pause(Duration::from_secs(1)).await {
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
        let name = self.stats.name.clone();
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
                    tracing::warn!(target = %name, error = %e, "reading the delivery queue");
                    if self.pause(Duration::from_secs(1)).await {
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
                tracing::warn!(target = %name, error = %e, "acknowledging delivered events");
                if self.pause(Duration::from_secs(1)).await {
                    return;
                }
            }
            self.stats.depth.store(0, Ordering::Relaxed);
            self.record_delivered(&events);
        }
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
    use super::*;
    use crate::model::{ContentHash, IdentityKeys};

    fn event(id: u64) -> ChangeEvent {
        let k = IdentityKeys::parse("a@example.org").unwrap();
        ChangeEvent {
            id,
            key: k.aliases[0],
            aliases: k.aliases,
            hash: Some(ContentHash([id as u8; 32])),
            previous: None,
            version: id,
            at: 0,
        }
    }

    #[test]
    fn request_shapes() {
        let evs = [event(1), event(2)];
        let x = Target::Purge {
            url: "http://127.0.0.1:6081/".into(),
            style: PurgeStyle::Xkey,
            token: None,
        }
        .request(&evs);
        assert_eq!(x.method, "PURGE");
        assert_eq!(x.headers[0].0, "xkey-purge");
        assert_eq!(x.headers[0].1.split(' ').count(), 2, "deduplicated aliases");
        let f = Target::Purge {
            url: "https://api.fastly.com/service/x/purge".into(),
            style: PurgeStyle::Fastly,
            token: Some("t".into()),
        }
        .request(&evs);
        assert_eq!(
            (f.method, f.headers[1].clone()),
            ("POST", ("fastly-key".to_string(), "t".to_string()))
        );
        let c = Target::Purge {
            url: "https://api.cloudflare.com/x".into(),
            style: PurgeStyle::Cloudflare,
            token: Some("t".into()),
        }
        .request(&evs);
        let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(body["tags"].as_array().unwrap().len(), 2);
        let w = Target::Webhook {
            url: "http://127.0.0.1:1/hook".into(),
            secret: Some("s".into()),
        }
        .request(&evs[..1]);
        assert_eq!(
            w.headers[1],
            ("x-avatar-edge-event-id".to_string(), "1".to_string())
        );
        assert_eq!(w.headers[2].1, signature("s", &w.body));
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

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
