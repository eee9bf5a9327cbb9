//! Settings → one validated [`Config`] value, passed explicitly everywhere.
//!
//! Precedence: command line > environment (`AVATAR_EDGE_*`) > TOML file
//! (`--config`) > embedded defaults. [`Settings`] is both the clap argument
//! group and the TOML schema, so a setting has one name everywhere
//! (`--cache-mb` ↔ `cache_mb` ↔ `AVATAR_EDGE_CACHE_MB`). No global state.

mod animation;
mod fallback;
mod nats;
mod policy;
mod settings;

pub use animation::AnimationOverLimit;
pub use fallback::{check_upstream, FallbackConfig};
pub use nats::{NatsSecurity, Secret};
pub use policy::{HookConfig, HookFailureMode, PolicyConfig, RateLimits, TrustedProxies};
pub use settings::Settings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::Style;
use crate::pipeline::{Limits, Quality};

/// Problems with the settings, reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid setting {name}: {why}")]
    Invalid { name: &'static str, why: String },
}

/// The validated configuration of a running server: one sub-struct per
/// consumer, so each part of the program is handed only what it uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub render: RenderConfig,
    pub cache: CachePolicy,
    pub delivery: DeliveryConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    /// Issue 16: the upload policy hook.
    pub policy: PolicyConfig,
    /// Issue 17: upstream avatar services (the migration proxy).
    pub fallback: FallbackConfig,
}

/// Format of the log lines on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging, set up once at start (`logging::init`).
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// `None`: text when stderr is a terminal, JSON otherwise.
    pub format: Option<LogFormat>,
}

/// The HTTP face: listener, timeouts, connection bound, browsers.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// Browser origins allowed to use the API (`*` = any).
    pub cors_origins: Vec<String>,
    /// Answer identity URLs with a 302 to the content URL instead of the bytes.
    pub identity_redirect: bool,
    /// Serve the demo page at `/demo`.
    pub demo: bool,
    /// Log one line per request (target `avatar_edge::access`).
    pub access_log: bool,
    /// Whose `X-Forwarded-For` names the client (the access log, the rate
    /// limits) instead of the socket peer.
    pub trust_forwarded_for: TrustedProxies,
}

/// Who may change avatars: the admin token, named tokens, signed URLs.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Admin bearer token from `AVATAR_EDGE_TOKEN`; `None` = use/generate `<data>/admin.token`.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// HMAC key for signed upload URLs (`AVATAR_EDGE_SIGNING_KEY`; else `<data>/signing.key`).
    pub signing_key: Option<String>,
    /// Longest lifetime of a signed upload URL, seconds.
    pub max_upload_url_ttl: u64,
}

/// The service's work: input limits, the two worker pools, the variant
/// cache, and the generated-default policy.
#[derive(Debug, Clone)]
pub struct RenderConfig {
    /// Byte budget of the cache of rendered variants.
    pub cache_bytes: u64,
    pub limits: Limits,
    pub render_threads: usize,
    pub render_queue: usize,
    /// Working memory all renders in progress may hold together, bytes.
    pub render_memory: u64,
    pub upload_threads: usize,
    pub upload_queue: usize,
    /// Style served when an identity has no avatar and the URL names no `d=`.
    pub default_style: Style,
    /// Hosts a `d=<URL>` may redirect to (lower-case).
    pub default_url_allow: Vec<String>,
    /// Lossy WebP and AVIF qualities.
    pub quality: Quality,
    /// Whether `Accept: image/avif` selects AVIF for photos.
    pub avif_negotiate: bool,
}

/// How long browsers and CDNs keep answers, and how answers are tagged for purges.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// Browser lifetime of identity answers, seconds.
    pub identity_max_age: u32,
    /// CDN lifetime of identity answers (purged on change), seconds.
    pub cdn_max_age: u32,
    /// Header names that carry surrogate keys.
    pub surrogate_key_headers: Vec<String>,
}

