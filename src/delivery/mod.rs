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
//! implements it. Files: `target.rs` (what a target is and the request that
//! delivers a batch), `worker.rs` (the workers), this file (transport,
//! counters and their metrics).

mod target;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use target::{signature, Outbound, PurgeStyle, Target};
pub use worker::{backoff, spawn};

use crate::metrics::{Exposition, Histogram, Kind};
use crate::model::ChangeEvent;
use crate::store::now_ms;

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
    /// Write the per-target families and the propagation histogram.
    pub fn write_metrics(&self, out: &mut Exposition) {
        #[rustfmt::skip]
        let families = [
            ("avatar_edge_outbox_depth", Kind::Gauge, "Events not yet acknowledged by the target."),
            ("avatar_edge_delivery_attempts_total", Kind::Counter, "Delivery requests sent."),
            ("avatar_edge_delivery_failures_total", Kind::Counter, "Delivery requests that failed or were refused."),
            ("avatar_edge_delivered_events_total", Kind::Counter, "Events acknowledged by the target."),
        ];
        for (i, (name, kind, help)) in families.into_iter().enumerate() {
            let mut f = out.family(name, kind, help);
            for t in &self.targets {
                let values = [&t.depth, &t.attempts, &t.failures, &t.delivered];
                f.sample(&[("target", &t.name)], values[i].load(Ordering::Relaxed));
            }
        }
        out.histogram(
            "avatar_edge_propagation_seconds",
            "Time from a change's commit to its acknowledgement by the last target.",
            &self.propagation,
        )
    }

    pub(crate) fn acked(&self, e: &ChangeEvent) {
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
