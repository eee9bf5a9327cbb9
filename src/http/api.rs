//! `/v1/avatars/{key}`: describe (GET/HEAD), upload (PUT, a token or a
//! signed URL), change the rating (PATCH), delete (DELETE). Also the request
//! body reader the API routes share (a size limit checked before buffering).

use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::access;
use super::error::{error_response, HttpError};
use super::limits::ClientKey;
use super::response::{json_response, status_only};
use super::{App, Body};
use crate::model::IdentityKeys;
use crate::service::Actor;
use crate::spec;

/// Largest JSON body of the small API requests (rating, upload URLs).
pub(super) const MAX_JSON_BODY: usize = 4096;

/// `raw_key` is the path after `/v1/avatars/`, still percent-encoded.
pub(super) async fn avatars<B>(app: &App, req: Request<B>, raw_key: &str) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let key = match spec::decode_key_segment(raw_key) {
        Ok(k) => k,
        Err(e) => return error_response(e),
    };
    let svc = &app.service;
    let method = req.method().clone();
    if method == Method::GET || method == Method::HEAD {
        return match svc.describe(&key).await {
            Ok(info) => json_response(StatusCode::OK, &info),
            Err(e) => error_response(e),
        };
    }
    // Who is asking: the audit trail's actor.
    let actor = match authorize(app, &req, &key) {
        Ok(actor) => actor,
        Err(e) => return error_response(e),
    };
    match method {
        Method::PUT => {
            let params = match spec::parse_upload(req.uri().query()) {
                Ok(p) => p,
                Err(e) => return error_response(e),
            };
            let body = match read_body(req, svc.max_upload_bytes()).await {
                Ok(b) => b,
                Err(e) => return error_response(e),
            };
            match svc.upload(&actor, &key, params, body).await {
                Ok(info) => json_response(StatusCode::OK, &info),
                Err(e) => error_response(e),
            }
        }
        Method::PATCH => {
            let body = match read_body(req, MAX_JSON_BODY).await {
                Ok(b) => b,
                Err(e) => return error_response(e),
            };
            let rating = match spec::parse_rating_patch(&body) {
                Ok(r) => r,
                Err(e) => return error_response(e),
            };
            match svc.set_rating(&actor, &key, rating).await {
                Ok(info) => json_response(StatusCode::OK, &info),
                Err(e) => error_response(e),
            }
        }
        Method::DELETE => match svc.delete(&actor, &key).await {
            Ok(()) => status_only(StatusCode::NO_CONTENT),
            Err(e) => error_response(e),
        },
        _ => error_response(HttpError::MethodNotAllowed("GET, HEAD, PUT, PATCH, DELETE")),
    }
}

/// Does the request carry a valid bearer token? Counts a failure.
pub(super) fn check_token<B>(app: &App, req: &Request<B>) -> Result<(), HttpError> {
    token_actor(app, req).map(|_| ())
}

/// The actor of a request that must carry a valid bearer token (its name).
/// Counts a failure.
pub(super) fn token_actor<B>(app: &App, req: &Request<B>) -> Result<Actor, HttpError> {
    if let Some(name) = token_name(app, req) {
        return Ok(Actor::Token(name));
    }
    count_auth_failure(app);
    Err(HttpError::Unauthorized)
}

/// Does the request carry a valid bearer token? Counts nothing.
pub(super) fn has_token<B>(app: &App, req: &Request<B>) -> bool {
    token_name(app, req).is_some()
}

/// The name of the request's valid bearer token, if any. Counts nothing.
fn token_name<B>(app: &App, req: &Request<B>) -> Option<String> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    app.tokens.check(auth)
}

pub(super) fn count_auth_failure(app: &App) {
    app.service
        .metrics()
        .auth_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Is this request allowed to change `key`, and who is it? A valid bearer
/// token (its name), or — for `PUT` only — a valid, unexpired signed-URL
/// signature for exactly this key, within the rate limits of anonymous
/// uploads (issue 16: per client address and per key; 429 over them).
fn authorize<B>(app: &App, req: &Request<B>, key: &str) -> Result<Actor, HttpError> {
    if let Some(name) = token_name(app, req) {
        return Ok(Actor::Token(name));
    }
    let signed = req.method() == Method::PUT
        && match (
            spec::parse_signed_url(req.uri().query()),
            IdentityKeys::parse(key),
        ) {
            // A signed URL may crop, but only the platform (a token) sets ratings.
            (Some(s), Ok(keys)) => {
                !s.sets_rating
                    && app.signer.verify(
                        "PUT",
                        &keys.key,
                        s.expires,
                        &s.signature,
                        super::auth::unix_seconds(),
                    )
            }
            _ => false,
        };
    if signed {
        let client = access::client_of(req, &app.http.trust_forwarded_for);
        let key = IdentityKeys::parse(key).map(|k| k.key).unwrap_or_default();
        app.limits
            .signed_upload(ClientKey::of(client), &key)
            .map_err(HttpError::from)?;
        return Ok(Actor::SignedUrl);
    }
    count_auth_failure(app);
    Err(HttpError::Unauthorized)
}

/// Read a request body, refusing more than `limit` bytes (413) before buffering it.
pub(super) async fn read_body<B>(req: Request<B>, limit: usize) -> Result<Bytes, HttpError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(HttpError::BodyTooLarge(limit));
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(HttpError::BodyTooLarge(limit))
        }
        Err(e) => Err(HttpError::BadBody(e.to_string())),
    }
}
