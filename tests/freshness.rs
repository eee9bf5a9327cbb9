//! Freshness against real parts: a real Varnish (with the xkey vmod) in front
//! of the real binary, webhooks across a SIGKILL, server-sent events resumed
//! with Last-Event-ID. `scripts/test` installs varnish and varnish-modules.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::varnish::Varnish;
use common::*;

fn upload(server: &Server, key: &str, file: &str) -> serde_json::Value {
    let (ak, av) = auth();
    let r = server.request(
        "PUT",
        &format!("/v1/avatars/{key}"),
        &[(ak, &av)],
        &fixture(file),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

/// The scenario from the bug report: header (s=32) and profile (s=256) through
/// a CDN; the avatar changes; both must show the new one at once.
fn varnish_scenario(purge: bool) -> (bool, Duration) {
    let data = tempfile::tempdir().unwrap();
    let backend_port = free_port();
    let varnish = Varnish::start(backend_port);
    let listen = format!("127.0.0.1:{backend_port}");
    let purge_url = format!("http://{}/", varnish.addr);
    let mut args = vec![];
    if purge {
        args.extend(["--purge-endpoint", purge_url.as_str()]);
    }
    let server = Server::start_on(data.path(), &args, Some(TOKEN), &listen);
    let email = "fresh@example.org";
    upload(&server, email, "photo_grace_hopper_512x600.jpg");
    if purge {
        // The first upload's own purge is delivered asynchronously: wait for
        // its acknowledgement, so it cannot land between the two fetches below
        // and turn the second one into a miss.
        let delivered = eventually(Duration::from_secs(10), || {
            let m = server.request("GET", "/metrics", &[], b"");
            String::from_utf8_lossy(&m.body)
                .lines()
                .any(|l| l.starts_with("avatar_edge_delivered_events_total{") && !l.ends_with(" 0"))
                .then_some(())
        });
        assert!(
            delivered.is_some(),
            "the first upload's purge was acknowledged"
        );
    }
    let md5 = md5_hex(email);
    let paths = [
        format!("/avatar/{md5}?s=32"),
        format!("/avatar/{md5}?s=256"),
    ];
    let mut old = Vec::new();
    for p in &paths {
        let first = varnish.get(p);
        assert_eq!(first.status, 200);
        assert_eq!(first.header("x-cache"), Some("MISS"), "{p}");
        let second = varnish.get(p);
        assert_eq!(
            second.header("x-cache"),
            Some("HIT"),
            "{p}: second fetch is a cache hit"
        );
        assert_eq!(second.body, first.body);
        assert!(second.header("xkey").is_none(), "internal header stripped");
        old.push(first.body);
    }
    let changed_at = Instant::now();
    upload(&server, email, "logo_alpha_disc_512.png");
    let want: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| server.request("GET", p, &[], b"").body)
        .collect();
    for (o, w) in old.iter().zip(&want) {
        assert_ne!(o, w, "the origin serves the new avatar");
    }
    let fresh = eventually(Duration::from_secs(1), || {
        paths
            .iter()
            .zip(&want)
            .all(|(p, w)| varnish.get(p).body == *w)
            .then_some(())
    });
    let elapsed = changed_at.elapsed();
    if !purge {
        // Without purging, the CDN keeps serving the old bytes: the test can fail.
        for (p, o) in paths.iter().zip(&old) {
            let r = varnish.get(p);
            assert_eq!(r.header("x-cache"), Some("HIT"));
            assert_eq!(&r.body, o, "{p}: stale copy still served without purge");
        }
    }
    drop(server);
    (fresh.is_some(), elapsed)
}

#[test]
fn varnish_serves_the_new_avatar_at_every_size_within_a_second() {
    let (fresh, elapsed) = varnish_scenario(true);
    assert!(
        fresh,
        "both sizes fresh through Varnish within 1 s (took {elapsed:?})"
    );
}

#[test]
fn without_purging_varnish_keeps_the_old_avatar() {
    let (fresh, _) = varnish_scenario(false);
    assert!(
        !fresh,
        "without purges the CDN must still hold the old bytes"
    );
}

/// (browser, class, Accept) rows of `fixtures/browser_accepts.tsv`.
fn browser_accepts() -> Vec<(String, String, String)> {
    String::from_utf8(fixture("browser_accepts.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, '\t').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

/// A dozen real browsers' `Accept` strings through examples/varnish.vcl: at
/// most one cached object per negotiated class (avif, webp, other) and URL,
/// each class served its own format, and every later fetch a hit.
#[test]
fn varnish_keeps_one_object_per_accept_class() {
    let data = tempfile::tempdir().unwrap();
    let backend_port = free_port();
    let varnish = Varnish::start(backend_port);
    let listen = format!("127.0.0.1:{backend_port}");
    let server = Server::start_on(data.path(), &["--avif-negotiate"], Some(TOKEN), &listen);
    let email = "accept@example.org";
    let info = upload(&server, email, "photo_grace_hopper_512x600.jpg");
    let hash = info["hash"].as_str().unwrap().to_string();
    let browsers = browser_accepts();
    assert!(browsers.len() >= 12, "a dozen browsers");
    let want_type = |class: &str| match class {
        "avif" => "image/avif",
        "webp" => "image/webp",
        _ => "image/jpeg",
    };
    for path in [
        format!("/c/{hash}?s=128"),
        format!("/avatar/{}?s=128", md5_hex(email)),
    ] {
        let mut misses: Vec<String> = Vec::new();
        for round in 0..2 {
            for (browser, class, accept) in &browsers {
                let r = varnish.get_with(&path, &[("Accept", accept)]);
                assert_eq!(r.status, 200, "{browser} {path}");
                assert_eq!(
                    r.header("content-type"),
                    Some(want_type(class)),
                    "{browser} {path}"
                );
                assert_eq!(r.header("vary"), Some("Accept"), "{browser} {path}");
                if r.header("x-cache") == Some("MISS") {
                    assert_eq!(round, 0, "{browser} {path}: a miss on the second round");
                    assert!(
                        !misses.contains(class),
                        "{browser} {path}: a second object for class {class}"
                    );
                    misses.push(class.clone());
                }
            }
        }
        misses.sort();
        assert_eq!(misses, ["avif", "other", "webp"], "{path}");
    }
    drop(server);
}

/// What the receiver recorded: (event id header, signature header, body).
type Hooks = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A webhook receiver on a fixed port.
struct Receiver {
    got: Hooks,
}

impl Receiver {
    fn start(listener: TcpListener) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let sink = sink.clone();
                std::thread::spawn(move || serve_hooks(stream, sink));
            }
        });
        Receiver { got }
    }
}

