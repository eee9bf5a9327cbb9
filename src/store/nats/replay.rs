//! Event-stream resume from before the events a node keeps in memory: the
//! index bucket's stream *is* the event log (an `i.` write is the event, its
//! sequence the id), so a page resuming from further back than
//! `--nats-resume-events` is replayed from JetStream and misses nothing.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures_util::StreamExt;

use super::keys::{is_put, Stored, INDEX_BUCKET};
use super::NatsStore;
use crate::model::ChangeEvent;
use crate::store::StoreError;

/// The longest a replay waits for the stream's next message.
const NEXT_MESSAGE: Duration = Duration::from_secs(2);

impl NatsStore {
    /// The change events with ids in `(after, upto]`, at most `limit`, in id
    /// order, read through an ordered consumer (ephemeral, no acks). Every
    /// revision still in the stream is an event; a revision the bucket's
    /// history dropped has a later one of the same identity, which is what a
    /// page acts on.
    pub(super) async fn events_in_stream(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<ChangeEvent>, StoreError> {
        let mut out = Vec::new();
        if after >= upto || limit == 0 {
            return Ok(out);
        }
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("event replay: {what}: {e}"))
        };
        let consumer = self
            .inner
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("$KV.{INDEX_BUCKET}.i.>"),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| fail("consumer", &e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| fail("messages", &e))?;
        loop {
            let Ok(next) = tokio::time::timeout(NEXT_MESSAGE, messages.next()).await else {
                // Nothing more to deliver (the rest was deleted or dropped
                // by the history limit).
                break;
            };
            let Some(m) = next else { break };
            let m = m.map_err(|e| fail("message", &e))?;
            let info = m.info().map_err(|e| fail("message info", &e))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq > upto {
                break;
            }
            if is_put(m.headers.as_ref().unwrap_or(&Default::default())) {
                match Stored::decode(&m.payload) {
                    Ok(stored) => out.extend(stored.event(seq)),
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "event replay: skipped a corrupt record")
                    }
                }
            }
            if out.len() >= limit || seq == upto || pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}
