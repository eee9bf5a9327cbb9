//! The one place that maps error kinds to HTTP status codes and JSON bodies.
//!
//! Client errors are 4xx with `{"error": "<code>", "message": "<what is wrong>"}`;
//! server faults are 5xx with a message that reveals no internals.

use http::StatusCode;
use serde::Serialize;

use crate::pipeline::PipelineError;
use crate::service::ServiceError;
use crate::store::StoreError;
use crate::workers::PoolError;

/// An error answer: status, stable machine code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn json(&self) -> Vec<u8> {
        serde_json::to_vec(&Body {
            error: self.code,
            message: &self.message,
        })
        .expect("error bodies serialize")
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// `/readyz` while the node cannot serve correct answers.
    pub fn not_ready(reason: &str) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized")
    }
}

impl From<&ServiceError> for ApiError {
    fn from(e: &ServiceError) -> ApiError {
        use StatusCode as S;
        match e {
            ServiceError::Spec(e) => ApiError::new(S::BAD_REQUEST, "bad_request", e.to_string()),
            ServiceError::Key(e) => ApiError::new(S::BAD_REQUEST, "bad_key", e.to_string()),
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::ContentUnreadable => ApiError::new(
                S::NOT_FOUND,
                "content_unavailable",
                "stored content is missing or corrupt",
            ),
            ServiceError::Pool(PoolError::Busy) => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many images queued for processing; retry shortly",
            ),
            ServiceError::Pool(PoolError::Panicked(_)) => ApiError::new(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "the image could not be processed",
            ),
            ServiceError::Pipeline(p) => pipeline_error(p),
            ServiceError::Store(s) => match s.as_ref() {
                StoreError::NotFound => ApiError::not_found("avatar"),
                StoreError::Full => ApiError::new(
                    S::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the server's storage is full",
                ),
                StoreError::Unavailable(_) => ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the server's storage is read-only or unavailable",
                ),
                StoreError::Index(_) | StoreError::Io(_) => {
                    ApiError::new(S::INTERNAL_SERVER_ERROR, "internal", "storage error")
                }
            },
        }
    }
}

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
        PipelineError::BadSize(_) => (S::BAD_REQUEST, "bad_size"),
        PipelineError::Internal(_) => {
            return ApiError::new(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "image processing failed",
            )
        }
    };
    ApiError::new(status, code, p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
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
        ];
        for (err, status, code) in cases {
            let a = ApiError::from(&err);
            assert_eq!((a.status.as_u16(), a.code), (status, code), "{err:?}");
            let body: serde_json::Value = serde_json::from_slice(&a.json()).unwrap();
            assert_eq!(body["error"], code);
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        // Internal details never leak.
        let a = ApiError::from(&ServiceError::from(PipelineError::Internal(
            "secret path /x".into(),
        )));
        assert!(!a.message.contains("secret"));
    }
}
