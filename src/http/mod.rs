//! The HTTP face: routing, headers, conditional requests, and the mapping of
//! service results to responses. The only module that knows hyper.
//!
//! [`handle`] is a plain async function from a request to a response, so
//! service tests call it without a socket; [`server`] wraps it in the accept
//! loop with timeouts, connection limits and graceful shutdown.
//!
//! Every response carries `X-Content-Type-Options: nosniff`; non-image
//! responses also carry a restrictive `Content-Security-Policy`.

pub mod assets;
pub mod auth;
mod backup;
pub mod client;
pub mod error;
pub mod park;
pub mod server;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Either, Full, Limited};

use crate::delivery::Deliveries;
use crate::metrics::Route;
use crate::service::{IdentityAnswer, Service, ServiceError, Variant};
use crate::spec;
use auth::Tokens;
use error::ApiError;

/// Response body: a full buffer (every normal response) or a stream (events).
pub type Body = Either<Full<Bytes>, BoxBody<Bytes, Infallible>>;

/// Shared state of the HTTP layer.
pub struct App {
    pub service: Service,
    pub tokens: Tokens,
    pub signer: auth::UrlSigner,
    content_cache_control: HeaderValue,
    identity_cache_control: HeaderValue,
    cdn_cache_control: HeaderValue,
    surrogate_control: HeaderValue,
    /// Header names carrying surrogate keys, with their separators.
    surrogate_headers: Vec<(HeaderName, &'static str)>,
    /// Turns true when the server shuts down (ends event streams).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Outbox delivery state (for `/metrics`).
    pub deliveries: Arc<Deliveries>,
    /// Source of request ids (logs and `X-Request-Id` on 5xx answers).
    next_request_id: std::sync::atomic::AtomicU64,
}

/// Shared handle.
pub type SharedApp = Arc<App>;

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const CSP: HeaderValue = HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'");
const STAR: HeaderValue = HeaderValue::from_static("*");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const VARY_ACCEPT: HeaderValue = HeaderValue::from_static("Accept");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const X_AVATAR_DEFAULT: HeaderName = HeaderName::from_static("x-avatar-default");
/// Lifetime of identity answers while the index replica is cut off from NATS.
const STALE_CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=5");
/// RFC 7234 warning 110 ("response is stale"), naming what is stale.
const STALE_WARNING: HeaderValue = HeaderValue::from_static("110 - \"stale index\"");
const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

impl App {
    pub fn new(
        service: Service,
        tokens: Tokens,
        signer: auth::UrlSigner,
        shutdown: tokio::sync::watch::Receiver<bool>,
        deliveries: Arc<Deliveries>,
    ) -> App {
        let c = &service.config;
        let num = |s: String| HeaderValue::from_str(&s).expect("numeric header");
        let identity_cache_control = num(format!("public, max-age={}", c.identity_max_age));
        let cdn_cache_control = num(format!("public, max-age={}", c.cdn_max_age));
        let surrogate_control = num(format!("max-age={}", c.cdn_max_age));
        let surrogate_headers = c
            .surrogate_key_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .map(|h| {
                // Cloudflare's Cache-Tag is comma-separated; the others use spaces.
                let sep = if h.as_str() == "cache-tag" { "," } else { " " };
                (h, sep)
            })
            .collect();
        App {
            tokens,
            signer,
            content_cache_control: HeaderValue::from_static("public, max-age=31536000, immutable"),
            identity_cache_control,
            cdn_cache_control,
            surrogate_control,
            surrogate_headers,
            shutdown,
            deliveries,
            service,
            next_request_id: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// CORS for the API and the event stream: `*` by default, else the
    /// request's origin when it is one of the configured ones.
    fn apply_cors(&self, h: &mut http::HeaderMap, origin: Option<&HeaderValue>) {
        let origins = &self.service.config.cors_origins;
        if origins.iter().any(|o| o == "*") {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
            return;
        }
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        match origin {
            Some(o) if origins.iter().any(|c| c.as_bytes() == o.as_bytes()) => {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
            }
            _ => {
                h.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
            }
        }
    }

    /// Tag a response with surrogate keys under every configured header name.
    fn insert_surrogate_keys(&self, h: &mut http::HeaderMap, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        for (name, sep) in &self.surrogate_headers {
            if let Ok(v) = HeaderValue::from_str(&keys.join(sep)) {
                h.insert(name.clone(), v);
            }
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(bytes.into()))
}

fn empty() -> Body {
    full(Bytes::new())
}

/// A JSON error response.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = Response::new(full(e.json()));
    *r.status_mut() = e.status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, JSON);
    h.insert(header::CACHE_CONTROL, NO_STORE);
    if e.status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut r = Response::new(full(
        serde_json::to_vec(value).expect("responses serialize"),
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, JSON);
    r.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
    r
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Does `If-None-Match` match `etag` (weak comparison, as RFC 9110 asks for GET)?
fn not_modified(req_headers: &http::HeaderMap, etag: &HeaderValue) -> bool {
    let Some(inm) = req_headers.get(header::IF_NONE_MATCH) else {
        return false;
    };
    let Ok(inm) = inm.to_str() else { return false };
    let ours = etag.to_str().unwrap_or("");
    inm.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == ours
    })
}

/// A variant as a response: 200 with the bytes (empty for HEAD) or 304.
fn variant_response(
    req_headers: &http::HeaderMap,
    head: bool,
    v: &Variant,
    cache_control: HeaderValue,
    vary: bool,
) -> Response<Body> {
    let is_304 = not_modified(req_headers, &v.etag);
    let body = if is_304 || head {
        empty()
    } else {
        Either::Left(Full::new(v.body.clone()))
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::ETAG, v.etag.clone());
    h.insert(header::CACHE_CONTROL, cache_control);
    if vary {
        h.insert(header::VARY, VARY_ACCEPT);
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
    if is_304 {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    } else {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(v.format.content_type()),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(v.body.len()));
    }
    r
}

fn http_date(ms: u64) -> HeaderValue {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).expect("dates are valid headers")
}

/// Handle one request. Never fails: errors become JSON responses.
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
    let id = app
        .next_request_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Cheap clones (reference counts), kept for the log line of a failure.
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let (route, mut resp) = if method == Method::OPTIONS {
        (Route::ApiOther, preflight())
    } else {
        crate::workers::REQUEST_ID.scope(id, route(app, req)).await
    };
    if resp.status().is_server_error() {
        // Overload (503) is expected under pressure and counted in metrics;
        // logging each one would flood the log exactly when it matters.
        if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(request_id = id, method = %method, path = %uri.path(), status = resp.status().as_u16(), "request failed");
        }
        resp.headers_mut().insert(
            HeaderName::from_static("x-request-id"),
            HeaderValue::from(id),
        );
    }
    let h = resp.headers_mut();
    if api {
        app.apply_cors(h, origin.as_ref());
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    let is_image = h
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"image/"));
    // A page served here (the demo) brings its own, looser policy.
    if !is_image && !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, CSP);
    }
    app.service.metrics.request(route, resp.status().as_u16());
    app.service
        .metrics
        .request_duration(class, resp.status().as_u16(), started.elapsed());
    resp
}

