//! Request ids and the access log.
//!
//! - **Request id**: the CDN's `X-Request-Id` when it is safe to log and echo
//!   (1–64 of `[A-Za-z0-9._:-]`), else one generated here: a random 64-bit
//!   prefix per process and a counter, in hex, so ids stay unique across
//!   restarts and nodes. Every response carries it; the 5xx log line and the
//!   access line name it.
//! - **Access log** (`--access-log`): one event per request under
//!   [`ACCESS_TARGET`] — request id, method, route class, the *redacted* path,
//!   status, body bytes, duration, the variant cache's outcome when the answer
//!   went through it, and the client address (the socket peer, or the last hop
//!   of `X-Forwarded-For` with `--trust-forwarded-for`). A full body is logged
//!   when `handle` returns; a stream (event stream, backup) when it ends, with
//!   the bytes it sent.
//! - **Redaction**: no email, token or signature reaches a log line. An API key
//!   segment (`/v1/avatars/{key}`) becomes its SHA-256 identity hash (a hash
//!   stays as is), any other segment naming an email becomes `[email]`, and
//!   the query keeps only `s`, `d`, `r`, `v` and `f`.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::Either;
use hyper::body::{Frame, SizeHint};

use super::Body;
use crate::config::TrustedProxies;
use crate::logging::ACCESS_TARGET;
use crate::metrics::RouteClass;
use crate::model::{IdentityHash, IdentityKeys};
use crate::service::CacheOutcome;

pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted `X-Request-Id`.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// The address of the socket a request came in on, set by the server as a
/// request extension (absent when `handle` is called without a socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// True for an id safe to log and echo: 1–64 of `[A-Za-z0-9._:-]`.
pub fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The source of generated request ids.
pub(super) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        // Without an entropy source (never on Linux), the clock and the pid
        // still differ between restarts and nodes in practice.
        let prefix = getrandom::u64().unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
        });
        RequestIds {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    /// The request's id: the client's (the CDN's) when safe, else a new one.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(X_REQUEST_ID) {
            if is_safe_request_id(v.as_bytes()) {
                return v.clone();
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Formatted on the stack: the header value is the one allocation.
        let mut buf = [0u8; 33];
        let mut rest = &mut buf[..];
        std::io::Write::write_fmt(&mut rest, format_args!("{:016x}-{n:x}", self.prefix))
            .expect("33 bytes hold two 64-bit hex numbers and a dash");
        let len = 33 - rest.len();
        HeaderValue::from_bytes(&buf[..len]).expect("hex is a header value")
    }
}

/// Query keys that may appear in a log line (size, default, rating,
/// version, force-default): none can carry a secret.
const SAFE_QUERY_KEYS: [&str; 5] = ["s", "d", "r", "v", "f"];

/// True when a (still percent-encoded) piece of a URL names an email.
fn names_email(raw: &str) -> bool {
    raw.contains('@') || raw.to_ascii_lowercase().contains("%40")
}

/// The path and query of `uri` with nothing secret left: see the module
/// documentation.
pub fn redact(uri: &Uri) -> String {
    let path = uri.path();
    let mut out = String::with_capacity(path.len() + 16);
    if let Some(key) = path.strip_prefix("/v1/avatars/") {
        out.push_str("/v1/avatars/");
        out.push_str(&redact_key(key));
    } else {
        for (i, segment) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(if names_email(segment) {
                "[email]"
            } else {
                segment
            });
        }
    }
    let mut first = true;
    for pair in uri.query().unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !SAFE_QUERY_KEYS.contains(&k) {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        first = false;
        out.push_str(k);
        out.push('=');
        out.push_str(if names_email(v) { "[email]" } else { v });
    }
    out
}

/// An API key segment as its SHA-256 identity hash (emails), itself (a
/// hash), or `[key]` (anything else).
fn redact_key(raw: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    match IdentityKeys::parse(&decoded) {
        Ok(keys) => keys
            .aliases
            .iter()
            .find(|a| matches!(a, IdentityHash::Sha256(_)))
            .unwrap_or(&keys.aliases[0])
            .to_hex(),
        Err(_) => "[key]".to_string(),
    }
}