fn serve_hooks(stream: TcpStream, sink: Hooks) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (mut len, mut id, mut sig) = (0usize, String::new(), String::new());
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "x-avatar-edge-event-id" => id = v.trim().to_string(),
                "x-avatar-edge-signature" => sig = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        sink.lock().unwrap().push((id, sig, body));
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    }
}

#[test]
fn webhooks_survive_a_sigkill_between_change_and_delivery() {
    let data = tempfile::tempdir().unwrap();
    // Reserve the receiver's port but do not accept yet: deliveries fail.
    let hook_port = free_port();
    let hook = format!("http://127.0.0.1:{hook_port}/hook");
    let args = [
        "--webhook",
        hook.as_str(),
        "--webhook-secret",
        "hook-secret",
    ];
    let server = Server::start(data.path(), &args, Some(TOKEN));
    let email = "hooked@example.org";
    upload(&server, email, "photo_grace_hopper_512x600.jpg");
    upload(&server, email, "logo_alpha_disc_512.png");
    let (ak, av) = auth();
    assert_eq!(
        server
            .request("DELETE", &format!("/v1/avatars/{email}"), &[(ak, &av)], b"")
            .status,
        204
    );
    std::thread::sleep(Duration::from_millis(300));
    kill_hard(server);

    let receiver = Receiver::start(TcpListener::bind(("127.0.0.1", hook_port)).unwrap());
    let server = Server::start(data.path(), &args, Some(TOKEN));
    let all = eventually(Duration::from_secs(20), || {
        let got = receiver.got.lock().unwrap();
        let mut ids: Vec<&str> = got.iter().map(|(id, _, _)| id.as_str()).collect();
        ids.dedup();
        (ids.len() >= 3).then(|| got.clone())
    })
    .expect("all three events delivered after the restart");
    drop(server);
    // At least once, deduplicable by id, in order, signed, exactly as committed.
    let mut seen = Vec::new();
    for (id, sig, body) in &all {
        assert_eq!(sig, &avatar_edge::delivery::signature("hook-secret", body));
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["id"].to_string(), *id);
        if seen.last() != Some(id) {
            seen.push(id.clone());
            assert_eq!(v["version"], seen.len(), "ordered per identity");
            assert_eq!(v["aliases"][0], md5_hex(email));
        }
    }
    assert_eq!(seen, vec!["1", "2", "3"]);
    let last: serde_json::Value = serde_json::from_slice(&all.last().unwrap().2).unwrap();
    assert!(
        last["hash"].is_null(),
        "the delete is delivered as hash: null"
    );
}

/// Read server-sent-event frames from a raw stream until `n` `avatar` events arrived.
fn read_events(reader: &mut BufReader<TcpStream>, n: usize) -> Vec<(u64, serde_json::Value)> {
    let mut out = Vec::new();
    let mut id = None;
    while out.len() < n {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
        let line = line.trim_end();
        // Chunked transfer: skip chunk-size lines (hex only).
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(data) = line.strip_prefix("data: ") {
            out.push((id.take().unwrap(), serde_json::from_str(data).unwrap()));
        }
    }
    out
}

fn open_events(addr: SocketAddr, query: &str, last_id: Option<u64>) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req =
        format!("GET /v1/events{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
    if let Some(id) = last_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h.trim_end().is_empty() {
            break;
        }
        if h.to_ascii_lowercase().starts_with("content-type") {
            assert!(h.contains("text/event-stream"));
        }
    }
    // Wait for the greeting so the subscription is live before we act.
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        if l.contains(": connected") {
            return reader;
        }
    }
}