async fn route<B>(app: &App, req: Request<B>) -> (Route, Response<Body>)
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The hot route first, borrowing the path (no copy).
    if let Some(rest) = req.uri().path().strip_prefix("/c/") {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return (Route::Content, method_not_allowed("GET, HEAD"));
        }
        return (Route::Content, content(app, &req, rest).await);
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let read = method == Method::GET || method == Method::HEAD;
    if path == "/avatar" || path.starts_with("/avatar/") {
        if !read {
            return (Route::Identity, method_not_allowed("GET, HEAD"));
        }
        let rest = path.strip_prefix("/avatar").unwrap_or("");
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        return (Route::Identity, identity(app, &req, rest).await);
    }
    if path == "/v1/events" {
        if method != Method::GET {
            return (Route::ApiOther, method_not_allowed("GET"));
        }
        return (Route::ApiOther, events(app, &req));
    }
    if path == "/v1/backup" {
        if method != Method::GET {
            return (Route::ApiOther, method_not_allowed("GET"));
        }
        return (Route::ApiOther, backup::backup(app, &req).await);
    }
    if path == "/v1/upload-urls" {
        if method != Method::POST {
            return (Route::ApiOther, method_not_allowed("POST"));
        }
        return (Route::ApiOther, upload_urls(app, req).await);
    }
    if let Some(key) = path.strip_prefix("/v1/avatars/") {
        return (Route::ApiAvatars, avatars_api(app, req, key).await);
    }
    if let Some(answer) = assets::route(app, &method, &path, req.headers()) {
        return answer;
    }
    match (path.as_str(), &method) {
        ("/healthz", m) if *m == Method::GET || *m == Method::HEAD => (
            Route::Health,
            text_response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        ),
        ("/metrics", &Method::GET) => {
            let text = app.service.metrics.render(&app.service.snapshot());
            (
                Route::Metrics,
                text_response(StatusCode::OK, "text/plain; version=0.0.4", text),
            )
        }
        ("/healthz", _) | ("/metrics", _) => (Route::Other, method_not_allowed("GET")),
        _ => (Route::Other, error_response(&ApiError::not_found("route"))),
    }
}

