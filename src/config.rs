//! Settings → one validated [`Config`] value, passed explicitly everywhere.
//!
//! Precedence: command line > environment (`AVATAR_EDGE_*`) > TOML file
//! (`--config`) > embedded defaults. [`Settings`] is both the clap argument
//! group and the TOML schema, so a setting has one name everywhere
//! (`--cache-mb` ↔ `cache_mb` ↔ `AVATAR_EDGE_CACHE_MB`). No global state.

// Doc comments here double as `--help` text, where <placeholders> read naturally.
#![allow(rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::delivery::{PurgeStyle, Target};
use crate::identicon::Style;
use crate::pipeline::Limits;
use crate::store::nats::NatsOptions;

/// Everything `avatar-edge serve` can be told. Every field is optional so the
/// layers can be merged; [`Config::resolve`] fills in the defaults.
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
}

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

/// The validated configuration of a running server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Admin bearer token from `AVATAR_EDGE_TOKEN`; `None` = use/generate `<data>/admin.token`.
    pub token: Option<String>,
    pub cache_bytes: u64,
    pub limits: Limits,
    pub render_threads: usize,
    pub render_queue: usize,
    /// Working memory all renders in progress may hold together, bytes.
    pub render_memory: u64,
    pub upload_threads: usize,
    pub upload_queue: usize,
    pub identity_max_age: u32,
    pub default_style: Style,
    pub identity_redirect: bool,
    pub default_url_allow: Vec<String>,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub cdn_max_age: u32,
    pub surrogate_key_headers: Vec<String>,
    /// Where changes are announced (CDN purges, webhooks).
    pub targets: Vec<Target>,
    pub token_file: Option<PathBuf>,
    /// Browser origins allowed to use the API (`*` = any).
    pub cors_origins: Vec<String>,
    pub max_upload_url_ttl: u64,
    /// HMAC key for signed upload URLs (`AVATAR_EDGE_SIGNING_KEY`; else `<data>/signing.key`).
    pub signing_key: Option<String>,
    pub demo: bool,
    /// The NATS cluster this node runs on; `None` = the embedded single-node store.
    pub nats: Option<NatsOptions>,
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
            nats_replicas
        )
    }
}

fn invalid(name: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        why: why.into(),
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
        let nats = (!nats_urls.is_empty()).then_some(NatsOptions {
            urls: nats_urls,
            replicas: nats_replicas,
        });
        Ok(Config {
            nats,
            token_file: s.token_file,
            cors_origins,
            max_upload_url_ttl: s.max_upload_url_ttl.unwrap_or(86_400).clamp(1, 7 * 86_400),
            signing_key: std::env::var("AVATAR_EDGE_SIGNING_KEY")
                .ok()
                .filter(|k| k.len() >= 16),
            demo: s.demo.unwrap_or(false),
            cdn_max_age: s.cdn_max_age.unwrap_or(86_400),
            surrogate_key_headers,
            targets,
            listen: s
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: s.data.unwrap_or_else(|| PathBuf::from("avatar-data")),
            token,
            cache_bytes: cache_mb.saturating_mul(1 << 20),
            limits: Limits {
                max_upload_bytes: (max_upload_mb as usize) << 20,
                max_side,
                max_pixels: max_mp * 1_000_000,
                master_side,
                ..defaults
            },
            render_threads: s.render_threads.unwrap_or(cores).clamp(1, 256),
            render_queue: s.render_queue.unwrap_or(64).clamp(1, 100_000),
            render_memory: s.render_memory_mb.unwrap_or(32).clamp(1, 1 << 20) << 20,
            upload_threads: s.upload_threads.unwrap_or((cores / 2).max(1)).clamp(1, 256),
            upload_queue: s.upload_queue.unwrap_or(16).clamp(1, 100_000),
            identity_max_age: s.identity_max_age.unwrap_or(60),
            default_style,
            identity_redirect: s.identity_redirect.unwrap_or(false),
            default_url_allow: s
                .default_url_allow
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            header_timeout: Duration::from_secs(s.header_timeout.unwrap_or(10).max(1)),
            request_timeout: Duration::from_secs(s.request_timeout.unwrap_or(30).max(1)),
            max_connections: s.max_connections.unwrap_or(10_000).max(1),
        })
    }

    /// A configuration for tests: defaults, data in `dir`, a fixed token.
    pub fn for_tests(dir: &Path) -> Config {
        let mut c = Config::resolve(Settings::default(), Some("test-token-0123456789".into()))
            .expect("defaults are valid");
        c.data_dir = dir.to_path_buf();
        c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::resolve(Settings::default(), None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("avatar-data"));
        assert_eq!(c.cache_bytes, 256 << 20);
        assert_eq!(c.limits.master_side, 1024);
        assert_eq!(c.limits.max_upload_bytes, 10 << 20);
        assert_eq!(c.identity_max_age, 60);
        assert_eq!(c.default_style, Style::Identicon);
        assert!(!c.identity_redirect);
    }

    #[test]
    fn higher_layer_wins_and_lists_fall_through() {
        let cli = Settings {
            cache_mb: Some(64),
            ..Default::default()
        };
        let file: Settings = toml::from_str(
            "cache_mb = 512\nlisten = \"127.0.0.1:9000\"\ndefault_url_allow = [\"Example.org\"]",
        )
        .unwrap();
        let c = Config::resolve(cli.or(file), None).unwrap();
        assert_eq!(c.cache_bytes, 64 << 20);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.default_url_allow, vec!["example.org".to_string()]);
    }

    #[test]
    fn bad_settings_are_named() {
        let s = Settings {
            default_style: Some("sparkles".into()),
            ..Default::default()
        };
        let e = Config::resolve(s, None).unwrap_err().to_string();
        assert!(e.contains("default_style"), "{e}");
        assert!(toml::from_str::<Settings>("no_such_option = 1").is_err());
        assert!(Config::resolve(Settings::default(), Some("short".into())).is_err());
    }

    #[test]
    fn nats_settings() {
        let c = Config::resolve(Settings::default(), None).unwrap();
        assert_eq!(c.nats, None, "embedded by default");
        let s: Settings =
            toml::from_str("nats = [\"nats://127.0.0.1:4222\", \"nats://10.0.0.2:4222\"]").unwrap();
        let n = Config::resolve(s, None).unwrap().nats.unwrap();
        assert_eq!((n.urls.len(), n.replicas), (2, 3));
        let s = Settings {
            nats: vec!["nats://a:4222".into()],
            nats_replicas: Some(1),
            ..Default::default()
        };
        assert_eq!(Config::resolve(s, None).unwrap().nats.unwrap().replicas, 1);
        for (urls, replicas) in [(vec!["http://a:4222"], None), (vec!["nats://a"], Some(9))] {
            let s = Settings {
                nats: urls.into_iter().map(String::from).collect(),
                nats_replicas: replicas,
                ..Default::default()
            };
            assert!(Config::resolve(s, None).is_err());
        }
    }
}
