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
//!
//! The same wrapper keeps the header timeout: a head that started arriving
//! while nothing was in flight must be complete within `header_timeout` of
//! the first read that found it incomplete.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// How long a connection must be quiet between messages before it is parked
/// (at most twice this: a busy connection's timer is re-armed lazily).
pub const PARK_AFTER: Duration = Duration::from_millis(500);

/// What the service and the socket wrapper of one connection share.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests handed to the service whose response body is not yet dropped.
    in_flight: AtomicUsize,
    /// Bytes were read while no request was in flight: the next request's
    /// head is (partly) in hyper's buffer.
    head_pending: AtomicBool,
    /// Woken when the last request in flight ends, if a read was waiting.
    ended: AtomicWaker,
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
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.wake();
        }
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

/// What the connection's one timer is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    Nothing,
    /// Park once the client has been quiet for [`PARK_AFTER`].
    Quiet,
    /// Close unless the request head that started arrives in time.
    Head,
}

/// The socket as hyper's HTTP/1 connection sees it; see the module doc.
///
/// It also keeps the header timeout (hyper's own is off): a request head
/// found incomplete must be complete within `header_timeout`, or the
/// read fails and hyper closes the connection without an answer, as it
/// would on its own timeout. Both deadlines share one timer, armed lazily: a
/// head that arrives in one read arms nothing, and between the requests of a
/// busy connection the quiet timer is re-armed once per [`PARK_AFTER`], not
/// once per request (hyper's header timer was a boxed sleep made, registered
/// and dropped per request, and the quiet timer was reset per request).
pub struct Parkable {
    stream: TcpStream,
    state: Arc<ConnState>,
    header_timeout: Duration,
    /// The last write hit a full socket buffer (hyper still holds bytes).
    write_blocked: bool,
    timer: Option<Pin<Box<Sleep>>>,
    armed: Armed,
    /// The client sent bytes, or a request was in flight, since the quiet
    /// timer was armed.
    heard: bool,
    /// A read found nothing while a request was in flight or a write was
    /// blocked: no timer runs, so the end of either wakes the task.
    read_waiting: bool,
    parked: bool,
}

impl Parkable {
    pub fn new(stream: TcpStream, state: Arc<ConnState>, header_timeout: Duration) -> Self {
        Self {
            stream,
            state,
            header_timeout,
            write_blocked: false,
            timer: None,
            armed: Armed::Nothing,
            heard: false,
            read_waiting: false,
            parked: false,
        }
    }

    /// Take the socket back after hyper's connection ended. `true` when it
    /// ended because we parked it (the socket is open and between messages);
    /// `false` when the client closed, asked to close, or an error ended it.
    pub fn into_parts(self) -> (TcpStream, bool) {
        (self.stream, self.parked)
    }

    /// Nothing in flight, no head started, nothing left to write.
    fn between_messages(&self) -> bool {
        self.state.idle() && !self.head_started() && !self.write_blocked
    }

    /// Bytes of the next request's head were read; the request has not
    /// started.
    fn head_started(&self) -> bool {
        self.state.head_pending.load(Ordering::Acquire)
    }

