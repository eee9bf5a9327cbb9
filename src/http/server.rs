//! The accept loop: connection limit, first-byte and header timeouts, a total
//! request timeout, HTTP/1.1 and HTTP/2 (auto-detected), graceful shutdown.
//!
//! hyper-util's auto builder reads the connection preface before any hyper
//! timer runs, so a client that connects and sends nothing would be held
//! forever; we wait for the first byte ourselves under `header_timeout`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::{error_response, handle, Body, SharedApp};

/// How long in-flight requests get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

async fn handle_with_timeout(app: SharedApp, req: Request<Incoming>) -> Response<Body> {
    let limit = app.service.config.request_timeout;
    match tokio::time::timeout(limit, handle(&app, req)).await {
        Ok(r) => r,
        Err(_) => error_response(&ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("request not completed within {} s", limit.as_secs()),
        )),
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then let in-flight
/// requests finish (up to [`SHUTDOWN_GRACE`]).
pub async fn serve(
    app: SharedApp,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = app.service.config.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte = config.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            // Slowloris guard: nothing sent within the header timeout → close.
            // (`readable()` may report readiness spuriously; `peek` waits for
            // a real byte without consuming it.)
            let mut probe = [0u8; 1];
            match tokio::time::timeout(first_byte, stream.peek(&mut probe)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle_with_timeout(app, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}
