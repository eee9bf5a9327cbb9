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
