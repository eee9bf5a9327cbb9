//! Parking idle HTTP/1 keep-alive connections, so that an idle connection
//! costs a socket and a small task instead of hyper's buffers.
//!
//! hyper's HTTP/1 connection owns an 8 KiB read buffer and an 8 KiB write
//! buffer for its whole life: 10,000 idle browsers would hold 160 MiB doing
//! nothing. [`Parkable`] wraps the socket given to hyper and, once the
//! connection sits *between messages* and the client has been quiet for a
//! grace period, reports end-of-stream to hyper. hyper treats that as the
//! client closing an idle keep-alive connection: it ends cleanly without
//! touching the socket (we poll it with `poll_without_shutdown`), its
//! buffers are freed, and the accept loop waits on socket readiness alone
//! until the next request, which gets a fresh hyper connection.
//!
//! "Between messages" is known exactly, not guessed from bytes: the service
//! marks a request in flight from the moment hyper hands it over until the
//! response body is dropped (fully written or abandoned) — [`Tracked`] —
//! and any byte read while nothing is in flight is the head of the next
//! request, which blocks parking until that request starts. The end-of-stream
//! is only reported when the socket has nothing to read and the last write
//! was not blocked (hyper's write buffer is then empty). The one case these
//! rules cannot see — a pipelined request whose head arrived only partly
//! while the previous one was in flight — is covered by the grace period: the
//! client must also have been silent for [`PARK_AFTER`].

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// How long a connection must be quiet between messages before it is parked.
pub const PARK_AFTER: Duration = Duration::from_millis(500);

/// What the service and the socket wrapper of one connection share.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests handed to the service whose response body is not yet dropped.
    in_flight: AtomicUsize,
    /// Bytes were read while no request was in flight: the next request's
    /// head is (partly) in hyper's buffer.
    head_pending: AtomicBool,
}

impl ConnState {
    /// A request starts: call when hyper hands it to the service. The guard
    /// must live until the response body is dropped (see [`Tracked`]).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_pending.store(false, Ordering::Release);
        InFlight(self.clone())
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Marks one request in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request marked in flight until hyper drops
/// it (after the last frame is written, or when the client goes away).
pub struct Tracked<B> {
    inner: B,
    _guard: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, guard: InFlight) -> Self {
        Self {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper's HTTP/1 connection sees it; see the module doc.
pub struct Parkable {
    stream: TcpStream,
    state: Arc<ConnState>,
    /// The last write hit a full socket buffer (hyper still holds bytes).
    write_blocked: bool,
    /// Armed when a read finds nothing while the connection is idle.
    quiet: Option<Pin<Box<Sleep>>>,
    quiet_armed: bool,
    parked: bool,
}

impl Parkable {
    pub fn new(stream: TcpStream, state: Arc<ConnState>) -> Self {
        Self {
            stream,
            state,
            write_blocked: false,
            quiet: None,
            quiet_armed: false,
            parked: false,
        }
    }

    /// Take the socket back after hyper's connection ended. `true` when it
    /// ended because we parked it (the socket is open and between messages);
    /// `false` when the client closed, asked to close, or an error ended it.
    pub fn into_parts(self) -> (TcpStream, bool) {
        (self.stream, self.parked)
    }

    /// May the connection be parked now (ignoring the grace period)?
    fn between_messages(&self) -> bool {
        self.state.idle() && !self.state.head_pending.load(Ordering::Acquire) && !self.write_blocked
    }

    /// Poll the grace timer; `Ready` once the client has been quiet long enough.
    fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = Instant::now() + PARK_AFTER;
        if !self.quiet_armed {
            self.quiet_armed = true;
            match &mut self.quiet {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.quiet = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match &mut self.quiet {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl AsyncRead for Parkable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.quiet_armed = false;
                if buf.filled().len() > before && this.state.idle() {
                    this.state.head_pending.store(true, Ordering::Release);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !this.between_messages() {
                    this.quiet_armed = false;
                    return Poll::Pending;
                }
                match this.poll_quiet(cx) {
                    Poll::Ready(()) => {
                        // End-of-stream at a message boundary: hyper closes
                        // its side gracefully and hands the socket back.
                        this.parked = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Parkable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, data);
        this.write_blocked = r.is_pending();
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.write_blocked = r.is_pending();
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
