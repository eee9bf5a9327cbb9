//! Counters and histograms, rendered as Prometheus text at `/metrics`.
//!
//! Lock-free on the request path: every counter is an atomic in a fixed array
//! indexed by enums, so recording a request never allocates or locks. Values
//! owned by other components (cache, store, render pool) are read at scrape
//! time through [`Snapshot`]. One `Metrics` value per server, passed explicitly.
//!
//! [`Exposition`] is the one Prometheus text writer: `# HELP`/`# TYPE` lines,
//! samples, label escaping and histograms are written there and nowhere else.
//! Other modules (delivery, the NATS store) write their families through it
//! from a collector registered with [`Metrics::register`] at start-up.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Routes, for the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Content,
    Identity,
    ApiAvatars,
    ApiOther,
    Health,
    Ready,
    Metrics,
    Other,
}

impl Route {
    const ALL: [Route; 8] = [
        Route::Content,
        Route::Identity,
        Route::ApiAvatars,
        Route::ApiOther,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::Other,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Route::Content => "content",
            Route::Identity => "identity",
            Route::ApiAvatars => "api_avatars",
            Route::ApiOther => "api_other",
            Route::Health => "healthz",
            Route::Ready => "readyz",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }
}

/// Status codes tracked individually; anything else counts as "other".
const STATUSES: [u16; 20] = [
    200, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 500, 503, 507,
    0,
];

fn status_index(code: u16) -> usize {
    STATUSES
        .iter()
        .position(|s| *s == code)
        .unwrap_or(STATUSES.len() - 1)
}

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Prometheus text exposition (format 0.0.4), written family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// One family being written: its samples follow its `# HELP`/`# TYPE` lines.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl Family<'_> {
    /// One sample with `labels` (values escaped here).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.suffixed("", labels, value);
    }

    fn suffixed(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition {
            out: String::with_capacity(8 << 10),
        }
    }

    /// Start a family: its `# HELP` and `# TYPE` lines.
    pub fn family<'a>(&'a mut self, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.as_str()
        );
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help).sample(&[], value);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Gauge, help).sample(&[], value);
    }

    /// A histogram: cumulative buckets, sum (seconds) and count.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        let mut f = self.family(name, Kind::Histogram, help);
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += h.counts[i].load(Ordering::Relaxed);
            f.suffixed("_bucket", &[("le", &b.to_string())], cumulative);
        }
        cumulative += h.counts[BUCKETS.len()].load(Ordering::Relaxed);
        f.suffixed("_bucket", &[("le", "+Inf")], cumulative);
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        f.suffixed("_sum", &[], sum);
        f.suffixed("_count", &[], cumulative);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Writes one component's families at scrape time.
pub type Collector = Box<dyn Fn(&mut Exposition) + Send + Sync>;

/// The collectors registered with a [`Metrics`].
#[derive(Default)]
struct Collectors(std::sync::RwLock<Vec<Collector>>);

impl std::fmt::Debug for Collectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collectors")
    }
}

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len()]; Route::ALL.len()],
    pub render_seconds: Histogram,
    pub renders: AtomicU64,
    pub render_panics: AtomicU64,
    pub render_failures: AtomicU64,
    pub render_rejected: AtomicU64,
    pub uploads: AtomicU64,
    pub upload_rejected: AtomicU64,
    pub auth_failures: AtomicU64,
    pub defaults_served: AtomicU64,
    pub fault_defaults: AtomicU64,
    /// Open client connections (gauge, kept by the accept loop).
    pub connections_open: AtomicU64,
    /// Idle keep-alive connections parked without hyper state (gauge).
    pub connections_parked: AtomicU64,
    collectors: Collectors,
}