/// Answer to a CORS preflight (`OPTIONS`); the origin is added by `handle`.
fn preflight() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error_response(&ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed: {allow}"),
    ));
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn service_error(e: &ServiceError) -> Response<Body> {
    error_response(&ApiError::from(e))
}

async fn content<B>(app: &App, req: &Request<B>, rest: &str) -> Response<Body> {
    let parsed = match spec::parse_content(rest, req.uri().query()) {
        Ok(p) => p,
        Err(e) => return service_error(&e.into()),
    };
    let svc = &app.service;
    let entry = match svc.content_entry(&parsed.hash).await {
        Ok(m) => m,
        Err(e) => return service_error(&e),
    };
    let manifest = &entry.manifest;
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let key = svc.content_key(&parsed, manifest, accept);
    // A matching ETag needs no render at all. The digest is only computed
    // when the request is conditional; a plain hit uses the cached variant's.
    if req.headers().contains_key(header::IF_NONE_MATCH) {
        let etag = key.etag();
        if not_modified(req.headers(), &etag) {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            let h = r.headers_mut();
            h.insert(header::ETAG, etag);
            h.insert(header::CACHE_CONTROL, app.content_cache_control.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
            if parsed.format.is_none() {
                h.insert(header::VARY, VARY_ACCEPT);
            }
            return r;
        }
    }
    match svc.content_variant(manifest, key).await {
        Ok((v, _)) => {
            let mut r = variant_response(
                req.headers(),
                req.method() == Method::HEAD,
                &v,
                app.content_cache_control.clone(),
                parsed.format.is_none(),
            );
            // Lets a deletion purge the content URLs of the removed avatar
            // (one key: the pre-built hex value, whatever the separator).
            let h = r.headers_mut();
            for (name, _) in &app.surrogate_headers {
                h.insert(name.clone(), entry.surrogate_key.clone());
            }
            r
        }
        Err(e) => service_error(&e),
    }
}

async fn identity<B>(app: &App, req: &Request<B>, rest: &str) -> Response<Body> {
    let parsed = spec::parse_identity(rest, req.uri().query());
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let head = req.method() == Method::HEAD;
    let negotiated = parsed.format.is_none();
    let reply = match app.service.identity(&parsed, accept).await {
        Ok(a) => a,
        Err(e) => return service_error(&e),
    };
    let (mut r, cacheable) = match reply.answer {
        IdentityAnswer::Avatar {
            variant,
            content_url,
            record,
            ..
        } => {
            let location = HeaderValue::from_str(&content_url).expect("content URLs are ASCII");
            let mut r = if app.service.config.identity_redirect {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::FOUND;
                let h = r.headers_mut();
                h.insert(header::LOCATION, location);
                h.insert(header::CACHE_CONTROL, app.identity_cache_control.clone());
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
                if negotiated {
                    h.insert(header::VARY, VARY_ACCEPT);
                }
                r
            } else {
                let mut r = variant_response(
                    req.headers(),
                    head,
                    &variant,
                    app.identity_cache_control.clone(),
                    negotiated,
                );
                r.headers_mut().insert(header::CONTENT_LOCATION, location);
                r
            };
            r.headers_mut()
                .insert(header::LAST_MODIFIED, http_date(record.updated_ms));
            (r, true)
        }
        IdentityAnswer::Default {
            variant,
            reason,
            fault,
            record,
        } => {
            let cc = if fault {
                NO_STORE
            } else {
                app.identity_cache_control.clone()
            };
            let mut r = variant_response(req.headers(), head, &variant, cc, negotiated);
            let h = r.headers_mut();
            h.insert(X_AVATAR_DEFAULT, HeaderValue::from_static(reason));
            if let Some(rec) = record {
                h.insert(header::LAST_MODIFIED, http_date(rec.updated_ms));
            }
            (r, !fault)
        }
        IdentityAnswer::NotFound => {
            let mut r = text_response(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "404 Not Found\n",
            );
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, app.identity_cache_control.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
            h.insert(X_AVATAR_DEFAULT, HeaderValue::from_static("404"));
            (r, true)
        }
        IdentityAnswer::Redirect(url) => match HeaderValue::from_str(&url) {
            Ok(loc) => {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::FOUND;
                let h = r.headers_mut();
                h.insert(header::LOCATION, loc);
                h.insert(header::CACHE_CONTROL, app.identity_cache_control.clone());
                h.insert(X_AVATAR_DEFAULT, HeaderValue::from_static("url"));
                (r, true)
            }
            Err(_) => {
                return error_response(&ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_default",
                    "default URL is not a valid header value",
                ))
            }
        },
    };
    let h = r.headers_mut();
    if app.service.store.index_stale() {
        // Cut off from the cluster: the answer comes from this node's last
        // replica of the index; keep it briefly and say so.
        h.insert(header::CACHE_CONTROL, STALE_CACHE_CONTROL);
        h.insert(header::WARNING, STALE_WARNING);
        h.insert(CDN_CACHE_CONTROL, STALE_CACHE_CONTROL);
        h.insert(SURROGATE_CONTROL, STALE_CACHE_CONTROL);
        return r;
    }
    if cacheable {
        // Long at the CDN (purged on change), short in browsers.
        h.insert(CDN_CACHE_CONTROL, app.cdn_cache_control.clone());
        h.insert(SURROGATE_CONTROL, app.surrogate_control.clone());
        app.insert_surrogate_keys(h, &reply.keys);
    } else {
        h.insert(CDN_CACHE_CONTROL, NO_STORE);
        h.insert(SURROGATE_CONTROL, NO_STORE);
    }
    r
}

