//! Delivery from the event log: one durable pull consumer per delivery target
//! (filter `i.>`), so each event is handed to one node cluster-wide and comes
//! back if that node dies before acknowledging it.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use super::keys::{Stored, INDEX_BUCKET};
use super::NatsStore;
use crate::store::{ChangeEvent, DeliveryQueue, StoreError};

/// A consumer name for a delivery target (NATS names allow no `.`, `*`, `>`, spaces).
pub fn durable_name(target: &str) -> String {
    let digest = blake3::hash(target.as_bytes()).to_hex();
    format!("deliver_{}", &digest[..24])
}

/// One delivery target's durable pull consumer on the event log.
pub(super) struct NatsQueue {
    store: NatsStore,
    durable: String,
    consumer: Option<consumer::PullConsumer>,
    inflight: Vec<jetstream::Message>,
}

impl NatsQueue {
    pub(super) fn new(store: NatsStore, target: &str) -> NatsQueue {
        NatsQueue {
            store,
            durable: durable_name(target),
            consumer: None,
            inflight: Vec::new(),
        }
    }

    async fn consumer(&mut self) -> Result<consumer::PullConsumer, StoreError> {
        if let Some(c) = &self.consumer {
            return Ok(c.clone());
        }
        let c = self.store.delivery_consumer(&self.durable).await?;
        self.consumer = Some(c.clone());
        Ok(c)
    }
}

impl NatsStore {
    /// The durable pull consumer of one delivery target, created on first use.
    async fn delivery_consumer(&self, durable: &str) -> Result<consumer::PullConsumer, StoreError> {
        let stream = self
            .inner
            .js
            .get_stream(format!("KV_{INDEX_BUCKET}"))
            .await
            .map_err(self.fail("event stream"))?;
        stream
            .get_or_create_consumer(
                durable,
                consumer::pull::Config {
                    durable_name: Some(durable.to_string()),
                    description: Some("avatar-edge delivery (purges / webhooks)".into()),
                    filter_subject: format!("$KV.{INDEX_BUCKET}.i.>"),
                    // A target seen for the first time starts at the head.
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(120),
                    ..Default::default()
                },
            )
            .await
            .map_err(self.fail("event consumer"))
    }

    /// Create the delivery consumers of `targets` now, so that every change
    /// committed after start-up is delivered (a consumer starts at the head).
    pub async fn prepare_delivery(&self, targets: &[String]) -> Result<(), StoreError> {
        for t in targets {
            self.delivery_consumer(&durable_name(t)).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl DeliveryQueue for NatsQueue {
    async fn fetch(
        &mut self,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<ChangeEvent>, StoreError> {
        let c = self.consumer().await?;
        let mut batch = match c
            .fetch()
            .max_messages(limit.max(1))
            .expires(wait)
            .messages()
            .await
        {
            Ok(b) => b,
            Err(e) => {
                self.consumer = None;
                return Err(self.store.fail("event fetch")(e));
            }
        };
        let mut events = Vec::new();
        while let Some(m) = batch.next().await {
            let m = match m {
                Ok(m) => m,
                // No events yet: an error (the consumer's leader gone, 503)
                // so that the worker waits before asking again; a fetch
                // that returned at once with nothing would be asked again at
                // once, thousands of times a second until a leader is back.
                Err(e) if events.is_empty() => {
                    self.consumer = None;
                    return Err(self.store.fail("event fetch")(e));
                }
                // Deliver what came; the next fetch meets the error.
                Err(e) => {
                    tracing::warn!(error = %e, "event fetch interrupted");
                    break;
                }
            };
            let seq = m.info().map(|i| i.stream_sequence);
            let parsed = Stored::decode(&m.payload);
            match (seq, parsed) {
                (Ok(seq), Ok(stored)) => match stored.event(seq) {
                    Some(event) => {
                        events.push(event);
                        self.inflight.push(m);
                    }
                    // A forward (merge in progress) is not an event.
                    None => {
                        let _ = m.ack().await;
                    }
                },
                _ => {
                    // Not an event (corrupt): acknowledge so it never blocks the queue.
                    tracing::error!(subject = %m.subject, "undecodable event skipped");
                    let _ = m.ack().await;
                }
            }
        }
        Ok(events)
    }

    async fn ack(&mut self) -> Result<(), StoreError> {
        while let Some(m) = self.inflight.last() {
            m.double_ack()
                .await
                .map_err(|e| StoreError::Unavailable(format!("NATS ack: {e}")))?;
            self.inflight.pop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_names_are_stable_and_legal() {
        let a = durable_name("purge:http://127.0.0.1:6081/");
        assert_eq!(a, durable_name("purge:http://127.0.0.1:6081/"));
        assert_ne!(a, durable_name("webhook:http://127.0.0.1:6081/"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
