//! Response building and header policy in one place: bodies, JSON and text
//! answers, variants with conditional GET, CORS, the security headers every
//! response carries, surrogate keys, and the cache lifetimes ([`Headers`],
//! built once from the configuration).

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{Either, Full};

use super::Body;
use crate::config::{CachePolicy, HttpConfig};
use crate::service::Variant;
use crate::spec::IfNoneMatch;

pub(super) const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
pub(super) const CSP: HeaderValue =
    HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'");
pub(super) const STAR: HeaderValue = HeaderValue::from_static("*");
pub(super) const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
pub(super) const VARY_ACCEPT: HeaderValue = HeaderValue::from_static("Accept");
pub(super) const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub(super) const X_AVATAR_DEFAULT: HeaderName = HeaderName::from_static("x-avatar-default");
/// Issue 17: `fallback` on an avatar fetched from an upstream service.
pub(super) const X_AVATAR_SOURCE: HeaderName = HeaderName::from_static("x-avatar-source");
/// Lifetime of identity answers while the index replica is cut off from NATS.
pub(super) const STALE_CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=5");
/// RFC 7234 warning 110 ("response is stale"), naming what is stale.
pub(super) const STALE_WARNING: HeaderValue = HeaderValue::from_static("110 - \"stale index\"");
pub(super) const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
pub(super) const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// Header values decided by the configuration, built once at start-up so a
/// hit formats nothing.
pub(super) struct Headers {
    pub content_cache_control: HeaderValue,
    pub identity_cache_control: HeaderValue,
    pub cdn_cache_control: HeaderValue,
    pub surrogate_control: HeaderValue,
    /// Header names carrying surrogate keys, with their separators.
    pub surrogate_headers: Vec<(HeaderName, &'static str)>,
    /// Browser origins allowed to use the API (`*` = any).
    cors_origins: Vec<String>,
    /// Issue 17: the configured identity lifetimes, browser and CDN, seconds
    /// (capped per answer for fallback entries).
    lifetimes: (u32, u32),
}

impl Headers {
    pub fn new(cache: &CachePolicy, http: &HttpConfig) -> Headers {
        let num = |s: String| HeaderValue::from_str(&s).expect("numeric header");
        let surrogate_headers = cache
            .surrogate_key_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .map(|h| {
                // Cloudflare's Cache-Tag is comma-separated; the others use spaces.
                let sep = if h.as_str() == "cache-tag" { "," } else { " " };
                (h, sep)
            })
            .collect();
        Headers {
            content_cache_control: HeaderValue::from_static("public, max-age=31536000, immutable"),
            identity_cache_control: num(format!("public, max-age={}", cache.identity_max_age)),
            cdn_cache_control: num(format!("public, max-age={}", cache.cdn_max_age)),
            surrogate_control: num(format!("max-age={}", cache.cdn_max_age)),
            surrogate_headers,
            cors_origins: http.cors_origins.clone(),
            lifetimes: (cache.identity_max_age, cache.cdn_max_age),
        }
    }

    /// Issue 17: browser `Cache-Control`, CDN `Cache-Control` and
    /// `Surrogate-Control` of an identity answer kept at most `secs`.
    pub fn capped(&self, secs: u32) -> (HeaderValue, HeaderValue, HeaderValue) {
        let (browser, cdn) = self.lifetimes;
        let num = |s: String| HeaderValue::from_str(&s).expect("numeric header");
        (
            num(format!("public, max-age={}", browser.min(secs))),
            num(format!("public, max-age={}", cdn.min(secs))),
            num(format!("max-age={}", cdn.min(secs))),
        )
    }

    /// CORS for the API and the event stream: `*` by default, else the
    /// request's origin when it is one of the configured ones.
    pub fn apply_cors(&self, h: &mut HeaderMap, origin: Option<&HeaderValue>) {
        let origins = &self.cors_origins;
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
    pub fn insert_surrogate_keys(&self, h: &mut HeaderMap, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        for (name, sep) in &self.surrogate_headers {
            if let Ok(v) = HeaderValue::from_str(&keys.join(sep)) {
                h.insert(name.clone(), v);
            }
        }
    }

    /// Tag a response with one pre-built surrogate key (any separator fits).
    pub fn insert_surrogate_key(&self, h: &mut HeaderMap, key: &HeaderValue) {
        for (name, _) in &self.surrogate_headers {
            h.insert(name.clone(), key.clone());
        }
    }
}

/// The headers every response gets: `nosniff`, and a restrictive
/// `Content-Security-Policy` on anything that is not an image (unless the
/// response brings its own, like the demo page).
pub(super) fn apply_security_headers(h: &mut HeaderMap) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    let is_image = h
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"image/"));
    if !is_image && !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, CSP);
    }
}

pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(bytes.into()))
}

pub(super) fn empty() -> Body {
    full(Bytes::new())
}

/// A status with an empty body.
pub(super) fn status_only(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r
}

pub(super) fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut r = Response::new(full(
        serde_json::to_vec(value).expect("responses serialize"),
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, JSON);
    r.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
    r
}

pub(super) fn text_response(
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

/// Does the request's `If-None-Match` match `etag`?
pub(super) fn not_modified(req_headers: &HeaderMap, etag: &HeaderValue) -> bool {
    if_none_match(req_headers).is_some_and(|inm| inm.matches(etag.to_str().unwrap_or("")))
}

/// The request's `If-None-Match`, parsed.
pub(super) fn if_none_match(req_headers: &HeaderMap) -> Option<IfNoneMatch<'_>> {
    IfNoneMatch::parse(req_headers.get(header::IF_NONE_MATCH).map(|v| v.as_bytes()))
}

/// A variant as a response: 200 with the bytes (empty for HEAD) or 304.
pub(super) fn variant_response(
    req_headers: &HeaderMap,
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

pub(super) fn http_date(ms: u64) -> HeaderValue {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).expect("dates are valid headers")
}

/// Answer to a CORS preflight (`OPTIONS`); the origin is added by `handle`.
pub(super) fn preflight() -> Response<Body> {
    let mut r = status_only(StatusCode::NO_CONTENT);
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
