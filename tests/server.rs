//! Integration test: the real `avatar-edge` binary on an ephemeral loopback
//! port, driven over TCP like any client would.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn upload_fetch_revalidate_delete_over_real_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], Some(TOKEN));
    let (ak, av) = auth();

    assert_eq!(server.request("GET", "/healthz", &[], b"").status, 200);

    let r = server.request(
        "PUT",
        "/v1/avatars/walk%40example.org",
        &[(ak, &av)],
        &fixture("photo_large_4032x3024.jpg"),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let hash = info["hash"].as_str().unwrap().to_string();

    for (ext, size, ct) in [
        ("png", 128, "image/png"),
        ("webp", 32, "image/webp"),
        ("jpg", 512, "image/jpeg"),
    ] {
        let r = server.request("GET", &format!("/c/{hash}.{ext}?s={size}"), &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some(ct));
        let img = image::load_from_memory(&r.body).unwrap();
        assert_eq!((img.width(), img.height()), (size, size));
        let etag = r.header("etag").unwrap().to_string();
        let again = server.request(
            "GET",
            &format!("/c/{hash}.{ext}?s={size}"),
            &[("If-None-Match", &etag)],
            b"",
        );
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
    }

    let md5 = info["aliases"][0].as_str().unwrap();
    let r = server.request(
        "GET",
        &format!("/avatar/{md5}?s=40"),
        &[("Accept", "image/webp")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/webp"));
    assert!(r
        .header("content-location")
        .unwrap()
        .starts_with(&format!("/c/{hash}.webp")));

    let r = server.request(
        "DELETE",
        "/v1/avatars/walk%40example.org",
        &[(ak, &av)],
        b"",
    );
    assert_eq!(r.status, 204);
    let r = server.request("GET", "/v1/avatars/walk%40example.org", &[], b"");
    assert_eq!(r.status, 404);
    let r = server.request("GET", &format!("/avatar/{md5}?s=40"), &[], b"");
    assert_eq!(r.header("x-avatar-default"), Some("identicon"));

    let status = server.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[test]
fn generates_an_admin_token_file_when_none_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], None);
    let path = dir.path().join("admin.token");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let bearer = format!("Bearer {token}");
    let r = server.request(
        "PUT",
        "/v1/avatars/t%40example.org",
        &[("Authorization", &bearer)],
        &fixture("photo_grace_hopper_512x600.jpg"),
    );
    assert_eq!(r.status, 200);
    let r = server.request(
        "PUT",
        "/v1/avatars/t%40example.org",
        &[("Authorization", "Bearer wrong")],
        &fixture("photo_grace_hopper_512x600.jpg"),
    );
    assert_eq!(r.status, 401);
    // The same token survives a restart.
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &[], None);
    let r = server.request("GET", "/v1/avatars/t%40example.org", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    assert!(server.stop().success());
}

#[test]
fn sigterm_lets_an_in_flight_upload_finish() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], Some(TOKEN));
    let addr = server.addr;
    let upload = std::thread::spawn(move || {
        let (ak, av) = auth();
        request(
            addr,
            "PUT",
            "/v1/avatars/late%40example.org",
            &[(ak, &av)],
            &fixture("photo_large_4032x3024.jpg"),
        )
    });
    std::thread::sleep(Duration::from_millis(30));
    let status = server.stop();
    let reply = upload.join().unwrap();
    assert_eq!(reply.status, 200, "in-flight request completed");
    assert!(status.success());
}

#[test]
fn a_silent_connection_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--header-timeout", "1"], Some(TOKEN));
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    // The server is still fine.
    assert_eq!(server.request("GET", "/healthz", &[], b"").status, 200);
}

