//! `/c/{hash}[.ext]?s=N`: immutable content, the hot route. Parse, ask the
//! service, answer with a year-long immutable lifetime and the master's
//! surrogate key (so a deletion can purge every content URL of it).

use http::header;
use http::{Method, Request, Response, StatusCode};

use super::error::error_response;
use super::response::{
    if_none_match, status_only, variant_response, CDN_CACHE_CONTROL, STAR, SURROGATE_CONTROL,
    VARY_ACCEPT,
};
use super::{App, Body};
use crate::model::ContentHash;
use crate::service::{ContentAnswer, ServiceError};
use crate::spec;

/// `rest` is the path after `/c/`.
pub(super) async fn content<B>(app: &App, req: &Request<B>, rest: &str) -> Response<Body> {
    let parsed = match spec::parse_content(rest, req.uri().query()) {
        Ok(p) => p,
        Err(e) => return error_response(e),
    };
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let reply = match app
        .service
        .content(&parsed, accept, if_none_match(req.headers()))
        .await
    {
        Ok(r) => r,
        Err(ServiceError::Gone(hash)) => return gone(app, &hash),
        Err(e) => return error_response(e),
    };
    let negotiated = parsed.format.is_none();
    let cache_control = app.headers.content_cache_control.clone();
    let mut r = match &reply.answer {
        ContentAnswer::NotModified { etag } => {
            let mut r = status_only(StatusCode::NOT_MODIFIED);
            let h = r.headers_mut();
            h.insert(header::ETAG, etag.clone());
            h.insert(header::CACHE_CONTROL, cache_control);
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
            if negotiated {
                h.insert(header::VARY, VARY_ACCEPT);
            }
            return r;
        }
        ContentAnswer::Variant(v) => variant_response(
            req.headers(),
            req.method() == Method::HEAD,
            v,
            cache_control,
            negotiated,
        ),
    };
    // Lets a deletion purge the content URLs of the removed avatar (one key:
    // the pre-built hex value, whatever the separator).
    app.headers
        .insert_surrogate_key(r.headers_mut(), &reply.surrogate_key);
    if let Some(outcome) = reply.cache {
        r.extensions_mut().insert(outcome);
    }
    r
}

/// Issue 16: taken-down content answers 410 with the JSON error, cached like
/// an identity answer (briefly in browsers, until purged at the CDN) and
/// tagged with the content's surrogate key, so a lift's purge reaches it.
fn gone(app: &App, hash: &ContentHash) -> Response<Body> {
    let mut r = error_response(ServiceError::Gone(*hash));
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        app.headers.identity_cache_control.clone(),
    );
    h.insert(CDN_CACHE_CONTROL, app.headers.cdn_cache_control.clone());
    h.insert(SURROGATE_CONTROL, app.headers.surrogate_control.clone());
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
    app.headers.insert_surrogate_keys(h, &[hash.to_hex()]);
    r
}
