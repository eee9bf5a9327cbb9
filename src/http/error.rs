//! The one place that maps errors to HTTP status codes and JSON bodies.
//!
//! Client errors are 4xx with `{"error": "<code>", "message": "<what is wrong>"}`;
//! server faults are 5xx with a message that reveals no internals (the detail
//! travels with the response as an [`ErrorDetail`] extension, which `handle`
//! logs with the request id). Whether an error is 4xx, 5xx or 503/507 comes
//! from its [`Fault`]; this module only picks the code within the class.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

use super::Body;
use crate::model::subscription::SubscriptionError;
use crate::model::Fault;
use crate::pipeline::{AnimationLimit, PipelineError};
use crate::service::ServiceError;
use crate::spec::SpecError;
use crate::store::StoreError;

/// An error answer: status, stable machine code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// What went wrong inside, for the log only (server faults).
    pub detail: Option<String>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// `Retry-After`, seconds, when it is not the 503's default of 1.
    pub retry_after: Option<u64>,
}

/// The internal detail of a server fault, attached to its response for the
/// log line `handle` writes; never sent to the client.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

/// Failures of the HTTP layer itself (routing, bodies, timeouts, auth).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("route not found")]
    RouteNotFound,
    #[error("allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("unauthorized")]
    Unauthorized,
    #[error("upload exceeds the limit of {0} bytes")]
    BodyTooLarge(usize),
    #[error("could not read the request body: {0}")]
    BadBody(String),
    #[error("request not completed within {0} s")]
    Timeout(u64),
    #[error("default URL is not a valid header value")]
    BadDefaultUrl,
    /// `/readyz` while the node cannot serve correct answers: the reason.
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// Issue 16: an anonymous client over a rate limit (`http::limits`).
    #[error("{what}; retry in {retry_after} s")]
    RateLimited {
        what: &'static str,
        retry_after: u64,
    },
}

#[derive(Serialize)]
struct JsonBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            allow: None,
            retry_after: None,
        }
    }

    /// A server fault: a fixed public message, the detail kept for the log.
    fn internal(public: &'static str, detail: String) -> ApiError {
        ApiError {
            detail: Some(detail),
            ..ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", public)
        }
    }

    /// The JSON body.
    pub fn json(&self) -> Vec<u8> {
        serde_json::to_vec(&JsonBody {
            error: self.code,
            message: &self.message,
        })
        .expect("error bodies serialize")
    }

    /// The response: status, JSON body, `no-store`; `Retry-After` on a 503
    /// (1 s unless the error says otherwise) and wherever the error sets it.
    pub fn response(&self) -> Response<Body> {
        let mut r = Response::new(super::response::full(Bytes::from(self.json())));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, super::response::JSON);
        h.insert(header::CACHE_CONTROL, super::response::NO_STORE);
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(allow) = self.allow {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(d) = &self.detail {
            r.extensions_mut().insert(ErrorDetail(d.clone()));
        }
        r
    }
}

/// An error as a response (the one way handlers answer a failure).
pub fn error_response(e: impl Into<ApiError>) -> Response<Body> {
    e.into().response()
}

impl From<&HttpError> for ApiError {
    fn from(e: &HttpError) -> ApiError {
        use StatusCode as S;
        let (status, code) = match e {
            HttpError::RouteNotFound => (S::NOT_FOUND, "not_found"),
            HttpError::MethodNotAllowed(_) => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            HttpError::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            HttpError::BodyTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "body_too_large"),
            HttpError::BadBody(_) => (S::BAD_REQUEST, "bad_body"),
            HttpError::Timeout(_) => (S::REQUEST_TIMEOUT, "request_timeout"),
            HttpError::BadDefaultUrl => (S::BAD_REQUEST, "bad_default"),
            HttpError::NotReady(_) => (S::SERVICE_UNAVAILABLE, "not_ready"),
            HttpError::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limited"),
        };
        let mut a = ApiError::new(status, code, e.to_string());
        if let HttpError::MethodNotAllowed(allow) = e {
            a.allow = Some(allow);
        }
        if let HttpError::RateLimited { retry_after, .. } = e {
            a.retry_after = Some(*retry_after);
        }
        a
    }
}

