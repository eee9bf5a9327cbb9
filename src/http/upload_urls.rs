//! `POST /v1/upload-urls` (token required): a URL that lets a browser `PUT`
//! one avatar for exactly one key until it expires. The demo page mints its
//! own through [`upload_url_response`].

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use super::api::{check_token, read_body, MAX_JSON_BODY};
use super::auth::unix_seconds;
use super::error::error_response;
use super::response::json_response;
use super::{App, Body};
use crate::model::IdentityKeys;
use crate::spec;

pub(super) async fn upload_urls<B>(app: &App, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(e) = check_token(app, &req) {
        return error_response(e);
    }
    let body = match read_body(req, MAX_JSON_BODY).await {
        Ok(b) => b,
        Err(e) => return error_response(e),
    };
    match spec::parse_upload_url(&body, app.max_upload_url_ttl) {
        Ok(r) => upload_url_response(app, &r.keys, r.expires_in),
        Err(e) => error_response(e),
    }
}

/// Mint a signed upload URL for `keys`, valid for `ttl` seconds, as the JSON
/// answer `{"url", "method", "key", "expires"}`.
pub(super) fn upload_url_response(app: &App, keys: &IdentityKeys, ttl: u64) -> Response<Body> {
    let expires = unix_seconds().saturating_add(ttl);
    let signature = app.signer.sign("PUT", &keys.key, expires);
    let encoded =
        percent_encoding::utf8_percent_encode(&keys.key, percent_encoding::NON_ALPHANUMERIC);
    let url = format!("/v1/avatars/{encoded}?expires={expires}&signature={signature}");
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "url": url, "method": "PUT", "key": keys.key, "expires": expires }),
    )
}