/// Is this request allowed to change `key`? A valid bearer token, or — for
/// `PUT` only — a valid, unexpired signed-URL signature for exactly this key.
fn authorize<B>(app: &App, req: &Request<B>, key: &str) -> Result<(), ApiError> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if app.tokens.check(auth).is_some() {
        return Ok(());
    }
    let signed = req.method() == Method::PUT && {
        let pairs = spec::query_pairs(req.uri().query().unwrap_or("")).unwrap_or_default();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        match (
            get("expires").and_then(|e| e.parse::<u64>().ok()),
            get("signature"),
            crate::model::IdentityKeys::parse(key),
        ) {
            (Some(expires), Some(sig), Ok(keys)) => {
                // A signed URL may crop, but only the platform (a token) sets ratings.
                get("rating").is_none()
                    && app.signer.verify(
                        "PUT",
                        &keys.key,
                        expires,
                        sig,
                        crate::store::now_ms() / 1000,
                    )
            }
            _ => false,
        }
    };
    if signed {
        return Ok(());
    }
    app.service
        .metrics
        .auth_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Err(ApiError::unauthorized())
}

async fn avatars_api<B>(app: &App, req: Request<B>, raw_key: &str) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let key = match spec::decode_key_segment(raw_key) {
        Ok(k) => k,
        Err(e) => return service_error(&e.into()),
    };
    let svc = &app.service;
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        if let Err(e) = authorize(app, &req, &key) {
            return error_response(&e);
        }
    }
    match method {
        Method::GET | Method::HEAD => match svc.describe(&key).await {
            Ok(info) => json_response(StatusCode::OK, &info),
            Err(e) => service_error(&e),
        },
        Method::PUT => {
            let params = match spec::parse_upload(req.uri().query()) {
                Ok(p) => p,
                Err(e) => return service_error(&e.into()),
            };
            let body = match read_body(req, svc.config.limits.max_upload_bytes).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            match svc.upload(&key, params, body).await {
                Ok(info) => json_response(StatusCode::OK, &info),
                Err(e) => service_error(&e),
            }
        }
        Method::PATCH => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Patch {
                rating: String,
            }
            let body = match read_body(req, 4096).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            let rating = serde_json::from_slice::<Patch>(&body)
                .ok()
                .and_then(|p| p.rating.parse().ok());
            let Some(rating) = rating else {
                return error_response(&ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "expected {\"rating\": \"g\" | \"pg\" | \"r\" | \"x\"}",
                ));
            };
            match svc.set_rating(&key, rating).await {
                Ok(info) => json_response(StatusCode::OK, &info),
                Err(e) => service_error(&e),
            }
        }
        Method::DELETE => match svc.delete(&key).await {
            Ok(()) => {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Err(e) => service_error(&e),
        },
        _ => method_not_allowed("GET, HEAD, PUT, PATCH, DELETE"),
    }
}