impl From<HttpError> for ApiError {
    fn from(e: HttpError) -> ApiError {
        ApiError::from(&e)
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> ApiError {
        ApiError::from(&ServiceError::from(e))
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        ApiError::from(&e)
    }
}

impl From<&ServiceError> for ApiError {
    fn from(e: &ServiceError) -> ApiError {
        use StatusCode as S;
        match e.fault() {
            Fault::Server => {
                let public = match e {
                    ServiceError::Pool(_) => "the image could not be processed",
                    ServiceError::Pipeline(_) => "image processing failed",
                    ServiceError::Store(_) => "storage error",
                    _ => "internal error",
                };
                return ApiError::internal(public, e.to_string());
            }
            Fault::Unavailable => {
                return match e {
                    ServiceError::Store(s) if matches!(s.as_ref(), StoreError::Full) => {
                        ApiError::new(
                            S::INSUFFICIENT_STORAGE,
                            "storage_full",
                            "the server's storage is full",
                        )
                    }
                    ServiceError::Store(_) => ApiError::new(
                        S::SERVICE_UNAVAILABLE,
                        "storage_unavailable",
                        "the server's storage is read-only or unavailable",
                    ),
                    // Issue 16: the policy hook failed and failures are closed.
                    ServiceError::Policy(_) => ApiError {
                        retry_after: Some(crate::policy::RETRY_AFTER_SECS),
                        ..ApiError::new(
                            S::SERVICE_UNAVAILABLE,
                            "policy_unavailable",
                            "the upload could not be checked against the platform's policy; retry shortly",
                        )
                    },
                    _ => ApiError::new(
                        S::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "too many images queued for processing; retry shortly",
                    ),
                };
            }
            Fault::Client => {}
        }
        match e {
            ServiceError::Spec(SpecError::Key(k)) | ServiceError::Key(k) => {
                ApiError::new(S::BAD_REQUEST, "bad_key", k.to_string())
            }
            ServiceError::Spec(SpecError::Subscription(e)) => subscription_error(e),
            ServiceError::Spec(e) => ApiError::new(S::BAD_REQUEST, "bad_request", e.to_string()),
            ServiceError::ContentUnreadable => ApiError::new(
                S::NOT_FOUND,
                "content_unavailable",
                "stored content is missing or corrupt",
            ),
            ServiceError::Pipeline(p) => pipeline_error(p),
            ServiceError::NotFound(what) => not_found(what),
            ServiceError::Policy(p) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "rejected_by_policy", p.to_string())
            }
            ServiceError::Store(_) | ServiceError::Pool(_) => not_found("avatar"),
            // Issue 16: takedowns.
            ServiceError::Blocked(_) => {
                ApiError::new(S::UNAVAILABLE_FOR_LEGAL_REASONS, "blocked", e.to_string())
            }
            ServiceError::Gone(_) => ApiError::new(S::GONE, "gone", e.to_string()),
        }
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{what} not found"),
    )
}

/// Subscriptions (issue 14): the client's fault, always.
fn subscription_error(e: &SubscriptionError) -> ApiError {
    use StatusCode as S;
    let (status, code) = match e {
        SubscriptionError::BadBody(_) => (S::BAD_REQUEST, "bad_request"),
        SubscriptionError::BadKey { .. } => (S::BAD_REQUEST, "bad_key"),
        SubscriptionError::Empty => (S::BAD_REQUEST, "no_keys"),
        SubscriptionError::BadId => (S::BAD_REQUEST, "bad_subscription"),
        SubscriptionError::TooManyKeys { .. } => (S::PAYLOAD_TOO_LARGE, "too_many_keys"),
        SubscriptionError::BodyTooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "body_too_large"),
    };
    ApiError::new(status, code, e.to_string())
}

