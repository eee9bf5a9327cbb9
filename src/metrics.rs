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

pub mod process;

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

/// Route classes, for the request-duration histograms (`route` label) and
/// the access log: what kind of traffic a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Content,
    Identity,
    Api,
    Events,
    Asset,
    Other,
}

impl RouteClass {
    const ALL: [RouteClass; 6] = [
        RouteClass::Content,
        RouteClass::Identity,
        RouteClass::Api,
        RouteClass::Events,
        RouteClass::Asset,
        RouteClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Content => "content",
            RouteClass::Identity => "identity",
            RouteClass::Api => "api",
            RouteClass::Events => "events",
            RouteClass::Asset => "asset",
            RouteClass::Other => "other",
        }
    }

    /// The class of a request path (health, metrics and unknown paths are `other`).
    pub fn of_path(path: &str) -> RouteClass {
        if path.starts_with("/c/") {
            RouteClass::Content
        } else if path == "/avatar" || path.starts_with("/avatar/") {
            RouteClass::Identity
        } else if path == "/v1/events" {
            RouteClass::Events
        } else if path.starts_with("/v1/client") || path == "/demo" || path.starts_with("/demo/") {
            RouteClass::Asset
        } else if path.starts_with("/v1/") {
            RouteClass::Api
        } else {
            RouteClass::Other
        }
    }
}

/// Status classes of the duration histograms.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class_index(status: u16) -> usize {
    (status / 100).clamp(1, 5) as usize - 1
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
        self.histograms(name, help, [(&[][..], h)]);
    }

    /// One histogram family with a series per label set (empty series are
    /// left out, as a counter that never moved would be).
    pub fn histograms<'h>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (&'h [(&'h str, &'h str)], &'h Histogram)>,
    ) {
        let mut f = self.family(name, Kind::Histogram, help);
        for (labels, h) in series {
            let total = h.count();
            if total == 0 && !labels.is_empty() {
                continue;
            }
            let mut cumulative = 0;
            let with_le = |le: &str| -> Vec<(&str, String)> {
                let mut l: Vec<(&str, String)> =
                    labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
                l.push(("le", le.to_string()));
                l
            };
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i].load(Ordering::Relaxed);
                let l = with_le(&b.to_string());
                let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
                f.suffixed("_bucket", &l, cumulative);
            }
            cumulative += h.counts[BUCKETS.len()].load(Ordering::Relaxed);
            let l = with_le("+Inf");
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            f.suffixed("_bucket", &l, cumulative);
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            f.suffixed("_sum", labels, sum);
            f.suffixed("_count", labels, cumulative);
        }
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
    /// Time to answer (to the response head), by route class and status class.
    durations: [[Histogram; STATUS_CLASSES.len()]; RouteClass::ALL.len()],
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
    /// Token-file reloads (SIGHUP) that replaced the named tokens.
    pub token_reloads: AtomicU64,
    /// Token-file reloads that failed (the old tokens stay in force).
    pub token_reload_failures: AtomicU64,
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

    /// Time one request took to its response head.
    pub fn request_duration(&self, class: RouteClass, status: u16, took: Duration) {
        let c = RouteClass::ALL
            .iter()
            .position(|x| *x == class)
            .unwrap_or(0);
        self.durations[c][status_class_index(status)].observe(took);
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
        let counters: [(&str, &str, u64); 19] = [
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
            ("avatar_edge_token_reloads_total", "Token-file reloads (SIGHUP) that replaced the named API tokens.", self.token_reloads.load(Ordering::Relaxed)),
            ("avatar_edge_token_reload_failures_total", "Token-file reloads that failed; the previous tokens stay in force.", self.token_reload_failures.load(Ordering::Relaxed)),
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
        let labels: Vec<[(&str, &str); 2]> = RouteClass::ALL
            .iter()
            .flat_map(|c| {
                STATUS_CLASSES
                    .iter()
                    .map(|s| [("route", c.as_str()), ("status_class", *s)])
            })
            .collect();
        out.histograms(
            "avatar_edge_request_duration_seconds",
            "Time from a request to its response head (streams: to the first byte), by route class and status class.",
            labels
                .iter()
                .zip(self.durations.iter().flatten())
                .map(|(l, h)| (&l[..], h)),
        );
        process::collect(&mut out);
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
    fn durations_by_route_class_and_status_class() {
        let cases = [
            ("/c/abc", RouteClass::Content),
            ("/avatar/abc", RouteClass::Identity),
            ("/avatar", RouteClass::Identity),
            ("/v1/events", RouteClass::Events),
            ("/v1/client.js", RouteClass::Asset),
            ("/demo/demo.js", RouteClass::Asset),
            ("/v1/avatars/x", RouteClass::Api),
            ("/v1/backup", RouteClass::Api),
            ("/metrics", RouteClass::Other),
            ("/avatarx", RouteClass::Other),
        ];
        for (path, class) in cases {
            assert_eq!(RouteClass::of_path(path), class, "{path}");
        }
        let m = Metrics::new();
        m.request_duration(RouteClass::Content, 200, Duration::from_micros(300));
        m.request_duration(RouteClass::Content, 304, Duration::from_millis(3));
        m.request_duration(RouteClass::Api, 503, Duration::from_secs(9));
        let text = m.render(&Snapshot::default());
        let d = "avatar_edge_request_duration_seconds";
        assert!(
            text.contains(&format!(
                "{d}_bucket{{route=\"content\",status_class=\"2xx\",le=\"0.0005\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "{d}_count{{route=\"content\",status_class=\"3xx\"}} 1"
        )));
        assert!(text.contains(&format!(
            "{d}_bucket{{route=\"api\",status_class=\"5xx\",le=\"+Inf\"}} 1"
        )));
        assert!(
            !text.contains(&format!("{d}_count{{route=\"identity\"")),
            "empty series are left out"
        );
        assert_eq!(text.matches(&format!("# TYPE {d} histogram")).count(), 1);
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