/// Slowloris with bytes: a head that trickles in (a header line every
/// 200 ms) is cut off `header_timeout` after its first byte, on a new
/// connection and on a kept-alive one after a complete request, without an
/// answer; a head in two parts within the timeout is served.
#[test]
fn a_trickling_request_head_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--header-timeout", "1"], Some(TOKEN));

    /// Trickle a head that never ends; how long until the server closed.
    fn trickle(conn: &mut KeepAlive) -> Duration {
        let started = Instant::now();
        conn.send_raw(b"GET /healthz HTTP/1.1\r\nHost: t\r\n");
        let mut writer = conn.reader.get_ref().try_clone().unwrap();
        let dripping = std::thread::spawn(move || {
            use std::io::Write;
            for _ in 0..50 {
                std::thread::sleep(Duration::from_millis(200));
                if writer.write_all(b"X-Drip: 1\r\n").is_err() {
                    return;
                }
            }
        });
        let mut rest = Vec::new();
        let closed = conn.reader.read_to_end(&mut rest);
        let elapsed = started.elapsed();
        assert!(
            rest.is_empty(),
            "no answer: {:?}",
            String::from_utf8_lossy(&rest)
        );
        // A reset (the drip's bytes unread at close) is a close too.
        if let Err(e) = closed {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
        drop(conn.reader.get_ref().shutdown(std::net::Shutdown::Both));
        dripping.join().unwrap();
        elapsed
    }

    let fresh = trickle(&mut KeepAlive::connect(server.addr));
    assert!(
        fresh >= Duration::from_millis(900) && fresh < Duration::from_secs(4),
        "a fresh connection closed after {fresh:?}"
    );

    let mut kept = KeepAlive::connect(server.addr);
    kept.send_raw(KeepAlive::get_head("/healthz", "").as_bytes());
    assert_eq!(kept.read().0, 200);
    let after_one = trickle(&mut kept);
    assert!(
        after_one >= Duration::from_millis(900) && after_one < Duration::from_secs(4),
        "a kept-alive connection closed after {after_one:?}"
    );

    // A head in two parts, 400 ms apart, is within the timeout.
    let mut split = KeepAlive::connect(server.addr);
    split.send_raw(b"GET /healthz HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(400));
    split.send_raw(b"Host: t\r\n\r\n");
    assert_eq!(split.read().0, 200);
    assert_eq!(server.request("GET", "/healthz", &[], b"").status, 200);
}

/// Upload the large test photo for `key` (URL-encoded); its content hash.
fn upload_photo(server: &Server, key: &str) -> String {
    let (ak, av) = auth();
    let r = server.request(
        "PUT",
        &format!("/v1/avatars/{key}"),
        &[(ak, &av)],
        &fixture("photo_large_4032x3024.jpg"),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Idle keep-alive connections are parked (no hyper buffers held) and wake
/// up for the next request on the same socket: large bodies, pipelining, a
/// head split by a pause, and `Connection: close` all behave as without
/// parking.
#[test]
fn idle_keep_alive_connections_are_parked_and_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--header-timeout", "5"], Some(TOKEN));
    let big = format!(
        "/c/{}.png?s=2048",
        upload_photo(&server, "park%40example.org")
    );

    let mut conns: Vec<KeepAlive> = (0..3).map(|_| KeepAlive::connect(server.addr)).collect();
    let mut first = Vec::new();
    for c in &mut conns {
        let (status, body) = c.get(&big);
        assert_eq!(status, 200);
        assert!(body.len() > 1 << 20, "a large body: {} bytes", body.len());
        first = body;
    }
    let parked = eventually(Duration::from_secs(5), || {
        (metric(server.addr, "avatar_edge_connections_parked") >= 3).then_some(())
    });
    assert!(parked.is_some(), "idle connections parked");

    // Woken by the next request: same bytes again.
    for c in &mut conns {
        let (status, body) = c.get(&big);
        assert_eq!(status, 200);
        assert_eq!(body, first, "identical body after parking");
    }
    // Pipelined: two requests in one write, two answers in order.
    let two = KeepAlive::get_head("/healthz", "") + &KeepAlive::get_head("/nope", "");
    conns[0].send_raw(two.as_bytes());
    assert_eq!(conns[0].read().0, 200);
    assert_eq!(conns[0].read().0, 404);
    // A head split by a pause longer than the parking grace period.
    std::thread::sleep(Duration::from_millis(800));
    conns[1].send_raw(b"GET /healthz HTTP/1.1\r\nHo");
    std::thread::sleep(Duration::from_millis(1200));
    conns[1].send_raw(b"st: t\r\n\r\n");
    assert_eq!(conns[1].read().0, 200);
    // Connection: close is honoured after a wake-up.
    std::thread::sleep(Duration::from_millis(800));
    conns[2].send_raw(KeepAlive::get_head("/healthz", "Connection: close\r\n").as_bytes());
    let (status, close, _) = conns[2].read();
    assert_eq!((status, close), (200, true));
    let mut rest = Vec::new();
    conns[2].reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed after the response");

    // A parked connection left silent is closed after the header timeout.
    let mut idle = KeepAlive::connect(server.addr);
    assert_eq!(idle.get("/healthz").0, 200);
    let started = Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(
        idle.reader.read(&mut buf).unwrap_or(0),
        0,
        "closed, nothing sent"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "closed after {waited:?}"
    );
    let gone = eventually(Duration::from_secs(5), || {
        (metric(server.addr, "avatar_edge_connections_parked") <= 2).then_some(())
    });
    assert!(gone.is_some(), "closed connections leave the parked gauge");
}

/// HTTP/2 with prior knowledge (what a CDN's origin pool may speak): the
/// server picks it by the connection preface; several streams on one
/// connection; an HTTP/1.1 client on the same port is unaffected.
#[test]
fn http2_prior_knowledge_is_served_on_the_same_port() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], Some(TOKEN));
    let hash = upload_photo(&server, "h2%40example.org");
    let over_h1 = server.request("GET", &format!("/c/{hash}.png?s=64"), &[], b"");
    assert_eq!(over_h1.status, 200);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr;
    let (health, avatar, version) = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let get = |path: String| {
            hyper::Request::get(format!("http://{addr}{path}"))
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        // Two streams in flight at once on the one connection.
        let a = send.send_request(get("/healthz".into()));
        let b = send.send_request(get(format!("/c/{hash}.png?s=64")));
        let (a, b) = tokio::join!(a, b);
        let (a, b) = (a.unwrap(), b.unwrap());
        let version = b.version();
        let status_a = a.status().as_u16();
        let status_b = b.status().as_u16();
        let body = b.into_body().collect().await.unwrap().to_bytes();
        (status_a, (status_b, body), version)
    });
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(health, 200);
    assert_eq!(avatar.0, 200);
    assert_eq!(
        avatar.1.as_ref(),
        over_h1.body.as_slice(),
        "same bytes as over HTTP/1.1"
    );
}

