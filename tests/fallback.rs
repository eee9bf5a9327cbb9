//! Issue 17, the migration proxy, against real parts: a second avatar-edge
//! process is the upstream (the same URL API), and a small HTTP server in this
//! file plays a hostile upstream (a decompression bomb, a 100 MB body, a
//! stalled body, a redirect elsewhere, errors).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The fetch deadline the edges in these tests run with, seconds.
const TIMEOUT_S: f64 = 1.0;

fn edge(dir: &std::path::Path, upstreams: &[String], extra: &[&str]) -> Server {
    let mut args: Vec<String> = Vec::new();
    for u in upstreams {
        args.push("--fallback-upstream".into());
        args.push(u.clone());
    }
    args.push("--fallback-timeout".into());
    args.push(TIMEOUT_S.to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(dir, &refs, Some(TOKEN))
}

/// Sum of a metric family's samples whose line contains `filter`.
fn metric(server: &Server, name: &str, filter: &str) -> u64 {
    let text = String::from_utf8(server.request("GET", "/metrics", &[], b"").body).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Identity requests the upstream has answered.
fn upstream_identity_requests(up: &Server) -> u64 {
    metric(up, "avatar_edge_requests_total{", "route=\"identity\"")
}

fn max_age(cache_control: &str) -> u64 {
    cache_control
        .split("max-age=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no max-age in {cache_control:?}"))
}

/// Mean absolute difference per channel of two images of one size, 0-255.
fn mean_diff(a: &[u8], b: &[u8]) -> f64 {
    let a = image::load_from_memory(a).unwrap().to_rgba8();
    let b = image::load_from_memory(b).unwrap().to_rgba8();
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn an_identity_only_the_upstream_knows_is_fetched_once_and_local_changes_win() {
    let up_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let up = upstream_with(up_dir.path(), &["migrated@example.org"]);
    let (ak, av) = auth();
    let known = md5_hex("migrated@example.org");
    let base = format!("http://{}/avatar/", up.addr);
    let edge = edge(edge_dir.path(), &[base], &[]);
    let before = upstream_identity_requests(&up);

    // 50 concurrent misses: one upstream request, every answer the picture.
    let path = format!("/avatar/{known}.png?s=128");
    let addr = edge.addr;
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| s.spawn(|| request(addr, "GET", &path, &[], b"")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-avatar-source"), Some("fallback"));
        assert_eq!(r.header("x-avatar-default"), None);
        assert_eq!(
            r.body, replies[0].body,
            "every waiter gets the same picture"
        );
    }
    assert_eq!(
        upstream_identity_requests(&up) - before,
        1,
        "one fetch for 50 misses"
    );
    assert!(metric(&edge, "avatar_edge_fallback_coalesced_total", "") >= 1);
    assert_eq!(
        metric(
            &edge,
            "avatar_edge_fallback_fetches_total",
            "outcome=\"found\""
        ),
        1
    );

    // Pixel-close to what the upstream itself serves (asked directly: counted
    // apart), at several sizes; kept
    // no longer than the entry (24 h by default), CDN lifetime included.
    let sizes = [32, 80, 128, 512];
    for size in sizes {
        let p = format!("/avatar/{known}.png?s={size}");
        let mine = edge.request("GET", &p, &[], b"");
        let theirs = up.request("GET", &p, &[], b"");
        assert_eq!((mine.status, theirs.status), (200, 200));
        let d = mean_diff(&mine.body, &theirs.body);
        assert!(d < 4.0, "{size} px: mean difference {d:.2}");
        let cc = mine.header("cache-control").unwrap();
        assert!(max_age(cc) <= 60, "{cc}");
        let cdn = mine.header("cdn-cache-control").unwrap();
        assert!(max_age(cdn) <= 86_400 && max_age(cdn) > 86_000, "{cdn}");
        assert!(mine.header("content-location").unwrap().starts_with("/c/"));
    }
    let before = before + sizes.len() as u64;
    assert_eq!(
        upstream_identity_requests(&up) - before,
        1,
        "served from the entry"
    );

    // Neither knows this one: the edge's default, asked once, kept no longer
    // than the negative entry (1 h); d=404 is a 404 only now.
    let nobody = md5_hex("nobody@example.org");
    let r = edge.request("GET", &format!("/avatar/{nobody}?s=64"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-avatar-default"), Some("identicon"));
    assert_eq!(r.header("x-avatar-source"), None);
    assert!(max_age(r.header("cdn-cache-control").unwrap()) <= 3600);
    let r = edge.request("GET", &format!("/avatar/{nobody}?s=64&d=404"), &[], b"");
    assert_eq!(r.status, 404);
    let r = edge.request("GET", &format!("/avatar/{known}?s=64&d=404"), &[], b"");
    assert_eq!(
        r.status, 200,
        "d=404 answers 404 only when no upstream has it"
    );
    assert_eq!(upstream_identity_requests(&up) - before, 2);
    assert_eq!(
        metric(
            &edge,
            "avatar_edge_fallback_fetches_total",
            "outcome=\"missing\""
        ),
        1
    );

    // A local upload wins at once.
    let r = edge.request(
        "PUT",
        "/v1/avatars/migrated%40example.org",
        &[(ak, &av)],
        &fixture("logo_alpha_500.png"),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let info: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(info["version"], 1);
    let local = info["hash"].as_str().unwrap().to_string();
    let r = edge.request("GET", &path, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-avatar-source"), None);
    assert!(r.header("content-location").unwrap().contains(&local));

    // A delete does not bring the upstream's back (a tombstone).
    let r = edge.request(
        "DELETE",
        "/v1/avatars/migrated%40example.org",
        &[(ak, &av)],
        b"",
    );
    assert!(r.status == 204 || r.status == 200, "{}", r.status);
    let r = edge.request("GET", &path, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-avatar-source"), None);
    assert!(r.header("x-avatar-default").is_some());
    assert_eq!(
        upstream_identity_requests(&up) - before,
        2,
        "not asked again"
    );
}

#[test]
fn a_stopped_upstream_gives_the_default_uncacheable_and_is_asked_again_soon() {
    let up_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let edge = edge(edge_dir.path(), &[format!("http://{listen}/avatar/")], &[]);
    let hash = md5_hex("comes-back@example.org");
    let path = format!("/avatar/{hash}?s=64");

    // Nobody listens: the default, no-store everywhere, within the deadline.
    let started = Instant::now();
    let r = edge.request("GET", &path, &[], b"");
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(r.header("x-avatar-default").is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("cdn-cache-control"), Some("no-store"));
    assert_eq!(r.header("surrogate-key"), None);
    assert!(took < Duration::from_secs_f64(TIMEOUT_S + 2.0), "{took:?}");
    let r = edge.request("GET", &format!("{path}&d=404"), &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(
        metric(
            &edge,
            "avatar_edge_fallback_failures_total",
            "reason=\"connect\""
        ) >= 1
    );

    // The upstream comes up with the identity: asked again within 10 s.
    let up = Server::start_on(up_dir.path(), &[], Some(TOKEN), &listen);
    let (ak, av) = auth();
    let r = up.request(
        "PUT",
        "/v1/avatars/comes-back%40example.org",
        &[(ak, &av)],
        &fixture("logo_alpha_500.png"),
    );
    assert_eq!(r.status, 200);
    let back = Instant::now();
    let served = eventually(Duration::from_secs(12), || {
        let r = edge.request("GET", &path, &[], b"");
        (r.header("x-avatar-source") == Some("fallback")).then_some(r)
    })
    .expect("the upstream is asked again after a failure");
    assert!(
        back.elapsed() <= Duration::from_secs(11),
        "{:?}",
        back.elapsed()
    );
    assert_ne!(served.header("cache-control"), Some("no-store"));

    // Stopped again: the stored entry keeps serving without asking.
    drop(up);
    let r = edge.request("GET", &path, &[], b"");
    assert_eq!(r.header("x-avatar-source"), Some("fallback"));
}

/// What the hostile upstream does for a request path.
fn hostile_answer(path: &str, s: &mut TcpStream, elsewhere: SocketAddr) {
    let head = |s: &mut TcpStream, status: &str, extra: &str| {
        let _ = write!(s, "HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n");
    };
    if path.contains("/bomb/") {
        let body = fixture("hostile/bomb_png_100000x100000_1bit.png");
        head(
            s,
            "200 OK",
            &format!(
                "Content-Type: image/png\r\nContent-Length: {}\r\n",
                body.len()
            ),
        );
        let _ = s.write_all(&body);
    } else if path.contains("/huge/") {
        // 100 MB, chunked (no length to refuse up front): the edge must stop reading.
        head(
            s,
            "200 OK",
            "Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n",
        );
        let chunk = vec![0x89u8; 1 << 20];
        for _ in 0..100 {
            if write!(s, "{:x}\r\n", chunk.len()).is_err()
                || s.write_all(&chunk).is_err()
                || s.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
    } else if path.contains("/declared/") {
        head(
            s,
            "200 OK",
            "Content-Type: image/png\r\nContent-Length: 104857600\r\n",
        );
    } else if path.contains("/stall/") {
        let body = fixture("logo_alpha_500.png");
        head(
            s,
            "200 OK",
            &format!(
                "Content-Type: image/png\r\nContent-Length: {}\r\n",
                body.len()
            ),
        );
        let _ = s.write_all(&body[..100]);
        std::thread::sleep(Duration::from_secs(8));
    } else if path.contains("/html/") {
        let body = b"<html>not an avatar</html>";
        head(
            s,
            "200 OK",
            &format!(
                "Content-Type: image/png\r\nContent-Length: {}\r\n",
                body.len()
            ),
        );
        let _ = s.write_all(body);
    } else if path.contains("/away/") {
        head(
            s,
            "302 Found",
            &format!("Location: http://{elsewhere}/x.png\r\nContent-Length: 0\r\n"),
        );
    } else if path.contains("/loop/") {
        head(
            s,
            "302 Found",
            &format!("Location: {path}\r\nContent-Length: 0\r\n"),
        );
    } else if path.contains("/busy/") {
        head(s, "429 Too Many Requests", "Content-Length: 0\r\n");
    } else {
        head(s, "500 Internal Server Error", "Content-Length: 0\r\n");
    }
}

/// A small HTTP/1.1 server: one thread per connection, `Connection: close`.
fn hostile_upstream(elsewhere: SocketAddr, paths: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let paths = paths.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                paths.lock().unwrap().push(path.clone());
                hostile_answer(&path, &mut s, elsewhere);
            });
        }
    });
    addr
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_hostile_upstream_never_hurts_the_edge() {
    // Anything reaching this listener is a redirect the edge must not follow.
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let up = hostile_upstream(elsewhere.local_addr().unwrap(), paths.clone());
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("bomb", "image"),
        ("huge", "too_large"),
        ("declared", "too_large"),
        ("stall", "timeout"),
        ("html", "image"),
        ("away", "redirect"),
        ("loop", "redirect"),
        ("busy", "status"),
        ("error", "status"),
    ];
    // One edge per case, on its own data directory: each failure counted alone.
    for (name, reason) in cases {
        let sub = dir.path().join(name);
        let edge = edge(&sub, &[format!("http://{up}/{name}/")], &[]);
        let rss_before = rss_kib(edge.child.id());
        let hash = md5_hex(&format!("{name}@example.org"));
        let started = Instant::now();
        let r = edge.request("GET", &format!("/avatar/{hash}?s=64"), &[], b"");
        let took = started.elapsed();
        assert_eq!(r.status, 200, "{name}");
        assert!(r.header("x-avatar-default").is_some(), "{name}");
        assert_eq!(r.header("x-avatar-source"), None, "{name}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{name}");
        assert_eq!(r.header("cdn-cache-control"), Some("no-store"), "{name}");
        assert!(
            took < Duration::from_secs_f64(TIMEOUT_S + 2.0),
            "{name}: {took:?}"
        );
        assert_eq!(
            metric(
                &edge,
                "avatar_edge_fallback_failures_total",
                &format!("reason=\"{reason}\"")
            ),
            1,
            "{name}"
        );
        let grown = rss_kib(edge.child.id()).saturating_sub(rss_before);
        assert!(
            grown < 100 << 10,
            "{name}: resident memory grew by {grown} KiB"
        );
        // Still healthy and serving.
        assert_eq!(edge.request("GET", "/healthz", &[], b"").status, 200);
    }
    assert!(
        elsewhere.accept().is_err(),
        "a redirect to another port was followed"
    );
    let asked = paths.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .all(|p| p.ends_with("?s=1024&d=404") || p.starts_with("/loop/")),
        "{asked:?}"
    );
}

#[test]
fn without_upstreams_nothing_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], Some(TOKEN));
    let r = server.request(
        "GET",
        &format!("/avatar/{}?s=40", md5_hex("x@example.org")),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(max_age(r.header("cdn-cache-control").unwrap()) == 86_400);
    let text = String::from_utf8(server.request("GET", "/metrics", &[], b"").body).unwrap();
    assert!(!text.contains("avatar_edge_fallback_fetches_total"));
}

#[test]
fn on_a_nats_cluster_the_fallback_entry_is_shared_by_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1);
    let urls = nats.urls();
    let up = Server::start(&dir.path().join("up"), &[], Some(TOKEN));
    let (ak, av) = auth();
    let r = up.request(
        "PUT",
        "/v1/avatars/clustered%40example.org",
        &[(ak, &av)],
        &fixture("photo_grace_hopper_512x600.jpg"),
    );
    assert_eq!(r.status, 200);
    let base = format!("http://{}/avatar/", up.addr);
    let nats_args = ["--nats", urls.as_str(), "--nats-replicas", "1"];
    let whole_args = [&nats_args[..], &["--nats-index-mb", "0"]].concat();
    // Issue 20: node one holds the whole index; nodes two and three a
    // bounded replica, where a
    // fallback's master (named by its lease, listing no identity) is kept
    // as its hash and lease only, and looked up through the hot set.
    let bounded_args = [&nats_args[..], &["--nats-index-mb", "1"]].concat();
    let one = edge(
        &dir.path().join("one"),
        std::slice::from_ref(&base),
        &whole_args,
    );
    let two = edge(
        &dir.path().join("two"),
        std::slice::from_ref(&base),
        &bounded_args,
    );
    let before = upstream_identity_requests(&up);

    let known = md5_hex("clustered@example.org");
    let nobody = md5_hex("nobody-anywhere@example.org");
    let path = format!("/avatar/{known}.png?s=96");
    let first = one.request("GET", &path, &[], b"");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-avatar-source"), Some("fallback"));
    let r = one.request("GET", &format!("/avatar/{nobody}?d=404"), &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(upstream_identity_requests(&up) - before, 2);

    // Node two serves both from the shared entries without asking.
    let second = two.request("GET", &path, &[], b"");
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-avatar-source"), Some("fallback"));
    assert_eq!(second.body, first.body);
    let r = two.request("GET", &format!("/avatar/{nobody}?d=404"), &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(
        upstream_identity_requests(&up) - before,
        2,
        "the cluster asked once per hash"
    );

    // Issue 15's collector sweeps unnamed masters (each node's first sweep
    // runs within ~10 s of its start); the entry's lease keeps this one. A
    // node started afterwards (no blob of it cached) renders a new size from
    // the object store's blobs.
    std::thread::sleep(std::time::Duration::from_secs(11));
    let three = edge(&dir.path().join("three"), &[base], &bounded_args);
    let later = three.request("GET", &format!("/avatar/{known}.png?s=40"), &[], b"");
    assert_eq!(later.status, 200);
    assert_eq!(later.header("x-avatar-source"), Some("fallback"));
    assert_eq!(upstream_identity_requests(&up) - before, 2);
    for node in [&two, &three] {
        assert_eq!(
            metric(node, "avatar_edge_replica_masters", ""),
            1,
            "its lease"
        );
    }
}

#[test]
fn a_local_upload_replaces_the_fallback_in_varnish_at_once() {
    let up_dir = tempfile::tempdir().unwrap();
    let edge_dir = tempfile::tempdir().unwrap();
    let up = upstream_with(up_dir.path(), &["cdn@example.org"]);
    let (ak, av) = auth();
    let backend_port = free_port();
    let varnish = common::varnish::Varnish::start(backend_port);
    let purge = format!("http://{}/", varnish.addr);
    let listen = format!("127.0.0.1:{backend_port}");
    let args = [
        "--fallback-upstream".to_string(),
        format!("http://{}/avatar/", up.addr),
        "--purge-endpoint".to_string(),
        purge,
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let edge = Server::start_on(edge_dir.path(), &args, Some(TOKEN), &listen);

    let path = format!("/avatar/{}?s=64", md5_hex("cdn@example.org"));
    let first = varnish.get(&path);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-avatar-source"), Some("fallback"));
    let second = varnish.get(&path);
    assert_eq!(
        second.header("x-cache"),
        Some("HIT"),
        "the fallback is cached"
    );
    assert_eq!(second.body, first.body);

    let r = edge.request(
        "PUT",
        "/v1/avatars/cdn%40example.org",
        &[(ak, &av)],
        &fixture("logo_alpha_disc_512.png"),
    );
    assert_eq!(r.status, 200);
    let local = edge.request("GET", &path, &[], b"").body;
    assert_ne!(local, first.body);
    let fresh = eventually(Duration::from_secs(2), || {
        let r = varnish.get(&path);
        (r.body == local).then_some(r)
    })
    .expect("the upload's purge reaches Varnish");
    assert_eq!(fresh.header("x-avatar-source"), None);
}

/// An upstream avatar-edge holding `emails`' avatars.
fn upstream_with(dir: &std::path::Path, emails: &[&str]) -> Server {
    let up = Server::start(dir, &[], Some(TOKEN));
    let (ak, av) = auth();
    for e in emails {
        let r = up.request(
            "PUT",
            &format!("/v1/avatars/{}", e.replace('@', "%40")),
            &[(ak, &av)],
            &fixture("photo_grace_hopper_512x600.jpg"),
        );
        assert_eq!(r.status, 200);
    }
    up
}

fn describe(server: &Server, hash: &str) -> serde_json::Value {
    let (ak, av) = auth();
    let r = server.request("GET", &format!("/v1/avatars/{hash}"), &[(ak, &av)], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn adopting_makes_the_upstream_avatar_the_identitys_own_until_a_local_upload() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream_with(&dir.path().join("up"), &["adopt@example.org"]);
    let base = format!("http://{}/avatar/", up.addr);
    let edge = edge(&dir.path().join("edge"), &[base], &["--fallback-adopt"]);
    let before = upstream_identity_requests(&up);
    let hash = md5_hex("adopt@example.org");
    let path = format!("/avatar/{hash}?s=64");
    let first = edge.request("GET", &path, &[], b"");
    assert_eq!(first.header("x-avatar-source"), Some("fallback"));
    let info = describe(&edge, &hash);
    assert_eq!(info["version"], 1);
    assert_eq!(info["source"], "fallback");
    // Now the identity's own: served as a local avatar, the upstream left alone.
    let r = edge.request("GET", &path, &[], b"");
    assert_eq!(r.header("x-avatar-source"), None);
    assert_eq!(r.body, first.body);
    assert_eq!(upstream_identity_requests(&up) - before, 1);
    // The user's own upload replaces it.
    let (ak, av) = auth();
    let r = edge.request(
        "PUT",
        &format!("/v1/avatars/{hash}"),
        &[(ak, &av)],
        &fixture("logo_alpha_500.png"),
    );
    assert_eq!(r.status, 200);
    let info = describe(&edge, &hash);
    assert_eq!(
        (info["version"].as_u64(), info.get("source")),
        (Some(2), None)
    );
}

#[test]
fn after_a_delete_the_upstream_is_asked_only_with_fallback_after_delete() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream_with(&dir.path().join("up"), &["again@example.org"]);
    let base = format!("http://{}/avatar/", up.addr);
    let hash = md5_hex("again@example.org");
    let path = format!("/avatar/{hash}?s=64");
    let (ak, av) = auth();
    for (extra, source) in [
        (&[][..], None),
        (&["--fallback-after-delete"][..], Some("fallback")),
    ] {
        let sub = dir.path().join(format!("edge{}", extra.len()));
        let edge = edge(&sub, std::slice::from_ref(&base), extra);
        let key = format!("/v1/avatars/{hash}");
        let r = edge.request("PUT", &key, &[(ak, &av)], &fixture("logo_alpha_500.png"));
        assert_eq!(r.status, 200);
        assert_eq!(edge.request("DELETE", &key, &[(ak, &av)], b"").status, 204);
        let r = edge.request("GET", &path, &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-avatar-source"), source, "{extra:?}");
    }
}

#[test]
fn import_from_upstream_adopts_a_list_of_hashes_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream_with(
        &dir.path().join("up"),
        &["one@example.org", "two@example.org"],
    );
    let data = dir.path().join("data");
    let known = [md5_hex("one@example.org"), md5_hex("two@example.org")];
    let unknown = md5_hex("three@example.org");
    let list = dir.path().join("hashes.txt");
    std::fs::write(
        &list,
        format!(
            "# from the old platform\n{}\n{}\n{unknown}\nnot-a-hash\n",
            known[0], known[1]
        ),
    )
    .unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_avatar-edge"))
            .args(["import", "--from-upstream"])
            .arg(format!("http://{}/avatar/", up.addr))
            .arg("--hashes")
            .arg(&list)
            .arg("--data")
            .arg(&data)
            .args(["--concurrency", "2"])
            .env_remove("AVATAR_EDGE_TOKEN")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stderr.contains(":5: not a 32/64-hex hash"), "{stderr}");
        stdout
    };
    let first = run();
    assert!(
        first.contains("imported 2, already present 0, not found upstream 1, failed 0"),
        "{first}"
    );
    let again = run();
    assert!(
        again.contains("imported 0, already present 2, not found upstream 1, failed 0"),
        "{again}"
    );
    let edge = Server::start(&data, &[], Some(TOKEN));
    for h in &known {
        let info = describe(&edge, h);
        assert_eq!(
            (info["version"].as_u64(), info["source"].as_str()),
            (Some(1), Some("fallback"))
        );
        let r = edge.request("GET", &format!("/avatar/{h}?s=48"), &[], b"");
        assert_eq!((r.status, r.header("x-avatar-default")), (200, None));
    }
}

#[test]
fn a_node_runs_a_bounded_number_of_upstream_fetches() {
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let up = hostile_upstream(elsewhere.local_addr().unwrap(), paths.clone());
    let dir = tempfile::tempdir().unwrap();
    let edge = edge(dir.path(), &[format!("http://{up}/stall/")], &[]);
    let addr = edge.addr;
    // 24 distinct misses against an upstream that stalls every body.
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                s.spawn(move || {
                    let path = format!("/avatar/{}?s=32", md5_hex(&format!("{i}@example.org")));
                    let r = request(addr, "GET", &path, &[], b"");
                    (r.status, r.header("cache-control").map(String::from))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, cc) in &statuses {
        assert_eq!((*status, cc.as_deref()), (200, Some("no-store")));
    }
    let failures = |reason: &str| {
        metric(
            &edge,
            "avatar_edge_fallback_failures_total",
            &format!("reason=\"{reason}\""),
        )
    };
    assert_eq!(failures("timeout") + failures("busy"), 24);
    assert!(failures("timeout") <= 16, "at most 16 fetches at once");
    assert!(paths.lock().unwrap().len() <= 16);
}
