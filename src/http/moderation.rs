//! Issue 16's API, token only: `POST /v1/takedowns` (take content down),
//! `GET /v1/takedowns` (paged, hash order), `DELETE /v1/takedowns/{hash}`
//! (lift), `GET /v1/audit?after=&limit=` (the audit trail).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use super::api::{read_body, token_actor, MAX_JSON_BODY};
use super::error::error_response;
use super::response::json_response;
use super::router::method_not_allowed;
use super::{App, Body};
use crate::model::ContentHash;
use crate::spec;

/// `/v1/takedowns` and `/v1/takedowns/{hash}` (`rest`: what follows
/// `/v1/takedowns`).
pub(super) async fn takedowns<B>(app: &App, req: Request<B>, rest: &str) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let actor = match token_actor(app, &req) {
        Ok(a) => a,
        Err(e) => return error_response(e),
    };
    let svc = &app.service;
    let method = req.method().clone();
    match (rest, &method) {
        ("", &Method::GET) => {
            let (after, limit) = match spec::parse_takedown_page(req.uri().query()) {
                Ok(p) => p,
                Err(e) => return error_response(e),
            };
            match svc.takedowns(after, limit).await {
                Ok(page) => json_response(StatusCode::OK, &page),
                Err(e) => error_response(e),
            }
        }
        ("", &Method::POST) => {
            let body = match read_body(req, MAX_JSON_BODY).await {
                Ok(b) => b,
                Err(e) => return error_response(e),
            };
            let parsed = match spec::parse_takedown(&body) {
                Ok(p) => p,
                Err(e) => return error_response(e),
            };
            match svc.take_down(&actor, parsed).await {
                Ok((info, true)) => json_response(StatusCode::CREATED, &info),
                Ok((info, false)) => json_response(StatusCode::OK, &info),
                Err(e) => error_response(e),
            }
        }
        ("", _) => method_not_allowed("GET, POST"),
        (hash, &Method::DELETE) => {
            let Some(Ok(hash)) = hash.strip_prefix('/').map(str::parse::<ContentHash>) else {
                return error_response(spec::SpecError::BadHash);
            };
            match svc.lift(&actor, hash).await {
                Ok(info) => json_response(StatusCode::OK, &info),
                Err(e) => error_response(e),
            }
        }
        _ => method_not_allowed("DELETE"),
    }
}

/// `GET /v1/audit?after=<id>&limit=<n>`.
pub(super) async fn audit<B>(app: &App, req: &Request<B>) -> Response<Body> {
    if let Err(e) = token_actor(app, req) {
        return error_response(e);
    }
    let (after, limit) = match spec::parse_audit_page(req.uri().query()) {
        Ok(p) => p,
        Err(e) => return error_response(e),
    };
    match app.service.audit_page(after, limit).await {
        Ok(page) => json_response(StatusCode::OK, &page),
        Err(e) => error_response(e),
    }
}
