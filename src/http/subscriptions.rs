//! `POST /v1/subscriptions` and the `sub=` parameter of `/v1/events` (issue 14):
//! a page subscribes any number of identities with one request and streams
//! their changes over one connection.
//!
//! `POST /v1/subscriptions` with `{"keys": ["<md5|sha256 hex>", ...]}` (any
//! content type: browsers send `text/plain` to avoid a CORS preflight)
//! answers `200` with
//! `{"id", "keys", "expires_in", "last_event_id", "events", "recent"}`:
//! `events` is the stream URL, `last_event_id` the log position at creation
//! (resume from it so nothing falls between the two requests), and `recent`
//! maps each subscribed key that changed within the browser-cache window
//! ([`recent_window_ms`]) to `{"version", "hash"}`, so a page whose browser
//! still holds an older identity answer catches up without a request per
//! identity. Public like keyed event streams (a page already shows these
//! avatars); per-address rate limits fit in front of it (issue 16).
//!
//! Errors (mapped in [`super::error`]): malformed body or key → 400 naming the
//! first bad key, nothing stored; too many keys or too large a body → 413;
//! unknown or expired `sub` → 404 (the client re-creates it once).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::error::ApiError;
use super::{error_response, json_response, read_body, service_error, App, Body};
use crate::model::IdentityHash;
use crate::service::{IdentityAnswer, IdentityReply, ServiceError};
use crate::spec::IdentityRequest;
use crate::store::subscriptions::{MemorySubscriptions, SubscriptionStore};
use crate::subscription::{
    parse_body, version_param, SubscriptionError, SubscriptionId, MAX_SUBSCRIPTION_BODY,
    SUBSCRIPTION_TTL, VERSION_WAIT,
};

/// Slack added to the browser's identity-cache lifetime for `recent`.
pub const RECENT_SLACK_MS: u64 = 60_000;
/// Identity look-ups between two yields to the reactor while building `recent`.
const LOOKUPS_PER_YIELD: usize = 256;

/// The subscription store of this process: the store's shared one (NATS) or
/// node-local memory (embedded).
pub fn registry(store: &crate::store::SharedStore) -> Arc<dyn SubscriptionStore> {
    store
        .subscriptions()
        .unwrap_or_else(|| Arc::new(MemorySubscriptions::default()))
}

/// How far back `recent` looks: what a browser may hold from before the
/// change (the identity URL's `max-age`) plus [`RECENT_SLACK_MS`].
pub fn recent_window_ms(identity_max_age_s: u32) -> u64 {
    u64::from(identity_max_age_s) * 1000 + RECENT_SLACK_MS
}

/// `POST /v1/subscriptions`.
pub(super) async fn create<B>(app: &App, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = match read_body(req, MAX_SUBSCRIPTION_BODY).await {
        Ok(b) => b,
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(&ApiError::from(&SubscriptionError::BodyTooLarge {
                limit: MAX_SUBSCRIPTION_BODY,
            }))
        }
        Err(e) => return error_response(&e),
    };
    let keys = match parse_body(&body) {
        Ok(k) => k,
        Err(e) => return error_response(&ApiError::from(&e)),
    };
    let store = &app.service.store;
    // The log position first: every later change reaches the stream (which
    // resumes from here), every earlier one is in `recent` if it matters.
    let head = match store.head().await {
        Ok(h) => h,
        Err(e) => return service_error(&e.into()),
    };
    if let Err(e) = app.subscriptions.put(&keys).await {
        return service_error(&e.into());
    }
    let since = crate::store::now_ms()
        .saturating_sub(recent_window_ms(app.service.config.identity_max_age));
    let mut recent = serde_json::Map::new();
    for (i, key) in keys.keys().iter().enumerate() {
        if i % LOOKUPS_PER_YIELD == LOOKUPS_PER_YIELD - 1 {
            tokio::task::yield_now().await;
        }
        let record = match store.identity(key).await {
            Ok(r) => r,
            Err(e) => return service_error(&e.into()),
        };
        if let Some(r) = record.filter(|r| r.updated_ms >= since) {
            let hash = r.avatar.map(|a| a.hash.to_string());
            recent.insert(
                key.to_hex(),
                serde_json::json!({ "version": r.version, "hash": hash }),
            );
        }
    }
    let id = keys.id();
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "id": id.to_string(),
            "keys": keys.len(),
            "expires_in": SUBSCRIPTION_TTL.as_secs(),
            "last_event_id": head,
            "events": format!("/v1/events?sub={id}"),
            "recent": recent,
        }),
    )
}

/// The keys of subscription `raw` for an event stream: 400 for a malformed
/// id, 404 for an unknown or expired one.
pub(super) async fn keys_of(app: &App, raw: &str) -> Result<Vec<IdentityHash>, Response<Body>> {
    let id: SubscriptionId = raw
        .trim()
        .parse()
        .map_err(|e: SubscriptionError| error_response(&ApiError::from(&e)))?;
    match app.subscriptions.get(&id).await {
        Ok(Some(keys)) => Ok(keys.keys().to_vec()),
        Ok(None) => Err(error_response(&ApiError::not_found("subscription"))),
        Err(e) => Err(service_error(&e.into())),
    }
}

/// The identity answer for a live page that asks for version `v=` (what the
/// client puts in the URL after an event): on a cluster node whose replica is
/// still behind that version, wait up to [`VERSION_WAIT`] for it rather than
/// put the old picture under the new URL in every cache. Returns the reply
/// and whether it is still behind (then the caller must not let it be cached).
pub(super) async fn identity_at_version(
    app: &App,
    parsed: &IdentityRequest,
    query: Option<&str>,
    accept: Option<&str>,
) -> Result<(IdentityReply, bool), ServiceError> {
    let want = version_param(query);
    let deadline = tokio::time::Instant::now() + VERSION_WAIT;
    loop {
        let reply = app.service.identity(parsed, accept).await?;
        let Some(want) = want else {
            return Ok((reply, false));
        };
        let have = match &reply.answer {
            IdentityAnswer::Avatar { record, .. } => record.version,
            IdentityAnswer::Default { record, .. } => record.as_ref().map_or(0, |r| r.version),
            _ => return Ok((reply, false)),
        };
        if have >= want || tokio::time::Instant::now() >= deadline {
            return Ok((reply, have < want));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
