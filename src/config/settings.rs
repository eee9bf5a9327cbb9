//! [`Settings`]: the clap argument group and the TOML schema in one struct,
//! so a setting has one name everywhere (`--cache-mb` ↔ `cache_mb` ↔
//! `AVATAR_EDGE_CACHE_MB`), and the merge of the layers.

// Doc comments here double as `--help` text, where <placeholders> read naturally.
#![allow(rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, LogFormat};

/// Everything `avatar-edge serve` can be told. Every field is optional so the
/// layers can be merged; [`Config::resolve`](super::Config::resolve) fills in the defaults.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "AVATAR_EDGE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory (blobs, index, admin token) [default: ./avatar-data]
    #[arg(long, env = "AVATAR_EDGE_DATA")]
    pub data: Option<PathBuf>,
    /// Byte budget of the in-process cache of rendered variants, MiB [default: 256]
    #[arg(long, env = "AVATAR_EDGE_CACHE_MB")]
    pub cache_mb: Option<u64>,
    /// Side of the largest stored master, px [default: 1024]
    #[arg(long, env = "AVATAR_EDGE_MASTER_SIDE")]
    pub master_side: Option<u32>,
    /// Largest accepted upload body, MiB [default: 10]
    #[arg(long, env = "AVATAR_EDGE_MAX_UPLOAD_MB")]
    pub max_upload_mb: Option<u64>,
    /// Largest accepted image side, px, read from the header before decoding [default: 8192]
    #[arg(long, env = "AVATAR_EDGE_MAX_SIDE")]
    pub max_side: Option<u32>,
    /// Largest accepted image area, megapixels [default: 40]
    #[arg(long, env = "AVATAR_EDGE_MAX_MEGAPIXELS")]
    pub max_megapixels: Option<u64>,
    /// Threads rendering images (decode/resize/encode) [default: number of cores]
    #[arg(long, env = "AVATAR_EDGE_RENDER_THREADS")]
    pub render_threads: Option<usize>,
    /// Renders allowed to wait for a thread; beyond that answer 503 + Retry-After [default: 64]
    #[arg(long, env = "AVATAR_EDGE_RENDER_QUEUE")]
    pub render_queue: Option<usize>,
    /// Memory all renders in progress may hold together, MiB (decoded rung, resized pixels, encoded output): bigger renders wait, one larger than this runs alone [default: 32]
    #[arg(long, env = "AVATAR_EDGE_RENDER_MEMORY_MB")]
    pub render_memory_mb: Option<u64>,
    /// Threads normalizing uploads, apart from renders so neither starves the other [default: half the cores, at least 1]
    #[arg(long, env = "AVATAR_EDGE_UPLOAD_THREADS")]
    pub upload_threads: Option<usize>,
    /// Uploads allowed to wait for an upload thread; beyond that 503 + Retry-After [default: 16]
    #[arg(long, env = "AVATAR_EDGE_UPLOAD_QUEUE")]
    pub upload_queue: Option<usize>,
    /// Browser lifetime of identity URLs (/avatar/...), seconds [default: 60]
    #[arg(long, env = "AVATAR_EDGE_IDENTITY_MAX_AGE")]
    pub identity_max_age: Option<u32>,
    /// Style served when an identity has no avatar and the URL names no d= [default: identicon]
    #[arg(long, env = "AVATAR_EDGE_DEFAULT_STYLE")]
    pub default_style: Option<String>,
    /// Answer identity URLs with 302 to the immutable content URL instead of the bytes
    #[arg(long, env = "AVATAR_EDGE_IDENTITY_REDIRECT", num_args = 0..=1, default_missing_value = "true")]
    pub identity_redirect: Option<bool>,
    /// Host allowed as a d=<URL> redirect target (repeatable; comma-separated in env) [default: none]
    #[arg(
        long = "default-url-allow",
        env = "AVATAR_EDGE_DEFAULT_URL_ALLOW",
        value_delimiter = ','
    )]
    #[serde(rename = "default_url_allow")]
    pub default_url_allow: Vec<String>,
    /// Time allowed to receive a request's headers, seconds [default: 10]
    #[arg(long, env = "AVATAR_EDGE_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Time allowed for a whole request, body included, seconds [default: 30]
    #[arg(long, env = "AVATAR_EDGE_REQUEST_TIMEOUT")]
    pub request_timeout: Option<u64>,
    /// Maximum simultaneously open connections [default: 10000]
    #[arg(long, env = "AVATAR_EDGE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// CDN lifetime of identity URLs (CDN-Cache-Control, Surrogate-Control), seconds [default: 86400]
    #[arg(long, env = "AVATAR_EDGE_CDN_MAX_AGE")]
    pub cdn_max_age: Option<u32>,
    /// Header(s) carrying surrogate keys (repeatable; Cache-Tag is comma-separated) [default: Surrogate-Key,xkey]
    #[arg(
        long = "surrogate-key-header",
        env = "AVATAR_EDGE_SURROGATE_KEY_HEADERS",
        value_delimiter = ','
    )]
    pub surrogate_key_header: Vec<String>,
    /// Purge endpoint notified on every change (repeatable; comma-separated in env) [default: none]
    #[arg(
        long = "purge-endpoint",
        env = "AVATAR_EDGE_PURGE_ENDPOINTS",
        value_delimiter = ','
    )]
    pub purge_endpoint: Vec<String>,
    /// Shape of purge requests: xkey (Varnish), fastly, cloudflare; the API token comes from AVATAR_EDGE_PURGE_TOKEN [default: xkey]
    #[arg(long, env = "AVATAR_EDGE_PURGE_STYLE")]
    pub purge_style: Option<String>,
    /// Webhook URL receiving every change as signed JSON (repeatable; comma-separated in env) [default: none]
    #[arg(long = "webhook", env = "AVATAR_EDGE_WEBHOOKS", value_delimiter = ',')]
    pub webhook: Vec<String>,
    /// Secret for X-Avatar-Edge-Signature (HMAC-SHA256 of the body) [default: unsigned]
    #[arg(long, env = "AVATAR_EDGE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// File of API tokens, one `name:token` per line; several may be active at once (rotation) [default: none]
    #[arg(long, env = "AVATAR_EDGE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Origin allowed to call the API and event stream from a browser (repeatable; comma-separated in env) [default: *]
    #[arg(
        long = "cors-origin",
        env = "AVATAR_EDGE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origin: Vec<String>,
    /// Longest lifetime of a signed upload URL, seconds [default: 86400]
    #[arg(long, env = "AVATAR_EDGE_MAX_UPLOAD_URL_TTL")]
    pub max_upload_url_ttl: Option<u64>,
    /// Serve the demo platform page at /demo
    #[arg(long, env = "AVATAR_EDGE_DEMO", num_args = 0..=1, default_missing_value = "true")]
    pub demo: Option<bool>,
    /// Run as one node of a cluster on NATS JetStream at these URLs (comma-separated, nats://host:4222) instead of the data directory's index and blobs [default: none, single node]
    #[arg(long = "nats", env = "AVATAR_EDGE_NATS", value_delimiter = ',')]
    pub nats: Vec<String>,
    /// Replicas of each JetStream bucket (a single dev server falls back to 1) [default: 3]
    #[arg(long, env = "AVATAR_EDGE_NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,
    /// Quality of lossy WebP variants (photos), 1-100; logos and flat art stay lossless [default: 80]
    #[arg(long, env = "AVATAR_EDGE_WEBP_QUALITY")]
    pub webp_quality: Option<u32>,
    /// Quality of AVIF variants, 1-100 [default: 80]
    #[arg(long, env = "AVATAR_EDGE_AVIF_QUALITY")]
    pub avif_quality: Option<u32>,
    /// Negotiate AVIF for photos of 128 px and more when Accept lists image/avif (explicit .avif URLs are always served; off by default: a cold AVIF render takes ~50 ms) [default: false]
    #[arg(long, env = "AVATAR_EDGE_AVIF_NEGOTIATE", num_args = 0..=1, default_missing_value = "true")]
    pub avif_negotiate: Option<bool>,
    /// Format of the log lines on stderr: text or json (one object per line) [default: text when stderr is a terminal, else json]
    #[arg(long, env = "AVATAR_EDGE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log one line per request (request id, method, route class, redacted path, status, bytes, duration, cache outcome, client address)
    #[arg(long, env = "AVATAR_EDGE_ACCESS_LOG", num_args = 0..=1, default_missing_value = "true")]
    pub access_log: Option<bool>,
    /// Log the client address from the last hop of X-Forwarded-For instead of the socket peer (only behind a proxy or CDN that sets it)
    #[arg(long, env = "AVATAR_EDGE_TRUST_FORWARDED_FOR", num_args = 0..=1, default_missing_value = "true")]
    pub trust_forwarded_for: Option<bool>,

    // --- Secured NATS (issue 15). User/password and token come from the
    // environment only (AVATAR_EDGE_NATS_USER / _PASSWORD / _TOKEN), never
    // from the command line or the settings file. ---
    /// NATS credentials file (JWT + NKey seed, as `nsc` writes it) [default: none]
    #[arg(long, env = "AVATAR_EDGE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS servers' TLS certificates; TLS is then required [default: system roots for tls:// URLs]
    #[arg(long, env = "AVATAR_EDGE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that verify clients (with --nats-tls-key) [default: none]
    #[arg(long, env = "AVATAR_EDGE_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --nats-tls-cert [default: none]
    #[arg(long, env = "AVATAR_EDGE_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,

    // --- Migration proxy (issue 17): fall back to upstream avatar services. ---
    /// Gravatar-compatible base URL asked for identities without a local avatar, e.g. https://gravatar.example/avatar/ (repeatable, tried in order; comma-separated in env) [default: none]
    #[arg(
        long = "fallback-upstream",
        env = "AVATAR_EDGE_FALLBACK_UPSTREAMS",
        value_delimiter = ','
    )]
    pub fallback_upstream: Vec<String>,
    /// Time allowed for one upstream fetch, headers and body together (redirects included), seconds; fractions allowed [default: 2]
    #[arg(long, env = "AVATAR_EDGE_FALLBACK_TIMEOUT")]
    pub fallback_timeout: Option<f64>,
    /// Lifetime of a fetched upstream avatar, seconds [default: 86400]
    #[arg(long, env = "AVATAR_EDGE_FALLBACK_TTL")]
    pub fallback_ttl: Option<u64>,
    /// Lifetime of an upstream "not found" (404/410), seconds [default: 3600]
    #[arg(long, env = "AVATAR_EDGE_FALLBACK_NEGATIVE_TTL")]
    pub fallback_negative_ttl: Option<u64>,
    /// Fall back to the upstream for identities whose local avatar was deleted (else a delete is final) [default: false]
    #[arg(long, env = "AVATAR_EDGE_FALLBACK_AFTER_DELETE", num_args = 0..=1, default_missing_value = "true")]
    pub fallback_after_delete: Option<bool>,
    /// Store a fetched upstream avatar as the identity's own (version 1, source "fallback") [default: false]
    #[arg(long, env = "AVATAR_EDGE_FALLBACK_ADOPT", num_args = 0..=1, default_missing_value = "true")]
    pub fallback_adopt: Option<bool>,
}