/// Request of `POST /v1/upload-urls`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadUrlRequest {
    key: String,
    #[serde(default = "default_upload_url_ttl")]
    expires_in: u64,
}

fn default_upload_url_ttl() -> u64 {
    600
}

/// `POST /v1/upload-urls` (token required): a URL that lets a browser `PUT`
/// one avatar for exactly one key until it expires.
async fn upload_urls<B>(app: &App, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if app.tokens.check(auth).is_none() {
        app.service
            .metrics
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return error_response(&ApiError::unauthorized());
    }
    let body = match read_body(req, 4096).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let parsed: UploadUrlRequest = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error_response(&ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"key\": \"...\", \"expires_in\": seconds}}: {e}"),
            ))
        }
    };
    let keys = match crate::model::IdentityKeys::parse(&parsed.key) {
        Ok(k) => k,
        Err(e) => return service_error(&e.into()),
    };
    let max = app.service.config.max_upload_url_ttl;
    if parsed.expires_in == 0 || parsed.expires_in > max {
        return error_response(&ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expires_in must be 1..={max} seconds"),
        ));
    }
    upload_url_response(app, &keys, parsed.expires_in)
}

/// Mint a signed upload URL for `keys`, valid for `ttl` seconds, as the JSON
/// answer `{"url", "method", "key", "expires"}`.
pub(crate) fn upload_url_response(
    app: &App,
    keys: &crate::model::IdentityKeys,
    ttl: u64,
) -> Response<Body> {
    let expires = (crate::store::now_ms() / 1000).saturating_add(ttl);
    let signature = app.signer.sign("PUT", &keys.key, expires);
    let encoded =
        percent_encoding::utf8_percent_encode(&keys.key, percent_encoding::NON_ALPHANUMERIC);
    let url = format!("/v1/avatars/{encoded}?expires={expires}&signature={signature}");
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "url": url, "method": "PUT", "key": keys.key, "expires": expires }),
    )
}