/// A client fault of the pipeline: the code names what is wrong with the upload.
fn pipeline_error(p: &PipelineError) -> ApiError {
    use StatusCode as S;
    let (status, code) = match p {
        PipelineError::Empty => (S::BAD_REQUEST, "empty_body"),
        PipelineError::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "body_too_large"),
        PipelineError::UnsupportedFormat { .. } => {
            (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_format")
        }
        PipelineError::DimensionsTooLarge { .. } => (S::UNPROCESSABLE_ENTITY, "image_too_large"),
        PipelineError::LimitExceeded(_) => (S::UNPROCESSABLE_ENTITY, "image_too_large"),
        PipelineError::MetadataBomb(_) => (S::UNPROCESSABLE_ENTITY, "metadata_bomb"),
        PipelineError::Decode(_) => (S::UNPROCESSABLE_ENTITY, "invalid_image"),
        PipelineError::BadCrop(_) => (S::UNPROCESSABLE_ENTITY, "bad_crop"),
        PipelineError::AnimationLimit { limit, .. } => match limit {
            AnimationLimit::Frames => (S::UNPROCESSABLE_ENTITY, "too_many_frames"),
            AnimationLimit::Pixels => (S::UNPROCESSABLE_ENTITY, "animation_too_large"),
            AnimationLimit::Duration => (S::UNPROCESSABLE_ENTITY, "animation_too_long"),
        },
        PipelineError::BadStillFrame { .. } => (S::UNPROCESSABLE_ENTITY, "bad_still_frame"),
        PipelineError::BadSize(_) => (S::BAD_REQUEST, "bad_size"),
        PipelineError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
    };
    ApiError::new(status, code, p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ContentHash;
    use crate::policy::{HookError, HookFailure};
    use crate::workers::PoolError;
    use std::sync::Arc;

    #[test]
    fn status_table() {
        let cases: Vec<(ServiceError, u16, &str)> = vec![
            (PipelineError::Empty.into(), 400, "empty_body"),
            (
                PipelineError::UnsupportedFormat { detected: "svg" }.into(),
                415,
                "unsupported_format",
            ),
            (
                PipelineError::DimensionsTooLarge {
                    width: 1,
                    height: 1,
                    max_side: 1,
                    max_pixels: 1,
                }
                .into(),
                422,
                "image_too_large",
            ),
            (
                PipelineError::Decode("eof".into()).into(),
                422,
                "invalid_image",
            ),
            (
                PipelineError::TooLarge { bytes: 2, limit: 1 }.into(),
                413,
                "body_too_large",
            ),
            (PipelineError::Internal("x".into()).into(), 500, "internal"),
            (ServiceError::Pool(PoolError::Busy), 503, "overloaded"),
            (
                ServiceError::Store(Arc::new(StoreError::Full)),
                507,
                "storage_full",
            ),
            (
                ServiceError::Store(Arc::new(StoreError::Unavailable("ro".into()))),
                503,
                "storage_unavailable",
            ),
            (ServiceError::NotFound("avatar"), 404, "not_found"),
            (ServiceError::Blocked(ContentHash([1; 32])), 451, "blocked"),
            (ServiceError::Gone(ContentHash([1; 32])), 410, "gone"),
            (
                ServiceError::from(StoreError::Blocked(ContentHash([1; 32]))),
                451,
                "blocked",
            ),
            (
                HookError::Rejected("nudity".into()).into(),
                422,
                "rejected_by_policy",
            ),
            (
                HookError::Unavailable(HookFailure::Timeout(5)).into(),
                503,
                "policy_unavailable",
            ),
        ];
        for (err, status, code) in cases {
            let a = ApiError::from(&err);
            assert_eq!((a.status.as_u16(), a.code), (status, code), "{err:?}");
            let body: serde_json::Value = serde_json::from_slice(&a.json()).unwrap();
            assert_eq!(body["error"], code);
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let r = ApiError::from(HttpError::RateLimited {
            what: "too many uploads",
            retry_after: 6,
        });
        assert_eq!((r.status.as_u16(), r.code), (429, "rate_limited"));
        assert_eq!(r.response().headers()["retry-after"], "6");
        let r = ApiError::from(&ServiceError::from(HookError::Rejected("nudity".into())));
        assert_eq!(r.message, "nudity", "the hook's reason is the message");
        let r = ApiError::from(&ServiceError::from(HookError::Unavailable(
            HookFailure::Status(500),
        )))
        .response();
        assert_eq!(r.headers()["retry-after"], "5");
        // Internal details never leak.
        let a = ApiError::from(&ServiceError::from(PipelineError::Internal(
            "secret path /x".into(),
        )));
        assert!(!a.message.contains("secret"));
    }
}