    /// Arm the timer for `what`, `after` from now.
    fn arm(&mut self, what: Armed, after: Duration) {
        let deadline = Instant::now() + after;
        match &mut self.timer {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = what;
    }

    /// After a write: a read waiting on a blocked write is polled again once
    /// the write went through (see `poll_idle`).
    fn wrote(&mut self, cx: &Context<'_>, blocked: bool) {
        if self.write_blocked && !blocked && self.read_waiting {
            cx.waker().wake_by_ref();
        }
        self.write_blocked = blocked;
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.timer {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// The socket has nothing to read: `Ready(Ok)` parks (end-of-stream to
    /// hyper), `Ready(Err)` is the header timeout, `Pending` waits.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.between_messages() {
            if self.armed != Armed::Quiet {
                self.arm(Armed::Quiet, PARK_AFTER);
                self.heard = false;
            }
            while self.poll_timer(cx).is_ready() {
                if !self.heard {
                    // Quiet for at least `PARK_AFTER` (at most twice that).
                    self.parked = true;
                    return Poll::Ready(Ok(()));
                }
                self.arm(Armed::Quiet, PARK_AFTER);
                self.heard = false;
            }
            Poll::Pending
        } else if self.head_started() && self.state.idle() {
            if self.armed != Armed::Head {
                self.arm(Armed::Head, self.header_timeout);
            }
            match self.poll_timer(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not complete within the header timeout",
                ))),
                Poll::Pending => Poll::Pending,
            }
        } else {
            // A request in flight (or a blocked write): no deadline runs, but
            // once the response is written hyper may not read again by
            // itself (its last read was blocked). A quiet timer still running
            // will poll the read again when it fires. Without one, the end
            // of the request (`InFlight`) or of the blocked write wakes the
            // task, whose next read arms the timer. (A timer is not re-armed
            // here: an event stream may stay in flight for hours.)
            self.heard = true;
            if self.armed == Armed::Quiet && self.poll_timer(cx).is_pending() {
                return Poll::Pending;
            }
            self.armed = Armed::Nothing;
            self.read_waiting = true;
            if !self.state.idle() {
                self.state.ended.register(cx.waker());
            }
            Poll::Pending
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
        this.read_waiting = false;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.heard = true;
                if buf.filled().len() > before
                    && this.state.idle()
                    && !this.state.head_pending.swap(true, Ordering::AcqRel)
                    && this.armed == Armed::Head
                {
                    // A new head: the last one's deadline is not its own.
                    this.armed = Armed::Nothing;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_idle(cx),
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
        this.wrote(cx, r.is_pending());
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(cx, r.is_pending());
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A wrapped server side and the client side of one loopback connection.
    async fn pair(header_timeout: Duration) -> (Parkable, Arc<ConnState>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let state = Arc::new(ConnState::default());
        let parkable = Parkable::new(server, state.clone(), header_timeout);
        (parkable, state, client)
    }

    /// The result of one read, or `None` if it did not end within `wait`.
    async fn read_within(p: &mut Parkable, wait: Duration) -> Option<io::Result<usize>> {
        let mut buf = [0u8; 64];
        tokio::time::timeout(wait, p.read(&mut buf)).await.ok()
    }

    /// Bytes the client sends, readable at once (the reactor has seen them),
    /// and read by the wrapper in one read.
    async fn send_and_read(client: &mut TcpStream, p: &mut Parkable, bytes: &[u8]) {
        client.write_all(bytes).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let read = read_within(p, Duration::from_secs(1)).await;
        assert!(matches!(read, Some(Ok(n)) if n > 0), "{read:?}");
    }

    #[tokio::test]
    async fn an_incomplete_head_times_out_and_each_head_has_its_own_deadline() {
        let ms = Duration::from_millis;
        let (mut p, state, mut client) = pair(ms(400)).await;
        send_and_read(&mut client, &mut p, b"GET / HTTP/1.1\r\n").await;
        // Incomplete: the deadline runs from here.
        assert!(read_within(&mut p, ms(100)).await.is_none());
        // The head completed; its request was served.
        drop(state.start());
        // The next head starts 250 ms later and reads at once, without a
        // read between the two heads that finds nothing.
        tokio::time::sleep(ms(230)).await;
        send_and_read(&mut client, &mut p, b"GET /2 HTTP/1.1\r\n").await;
        // Past the first head's deadline, the second is still given time...
        assert!(
            read_within(&mut p, ms(200)).await.is_none(),
            "the new head inherited the last one's deadline"
        );
        // ...until its own deadline.
        let timed_out = read_within(&mut p, ms(2000)).await.expect("closed");
        assert_eq!(timed_out.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(!p.into_parts().1, "timed out, not parked");
    }

    #[tokio::test]
    async fn a_quiet_connection_between_messages_parks_and_a_heard_one_does_not() {
        let ms = Duration::from_millis;
        let (mut p, state, mut client) = pair(ms(10_000)).await;
        // A request came and went; then the client is heard 300 ms into the
        // quiet period (the bytes of a head it then completes).
        send_and_read(&mut client, &mut p, b"GET / HTTP/1.1\r\n\r\n").await;
        drop(state.start());
        let started = Instant::now();
        assert!(read_within(&mut p, ms(300)).await.is_none());
        send_and_read(&mut client, &mut p, b"GET /2 HTTP/1.1\r\n\r\n").await;
        drop(state.start());
        // Heard within the first period: not parked at its end, but once a
        // whole period passed in silence.
        let parked = read_within(&mut p, ms(3000)).await.expect("parked");
        assert_eq!(parked.unwrap(), 0, "end-of-stream to hyper");
        let after = started.elapsed();
        assert!(
            after >= PARK_AFTER + ms(300) && after <= 2 * PARK_AFTER + ms(300),
            "parked after {after:?}"
        );
        assert!(p.into_parts().1, "parked");
    }
}
