//! The HTTP face, the only module that knows hyper. Split by concern:
//! `router` (path and method → URL family), one module per family —
//! `content` (`/c/`), `identity` (`/avatar/`), `api` (`/v1/avatars/…`),
//! `upload_urls` (`/v1/upload-urls`), `events` (`/v1/events`), `backup`
//! (`/v1/backup`), [`assets`]
//! (client script, demo) — `response` (bodies, CORS, security headers,
//! surrogate keys, cache lifetimes), [`error`] (the one mapping from errors to
//! status codes), [`auth`] (tokens, signed URLs), [`server`] (accept loop),
//! [`park`] (idle keep-alive connections), [`client`] (outbound HTTP),
//! [`access`] (request ids, the access log, what a log line may say),
//! `limits` (rate limits of anonymous clients, issue 16).
//!
//! [`handle`] is a plain async function from a request to a response, so
//! service tests call it without a socket. Handlers parse with `spec`, call
//! one use-case method of the [`Service`], and shape the answer; they never
//! reach the store, the bus or the configuration through the service.
//!
//! Every response carries `X-Content-Type-Options: nosniff` and its
//! `X-Request-Id`; non-image responses also carry a restrictive
//! `Content-Security-Policy`.

pub mod access;
mod api;
pub mod assets;
pub mod auth;
mod backup;
pub mod client;
mod content;
pub mod error;
mod events;
mod health;
mod identity;
mod limits;
mod moderation;
pub mod park;
mod response;
mod router;
pub mod server;
mod subscriptions;
mod upload_urls;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{Either, Full};

use crate::config::{CachePolicy, HttpConfig};
use crate::delivery::Deliveries;
use crate::metrics::Route;
use crate::service::Service;
use auth::Tokens;
use error::ErrorDetail;
use response::Headers;

pub use error::{error_response, ApiError};

/// Response body: a full buffer (every normal response) or a stream (events).
pub type Body = Either<Full<Bytes>, BoxBody<Bytes, Infallible>>;

/// Shared state of the HTTP layer.
pub struct App {
    pub service: Service,
    pub tokens: Tokens,
    pub signer: auth::UrlSigner,
    /// Listener, timeouts, CORS, identity redirects, demo.
    http: HttpConfig,
    /// Longest lifetime of a signed upload URL, seconds.
    max_upload_url_ttl: u64,
    /// Header values fixed by the configuration.
    headers: Headers,
    /// Turns true when the server shuts down (ends event streams).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Outbox delivery state (for `/metrics`).
    pub deliveries: Arc<Deliveries>,
    /// Source of request ids (`X-Request-Id` on every answer, log lines).
    request_ids: access::RequestIds,
    /// How far back a new subscription's `recent` looks (issue 14), ms.
    recent_window_ms: u64,
    /// Issue 16: rate limits of anonymous clients.
    limits: Arc<limits::RateLimiter>,
}

/// Shared handle.
pub type SharedApp = Arc<App>;

/// What the HTTP layer is configured with.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub http: HttpConfig,
    pub cache: CachePolicy,
    /// Longest lifetime of a signed upload URL, seconds.
    pub max_upload_url_ttl: u64,
    /// Issue 16: rate limits of anonymous clients.
    pub limits: crate::config::RateLimits,
}

impl App {
    pub fn new(
        service: Service,
        config: AppConfig,
        tokens: Tokens,
        signer: auth::UrlSigner,
        shutdown: tokio::sync::watch::Receiver<bool>,
        deliveries: Arc<Deliveries>,
    ) -> App {
        let limits = Arc::new(limits::RateLimiter::new(&config.limits));
        let l = limits.clone();
        service.metrics().register(move |out| l.write_metrics(out));
        App {
            limits,
            recent_window_ms: subscriptions::recent_window_ms(config.cache.identity_max_age),
            headers: Headers::new(&config.cache, &config.http),
            http: config.http,
            max_upload_url_ttl: config.max_upload_url_ttl,
            tokens,
            signer,
            shutdown,
            deliveries,
            service,
            request_ids: access::RequestIds::new(),
        }
    }

    /// The HTTP settings (listener, timeouts, connection bound).
    pub fn http_config(&self) -> &HttpConfig {
        &self.http
    }
}

/// Handle one request. Never fails: errors become JSON responses. The
/// whole request (body included, not a streamed answer) runs under the
/// configured request timeout.
pub async fn handle<B>(app: &App, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = std::time::Instant::now();
    let class = crate::metrics::RouteClass::of_path(req.uri().path());
    let api = req.uri().path().starts_with("/v1/");
    let origin = if api {
        req.headers().get(header::ORIGIN).cloned()
    } else {
        None
    };
    let id = app.request_ids.for_request(req.headers());
    let access = app
        .http
        .access_log
        .then(|| access::Entry::new(&req, &id, started, &app.http.trust_forwarded_for));
    // Cheap clones (reference counts), kept for the log line of a failure.
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let limit = app.http.request_timeout;
    let (route, mut resp) = if method == Method::OPTIONS {
        (Route::ApiOther, response::preflight())
    } else {
        match tokio::time::timeout(limit, router::route(app, req)).await {
            Ok(answer) => answer,
            Err(_) => (
                Route::Other,
                error_response(error::HttpError::Timeout(limit.as_secs())),
            ),
        }
    };
    if resp.status().is_server_error() && resp.status() != StatusCode::SERVICE_UNAVAILABLE {
        // Overload (503) is expected under pressure and counted in metrics;
        // logging each one would flood the log exactly when it matters.
        let detail = resp.extensions().get::<ErrorDetail>().map(|d| d.0.as_str());
        tracing::error!(
            request_id = id.to_str().unwrap_or(""),
            method = %method,
            path = %access::redact(&uri),
            status = resp.status().as_u16(),
            error = detail.unwrap_or(""),
            "request failed"
        );
    }
    let h = resp.headers_mut();
    h.insert(access::X_REQUEST_ID, id);
    if api {
        app.headers.apply_cors(h, origin.as_ref());
    }
    response::apply_security_headers(h);
    app.service
        .record_request(route, class, resp.status().as_u16(), started.elapsed());
    match access {
        Some(entry) => entry.finish(resp),
        None => resp,
    }
}