/// Where committed changes are announced.
#[derive(Debug, Clone, Default)]
pub struct DeliveryConfig {
    /// CDN purge endpoints and webhooks.
    pub targets: Vec<Target>,
}

/// How purge requests are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeStyle {
    /// `PURGE <endpoint>` with `xkey-purge: <keys>` (Varnish xkey vmod).
    #[default]
    Xkey,
    /// `POST <endpoint>` with `Surrogate-Key: <keys>` and `Fastly-Key: <token>`.
    Fastly,
    /// `POST <endpoint>` with `{"tags": [...]}` and `Authorization: Bearer <token>`.
    Cloudflare,
}

impl std::str::FromStr for PurgeStyle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "xkey" | "varnish" => Ok(PurgeStyle::Xkey),
            "fastly" => Ok(PurgeStyle::Fastly),
            "cloudflare" => Ok(PurgeStyle::Cloudflare),
            _ => Err(format!(
                "unknown purge style {s:?} (xkey, fastly, cloudflare)"
            )),
        }
    }
}

/// A delivery target (how it is delivered to is the delivery module's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Purge {
        url: String,
        style: PurgeStyle,
        token: Option<String>,
    },
    Webhook {
        url: String,
        secret: Option<String>,
    },
}

/// Where durable state lives.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Data directory (blobs, index, secrets).
    pub data_dir: PathBuf,
    /// The NATS cluster this node runs on; `None` = the embedded single-node store.
    pub nats: Option<NatsOptions>,
    /// Issue 16: how long the audit trail keeps its entries.
    pub audit_retention: std::time::Duration,
}

/// How to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// `nats://host:port` seed URLs (the client learns the rest of the cluster).
    pub urls: Vec<String>,
    /// Replicas of each bucket (1 for a single dev server; 3 in production).
    pub replicas: usize,
    /// Authentication and TLS.
    pub security: NatsSecurity,
    /// Change events kept in memory for resuming event streams; older
    /// resumes read the event stream in JetStream.
    pub resume_events: usize,
    /// Issue 20: bytes of identities each node holds (the hot set); 0 holds
    /// every identity; `None` (the default): [`AUTO_INDEX_BYTES`] in an index
    /// bucket marked salted, every identity in one an earlier release wrote.
    pub index_bytes: Option<usize>,
}

/// The index budget of a cluster node given no `--nats-index-mb`, in a
/// bucket marked salted (`store::nats`): bounded, as its memory must not
/// grow with the platform (~150,000 identities held; others one round trip).
pub const AUTO_INDEX_BYTES: usize = 64 << 20;

fn invalid(name: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        why: why.into(),
    }
}

/// An encoder quality: 1..=100, `default` when unset.
fn check_quality(
    name: &'static str,
    flag: &str,
    v: Option<u32>,
    default: u8,
) -> Result<u8, ConfigError> {
    match v {
        None => Ok(default),
        Some(q @ 1..=100) => Ok(q as u8),
        Some(q) => Err(invalid(name, format!("{flag} must be 1..=100, got {q}"))),
    }
}

impl Config {
    /// Apply defaults and validate. Secrets (`token`, the purge API token)
    /// come from the environment only: on the command line they would show in `ps`.
    pub fn resolve(s: Settings, token: Option<String>) -> Result<Config, ConfigError> {
        Self::resolve_with(s, token, std::env::var("AVATAR_EDGE_PURGE_TOKEN").ok())
    }