/// The client's address (the access log, the rate limits): the socket
/// peer, unless `X-Forwarded-For` is believed (`--trust-forwarded-for`):
/// - `Any` (the bare flag): its last hop when that is an address;
/// - `Listed` proxies, and the peer is one of them: walking the hops from the
///   right, the first that is not a listed proxy (the leftmost when all are;
///   a hop that is not an address ends the walk at the hop before it).
pub fn client_addr(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = peer.map(|p| p.ip().to_canonical());
    // Right to left; a header value that is not text is one bad hop.
    let mut hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("?").rsplit(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|hop| {
            hop.parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
                .map(|ip| ip.to_canonical())
        });
    match trusted {
        TrustedProxies::None => peer,
        TrustedProxies::Any => hops.next().flatten().or(peer),
        TrustedProxies::Listed(_) => {
            let mut client = peer?;
            while trusted.trusts(client) {
                match hops.next().flatten() {
                    Some(hop) => client = hop,
                    None => break,
                }
            }
            Some(client)
        }
    }
}

/// [`client_addr`] of a request (its peer from the [`PeerAddr`] extension).
pub(super) fn client_of<B>(req: &Request<B>, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    client_addr(req.headers(), peer, trusted)
}

/// What the access line says about a request, gathered as it comes in.
pub(super) struct Entry {
    id: HeaderValue,
    method: Method,
    class: RouteClass,
    path: String,
    client: Option<IpAddr>,
    started: Instant,
    status: u16,
    cache: Option<CacheOutcome>,
}

impl Entry {
    pub fn new<B>(
        req: &Request<B>,
        id: &HeaderValue,
        started: Instant,
        trusted: &TrustedProxies,
    ) -> Entry {
        Entry {
            id: id.clone(),
            method: req.method().clone(),
            class: RouteClass::of_path(req.uri().path()),
            path: redact(req.uri()),
            client: client_of(req, trusted),
            started,
            status: 0,
            cache: None,
        }
    }

    fn emit(&self, bytes: u64) {
        let client = self.client.map(|c| c.to_string());
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = self.id.to_str().unwrap_or(""),
            method = self.method.as_str(),
            route = self.class.as_str(),
            path = self.path.as_str(),
            status = self.status,
            bytes,
            // Milliseconds to the microsecond (no float noise in the line).
            duration_ms = self.started.elapsed().as_micros() as f64 / 1000.0,
            cache = self.cache.map(CacheOutcome::as_str),
            client = client.as_deref(),
        );
    }

    /// Log `resp` now (a full body), or when its stream ends.
    pub fn finish(mut self, resp: Response<Body>) -> Response<Body> {
        self.status = resp.status().as_u16();
        self.cache = resp.extensions().get::<CacheOutcome>().copied();
        let (parts, body) = resp.into_parts();
        let body = match body {
            Either::Left(full) => {
                let bytes = hyper::body::Body::size_hint(&full).exact().unwrap_or(0);
                self.emit(bytes);
                Either::Left(full)
            }
            Either::Right(stream) => Either::Right(BoxBody::new(Counted {
                inner: stream,
                bytes: 0,
                entry: self,
            })),
        };
        Response::from_parts(parts, body)
    }
}

/// A streamed body that counts what it sends and logs its request when
/// dropped (finished, or the client went away).
struct Counted {
    inner: BoxBody<Bytes, std::convert::Infallible>,
    bytes: u64,
    entry: Entry,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.entry.emit(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_safe_only_in_the_documented_alphabet_and_length() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        let cases: &[(&str, bool)] = &[
            ("abc", true),
            ("a", true),
            (&long, true),
            ("req-1.2_3:4", true),
            ("0123456789abcdef-1f", true),
            ("ABCxyz-09", true),
            ("", false),
            (&too_long, false),
            ("a b", false),
            ("a/b", false),
            ("a\"b", false),
            ("alice@example.org", false),
            ("a=b", false),
            ("{\"x\":1}", false),
            ("é", false),
        ];
        for (id, safe) in cases {
            assert_eq!(is_safe_request_id(id.as_bytes()), *safe, "{id:?}");
        }
    }

