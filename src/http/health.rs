//! Liveness and readiness for load balancers and Kubernetes probes:
//! `/healthz` says the process answers; `/readyz` says this node serves
//! correct answers (its store is open and, on NATS, its replica is current
//! and its watch live), else 503 with the reason.

use http::{Response, StatusCode};

use super::error::{error_response, HttpError};
use super::response::text_response;
use super::{App, Body};

/// `/healthz`: liveness only.
pub(super) fn healthz() -> Response<Body> {
    text_response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
}

/// `/readyz`: 200 `{"status":"ready"}`, or 503 `not_ready` with the reason.
pub(super) fn readyz(app: &App) -> Response<Body> {
    match app.service.unready_reason() {
        None => text_response(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ready\"}\n",
        ),
        Some(reason) => error_response(HttpError::NotReady(reason)),
    }
}
