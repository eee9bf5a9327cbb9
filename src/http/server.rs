//! The accept loop: connection limit, first-byte and header timeouts,
//! HTTP/1.1 with parked idle connections, HTTP/2 with prior knowledge,
//! graceful shutdown. Each request carries its connection's peer address
//! ([`PeerAddr`]); `handle` applies the total request timeout.
//!
//! Each connection is one task:
//!
//! 1. Wait for the first byte under `header_timeout` (slowloris: a client that
//!    connects and sends nothing is closed) and peek at the preface to pick
//!    HTTP/2 or /1.1. From then on [`Parkable`] gives a request head found
//!    incomplete `header_timeout` to arrive (hyper's own header timer is off).
//! 2. HTTP/1.1: serve with a hyper connection over [`Parkable`] until hyper
//!    is done. If it is done because the connection was parked (idle between
//!    messages, see [`super::park`]), drop hyper's state and wait on the
//!    socket alone — closing it after `header_timeout` of silence or at
//!    shutdown — then go back to 2 with a fresh hyper connection.
//! 3. HTTP/2 keeps one hyper connection for its life (no parking).
//!
//! Graceful shutdown: a watch channel tells every task; parked connections
//! close at once, active ones stop keeping alive and finish their request.
//! The connection semaphore doubles as the count of live tasks we wait for.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::access::PeerAddr;
use super::park::{ConnState, Parkable, Tracked};
use super::{handle, Body, SharedApp};

/// How long in-flight requests get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<Tracked<Body>>, Infallible>> + Send>>;

/// The per-connection service: every request carries the connection's
/// peer address and is marked in flight on `state` until its response body
/// is dropped.
fn service(
    app: SharedApp,
    state: Arc<ConnState>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked<Body>>,
    Error = Infallible,
    Future = ServiceFuture,
> + Clone {
    service_fn(move |mut req: Request<Incoming>| -> ServiceFuture {
        let guard = state.start();
        let app = app.clone();
        req.extensions_mut().insert(PeerAddr(peer));
        Box::pin(async move {
            let resp = handle(&app, req).await;
            Ok(resp.map(|body| Tracked::new(body, guard)))
        })
    })
}

/// Counts a connection in a gauge while alive.
struct Gauge<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Gauge<'a> {
    fn up(g: &'a std::sync::atomic::AtomicU64) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        Gauge(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connection settings shared by every task.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    header_timeout: Duration,
}

/// Serve `app` on `listener` until `shutdown` resolves, then let in-flight
/// requests finish (up to [`SHUTDOWN_GRACE`]).
pub async fn serve(
    app: SharedApp,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = app.http_config().clone();
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // `Parkable` keeps the header timeout (lazily; see there).
        .header_read_timeout(None)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(256);
    let protocols = Arc::new(Protocols {
        http1,
        http2,
        header_timeout: config.header_timeout,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let max = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
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
        let protocols = protocols.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(app, &protocols, stream, peer, stop).await;
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    let _ = stop_tx.send(true);
    tokio::select! {
        _ = slots.acquire_many(max) => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}

/// Which protocol the client speaks, read from the bytes it sent (not
/// consumed). `None`: it closed or sent nothing within `limit`.
async fn preface(stream: &TcpStream, limit: Duration) -> Option<bool> {
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // A prefix of the preface so far: `peek` would return at once
            // again, so give the client a moment to send the rest.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(limit, sniff).await.ok().flatten()
}

/// Resolves once the server is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Wait until a parked connection has a byte to read. `false`: the client
/// closed it, it stayed silent for `limit`, or the server is stopping.
async fn unpark(stream: &TcpStream, limit: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let mut probe = [0u8; 1];
    tokio::select! {
        r = tokio::time::timeout(limit, stream.peek(&mut probe)) => matches!(r, Ok(Ok(n)) if n > 0),
        _ = stopped(stop) => false,
    }
}

async fn connection(
    app: SharedApp,
    protocols: &Protocols,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = app.service.metrics();
    let _open = Gauge::up(&metrics.connections_open);
    // Every phase but the parked wait is boxed: the task's own size is what
    // a parked connection costs.
    match Box::pin(preface(&stream, protocols.header_timeout)).await {
        None => return,
        Some(true) => return Box::pin(serve_h2(app.clone(), protocols, stream, peer, stop)).await,
        Some(false) => {}
    }
    let state = Arc::new(ConnState::default());
    let svc = service(app.clone(), state.clone(), peer);
    let mut stream = stream;
    loop {
        let serve = serve_h1(protocols, stream, &state, svc.clone(), &mut stop);
        stream = match Box::pin(serve).await {
            Some(socket) => socket,
            None => return,
        };
        let _parked = Gauge::up(&metrics.connections_parked);
        if !unpark(&stream, protocols.header_timeout, &mut stop).await {
            return;
        }
    }
}

/// Serve HTTP/1.1 requests until hyper is done. `Some(socket)` when the
/// connection was parked between messages; `None` when it is finished.
async fn serve_h1<S>(
    protocols: &Protocols,
    stream: TcpStream,
    state: &Arc<ConnState>,
    svc: S,
    stop: &mut watch::Receiver<bool>,
) -> Option<TcpStream>
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Tracked<Body>>,
            Error = Infallible,
            Future = ServiceFuture,
        > + Unpin,
{
    let io = TokioIo::new(Parkable::new(
        stream,
        state.clone(),
        protocols.header_timeout,
    ));
    let mut conn = protocols.http1.serve_connection(io, svc);
    let mut stopping = false;
    let ended = loop {
        tokio::select! {
            r = poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            _ = stopped(stop), if !stopping => {
                // Finish the request in flight, then close.
                stopping = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
        return None;
    }
    let parts = conn.into_parts();
    let (mut socket, parked) = parts.io.into_inner().into_parts();
    if !parked || !parts.read_buf.is_empty() {
        // The client closed or asked to close: finish like hyper would.
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.shutdown()).await;
        return None;
    }
    Some(socket)
}

/// An HTTP/2 connection keeps one hyper connection for its life.
async fn serve_h2(
    app: SharedApp,
    protocols: &Protocols,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let svc = service(app, Arc::new(ConnState::default()), peer);
    let conn = protocols.http2.serve_connection(TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
    }
}