impl Settings {
    /// Read a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// `self` (higher precedence) filled in from `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        fn list(high: Vec<String>, low: Vec<String>) -> Vec<String> {
            if high.is_empty() {
                low
            } else {
                high
            }
        }
        macro_rules! pick {
            ($($f:ident),*) => { Settings {
                $($f: self.$f.or(lower.$f),)*
                default_url_allow: list(self.default_url_allow, lower.default_url_allow),
                surrogate_key_header: list(self.surrogate_key_header, lower.surrogate_key_header),
                purge_endpoint: list(self.purge_endpoint, lower.purge_endpoint),
                webhook: list(self.webhook, lower.webhook),
                cors_origin: list(self.cors_origin, lower.cors_origin),
                nats: list(self.nats, lower.nats),
                fallback_upstream: list(self.fallback_upstream, lower.fallback_upstream),
            } };
        }
        pick!(
            listen,
            data,
            cache_mb,
            master_side,
            max_upload_mb,
            max_side,
            max_megapixels,
            render_threads,
            render_queue,
            render_memory_mb,
            upload_threads,
            upload_queue,
            identity_max_age,
            default_style,
            identity_redirect,
            header_timeout,
            request_timeout,
            max_connections,
            cdn_max_age,
            purge_style,
            webhook_secret,
            token_file,
            max_upload_url_ttl,
            demo,
            nats_replicas,
            webp_quality,
            avif_quality,
            avif_negotiate,
            log_format,
            access_log,
            trust_forwarded_for,
            nats_creds,
            nats_tls_ca,
            nats_tls_cert,
            nats_tls_key,
            fallback_timeout,
            fallback_ttl,
            fallback_negative_ttl,
            fallback_after_delete,
            fallback_adopt
        )
    }
}
