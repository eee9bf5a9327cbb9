//! Issue 16 against the real binary: the upload policy hook (item 2) with a
//! real hook server started here on 127.0.0.1 — a small HTTP/1.1 server on
//! plain sockets, so it can also hang, answer garbage that is not HTTP, or
//! answer 10 MB.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::Value;

/// The hook's behaviour is chosen by the upload's key (its local part).
fn answer(key: &str, out: &mut TcpStream) {
    let _ = out.set_write_timeout(Some(Duration::from_secs(20)));
    let local = key.split('@').next().unwrap_or("");
    let json = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match local {
        l if l.starts_with("refuse") => {
            let body = r#"{"reason":"nudity is not allowed here"}"#;
            let _ = out.write_all(json("422 Unprocessable Entity", body).as_bytes());
        }
        l if l.starts_with("forbid") => {
            let _ = out.write_all(json("403 Forbidden", "").as_bytes());
        }
        l if l.starts_with("hang") => std::thread::sleep(Duration::from_secs(30)),
        l if l.starts_with("garbage") => {
            let _ = out.write_all(b"SURE, WHY NOT\r\n\r\n{\"ok\": maybe}\r\n");
        }
        l if l.starts_with("hugelen") => {
            // A 2xx that declares a 10 MB body.
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\nConnection: close\r\n\r\n";
            let _ = out.write_all(head.as_bytes());
            write_junk(out, 10 << 20);
        }
        l if l.starts_with("huge") => {
            // A 2xx whose body (no length: until the connection closes) is
            // 10 MB: must be cut off by the bounded read, not buffered.
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            write_junk(out, 10 << 20);
        }
        l if l.starts_with("teapot") => {
            let _ = out.write_all(json("418 I'm a teapot", "{}").as_bytes());
        }
        _ => {
            let _ = out.write_all(json("200 OK", r#"{"ok":true}"#).as_bytes());
        }
    }
}

/// Write `len` bytes of filler, stopping when the peer has gone.
fn write_junk(out: &mut TcpStream, len: usize) {
    let chunk = vec![b'x'; 64 << 10];
    for _ in 0..(len / chunk.len()) {
        if out.write_all(&chunk).is_err() {
            break;
        }
    }
}

/// A hook server: every request's JSON body is kept in `seen`.
struct Hook {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Hook { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/check", self.addr)
    }

    fn last(&self) -> Value {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the hook was called")
    }
}

/// Read one request (head, then `Content-Length` bytes of JSON) and answer it.
fn serve(conn: TcpStream, seen: &Mutex<Vec<Value>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut len = 0usize;
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    assert!(first.starts_with("POST /check "), "{first}");
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let v: Value = serde_json::from_slice(&body).expect("the hook's request is JSON");
    let key = v["key"].as_str().unwrap_or("").to_string();
    seen.lock().unwrap().push(v);
    let mut out = conn;
    answer(&key, &mut out);
}

fn put(server: &Server, key: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let r = server.request(
        "PUT",
        &format!("/v1/avatars/{key}"),
        &[(auth().0, &auth().1)],
        &fixture("photo_grace_hopper_512x600.jpg"),
    );
    (r, started.elapsed())
}

fn json(r: &Reply) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
}

/// Nothing is stored for `key`: the API has no avatar and the identity URL
/// serves its default.
fn assert_nothing_stored(server: &Server, key: &str) {
    let r = server.request("GET", &format!("/v1/avatars/{key}"), &[], b"");
    assert_eq!(r.status, 404, "{key}: {}", String::from_utf8_lossy(&r.body));
    let r = server.request("GET", &format!("/avatar/{}?s=64", md5_hex(key)), &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-avatar-default").is_some(),
        "{key} serves its default"
    );
}

fn metric(server: &Server, sample: &str) -> u64 {
    let r = server.request("GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{sample} missing"))
}

const TIMEOUT_SECS: u64 = 2;

