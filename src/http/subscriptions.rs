//! `POST /v1/subscriptions` (issue 14): a page subscribes any number of
//! identities with one request and streams their changes over one
//! connection, `GET /v1/events?sub=<id>` (see `events`).
//!
//! Body `{"keys": ["<md5|sha256 hex>", ...]}` with any content type (browsers
//! send `text/plain` to avoid a CORS preflight); answer `200`
//! `{"id", "keys", "expires_in", "last_event_id", "events", "recent"}`:
//! `events` is the stream URL, `last_event_id` the log position at creation
//! (resume from it so nothing falls between the two requests), `recent` maps
//! each subscribed key that changed within the browser-cache window
//! ([`App::recent_window_ms`]) to `{"version", "hash"}`, so a page whose
//! browser still holds an older identity answer catches up without a request
//! per identity. Public like keyed event streams (a page already shows these
//! avatars); anonymous requests are rate-limited per client address (issue 16,
//! `--subscriptions-per-address`).
//!
//! Errors (mapped in `error`): malformed body or key → 400 naming the first
//! bad key, nothing stored; too many keys or too large a body → 413.

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::access::client_of;
use super::api::{has_token, read_body};
use super::error::{error_response, HttpError};
use super::limits::ClientKey;
use super::response::json_response;
use super::{App, Body};
use crate::model::subscription::{SubscriptionError, MAX_SUBSCRIPTION_BODY, SUBSCRIPTION_TTL};
use crate::spec;

/// Slack added to the browser's identity-cache lifetime for `recent`.
pub const RECENT_SLACK_MS: u64 = 60_000;

/// How far back `recent` looks: what a browser may hold from before the
/// change (the identity URL's `max-age`) plus [`RECENT_SLACK_MS`].
pub fn recent_window_ms(identity_max_age_s: u32) -> u64 {
    u64::from(identity_max_age_s) * 1000 + RECENT_SLACK_MS
}

pub(super) async fn create<B>(app: &App, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Issue 16: anonymous subscriptions are rate-limited per client address.
    if !has_token(app, &req) {
        let client = client_of(&req, &app.http.trust_forwarded_for);
        if let Err(r) = app.limits.subscription(ClientKey::of(client)) {
            return error_response(HttpError::from(r));
        }
    }
    let body = match read_body(req, MAX_SUBSCRIPTION_BODY).await {
        Ok(b) => b,
        Err(HttpError::BodyTooLarge(_)) => {
            return error_response(spec::SpecError::from(SubscriptionError::BodyTooLarge {
                limit: MAX_SUBSCRIPTION_BODY,
            }))
        }
        Err(e) => return error_response(e),
    };
    let keys = match spec::parse_subscription(&body) {
        Ok(k) => k,
        Err(e) => return error_response(spec::SpecError::from(e)),
    };
    let since = super::auth::unix_seconds()
        .saturating_mul(1000)
        .saturating_sub(app.recent_window_ms);
    let s = match app.service.create_subscription(&keys, since).await {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    let recent: serde_json::Map<String, serde_json::Value> = s
        .recent
        .into_iter()
        .map(|(k, version, hash)| (k, serde_json::json!({ "version": version, "hash": hash })))
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "id": s.id.to_string(),
            "keys": s.keys,
            "expires_in": SUBSCRIPTION_TTL.as_secs(),
            "last_event_id": s.last_event_id,
            "events": format!("/v1/events?sub={}", s.id),
            "recent": recent,
        }),
    )
}