/// Issue 22 over real sockets: the options reach the pipeline (`--max-frames`
/// refuses with a 422 naming the limit; `--animation-over-limit still` keeps the
/// first frame), and an animated upload is served as an animated GIF and WebP.
#[test]
fn animated_uploads_over_real_sockets() {
    use image::AnimationDecoder;
    let frames = |body: &[u8]| {
        let dec = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(body)).unwrap();
        dec.into_frames().count()
    };
    let (ak, av) = auth();
    let gif = fixture("gif_animated_aero_56f.gif");

    let dir = tempfile::tempdir().unwrap();
    let strict = Server::start(dir.path(), &["--max-frames", "20"], Some(TOKEN));
    let r = strict.request("PUT", "/v1/avatars/a%40example.org", &[(ak, &av)], &gif);
    assert_eq!(r.status, 422);
    let err: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(err["error"], "too_many_frames");
    assert!(err["message"].as_str().unwrap().contains("--max-frames"));
    drop(strict);

    let dir = tempfile::tempdir().unwrap();
    let lenient = Server::start(
        dir.path(),
        &["--max-frames", "20", "--animation-over-limit", "still"],
        Some(TOKEN),
    );
    let r = lenient.request("PUT", "/v1/avatars/a%40example.org", &[(ak, &av)], &gif);
    assert_eq!(r.status, 200);
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let r = lenient.request(
        "GET",
        &format!("/c/{}.gif?s=64", info["hash"].as_str().unwrap()),
        &[],
        b"",
    );
    assert_eq!((r.status, frames(&r.body)), (200, 1));
    drop(lenient);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], Some(TOKEN));
    let r = server.request("PUT", "/v1/avatars/a%40example.org", &[(ak, &av)], &gif);
    assert_eq!(r.status, 200);
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let hash = info["hash"].as_str().unwrap();
    let r = server.request("GET", &format!("/c/{hash}.gif?s=64"), &[], b"");
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("image/gif"))
    );
    assert_eq!(frames(&r.body), 29);
    let r = server.request(
        "GET",
        &format!("/c/{hash}?s=64"),
        &[("Accept", "image/webp")],
        b"",
    );
    assert_eq!(r.header("content-type"), Some("image/webp"));
    let dec = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&r.body[..])).unwrap();
    assert!(dec.has_animation());
}
