//! Rate limits for what anonymous clients can do (issue 16 item 5): uploads
//! through signed URLs per client address and per key, subscriptions per
//! address (both GCRA rates from `governor`), and keyed event streams open
//! at once per address (a count released when the stream's body is
//! dropped). Token-authenticated calls never reach these checks.
//!
//! A client is its address as `access::client_addr` finds it (the socket
//! peer, or `X-Forwarded-For` behind a trusted proxy), an IPv6 client by its
//! /64 network (one host usually holds a whole /64). Memory stays bounded:
//! every [`SWEEP_EVERY`] a check drops the limiters' keys that are back to a
//! fresh state (`retain_recent`) and shrinks their maps; a stream count is
//! removed when it reaches zero.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimits;
use crate::metrics::{Exposition, Kind};

/// How often the limiters forget idle clients.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// `Retry-After` of a refused event stream (no rate to compute it from), seconds.
pub const STREAM_RETRY_AFTER_SECS: u64 = 10;

/// A client as the limits count it: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of `addr` (`None`: no socket, as in-process calls — one shared key).
    pub fn of(addr: Option<IpAddr>) -> ClientKey {
        match addr.map(|a| a.to_canonical()) {
            Some(IpAddr::V6(v6)) => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey(IpAddr::V6(net.into()))
            }
            Some(v4) => ClientKey(v4),
            None => ClientKey(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        }
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    UploadsPerAddress,
    UploadsPerKey,
    EventStreams,
    Subscriptions,
}

impl Limit {
    const ALL: [Limit; 4] = [
        Limit::UploadsPerAddress,
        Limit::UploadsPerKey,
        Limit::EventStreams,
        Limit::Subscriptions,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::UploadsPerAddress => "uploads_per_address",
            Limit::UploadsPerKey => "uploads_per_key",
            Limit::EventStreams => "event_streams_per_address",
            Limit::Subscriptions => "subscriptions_per_address",
        }
    }

    /// What the client is told it did too much of.
    pub fn what(self) -> &'static str {
        match self {
            Limit::UploadsPerAddress => "too many uploads from this address",
            Limit::UploadsPerKey => "too many uploads for this key",
            Limit::EventStreams => "too many event streams open from this address",
            Limit::Subscriptions => "too many subscriptions from this address",
        }
    }
}

/// A refusal: which limit, and when to try again (whole seconds, ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub limit: Limit,
    pub retry_after: u64,
}

type Keyed<K> = DefaultKeyedRateLimiter<K>;

impl From<Refused> for super::error::HttpError {
    fn from(r: Refused) -> Self {
        super::error::HttpError::RateLimited {
            what: r.limit.what(),
            retry_after: r.retry_after,
        }
    }
}

/// A per-minute rate with a burst of the same size; `None` when 0 (off).
fn per_minute<K: Clone + std::hash::Hash + Eq>(n: u32) -> Option<Keyed<K>> {
    NonZeroU32::new(n).map(|n| Keyed::keyed(Quota::per_minute(n)))
}

/// The limits of one server and their counters.
pub struct RateLimiter {
    uploads_by_address: Option<Keyed<ClientKey>>,
    uploads_by_key: Option<Keyed<String>>,
    subscriptions: Option<Keyed<ClientKey>>,
    /// Keyed event streams open at once per client; 0 = unlimited.
    max_streams: u32,
    streams: Mutex<HashMap<ClientKey, u32>>,
    clock: DefaultClock,
    refused: [AtomicU64; Limit::ALL.len()],
    next_sweep: Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(limits: &RateLimits) -> RateLimiter {
        RateLimiter {
            uploads_by_address: per_minute(limits.uploads_per_address),
            uploads_by_key: per_minute(limits.uploads_per_key),
            subscriptions: per_minute(limits.subscriptions_per_address),
            max_streams: limits.event_streams_per_address,
            streams: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
            refused: Default::default(),
            next_sweep: Mutex::new(Instant::now() + SWEEP_EVERY),
        }
    }

    /// One upload through a signed URL by `client` for `key`.
    pub fn signed_upload(&self, client: ClientKey, key: &str) -> Result<(), Refused> {
        self.sweep_if_due();
        self.rate(&self.uploads_by_address, &client, Limit::UploadsPerAddress)?;
        self.rate(&self.uploads_by_key, &key.to_string(), Limit::UploadsPerKey)
    }

    /// One anonymous `POST /v1/subscriptions` by `client`.
    pub fn subscription(&self, client: ClientKey) -> Result<(), Refused> {
        self.sweep_if_due();
        self.rate(&self.subscriptions, &client, Limit::Subscriptions)
    }

    /// Open one anonymous keyed event stream for `client`: the slot is held
    /// until dropped (with the stream's body). `None` when unlimited.
    pub fn open_stream(self: &Arc<Self>, client: ClientKey) -> Result<Option<StreamSlot>, Refused> {
        if self.max_streams == 0 {
            return Ok(None);
        }
        let mut open = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(client).or_insert(0);
        if *n >= self.max_streams {
            drop(open);
            return Err(self.refuse(Limit::EventStreams, STREAM_RETRY_AFTER_SECS));
        }
        *n += 1;
        Ok(Some(StreamSlot {
            limiter: self.clone(),
            client,
        }))
    }

