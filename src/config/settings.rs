//! [`Settings`]: the clap argument group and the TOML schema in one struct,
//! so a setting has one name everywhere (`--cache-mb` ↔ `cache_mb` ↔
//! `AVATAR_EDGE_CACHE_MB`), and the merge of the layers.

// Doc comments here double as `--help` text, where <placeholders> read naturally.
#![allow(rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{AnimationOverLimit, ConfigError, HookFailureMode, LogFormat};

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
    /// Photographs' rungs up to this side are stored uncompressed (faster cold renders, more disk; above it, 257-512 px rungs as YCbCr 4:2:0 planes), px; 0..=512 [default: 256]
    #[arg(long, env = "AVATAR_EDGE_RAW_RUNGS_UP_TO")]
    pub raw_rungs_up_to: Option<u32>,
    /// Largest accepted upload body, MiB [default: 10]
    #[arg(long, env = "AVATAR_EDGE_MAX_UPLOAD_MB")]
    pub max_upload_mb: Option<u64>,
    /// Largest accepted image side, px, read from the header before decoding [default: 8192]
    #[arg(long, env = "AVATAR_EDGE_MAX_SIDE")]
    pub max_side: Option<u32>,
    /// Largest accepted image area, megapixels [default: 40]
    #[arg(long, env = "AVATAR_EDGE_MAX_MEGAPIXELS")]
    pub max_megapixels: Option<u64>,
    /// Most frames an animated upload (GIF, APNG, WebP) may have [default: 300]
    #[arg(long, env = "AVATAR_EDGE_MAX_FRAMES")]
    pub max_frames: Option<u32>,
    /// Most pixels of an animated upload summed over its frames (one canvas per frame), megapixels [default: 200]
    #[arg(long, env = "AVATAR_EDGE_MAX_ANIMATION_MEGAPIXELS")]
    pub max_animation_megapixels: Option<u64>,
    /// Longest animated upload (one loop, as browsers play it), seconds [default: 60]
    #[arg(long, env = "AVATAR_EDGE_MAX_ANIMATION_SECONDS")]
    pub max_animation_seconds: Option<u64>,
    /// An animated upload over a limit: refuse (422 naming the limit) or still (keep the first frame) [default: refuse]
    #[arg(long, env = "AVATAR_EDGE_ANIMATION_OVER_LIMIT", value_enum)]
    pub animation_over_limit: Option<AnimationOverLimit>,
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
    /// Change events each cluster node keeps in memory for resuming event streams; a page resuming from further back is replayed from the JetStream stream [default: 10000]
    #[arg(long, env = "AVATAR_EDGE_NATS_RESUME_EVENTS")]
    pub nats_resume_events: Option<usize>,
    /// Memory for the index on each cluster node, MiB: 0 holds every identity (memory grows with the index); N holds the identities looked up most recently within N MiB and reads the others from NATS (one or two KV reads at the stream leader) [default: 64 in an index bucket this release created, else 0]
    #[arg(long, env = "AVATAR_EDGE_NATS_INDEX_MB")]
    pub nats_index_mb: Option<usize>,
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
    /// Proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For names the client (access log, rate limits): the nearest hop that is not one of them; `true` (the bare flag) believes any peer's last hop [default: none, the socket peer]
    #[arg(
        long,
        env = "AVATAR_EDGE_TRUST_FORWARDED_FOR",
        value_delimiter = ',',
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    #[serde(deserialize_with = "bool_or_list")]
    pub trust_forwarded_for: Vec<String>,

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

    // --- Moderation (issue 16): takedowns and the audit trail. ---
    /// Days the audit trail keeps its entries (uploads, deletes, ratings, takedowns, lifts, token reloads) [default: 365]
    #[arg(long, env = "AVATAR_EDGE_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    // --- Upload policy hook (issue 16 item 2). Set by the operator only,
    // never taken from a request. ---
    /// URL every normalized upload is POSTed to before it is accepted (JSON: key, hash, width, height, format and a 256 px JPEG preview in base64); 2xx accepts, 403/422 refuses (422 rejected_by_policy) [default: none]
    #[arg(long, env = "AVATAR_EDGE_UPLOAD_HOOK")]
    pub upload_hook: Option<String>,
    /// Time the upload hook has to answer, the whole exchange, seconds [default: 5]
    #[arg(long, env = "AVATAR_EDGE_UPLOAD_HOOK_TIMEOUT")]
    pub upload_hook_timeout: Option<u64>,
    /// When the hook fails (timeout, no connection, other status, invalid or oversized answer): closed = 503 + Retry-After, nothing stored; open = accept [default: closed]
    #[arg(long, env = "AVATAR_EDGE_UPLOAD_HOOK_FAILURE", value_enum)]
    pub upload_hook_failure: Option<HookFailureMode>,

    // --- Rate limits (issue 16 item 5): anonymous clients only, token calls
    // are never limited; 0 turns a limit off. ---
    /// Uploads through signed URLs per client address per minute (a burst of as many) [default: 10]
    #[arg(long, env = "AVATAR_EDGE_SIGNED_UPLOADS_PER_ADDRESS")]
    pub signed_uploads_per_address: Option<u32>,
    /// Uploads through signed URLs per key per minute [default: 10]
    #[arg(long, env = "AVATAR_EDGE_SIGNED_UPLOADS_PER_KEY")]
    pub signed_uploads_per_key: Option<u32>,
    /// Keyed event streams one client address may hold open at once without a token [default: 20]
    #[arg(long, env = "AVATAR_EDGE_EVENT_STREAMS_PER_ADDRESS")]
    pub event_streams_per_address: Option<u32>,
    /// POST /v1/subscriptions per client address per minute without a token [default: 60]
    #[arg(long, env = "AVATAR_EDGE_SUBSCRIPTIONS_PER_ADDRESS")]
    pub subscriptions_per_address: Option<u32>,

    // --- Migration proxy (issue 17): fall back to upstream avatar services. ---
    /// Gravatar-compatible base URL asked for identities without a local avatar, e.g. `https://gravatar.example/avatar/` (repeatable, tried in order; comma-separated in env) [default: none]
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

/// `trust_forwarded_for` in a file: `true`/`false` (as before), one
/// address or network, or a list of them.
fn bool_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Bool(bool),
        One(String),
        List(Vec<String>),
    }
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => vec![b.to_string()],
        Value::One(s) => vec![s],
        Value::List(l) => l,
    })
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
                trust_forwarded_for: list(self.trust_forwarded_for, lower.trust_forwarded_for),
                fallback_upstream: list(self.fallback_upstream, lower.fallback_upstream),
            } };
        }
        pick!(
            listen,
            data,
            cache_mb,
            master_side,
            raw_rungs_up_to,
            max_upload_mb,
            max_side,
            max_megapixels,
            max_frames,
            max_animation_megapixels,
            max_animation_seconds,
            animation_over_limit,
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
            nats_resume_events,
            nats_index_mb,
            webp_quality,
            avif_quality,
            avif_negotiate,
            log_format,
            access_log,
            nats_creds,
            nats_tls_ca,
            nats_tls_cert,
            nats_tls_key,
            audit_retention_days,
            upload_hook,
            upload_hook_timeout,
            upload_hook_failure,
            signed_uploads_per_address,
            signed_uploads_per_key,
            event_streams_per_address,
            subscriptions_per_address,
            fallback_timeout,
            fallback_ttl,
            fallback_negative_ttl,
            fallback_after_delete,
            fallback_adopt
        )
    }
}