    #[test]
    fn generated_ids_are_safe_distinct_and_share_the_process_prefix() {
        let ids = RequestIds::new();
        let none = HeaderMap::new();
        let a = ids.for_request(&none);
        let b = ids.for_request(&none);
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert!(is_safe_request_id(id.as_bytes()), "{id:?}");
        }
        let prefix = |v: &HeaderValue| v.to_str().unwrap()[..16].to_string();
        assert_eq!(prefix(&a), prefix(&b));
        assert_ne!(prefix(&a), prefix(&ids_of_another_process()));
        // A safe client id is kept, an unsafe one replaced.
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("cdn-42"));
        assert_eq!(ids.for_request(&h), "cdn-42");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("a b"));
        let replaced = ids.for_request(&h);
        assert_ne!(replaced, "a b");
        assert!(is_safe_request_id(replaced.as_bytes()));
    }

    fn ids_of_another_process() -> HeaderValue {
        RequestIds::new().for_request(&HeaderMap::new())
    }

    const ALICE_SHA256: &str = "7a64adf28737ea90719cbdf0b1a87a5effff3753b79c91d717f4f4153ead0498";

    #[test]
    fn paths_lose_emails_tokens_and_unsafe_query_keys() {
        let alice_md5 = format!("{:x}", md5_of("alice@example.org"));
        let cases: &[(&str, &str)] = &[
            ("/c/abc.webp?s=80", "/c/abc.webp?s=80"),
            (
                "/avatar/0123?s=64&d=mp&r=pg&v=3&f=y",
                "/avatar/0123?s=64&d=mp&r=pg&v=3&f=y",
            ),
            ("/avatar/alice@example.org", "/avatar/[email]"),
            ("/avatar/alice%40example.org.png?s=1", "/avatar/[email]?s=1"),
            (
                "/avatar/x?d=https%3A%2F%2Fh%2F%3Fe%3Dalice%40x",
                "/avatar/x?d=[email]",
            ),
            (
                "/v1/avatars/alice@example.org",
                &format!("/v1/avatars/{ALICE_SHA256}"),
            ),
            (
                "/v1/avatars/Alice%40Example.org",
                &format!("/v1/avatars/{ALICE_SHA256}"),
            ),
            (
                &format!("/v1/avatars/{alice_md5}"),
                &format!("/v1/avatars/{alice_md5}"),
            ),
            ("/v1/avatars/not-an-email", "/v1/avatars/[key]"),
            ("/v1/avatars/a@b/../c", "/v1/avatars/[key]"),
            (
                "/v1/avatars/x?sig=secret&exp=1&rating=g",
                "/v1/avatars/[key]",
            ),
            ("/v1/events?keys=alice@example.org&sub=abc", "/v1/events"),
            ("/v1/upload-urls?token=abc", "/v1/upload-urls"),
            ("/healthz", "/healthz"),
            ("/", "/"),
            ("/x?s", "/x?s="),
        ];
        for (uri, want) in cases {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(redact(&uri), *want, "{uri}");
        }
    }

    fn md5_of(s: &str) -> u128 {
        match IdentityKeys::parse(s).unwrap().aliases[0] {
            IdentityHash::Md5(b) => u128::from_be_bytes(b),
            _ => unreachable!(),
        }
    }

    /// A log sink for one test: JSON lines into a shared buffer.
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_full_body_is_logged_at_once_and_a_stream_when_it_ends_with_its_bytes() {
        use http_body_util::{BodyExt, Full, StreamBody};
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let lines = || -> Vec<serde_json::Value> {
            String::from_utf8(sink.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let mut req = Request::get("/v1/events?keys=alice@example.org")
            .header("x-forwarded-for", "203.0.113.9")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(PeerAddr("10.0.0.1:4000".parse().unwrap()));
        let id = HeaderValue::from_static("stream-1");

        // A full body: logged by `finish`, with its length.
        let entry = Entry::new(&req, &id, Instant::now(), &TrustedProxies::None);
        let mut full: Response<Body> = Response::new(Either::Left(Full::new(Bytes::from("abc"))));
        full.extensions_mut().insert(CacheOutcome::Coalesced);
        drop(entry.finish(full));
        let l = lines();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0]["bytes"], 3);
        assert_eq!(l[0]["cache"], "coalesced");
        assert_eq!(l[0]["client"], "10.0.0.1");
        assert_eq!(l[0]["path"], "/v1/events");
        assert_eq!(l[0]["route"], "events");

        // A stream: nothing until it ends, then the bytes it sent.
        let entry = Entry::new(&req, &id, Instant::now(), &TrustedProxies::Any);
        let frames = futures_util::stream::iter(
            ["data: 1\n\n", "data: 22\n\n"]
                .map(|s| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(s)))),
        );
        let stream: Response<Body> =
            Response::new(Either::Right(BoxBody::new(StreamBody::new(frames))));
        let resp = entry.finish(stream);
        assert_eq!(lines().len(), 1, "not logged before the stream ends");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 19);
        let l = lines();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1]["bytes"], 19);
        assert_eq!(l[1]["status"], 200);
        assert_eq!(l[1]["request_id"], "stream-1");
        assert_eq!(l[1]["client"], "203.0.113.9");
        assert!(l[1].get("cache").is_none());
    }

    #[test]
    fn the_client_is_the_peer_unless_forwarded_for_is_trusted() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.50:5000".parse().unwrap();
        let any = TrustedProxies::Any;
        let none = TrustedProxies::None;
        let listed =
            TrustedProxies::parse(&["10.0.0.0/24".to_string(), "172.16.0.9".to_string()]).unwrap();
        // (X-Forwarded-For values, trusted, peer) → the client
        type Case<'a> = (
            &'a [&'a str],
            &'a TrustedProxies,
            Option<SocketAddr>,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (&[], &none, Some(peer), Some("10.0.0.1")),
            (&[], &any, Some(peer), Some("10.0.0.1")),
            (&["203.0.113.9"], &none, Some(peer), Some("10.0.0.1")),
            (&["203.0.113.9"], &any, Some(peer), Some("203.0.113.9")),
            (
                &["198.51.100.1, 203.0.113.9"],
                &any,
                Some(peer),
                Some("203.0.113.9"),
            ),
            (
                &["198.51.100.1", "2001:db8::1"],
                &any,
                Some(peer),
                Some("2001:db8::1"),
            ),
            (&["203.0.113.9:443"], &any, None, Some("203.0.113.9")),
            (&["not-an-address"], &any, Some(peer), Some("10.0.0.1")),
            (&[], &none, None, None),
            // Named proxies: only a listed peer's header counts…
            (
                &["203.0.113.9"],
                &listed,
                Some(stranger),
                Some("192.0.2.50"),
            ),
            (&["203.0.113.9"], &listed, Some(peer), Some("203.0.113.9")),
            (&["203.0.113.9"], &listed, None, None),
            // …and a client cannot hide behind a hop it wrote itself: the
            // nearest untrusted hop wins, listed proxies are skipped.
            (
                &["6.6.6.6, 203.0.113.9, 172.16.0.9"],
                &listed,
                Some(peer),
                Some("203.0.113.9"),
            ),
            (
                &["6.6.6.6, 203.0.113.9", "10.0.0.7"],
                &listed,
                Some(peer),
                Some("203.0.113.9"),
            ),
            (
                &["10.0.0.2, 172.16.0.9"],
                &listed,
                Some(peer),
                Some("10.0.0.2"),
            ),
            (&["junk, 10.0.0.3"], &listed, Some(peer), Some("10.0.0.3")),
            (&[], &listed, Some(peer), Some("10.0.0.1")),
            (
                &["[2001:db8::7]:443"],
                &listed,
                Some(peer),
                Some("2001:db8::7"),
            ),
            (
                &["203.0.113.9"],
                &listed,
                Some("[::ffff:10.0.0.1]:80".parse().unwrap()),
                Some("203.0.113.9"),
            ),
        ];
        for (xff, trusted, peer, want) in cases {
            let mut h = HeaderMap::new();
            for v in *xff {
                h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            let got = client_addr(&h, *peer, trusted).map(|a| a.to_string());
            assert_eq!(got.as_deref(), *want, "{xff:?} {trusted:?} {peer:?}");
        }
    }
}