#[test]
fn the_hook_refuses_accepts_and_fails_closed() {
    let hook = Hook::start();
    let data = tempfile::tempdir().unwrap();
    let url = hook.url();
    let timeout = TIMEOUT_SECS.to_string();
    let server = Server::start(
        data.path(),
        &["--upload-hook", &url, "--upload-hook-timeout", &timeout],
        Some(TOKEN),
    );

    // Refused with a reason: 422, the reason as message, nothing stored.
    let (r, _) = put(&server, "refused@example.org");
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let j = json(&r);
    assert_eq!(j["error"], "rejected_by_policy");
    assert_eq!(j["message"], "nudity is not allowed here");
    assert_nothing_stored(&server, "refused@example.org");
    // 403 without a body: refused with the default message.
    let (r, _) = put(&server, "forbidden@example.org");
    assert_eq!(r.status, 422);
    assert_eq!(json(&r)["error"], "rejected_by_policy");
    assert!(!json(&r)["message"].as_str().unwrap().is_empty());
    assert_nothing_stored(&server, "forbidden@example.org");

    // Accepted: stored, and the hook saw the facts and a 256 px JPEG.
    let (r, _) = put(&server, "accepted@example.org");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let stored = json(&r);
    let seen = hook.last();
    assert_eq!(seen["key"], "accepted@example.org");
    assert_eq!(seen["hash"], stored["hash"]);
    assert_eq!(seen["width"], stored["width"]);
    assert_eq!(seen["height"], stored["height"]);
    assert_eq!(seen["format"], "jpeg");
    assert_eq!(seen["rating"], "g");
    assert_eq!(seen["preview"]["type"], "image/jpeg");
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(seen["preview"]["base64"].as_str().unwrap())
        .unwrap();
    let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (256, 256));
    let r = server.request(
        "GET",
        &format!("/avatar/{}?s=64", md5_hex("accepted@example.org")),
        &[],
        b"",
    );
    assert!(
        r.header("x-avatar-default").is_none(),
        "the avatar is served"
    );

    // Hangs, garbage, 10 MB, an unexpected status: 503 + Retry-After within
    // the timeout (and a second), nothing stored.
    for key in [
        "hang@example.org",
        "garbage@example.org",
        "huge@example.org",
        "hugelen@example.org",
        "teapot@example.org",
    ] {
        let (r, took) = put(&server, key);
        assert_eq!(r.status, 503, "{key}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(json(&r)["error"], "policy_unavailable", "{key}");
        assert!(r.header("retry-after").is_some(), "{key}");
        assert!(
            took < Duration::from_secs(TIMEOUT_SECS + 1),
            "{key} answered after {took:?}"
        );
        assert_nothing_stored(&server, key);
    }

    let outcome = |o: &str| {
        metric(
            &server,
            &format!("avatar_edge_upload_hook_total{{outcome=\"{o}\"}}"),
        )
    };
    assert_eq!(outcome("rejected"), 2);
    assert_eq!(outcome("accepted"), 1);
    assert_eq!(outcome("failed_closed"), 5);
    let reason = |r: &str| {
        metric(
            &server,
            &format!("avatar_edge_upload_hook_failures_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(
        (
            reason("timeout"),
            reason("invalid_answer"),
            reason("too_large"),
            reason("status")
        ),
        (1, 1, 2, 1)
    );

    // The server is still well after all of that.
    assert_eq!(server.request("GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn failures_open_accept_the_upload_and_refusals_still_refuse() {
    let hook = Hook::start();
    let data = tempfile::tempdir().unwrap();
    let url = hook.url();
    let timeout = TIMEOUT_SECS.to_string();
    let server = Server::start(
        data.path(),
        &[
            "--upload-hook",
            &url,
            "--upload-hook-timeout",
            &timeout,
            "--upload-hook-failure",
            "open",
        ],
        Some(TOKEN),
    );
    for key in ["hang@example.org", "garbage@example.org"] {
        let (r, took) = put(&server, key);
        assert_eq!(r.status, 200, "{key}: {}", String::from_utf8_lossy(&r.body));
        assert!(
            took < Duration::from_secs(TIMEOUT_SECS + 1),
            "{key}: {took:?}"
        );
        let r = server.request("GET", &format!("/v1/avatars/{key}"), &[], b"");
        assert_eq!(r.status, 200, "{key} is stored");
    }
    let (r, _) = put(&server, "refused@example.org");
    assert_eq!(r.status, 422);
    assert_nothing_stored(&server, "refused@example.org");
    assert_eq!(
        metric(
            &server,
            "avatar_edge_upload_hook_total{outcome=\"failed_open\"}"
        ),
        2
    );

    // A hook nobody listens on: a connection failure, accepted (open).
    let dead = format!("http://127.0.0.1:{}/check", free_port());
    drop(server);
    let server = Server::start(
        data.path(),
        &["--upload-hook", &dead, "--upload-hook-failure", "open"],
        Some(TOKEN),
    );
    let (r, _) = put(&server, "nobody@example.org");
    assert_eq!(r.status, 200);
    assert_eq!(
        metric(
            &server,
            "avatar_edge_upload_hook_failures_total{reason=\"connect\"}"
        ),
        1
    );
}