/// Largest number of identity keys one event stream may filter on.
pub const MAX_EVENT_KEYS: usize = 1000;
/// Interval of the comment lines that keep idle event streams open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// A response body fed by a channel (server-sent events).
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// `GET /v1/events[?keys=h1,h2][&last_event_id=N]`: server-sent events of
/// avatar changes. `Last-Event-ID` (or `last_event_id`) replays what was
/// missed from the outbox before going live; a comment line every 15 s keeps
/// proxies from closing an idle stream.
fn events<B>(app: &App, req: &Request<B>) -> Response<Body> {
    let mut keys: Vec<crate::model::IdentityHash> = Vec::new();
    let mut last_id: Option<u64> = None;
    let pairs = match spec::query_pairs(req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return service_error(&e.into()),
    };
    let bad = |m: &str| {
        error_response(&ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            m.to_string(),
        ))
    };
    for (k, v) in pairs {
        match k.as_str() {
            "keys" => {
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    match part.trim().parse() {
                        Ok(h) => keys.push(h),
                        Err(_) => {
                            return bad("keys must be comma-separated 32/64-hex identity hashes")
                        }
                    }
                }
                if keys.len() > MAX_EVENT_KEYS {
                    return bad("too many keys (at most 1000)");
                }
            }
            "last_event_id" => match v.parse() {
                Ok(n) => last_id = Some(n),
                Err(_) => return bad("last_event_id must be an integer"),
            },
            _ => {}
        }
    }
    if let Some(h) = req.headers().get("last-event-id") {
        match h.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(n) => last_id = Some(n),
            None => return bad("Last-Event-ID must be an integer"),
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    // Subscribe before replaying, so nothing falls between the two.
    let live = app.service.bus.subscribe();
    let store = app.service.store.clone();
    let shutdown = app.shutdown.clone();
    tokio::spawn(stream_events(store, live, shutdown, tx, keys, last_id));
    let mut r = Response::new(Either::Right(BoxBody::new(ChannelBody(rx))));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, NO_STORE);
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    r
}

async fn stream_events(
    store: crate::store::SharedStore,
    mut live: tokio::sync::broadcast::Receiver<Arc<crate::store::ChangeEvent>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    keys: Vec<crate::model::IdentityHash>,
    last_id: Option<u64>,
) {
    use crate::events::{matches, sse_frame};
    if tx
        .send(Bytes::from_static(b": connected\nretry: 1000\n\n"))
        .await
        .is_err()
    {
        return;
    }
    // Replay everything after `after` from the outbox; returns the new position.
    async fn replay(
        store: &crate::store::SharedStore,
        tx: &tokio::sync::mpsc::Sender<Bytes>,
        keys: &[crate::model::IdentityHash],
        mut after: u64,
    ) -> Option<u64> {
        loop {
            let batch = store.events_after(after, 500).await.ok()?;
            for e in &batch {
                if matches(e, keys) {
                    tx.send(sse_frame(e)).await.ok()?;
                }
                after = e.id;
            }
            if batch.len() < 500 {
                return Some(after);
            }
        }
    }
    let mut last = match last_id {
        Some(id) => match replay(&store, &tx, &keys, id).await {
            Some(p) => p,
            None => return,
        },
        None => store.head().await.unwrap_or(0),
    };
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            r = live.recv() => match r {
                Ok(e) if e.id == last + 1 => {
                    last = e.id;
                    if matches(&e, &keys) && tx.send(sse_frame(&e)).await.is_err() {
                        return;
                    }
                }
                // Publishes of concurrent commits can arrive out of order: the
                // outbox has them all, in order, so read from there.
                Ok(e) if e.id > last => match replay(&store, &tx, &keys, last).await {
                    Some(p) => last = p,
                    None => return,
                },
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    match replay(&store, &tx, &keys, last).await {
                        Some(p) => last = p,
                        None => return,
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = beat.tick() => {
                if tx.send(Bytes::from_static(b": heartbeat\n\n")).await.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        }
    }
}

/// Read a request body, refusing more than `limit` bytes (413) before buffering it.
async fn read_body<B>(req: Request<B>, limit: usize) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("upload exceeds the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("could not read the request body: {e}"),
        )),
    }
}
