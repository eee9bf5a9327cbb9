//! Recent failures (so a failing upstream is asked again soon, but not by
//! every request meanwhile) and the outcome counters of `/metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::FallbackError;
use crate::metrics::{Exposition, Kind};
use crate::model::IdentityHash;

/// After a failed fetch, requests for the hash get the default (uncacheable)
/// without asking again for this long; the next request after it asks.
/// Below the bound of 10 s.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Hashes remembered at most (a failing upstream under a flood of distinct
/// hashes: beyond this, failures are not remembered and each request asks).
const MAX_REMEMBERED: usize = 10_000;

/// Hashes whose last fetch failed, and when.
#[derive(Default)]
pub struct RecentFailures {
    at: Mutex<HashMap<IdentityHash, Instant>>,
}

impl RecentFailures {
    /// True when `hash` failed less than [`RETRY_AFTER_FAILURE`] ago.
    pub fn recent(&self, hash: &IdentityHash) -> bool {
        let at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        at.get(hash)
            .is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE)
    }

    pub fn note(&self, hash: IdentityHash) {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        if at.len() >= MAX_REMEMBERED {
            at.retain(|_, t| t.elapsed() < RETRY_AFTER_FAILURE);
        }
        if at.len() < MAX_REMEMBERED {
            at.insert(hash, Instant::now());
        }
    }

    pub fn clear(&self, hash: &IdentityHash) {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        at.remove(hash);
    }
}

const REASONS: [&str; 8] = [
    "connect",
    "timeout",
    "status",
    "too_large",
    "redirect",
    "image",
    "local",
    "busy",
];

/// Counters of upstream fetches by outcome.
#[derive(Default)]
pub struct Outcomes {
    found: AtomicU64,
    missing: AtomicU64,
    failed: [AtomicU64; REASONS.len()],
    /// Requests that waited for another request's fetch of the same hash.
    pub coalesced: AtomicU64,
}

impl Outcomes {
    pub fn found(&self) {
        self.found.fetch_add(1, Relaxed);
    }

    pub fn missing(&self) {
        self.missing.fetch_add(1, Relaxed);
    }

    pub fn failed(&self, e: &FallbackError) {
        let i = REASONS.iter().position(|r| *r == e.reason()).unwrap_or(0);
        self.failed[i].fetch_add(1, Relaxed);
    }

    /// Failures so far (all reasons).
    pub fn failures(&self) -> u64 {
        self.failed.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn write_metrics(&self, out: &mut Exposition) {
        let mut f = out.family(
            "avatar_edge_fallback_fetches_total",
            Kind::Counter,
            "Upstream fetches of the migration proxy by outcome (found, missing: every upstream said 404/410, failed).",
        );
        f.sample(&[("outcome", "found")], self.found.load(Relaxed));
        f.sample(&[("outcome", "missing")], self.missing.load(Relaxed));
        f.sample(&[("outcome", "failed")], self.failures());
        let mut f = out.family(
            "avatar_edge_fallback_failures_total",
            Kind::Counter,
            "Failed upstream fetches by reason (answered with the default, no-store).",
        );
        for (i, r) in REASONS.iter().enumerate() {
            f.sample(&[("reason", r)], self.failed[i].load(Relaxed));
        }
        out.counter(
            "avatar_edge_fallback_coalesced_total",
            "Identity requests that waited for another request's upstream fetch of the same hash.",
            self.coalesced.load(Relaxed),
        );
    }
}