    /// [`Config::resolve`] with the purge token given explicitly.
    pub fn resolve_with(
        s: Settings,
        token: Option<String>,
        purge_token: Option<String>,
    ) -> Result<Config, ConfigError> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let defaults = Limits::default();
        let master_side = s.master_side.unwrap_or(defaults.master_side);
        if !(64..=4096).contains(&master_side) {
            return Err(invalid("master_side", "must be 64..=4096"));
        }
        let raw_rungs_up_to = s.raw_rungs_up_to.unwrap_or(defaults.raw_rungs_up_to);
        if raw_rungs_up_to > crate::pipeline::RAW_RUNG_MAX_SIDE {
            return Err(invalid(
                "raw_rungs_up_to",
                format!("must be 0..=512, got {raw_rungs_up_to}"),
            ));
        }
        let max_upload_mb = s.max_upload_mb.unwrap_or(10);
        if !(1..=1024).contains(&max_upload_mb) {
            return Err(invalid("max_upload_mb", "must be 1..=1024"));
        }
        let max_side = s.max_side.unwrap_or(defaults.max_side);
        if !(16..=65535).contains(&max_side) {
            return Err(invalid("max_side", "must be 16..=65535"));
        }
        let max_mp = s.max_megapixels.unwrap_or(40);
        if !(1..=1000).contains(&max_mp) {
            return Err(invalid("max_megapixels", "must be 1..=1000"));
        }
        let animation = animation::animation_limits(&s)?;
        let default_style = match s.default_style.as_deref() {
            None => Style::Identicon,
            Some(name) => Style::parse(name)
                .ok_or_else(|| invalid("default_style", format!("unknown style {name:?}")))?,
        };
        let cache_mb = s.cache_mb.unwrap_or(256);
        let token = token.filter(|t| !t.trim().is_empty());
        if let Some(t) = &token {
            if t.len() < 16 {
                return Err(invalid(
                    "AVATAR_EDGE_TOKEN",
                    "must be at least 16 characters",
                ));
            }
        }
        let style: PurgeStyle = match s.purge_style.as_deref() {
            None => PurgeStyle::Xkey,
            Some(p) => p.parse().map_err(|e: String| invalid("purge_style", e))?,
        };
        let check_url = |name: &'static str, u: &str| -> Result<String, ConfigError> {
            let u = u.trim();
            if (u.starts_with("http://") || u.starts_with("https://"))
                && u.parse::<http::Uri>().is_ok()
            {
                Ok(u.to_string())
            } else {
                Err(invalid(name, format!("{u:?} is not an http(s) URL")))
            }
        };
        let policy = policy::resolve(&s, &check_url)?;
        let trust_forwarded_for = TrustedProxies::parse(&s.trust_forwarded_for)
            .map_err(|e| invalid("trust_forwarded_for", e))?;
        let mut targets = Vec::new();
        for u in s.purge_endpoint.iter().filter(|u| !u.trim().is_empty()) {
            targets.push(Target::Purge {
                url: check_url("purge_endpoint", u)?,
                style,
                token: purge_token.clone().filter(|t| !t.is_empty()),
            });
        }
        for u in s.webhook.iter().filter(|u| !u.trim().is_empty()) {
            targets.push(Target::Webhook {
                url: check_url("webhook", u)?,
                secret: s.webhook_secret.clone().filter(|t| !t.is_empty()),
            });
        }
        let mut surrogate_key_headers: Vec<String> = s
            .surrogate_key_header
            .iter()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        if surrogate_key_headers.is_empty() {
            surrogate_key_headers = vec!["Surrogate-Key".into(), "xkey".into()];
        }
        for h in &surrogate_key_headers {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(invalid(
                    "surrogate_key_header",
                    format!("{h:?} is not a header name"),
                ));
            }
        }
        let mut cors_origins: Vec<String> = s
            .cors_origin
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if cors_origins.is_empty() {
            cors_origins.push("*".into());
        }
        let nats_urls: Vec<String> = s
            .nats
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        for u in &nats_urls {
            let ok = ["nats://", "tls://"]
                .iter()
                .any(|p| u.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
            if !ok {
                return Err(invalid(
                    "nats",
                    format!("{u:?} is not a nats://host:port URL"),
                ));
            }
        }
        let nats_replicas = s.nats_replicas.unwrap_or(3);
        if !(1..=5).contains(&nats_replicas) {
            return Err(invalid("nats_replicas", "must be 1..=5"));
        }
        let resume_events = s.nats_resume_events.unwrap_or(10_000);
        if !(1..=1_000_000).contains(&resume_events) {
            return Err(invalid("nats_resume_events", "must be 1..=1000000"));
        }
        if s.nats_index_mb.is_some_and(|mb| mb > 1 << 20) {
            return Err(invalid("nats_index_mb", "must be 0..=1048576"));
        }
        let quality = Quality {
            webp: check_quality(
                "webp_quality",
                "--webp-quality",
                s.webp_quality,
                Quality::DEFAULT.webp,
            )?,
            avif: check_quality(
                "avif_quality",
                "--avif-quality",
                s.avif_quality,
                Quality::DEFAULT.avif,
            )?,
        };
        let security = nats::security(&s, |k| std::env::var(k).ok())?;
        let nats = (!nats_urls.is_empty()).then_some(NatsOptions {
            urls: nats_urls,
            replicas: nats_replicas,
            security,
            resume_events,
            index_bytes: s.nats_index_mb.map(|mb| mb << 20),
        });
        let fallback_config = fallback::resolve(&s)?;
        let listen = s
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        Ok(Config {
            http: HttpConfig {
                listen,
                header_timeout: Duration::from_secs(s.header_timeout.unwrap_or(10).max(1)),
                request_timeout: Duration::from_secs(s.request_timeout.unwrap_or(30).max(1)),
                max_connections: s.max_connections.unwrap_or(10_000).max(1),
                cors_origins,
                identity_redirect: s.identity_redirect.unwrap_or(false),
                demo: s.demo.unwrap_or(false),
                access_log: s.access_log.unwrap_or(false),
                trust_forwarded_for,
            },
            auth: AuthConfig {
                token,
                token_file: s.token_file,
                signing_key: std::env::var("AVATAR_EDGE_SIGNING_KEY")
                    .ok()
                    .filter(|k| k.len() >= 16),
                max_upload_url_ttl: s.max_upload_url_ttl.unwrap_or(86_400).clamp(1, 7 * 86_400),
            },
            render: RenderConfig {
                cache_bytes: cache_mb.saturating_mul(1 << 20),
                limits: Limits {
                    max_upload_bytes: (max_upload_mb as usize) << 20,
                    max_side,
                    max_pixels: max_mp * 1_000_000,
                    master_side,
                    raw_rungs_up_to,
                    animation,
                    ..defaults
                },
                render_threads: s.render_threads.unwrap_or(cores).clamp(1, 256),
                render_queue: s.render_queue.unwrap_or(64).clamp(1, 100_000),
                render_memory: s.render_memory_mb.unwrap_or(32).clamp(1, 1 << 20) << 20,
                upload_threads: s.upload_threads.unwrap_or((cores / 2).max(1)).clamp(1, 256),
                upload_queue: s.upload_queue.unwrap_or(16).clamp(1, 100_000),
                default_style,
                default_url_allow: s
                    .default_url_allow
                    .into_iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect(),
                quality,
                // Off by default: rav1e misses the 15 ms cold budget (BENCHMARKS.md).
                avif_negotiate: s.avif_negotiate.unwrap_or(false),
            },
            cache: CachePolicy {
                identity_max_age: s.identity_max_age.unwrap_or(60),
                cdn_max_age: s.cdn_max_age.unwrap_or(86_400),
                surrogate_key_headers,
            },
            delivery: DeliveryConfig { targets },
            store: StoreConfig {
                data_dir: s.data.unwrap_or_else(|| PathBuf::from("avatar-data")),
                nats,
                audit_retention: std::time::Duration::from_secs(
                    u64::from(s.audit_retention_days.unwrap_or(365).clamp(1, 36_500)) * 86_400,
                ),
            },
            log: LogConfig {
                format: s.log_format,
            },
            policy,
            fallback: fallback_config,
        })
    }

    /// A configuration for tests: defaults, data in `dir`, a fixed token.
    pub fn for_tests(dir: &Path) -> Config {
        let mut c = Config::resolve(Settings::default(), Some("test-token-0123456789".into()))
            .expect("defaults are valid");
        c.store.data_dir = dir.to_path_buf();
        c.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }
}

#[cfg(test)]
mod tests;
