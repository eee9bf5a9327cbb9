//! `/avatar/{hash}[.ext]?s=&d=&f=&r=&name=&initials=`: the identity URL.
//! Forgiving parse, the service's answer (avatar, default, 404 or redirect),
//! then the cache policy: short in browsers, long at the CDN (purged on
//! change by surrogate keys), `no-store` for fault defaults, five seconds
//! with a warning while the index replica is cut off. Issue 17: an upstream's
//! avatar says `X-Avatar-Source: fallback` and is kept no longer than its
//! fallback entry; a failed upstream fetch is `no-store`.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::error::{error_response, HttpError};
use super::response::{
    http_date, status_only, text_response, variant_response, CDN_CACHE_CONTROL, NO_STORE,
    STALE_CACHE_CONTROL, STALE_WARNING, STAR, SURROGATE_CONTROL, VARY_ACCEPT, X_AVATAR_DEFAULT,
    X_AVATAR_SOURCE,
};
use super::{App, Body};
use crate::service::{IdentityAnswer, Lifetime};
use crate::spec;

/// `rest` is the path after `/avatar/`.
pub(super) async fn identity<B>(app: &App, req: &Request<B>, rest: &str) -> Response<Body> {
    let parsed = spec::parse_identity(rest, req.uri().query());
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let head = req.method() == Method::HEAD;
    let negotiated = parsed.format.is_none();
    // Issue 14: a versioned URL (`v=`) waits for this node to reach that version.
    let (reply, behind) = match app.service.identity_at_version(&parsed, accept).await {
        Ok(a) => a,
        Err(e) => return error_response(e),
    };
    // Issue 17: a fallback entry caps every lifetime; a failed fetch none.
    let (browser, cdn, surrogate) = match reply.lifetime {
        Lifetime::AtMost(secs) => app.headers.capped(secs),
        _ => (
            app.headers.identity_cache_control.clone(),
            app.headers.cdn_cache_control.clone(),
            app.headers.surrogate_control.clone(),
        ),
    };
    let browser = match reply.lifetime {
        Lifetime::NoStore => NO_STORE,
        _ => browser,
    };
    let (mut r, cacheable) = match reply.answer {
        IdentityAnswer::Avatar {
            variant,
            content_url,
            record,
            ..
        } => {
            let shown = Shown {
                variant: &variant,
                content_url: &content_url,
                modified_ms: record.updated_ms,
                negotiated,
            };
            (avatar_response(app, req, &shown, browser), true)
        }
        IdentityAnswer::Fallback {
            variant,
            content_url,
            fetched_ms,
            ..
        } => {
            let shown = Shown {
                variant: &variant,
                content_url: &content_url,
                modified_ms: fetched_ms,
                negotiated,
            };
            let mut r = avatar_response(app, req, &shown, browser);
            r.headers_mut()
                .insert(X_AVATAR_SOURCE, HeaderValue::from_static("fallback"));
            (r, true)
        }
        IdentityAnswer::Default {
            variant,
            reason,
            fault,
            record,
        } => {
            let cc = if fault { NO_STORE } else { browser };
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
            h.insert(header::CACHE_CONTROL, browser);
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
            h.insert(X_AVATAR_DEFAULT, HeaderValue::from_static("404"));
            (r, true)
        }
        IdentityAnswer::Redirect(url) => match HeaderValue::from_str(&url) {
            Ok(loc) => {
                let mut r = status_only(StatusCode::FOUND);
                let h = r.headers_mut();
                h.insert(header::LOCATION, loc);
                h.insert(header::CACHE_CONTROL, browser);
                h.insert(X_AVATAR_DEFAULT, HeaderValue::from_static("url"));
                (r, true)
            }
            Err(_) => return error_response(HttpError::BadDefaultUrl),
        },
    };
    if let Some(outcome) = reply.cache {
        r.extensions_mut().insert(outcome);
    }
    let cacheable = cacheable && !behind && reply.lifetime != Lifetime::NoStore;
    let h = r.headers_mut();
    if behind {
        h.insert(header::CACHE_CONTROL, NO_STORE);
    }
    if reply.stale && cacheable {
        // Cut off from the cluster: the answer comes from this node's last
        // replica of the index; keep it briefly and say so. (An answer behind
        // the version its URL names stays `no-store`, stale or not, and so
        // do one after a failed upstream fetch and a fault default: issue
        // 20, a bounded replica's failed read of an identity it does not
        // hold.)
        h.insert(header::CACHE_CONTROL, STALE_CACHE_CONTROL);
        h.insert(header::WARNING, STALE_WARNING);
        h.insert(CDN_CACHE_CONTROL, STALE_CACHE_CONTROL);
        h.insert(SURROGATE_CONTROL, STALE_CACHE_CONTROL);
        return r;
    }
    if cacheable {
        // Long at the CDN (purged on change), short in browsers.
        h.insert(CDN_CACHE_CONTROL, cdn);
        h.insert(SURROGATE_CONTROL, surrogate);
        app.headers.insert_surrogate_keys(h, &reply.keys);
    } else {
        h.insert(CDN_CACHE_CONTROL, NO_STORE);
        h.insert(SURROGATE_CONTROL, NO_STORE);
    }
    r
}

/// An avatar an identity URL shows: its variant, the immutable URL of the
/// same bytes, and when it last changed.
struct Shown<'a> {
    variant: &'a crate::service::Variant,
    content_url: &'a str,
    modified_ms: u64,
    /// The format came from `Accept` (the answer varies on it).
    negotiated: bool,
}

/// The bytes (or, with `--identity-redirect`, a 302 to the content URL).
fn avatar_response<B>(
    app: &App,
    req: &Request<B>,
    shown: &Shown<'_>,
    browser: HeaderValue,
) -> Response<Body> {
    let (head, negotiated) = (req.method() == Method::HEAD, shown.negotiated);
    let location = HeaderValue::from_str(shown.content_url).expect("content URLs are ASCII");
    let mut r = if app.http.identity_redirect {
        let mut r = status_only(StatusCode::FOUND);
        let h = r.headers_mut();
        h.insert(header::LOCATION, location);
        h.insert(header::CACHE_CONTROL, browser);
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
        if negotiated {
            h.insert(header::VARY, VARY_ACCEPT);
        }
        r
    } else {
        let mut r = variant_response(req.headers(), head, shown.variant, browser, negotiated);
        r.headers_mut().insert(header::CONTENT_LOCATION, location);
        r
    };
    r.headers_mut()
        .insert(header::LAST_MODIFIED, http_date(shown.modified_ms));
    r
}