    /// Clients with an open anonymous stream (tests, metrics).
    pub fn stream_clients(&self) -> usize {
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn rate<K: Clone + std::hash::Hash + Eq>(
        &self,
        limiter: &Option<Keyed<K>>,
        key: &K,
        limit: Limit,
    ) -> Result<(), Refused> {
        let Some(l) = limiter else { return Ok(()) };
        l.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Round up: retrying after the advertised time must succeed.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            self.refuse(limit, secs.max(1))
        })
    }

    fn refuse(&self, limit: Limit, retry_after: u64) -> Refused {
        let i = Limit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
        Refused { limit, retry_after }
    }

    /// Forget clients whose state is back to fresh, at most every [`SWEEP_EVERY`].
    fn sweep_if_due(&self) {
        let Ok(mut next) = self.next_sweep.try_lock() else {
            return; // another request is sweeping
        };
        let now = Instant::now();
        if now < *next {
            return;
        }
        *next = now + SWEEP_EVERY;
        drop(next);
        self.sweep();
    }

    /// Drop every key indistinguishable from a fresh one, shrink the maps.
    pub fn sweep(&self) {
        for l in [&self.uploads_by_address, &self.subscriptions]
            .into_iter()
            .flatten()
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.uploads_by_key {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Keys the rate limiters hold now (bounded by the sweep).
    pub fn tracked(&self) -> usize {
        let a = self.uploads_by_address.as_ref().map_or(0, |l| l.len());
        let s = self.subscriptions.as_ref().map_or(0, |l| l.len());
        let k = self.uploads_by_key.as_ref().map_or(0, |l| l.len());
        a + s + k + self.stream_clients()
    }

    /// The limits' families for `/metrics`.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let mut f = out.family(
            "avatar_edge_rate_limited_total",
            Kind::Counter,
            "Anonymous requests refused with 429, by limit.",
        );
        for (limit, n) in Limit::ALL.iter().zip(&self.refused) {
            f.sample(&[("limit", limit.label())], n.load(Ordering::Relaxed));
        }
        out.gauge(
            "avatar_edge_rate_limit_tracked_clients",
            "Clients and keys the rate limits remember (idle ones are forgotten).",
            self.tracked() as u64,
        );
    }
}

/// One open anonymous event stream, released when dropped.
pub struct StreamSlot {
    limiter: Arc<RateLimiter>,
    client: ClientKey,
}

impl std::fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSlot")
            .field("client", &self.client)
            .finish()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(uploads: u32, per_key: u32, streams: u32, subs: u32) -> RateLimits {
        RateLimits {
            uploads_per_address: uploads,
            uploads_per_key: per_key,
            event_streams_per_address: streams,
            subscriptions_per_address: subs,
        }
    }

    #[test]
    fn client_keys_group_ipv6_by_64_and_unmap_ipv4() {
        let k = |s: &str| ClientKey::of(Some(s.parse().unwrap()));
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_eq!(ClientKey::of(None), ClientKey::of(None));
    }

    #[test]
    fn uploads_are_limited_per_address_and_per_key() {
        let l = RateLimiter::new(&limits(3, 2, 0, 0));
        let a = ClientKey::of(Some("192.0.2.1".parse().unwrap()));
        let b = ClientKey::of(Some("192.0.2.2".parse().unwrap()));
        assert!(l.signed_upload(a, "k1").is_ok());
        assert!(l.signed_upload(a, "k1").is_ok());
        let r = l.signed_upload(b, "k1").unwrap_err();
        assert_eq!(r.limit, Limit::UploadsPerKey);
        // 2 per minute: the next cell is 30 s away.
        assert!((29..=30).contains(&r.retry_after), "{r:?}");
        assert!(l.signed_upload(a, "k2").is_ok());
        let r = l.signed_upload(a, "k3").unwrap_err();
        assert_eq!(r.limit, Limit::UploadsPerAddress);
        assert!((19..=20).contains(&r.retry_after), "{r:?}");
        assert!(l.signed_upload(b, "k3").is_ok(), "another address");
        let mut out = Exposition::new();
        l.write_metrics(&mut out);
        let text = out.finish();
        assert!(text.contains("limit=\"uploads_per_key\"} 1"), "{text}");
        assert!(text.contains("limit=\"uploads_per_address\"} 1"), "{text}");
    }

    #[test]
    fn zero_means_unlimited() {
        let l = Arc::new(RateLimiter::new(&limits(0, 0, 0, 0)));
        let a = ClientKey::of(None);
        for _ in 0..1000 {
            assert!(l.signed_upload(a, "k").is_ok());
            assert!(l.subscription(a).is_ok());
            assert!(l.open_stream(a).unwrap().is_none());
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn stream_slots_are_released_on_drop_and_forgotten_at_zero() {
        let l = Arc::new(RateLimiter::new(&limits(0, 0, 2, 0)));
        let a = ClientKey::of(Some("192.0.2.1".parse().unwrap()));
        let b = ClientKey::of(Some("192.0.2.2".parse().unwrap()));
        let s1 = l.open_stream(a).unwrap();
        let s2 = l.open_stream(a).unwrap();
        let r = l.open_stream(a).unwrap_err();
        assert_eq!(
            (r.limit, r.retry_after),
            (Limit::EventStreams, STREAM_RETRY_AFTER_SECS)
        );
        let other = l.open_stream(b).unwrap();
        drop(s1);
        let s3 = l.open_stream(a).unwrap();
        drop((s2, s3, other));
        assert_eq!(l.stream_clients(), 0, "no entry left behind");
    }

    #[test]
    fn the_sweep_forgets_clients_back_to_fresh() {
        // 60,000 per minute: a key is fresh again after a millisecond.
        let l = RateLimiter::new(&limits(60_000, 0, 0, 60_000));
        for i in 0..1000u32 {
            let c = ClientKey::of(Some(IpAddr::V4(i.into())));
            l.signed_upload(c, "k").unwrap();
            l.subscription(c).unwrap();
        }
        assert_eq!(l.tracked(), 2000);
        std::thread::sleep(Duration::from_millis(20));
        l.sweep();
        assert_eq!(l.tracked(), 0);
    }
}