#[test]
fn event_streams_resume_from_last_event_id() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[], Some(TOKEN));
    let watched = "watched@example.org";
    let other = "other@example.org";
    let q = format!("?keys={}", md5_hex(watched));
    let mut stream = open_events(server.addr, &q, None);
    upload(&server, other, "photo_grace_hopper_512x600.jpg"); // filtered out
    let v1 = upload(&server, watched, "photo_grace_hopper_512x600.jpg");
    let first = read_events(&mut stream, 1);
    assert_eq!(first[0].1["version"], 1);
    assert_eq!(
        first[0].1["url"],
        format!("/c/{}", v1["hash"].as_str().unwrap())
    );
    let last_seen = first[0].0;
    drop(stream);

    // Missed while disconnected.
    upload(&server, watched, "logo_alpha_disc_512.png");
    upload(&server, other, "logo_alpha_disc_512.png");
    let (ak, av) = auth();
    server.request(
        "DELETE",
        &format!("/v1/avatars/{watched}"),
        &[(ak, &av)],
        b"",
    );

    let mut resumed = open_events(server.addr, &q, Some(last_seen));
    let missed = read_events(&mut resumed, 2);
    assert_eq!(missed[0].1["version"], 2);
    assert_eq!(missed[1].1["version"], 3);
    assert!(missed[1].1["hash"].is_null());
    assert!(missed.iter().all(|(id, _)| *id > last_seen));
    // And live events keep coming on the resumed stream.
    upload(&server, watched, "photo_grace_hopper_512x600.jpg");
    let live = read_events(&mut resumed, 1);
    assert_eq!(live[0].1["version"], 4);
}

/// Issue 16: a takedown purges every cached size and format of the content
/// and the identities showing it; the 410s Varnish then caches carry the
/// content's key, so the lift purges them again.
#[test]
fn varnish_drops_every_cached_size_of_taken_down_content_and_a_lift_restores_it() {
    let data = tempfile::tempdir().unwrap();
    let backend_port = free_port();
    let varnish = Varnish::start(backend_port);
    let listen = format!("127.0.0.1:{backend_port}");
    let purge_url = format!("http://{}/", varnish.addr);
    let server = Server::start_on(
        data.path(),
        &["--purge-endpoint", purge_url.as_str()],
        Some(TOKEN),
        &listen,
    );
    let email = "takedown@example.org";
    let info = upload(&server, email, "photo_grace_hopper_512x600.jpg");
    let hash = info["hash"].as_str().unwrap().to_string();
    let delivered = |n: u64| {
        eventually(Duration::from_secs(10), || {
            let m = server.request("GET", "/metrics", &[], b"");
            String::from_utf8_lossy(&m.body)
                .lines()
                .filter(|l| l.starts_with("avatar_edge_delivered_events_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .any(|v| v >= n)
                .then_some(())
        })
        .is_some()
    };
    assert!(delivered(1), "the upload's purge was acknowledged");
    let md5 = md5_hex(email);
    let content = [
        format!("/c/{hash}?s=32"),
        format!("/c/{hash}.webp?s=128"),
        format!("/c/{hash}.png?s=256"),
        format!("/c/{hash}.jpg"),
    ];
    let identity = [
        format!("/avatar/{md5}?s=32"),
        format!("/avatar/{md5}?s=256"),
    ];
    for p in content.iter().chain(&identity) {
        assert_eq!(varnish.get(p).status, 200, "{p}");
        let again = varnish.get(p);
        assert_eq!(again.header("x-cache"), Some("HIT"), "{p} cached");
    }

    let (ak, av) = auth();
    let body = format!(r#"{{"hash":"{hash}","reason":"test"}}"#);
    let r = server.request("POST", "/v1/takedowns", &[(ak, &av)], body.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let gone = eventually(Duration::from_secs(2), || {
        let content_gone = content.iter().all(|p| varnish.get(p).status == 410);
        let defaults = identity
            .iter()
            .all(|p| varnish.get(p).header("x-avatar-default").is_some());
        (content_gone && defaults).then_some(())
    });
    assert!(gone.is_some(), "every cached size purged within 2 s");
    for p in &content {
        let r = varnish.get(p);
        assert_eq!(r.header("x-cache"), Some("HIT"), "{p}: the 410 is cached");
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["error"], "gone", "{p}");
    }

    let lift = format!("/v1/takedowns/{hash}");
    let r = server.request("DELETE", &lift, &[(ak, &av)], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let back = eventually(Duration::from_secs(2), || {
        let content_back = content.iter().all(|p| varnish.get(p).status == 200);
        let avatars = identity
            .iter()
            .all(|p| varnish.get(p).header("x-avatar-default").is_none());
        (content_back && avatars).then_some(())
    });
    assert!(
        back.is_some(),
        "the lift purged the cached 410s and defaults"
    );
    drop(server);
}
