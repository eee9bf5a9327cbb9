//! The router: path and method → the module of that URL family, and the
//! metrics route class of the answer. Method checks live here, so every
//! handler is called only for a method it serves.
//!
//! Only the hot route, `/c/`, is awaited inline; every other handler's
//! future is boxed where it is called. The HTTP layer moves each request's
//! future into a box, so its size is copied per request: inlined, the
//! largest handler's state was copied for every cache hit (the request's
//! future was 6.9 KB, 2.2 KB now; `a_requests_future_stays_small` in
//! `tests/service.rs` keeps it under 3 KiB).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use super::error::{error_response, HttpError};
use super::response::text_response;
use super::{
    api, assets, backup, content, events, health, identity, moderation, subscriptions, upload_urls,
    App, Body,
};
use crate::metrics::Route;

pub(super) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    error_response(HttpError::MethodNotAllowed(allow))
}

pub(super) async fn route<B>(app: &App, req: Request<B>) -> (Route, Response<Body>)
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The hot route first, borrowing the path (no copy).
    if let Some(rest) = req.uri().path().strip_prefix("/c/") {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return (Route::Content, method_not_allowed("GET, HEAD"));
        }
        return (Route::Content, content::content(app, &req, rest).await);
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
        return (
            Route::Identity,
            Box::pin(identity::identity(app, &req, rest)).await,
        );
    }
    if path == "/v1/events" {
        if method != Method::GET {
            return (Route::ApiOther, method_not_allowed("GET"));
        }
        return (Route::ApiOther, Box::pin(events::events(app, &req)).await);
    }
    // Issue 14: subscriptions of any size for one event stream.
    if path == "/v1/subscriptions" {
        if method != Method::POST {
            return (Route::ApiOther, method_not_allowed("POST"));
        }
        return (
            Route::ApiOther,
            Box::pin(subscriptions::create(app, req)).await,
        );
    }
    if path == "/v1/backup" {
        if method != Method::GET {
            return (Route::ApiOther, method_not_allowed("GET"));
        }
        return (Route::ApiOther, Box::pin(backup::backup(app, &req)).await);
    }
    if path == "/v1/upload-urls" {
        if method != Method::POST {
            return (Route::ApiOther, method_not_allowed("POST"));
        }
        return (
            Route::ApiOther,
            Box::pin(upload_urls::upload_urls(app, req)).await,
        );
    }
    // Issue 16: takedowns and the audit trail.
    if let Some(rest) = path
        .strip_prefix("/v1/takedowns")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        return (
            Route::ApiOther,
            Box::pin(moderation::takedowns(app, req, rest)).await,
        );
    }
    if path == "/v1/audit" {
        if method != Method::GET {
            return (Route::ApiOther, method_not_allowed("GET"));
        }
        return (
            Route::ApiOther,
            Box::pin(moderation::audit(app, &req)).await,
        );
    }
    if let Some(key) = path.strip_prefix("/v1/avatars/") {
        return (
            Route::ApiAvatars,
            Box::pin(api::avatars(app, req, key)).await,
        );
    }
    if let Some(answer) = assets::route(app, &method, &path, req.headers()) {
        return answer;
    }
    match (path.as_str(), &method) {
        ("/healthz", _) if read => (Route::Health, health::healthz()),
        ("/readyz", _) if read => (Route::Ready, health::readyz(app)),
        ("/metrics", &Method::GET) => {
            // Delivery and the store registered their collectors with the
            // one writer at start-up (cli::build_app_on).
            let text = app.service.metrics_text();
            (
                Route::Metrics,
                text_response(StatusCode::OK, "text/plain; version=0.0.4", text),
            )
        }
        ("/healthz", _) | ("/readyz", _) | ("/metrics", _) => {
            (Route::Other, method_not_allowed("GET"))
        }
        _ => (Route::Other, error_response(HttpError::RouteNotFound)),
    }
}
