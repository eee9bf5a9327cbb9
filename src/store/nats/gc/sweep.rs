//! When collections happen: after this node's commit dropped a master's
//! last listing, and in a periodic sweep on every node that also finishes
//! what a node that died mid-collection left (see the parent module).

use std::time::Duration;

use super::GRACE_MS;
use crate::model::ContentHash;
use crate::store::nats::NatsStore;
use crate::store::Store;

/// How often every node sweeps its replica for unreferenced masters.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

impl NatsStore {
    /// Collect `hash` once its grace has passed (this node's commit dropped
    /// its last reference).
    pub(in crate::store::nats) fn collect_later(&self, hash: ContentHash) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(GRACE_MS + 200)).await;
            if let Err(e) = this.collect(hash).await {
                tracing::debug!(master = %hash, error = %e, "collection failed; the sweep retries");
            }
        });
    }

    /// Every [`SWEEP_EVERY`] (first soon after start): collect masters this
    /// replica sees unreferenced, and finish abandoned collections. Catches
    /// what a node that died mid-collection, or before collecting, left.
    pub(in crate::store::nats) async fn sweep_forever(self) {
        let mut first = true;
        loop {
            let mut r = [0u8; 1];
            let _ = getrandom::fill(&mut r);
            let wait = if first {
                Duration::from_secs(5)
            } else {
                SWEEP_EVERY
            };
            first = false;
            tokio::time::sleep(wait + Duration::from_millis(u64::from(r[0]) * 20)).await;
            // A bounded replica's start may still be reading the masters
            // (`start.rs`): what to look at is not known yet.
            if self.index_stale() || !self.read_replica().masters_known() {
                continue;
            }
            let candidates = self.read_replica().sweep_candidates();
            for h in candidates {
                if let Err(e) = self.collect(h).await {
                    tracing::debug!(master = %h, error = %e, "sweep: collection failed");
                }
            }
            match self.audit_listings().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    masters = n,
                    "listed the keys of masters stored before listings"
                ),
                Err(e) => tracing::debug!(error = %e, "sweep: listing old masters failed"),
            }
        }
    }
}
