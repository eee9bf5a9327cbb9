//! The migration proxy's fetch (issue 17): ask the configured upstream avatar
//! services (Gravatar-compatible URL API) for an identity this server has no
//! avatar for.
//!
//! [`Upstreams::fetch`] sends one `GET {upstream}{hash}?s=<side>&d=404` per
//! upstream, in order, until one has the identity; the whole attempt has one
//! deadline (headers and bodies of every upstream and redirect together).
//! Safety rules kept here, for every caller:
//! - only the configured base URLs are ever fetched, with a validated hash
//!   appended — never a URL from a request;
//! - a redirect is followed only to the same scheme, host and port, at most
//!   [`MAX_REDIRECTS`] times;
//! - a body is read up to the upload limit and no further (the transport
//!   stops reading; memory does not grow with what the upstream sends).
//!
//! What the picture is worth (sniff, limits, bombs) is the upload pipeline's
//! call, made by the service, like any upload. The transport is a trait so this
//! module stays free of hyper; `http::client` implements it. `failures.rs`
//! remembers recent failures (retried after [`RETRY_AFTER_FAILURE`]) and
//! counts outcomes for `/metrics`.

mod failures;
mod redirect;

use std::time::Duration;

use bytes::Bytes;

pub use failures::{Outcomes, RecentFailures, RETRY_AFTER_FAILURE};

use crate::config::FallbackConfig;
use crate::model::IdentityHash;

/// Redirects followed per upstream, at most.
pub const MAX_REDIRECTS: usize = 3;
/// Upstream fetches a node runs at once (each may hold a body of up to the
/// upload limit); a miss beyond them gets the default, uncacheable, and is
/// asked again later.
pub const MAX_FETCHES: usize = 16;

/// Why a fetch from the upstreams failed. Never the client's fault: the
/// identity URL answers the default, uncacheable, and asks again soon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FallbackError {
    #[error("upstream unreachable: {0}")]
    Connect(String),
    #[error("upstream did not answer within the fallback timeout")]
    Timeout,
    #[error("upstream answered {0}")]
    Status(u16),
    #[error("upstream body larger than {0} bytes")]
    TooLarge(usize),
    #[error("upstream redirect refused: {0}")]
    Redirect(String),
    #[error("upstream image refused: {0}")]
    Image(String),
    #[error("this node could not keep the upstream avatar: {0}")]
    Local(String),
    #[error("{MAX_FETCHES} upstream fetches in progress already")]
    Busy,
}

impl FallbackError {
    /// The `reason` label of `avatar_edge_fallback_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            FallbackError::Connect(_) => "connect",
            FallbackError::Timeout => "timeout",
            FallbackError::Status(_) => "status",
            FallbackError::TooLarge(_) => "too_large",
            FallbackError::Redirect(_) => "redirect",
            FallbackError::Image(_) => "image",
            FallbackError::Local(_) => "local",
            FallbackError::Busy => "busy",
        }
    }
}

/// One answer of an upstream, as the transport read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub status: u16,
    /// `Location` of a redirect.
    pub location: Option<String>,
    /// The body of a 2xx answer (empty otherwise).
    pub body: Bytes,
}

/// One GET, no redirect followed. The body of a 2xx answer is read up to
/// `max_body` bytes: beyond that (by `Content-Length` or while reading) the
/// transport stops reading and answers [`FallbackError::TooLarge`]. Other
/// bodies are not read. Deadlines are the caller's (it drops the future).
#[async_trait::async_trait]
pub trait Fetch: Send + Sync + 'static {
    async fn get(&self, url: &str, max_body: usize) -> Result<Got, FallbackError>;
}

/// What the upstreams said about an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The first upstream that has it sent these bytes (not yet checked).
    Found(Bytes),
    /// Every upstream answered 404 or 410.
    Missing,
}

/// The configured upstreams and the transport to reach them.
pub struct Upstreams {
    config: FallbackConfig,
    transport: std::sync::Arc<dyn Fetch>,
}

impl Upstreams {
    pub fn new(config: FallbackConfig, transport: std::sync::Arc<dyn Fetch>) -> Upstreams {
        Upstreams { config, transport }
    }

    pub fn config(&self) -> &FallbackConfig {
        &self.config
    }

    /// The URL asked of `base` for `hash` at `side` px (`d=404`: no default).
    pub fn url(base: &str, hash: &IdentityHash, side: u32) -> String {
        format!("{base}{hash}?s={side}&d=404")
    }

    /// Ask each upstream in order, within one deadline. The first that has
    /// the identity wins; [`Fetched::Missing`] only when every upstream said
    /// 404/410; otherwise the first failure.
    pub async fn fetch(
        &self,
        hash: &IdentityHash,
        side: u32,
        max_body: usize,
    ) -> Result<Fetched, FallbackError> {
        let all = async {
            let mut failure = None;
            for base in &self.config.upstreams {
                match self.fetch_one(base, hash, side, max_body).await {
                    Ok(Fetched::Found(b)) => return Ok(Fetched::Found(b)),
                    Ok(Fetched::Missing) => {}
                    Err(e) => {
                        tracing::debug!(upstream = %base, identity = %hash, error = %e, "fallback upstream failed");
                        failure.get_or_insert(e);
                    }
                }
            }
            failure.map_or(Ok(Fetched::Missing), Err)
        };
        tokio::time::timeout(self.config.timeout, all)
            .await
            .unwrap_or(Err(FallbackError::Timeout))
    }

    /// One upstream, following same-origin redirects.
    async fn fetch_one(
        &self,
        base: &str,
        hash: &IdentityHash,
        side: u32,
        max_body: usize,
    ) -> Result<Fetched, FallbackError> {
        let mut url = Upstreams::url(base, hash, side);
        for _ in 0..=MAX_REDIRECTS {
            let got = self.transport.get(&url, max_body).await?;
            match got.status {
                200..=299 => return Ok(Fetched::Found(got.body)),
                404 | 410 => return Ok(Fetched::Missing),
                301 | 302 | 303 | 307 | 308 => {
                    let location = got.location.ok_or_else(|| {
                        FallbackError::Redirect("a redirect without a Location".into())
                    })?;
                    url = redirect::follow(&url, &location)?;
                }
                s => return Err(FallbackError::Status(s)),
            }
        }
        Err(FallbackError::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

/// How long an entry written at `now_ms` lives, as an expiry in ms.
pub fn expiry(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_add(ttl.as_millis() as u64)
}

#[cfg(test)]
mod tests;