/// Values owned by other components, read at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_evictions: u64,
    pub cache_inserts: u64,
    pub cache_coalesced: u64,
    pub cache_bytes: u64,
    pub cache_entries: u64,
    pub cache_budget_bytes: u64,
    pub renders_inflight: u64,
    pub render_queue_depth: u64,
    pub upload_queue_depth: u64,
    pub render_memory_reserved: u64,
    pub blobs_corrupt: u64,
    pub blobs_written: u64,
    pub blobs_deleted: u64,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one answered request.
    pub fn request(&self, route: Route, status: u16) {
        let r = Route::ALL.iter().position(|x| *x == route).unwrap_or(0);
        self.requests[r][status_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted for `route` with `status` (tests, benches).
    pub fn requests(&self, route: Route, status: u16) -> u64 {
        let r = Route::ALL.iter().position(|x| *x == route).unwrap_or(0);
        self.requests[r][status_index(status)].load(Ordering::Relaxed)
    }

    /// Add a component's families to every scrape (called at start-up).
    pub fn register(&self, collect: impl Fn(&mut Exposition) + Send + Sync + 'static) {
        self.collectors
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(collect));
    }

    /// Prometheus text exposition: these counters, `snap`, then every
    /// registered collector.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = Exposition::new();
        let mut requests = out.family(
            "avatar_edge_requests_total",
            Kind::Counter,
            "Requests answered, by route and status.",
        );
        for (ri, route) in Route::ALL.iter().enumerate() {
            for (si, status) in STATUSES.iter().enumerate() {
                let n = self.requests[ri][si].load(Ordering::Relaxed);
                if n > 0 {
                    let status = if *status == 0 {
                        "other".to_string()
                    } else {
                        status.to_string()
                    };
                    requests.sample(&[("route", route.as_str()), ("status", status.as_str())], n);
                }
            }
        }
        #[rustfmt::skip]
        let counters: [(&str, &str, u64); 17] = [
            ("avatar_edge_cache_hits_total", "Variant cache hits.", snap.cache_hits),
            ("avatar_edge_cache_misses_total", "Variant cache misses.", snap.cache_misses),
            ("avatar_edge_cache_evictions_total", "Variants evicted to stay within the byte budget.", snap.cache_evictions),
            ("avatar_edge_cache_inserts_total", "Variants inserted.", snap.cache_inserts),
            ("avatar_edge_coalesced_waits_total", "Requests that waited for another request's render of the same variant.", snap.cache_coalesced),
            ("avatar_edge_renders_total", "Variants rendered (decode, resize, encode).", self.renders.load(Ordering::Relaxed)),
            ("avatar_edge_render_panics_total", "Renders that panicked (answered 500).", self.render_panics.load(Ordering::Relaxed)),
            ("avatar_edge_render_failures_total", "Renders whose decode or encode failed (answered 500, never cached).", self.render_failures.load(Ordering::Relaxed)),
            ("avatar_edge_render_rejected_total", "Renders and uploads refused because their queue was full (503).", self.render_rejected.load(Ordering::Relaxed)),
            ("avatar_edge_uploads_total", "Uploads accepted.", self.uploads.load(Ordering::Relaxed)),
            ("avatar_edge_uploads_rejected_total", "Uploads refused (4xx).", self.upload_rejected.load(Ordering::Relaxed)),
            ("avatar_edge_auth_failures_total", "Requests refused for a missing or wrong token.", self.auth_failures.load(Ordering::Relaxed)),
            ("avatar_edge_defaults_served_total", "Generated defaults served.", self.defaults_served.load(Ordering::Relaxed)),
            ("avatar_edge_fault_defaults_total", "Defaults served because of an internal fault (no-store).", self.fault_defaults.load(Ordering::Relaxed)),
            ("avatar_edge_blobs_corrupt_total", "Blob reads whose bytes did not match their hash.", snap.blobs_corrupt),
            ("avatar_edge_blobs_written_total", "Blobs written.", snap.blobs_written),
            ("avatar_edge_blobs_deleted_total", "Unreferenced blobs deleted.", snap.blobs_deleted),
        ];
        for (name, help, v) in counters {
            out.counter(name, help, v);
        }
        #[rustfmt::skip]
        let gauges: [(&str, &str, u64); 9] = [
            ("avatar_edge_render_memory_reserved_bytes", "Working memory reserved by renders in progress (of --render-memory-mb).", snap.render_memory_reserved),
            ("avatar_edge_connections_open", "Open client connections.", self.connections_open.load(Ordering::Relaxed)),
            ("avatar_edge_connections_parked", "Idle keep-alive connections parked (socket only, no HTTP state).", self.connections_parked.load(Ordering::Relaxed)),
            ("avatar_edge_cache_bytes", "Bytes held by the variant cache.", snap.cache_bytes),
            ("avatar_edge_cache_entries", "Variants held by the variant cache.", snap.cache_entries),
            ("avatar_edge_cache_budget_bytes", "Byte budget of the variant cache.", snap.cache_budget_bytes),
            ("avatar_edge_renders_inflight", "Distinct variants being rendered now.", snap.renders_inflight),
            ("avatar_edge_render_queue_depth", "Renders waiting for or holding a render thread.", snap.render_queue_depth),
            ("avatar_edge_upload_queue_depth", "Uploads waiting for or holding an upload thread.", snap.upload_queue_depth),
        ];
        for (name, help, v) in gauges {
            out.gauge(name, help, v);
        }
        out.histogram(
            "avatar_edge_render_seconds",
            "Time to render one variant (decode, resize, encode), queue wait excluded.",
            &self.render_seconds,
        );
        for collect in self
            .collectors
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            collect(&mut out);
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_contains_counted_requests_and_histogram() {
        let m = Metrics::new();
        m.request(Route::Content, 200);
        m.request(Route::Content, 200);
        m.request(Route::Identity, 999);
        m.render_seconds.observe(Duration::from_micros(300));
        m.render_seconds.observe(Duration::from_secs(10));
        let text = m.render(&Snapshot {
            cache_hits: 5,
            ..Default::default()
        });
        assert!(text.contains("avatar_edge_requests_total{route=\"content\",status=\"200\"} 2"));
        assert!(text.contains("avatar_edge_requests_total{route=\"identity\",status=\"other\"} 1"));
        assert!(text.contains("avatar_edge_cache_hits_total 5"));
        assert!(text.contains("avatar_edge_render_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("avatar_edge_render_seconds_bucket{le=\"+Inf\"} 2"));
        assert_eq!(m.requests(Route::Content, 200), 2);
    }

    #[test]
    fn registered_collectors_write_through_the_same_writer() {
        let m = Metrics::new();
        m.register(|out: &mut Exposition| {
            let mut f = out.family("x_total", Kind::Counter, "X.");
            f.sample(&[("target", "a\"b\\c\nd")], 3);
        });
        let text = m.render(&Snapshot::default());
        assert!(text.contains("# HELP x_total X.\n# TYPE x_total counter\n"));
        assert!(
            text.contains("x_total{target=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{text}"
        );
        // Every family has exactly one HELP and one TYPE line.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
    }
}
