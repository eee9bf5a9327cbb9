//! `GET /v1/events[?keys=h1,h2 | ?sub=<id>][&last_event_id=N]`: server-sent events of
//! avatar changes. `Last-Event-ID` (or `last_event_id`) replays what was
//! missed before going live; a comment line every 15 s keeps proxies from
//! closing an idle stream. The stream itself is the service's
//! ([`crate::service::Service::event_stream`]); this is its HTTP shape.
//!
//! Privacy (issue 16 item 4): the unfiltered stream — every identity that
//! changes, with timestamps — needs a token; a keyed stream (`keys=` or
//! `sub=`, what the browser client uses) stays public, since a page already
//! shows those avatars. Anonymous keyed streams are limited per client
//! address (`--event-streams-per-address`, open at once): the slot is held by
//! the response body and released when it is dropped.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::Either;

use super::access::client_of;
use super::api::{check_token, has_token};
use super::error::{error_response, HttpError};
use super::limits::{ClientKey, StreamSlot};
use super::response::{NO_STORE, STAR};
use super::{App, Body};
use crate::service::ServiceError;
use crate::spec;

/// A response body fed by a channel (server-sent events, backup streams).
pub(super) struct ChannelBody(pub(super) tokio::sync::mpsc::Receiver<Bytes>);

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

/// An event stream's body, holding its client's stream slot (if limited)
/// until hyper drops it.
struct Slotted {
    body: ChannelBody,
    _slot: Option<StreamSlot>,
}

impl hyper::body::Body for Slotted {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }
}

pub(super) async fn events<B>(app: &App, req: &Request<B>) -> Response<Body> {
    let mut parsed = match spec::parse_events(
        req.uri().query(),
        req.headers().get("last-event-id").map(|v| v.as_bytes()),
    ) {
        Ok(p) => p,
        Err(e) => return error_response(e),
    };
    let slot = if parsed.keys.is_empty() && parsed.sub.is_none() {
        if let Err(e) = check_token(app, req) {
            return error_response(e);
        }
        None
    } else if has_token(app, req) {
        None
    } else {
        let client = client_of(req, &app.http.trust_forwarded_for);
        match app.limits.open_stream(ClientKey::of(client)) {
            Ok(slot) => slot,
            Err(r) => return error_response(HttpError::from(r)),
        }
    };
    // Issue 14: `sub=` names the keys of a `POST /v1/subscriptions`.
    if let Some(id) = parsed.sub {
        match app.service.subscription(&id).await {
            Ok(Some(keys)) => parsed.keys = keys.keys().to_vec(),
            Ok(None) => return error_response(ServiceError::NotFound("subscription")),
            Err(e) => return error_response(e),
        }
    }
    let rx = app.service.event_stream(parsed, app.shutdown.clone());
    let body = Slotted {
        body: ChannelBody(rx),
        _slot: slot,
    };
    let mut r = Response::new(Either::Right(BoxBody::new(body)));
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
