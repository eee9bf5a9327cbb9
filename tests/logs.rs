//! Logs of the real binary (issue 18 item 1): `--log-format json` lines,
//! the access log's fields, request ids accepted, generated and echoed, the
//! client address with and without `--trust-forwarded-for`, and that no
//! email, token or signature ever reaches stderr.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const EMAIL: &str = "logged.alice@example.org";

/// Every line the server wrote so far, collected until `done` holds for
/// the parsed lines or 10 s pass.
fn lines_until(server: &Server, all: &mut Vec<String>, done: impl Fn(&[Value]) -> bool) {
    eventually(Duration::from_secs(10), || {
        all.extend(server.drain_log());
        done(&parse_all(all)).then_some(())
    });
}

/// Every line as JSON (panics naming a line that is not).
fn parse_all(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn access(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["target"] == "avatar_edge::access")
        .collect()
}

/// The access line of the request with id `id`.
fn by_id<'a>(lines: &'a [Value], id: &str) -> Option<&'a Value> {
    access(lines).into_iter().find(|l| l["request_id"] == id)
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn json_access_log_has_every_field_echoes_request_ids_and_never_logs_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--log-format", "json", "--access-log"],
        Some(TOKEN),
    );
    let (ak, av) = auth();

    // An upload with the email in the path, a bearer token and the CDN's id.
    let escaped = EMAIL.replace('@', "%40");
    let r = server.request(
        "PUT",
        &format!("/v1/avatars/{escaped}?rating=g"),
        &[(ak, &av), ("X-Request-Id", "cdn-upload.1:a_b")],
        &fixture("logo_alpha_disc_512.png"),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-request-id"), Some("cdn-upload.1:a_b"));
    let info: Value = serde_json::from_slice(&r.body).unwrap();
    let hash = info["hash"].as_str().unwrap().to_string();
    let md5 = info["aliases"][0].as_str().unwrap().to_string();

    // Content: a miss, then a hit of the same variant.
    let content = format!("/c/{hash}.png?s=37");
    let miss = server.request("GET", &content, &[("X-Request-Id", "miss-1")], b"");
    assert_eq!(miss.status, 200);
    let hit = server.request("GET", &content, &[("X-Request-Id", "hit-1")], b"");
    assert_eq!(hit.status, 200);
    // Identity, with an email in a query key that must not be logged.
    let ident = server.request(
        "GET",
        &format!("/avatar/{md5}.png?s=37&d=mp&email={escaped}"),
        &[("X-Request-Id", "ident-1")],
        b"",
    );
    assert_eq!(ident.status, 200);
    // A raw email as an identity key, and a 404.
    let raw = server.request(
        "GET",
        &format!("/avatar/{EMAIL}"),
        &[("X-Request-Id", "raw-1")],
        b"",
    );
    assert_eq!(raw.status, 200, "an invalid key answers a default");
    let missing = server.request("GET", "/nope", &[], b"");
    assert_eq!(missing.status, 404);
    let generated = missing
        .header("x-request-id")
        .expect("echoed on a 404")
        .to_string();
    // An unsafe id is replaced by a generated one.
    let unsafe_id = "evil id <script>";
    let replaced = server.request("GET", "/healthz", &[("X-Request-Id", unsafe_id)], b"");
    assert_eq!(replaced.status, 200);
    let new_id = replaced.header("x-request-id").unwrap().to_string();
    assert_ne!(new_id, unsafe_id);
    let long = "a".repeat(65);
    let too_long = server.request("GET", "/healthz", &[("X-Request-Id", &long)], b"");
    assert_ne!(too_long.header("x-request-id"), Some(long.as_str()));
    for id in [&generated, &new_id] {
        assert!(
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)),
            "{id}"
        );
    }
    // Generated ids differ, and share this process's prefix.
    assert_ne!(generated, new_id);
    assert_eq!(generated.split('-').next(), new_id.split('-').next());

    let mut all = Vec::new();
    lines_until(&server, &mut all, |l| access(l).len() >= 8);
    let lines = parse_all(&all);

    let upload = by_id(&lines, "cdn-upload.1:a_b").expect("the upload's line");
    assert_eq!(upload["method"], "PUT");
    assert_eq!(upload["route"], "api");
    assert_eq!(upload["status"], 200);
    assert_eq!(
        upload["path"],
        format!("/v1/avatars/{}", sha256_hex(EMAIL)),
        "the email is its SHA-256 identity hash, the query's unsafe keys dropped"
    );
    assert_eq!(upload["client"], "127.0.0.1");
    assert!(upload["bytes"].as_u64().unwrap() > 0);
    assert!(upload["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        upload.get("cache").is_none(),
        "no variant looked up: {upload}"
    );
    assert_eq!(upload["level"], "INFO");
    assert!(
        upload["timestamp"].as_str().unwrap().len() >= 20,
        "{upload}"
    );

    let miss_line = by_id(&lines, "miss-1").unwrap();
    assert_eq!(miss_line["route"], "content");
    assert_eq!(miss_line["cache"], "miss");
    assert_eq!(miss_line["path"], content);
    assert_eq!(miss_line["bytes"].as_u64().unwrap(), miss.body.len() as u64);
    assert_eq!(miss_line["status"], 200);
    let hit_line = by_id(&lines, "hit-1").unwrap();
    assert_eq!(hit_line["cache"], "hit");
    assert_eq!(hit_line["bytes"].as_u64().unwrap(), hit.body.len() as u64);

    let ident_line = by_id(&lines, "ident-1").unwrap();
    assert_eq!(ident_line["route"], "identity");
    assert_eq!(ident_line["path"], format!("/avatar/{md5}.png?s=37&d=mp"));
    assert_eq!(
        ident_line["cache"], "hit",
        "the same variant as the content URL"
    );
    let raw_line = by_id(&lines, "raw-1").unwrap();
    assert_eq!(raw_line["path"], "/avatar/[email]");

    let nope = by_id(&lines, &generated).expect("the 404 under its generated id");
    assert_eq!(nope["status"], 404);
    assert_eq!(nope["method"], "GET");
    assert_eq!(nope["path"], "/nope");
    let health = by_id(&lines, &new_id).expect("the replaced id's line");
    assert_eq!(health["path"], "/healthz");

    // No secret anywhere on stderr, in any form.
    let stderr = all.join("\n");
    for secret in [EMAIL, &escaped, TOKEN, unsafe_id, "<script>"] {
        assert!(!stderr.contains(secret), "{secret:?} in the log:\n{stderr}");
    }
    assert!(!stderr.to_ascii_lowercase().contains("authorization"));
}

#[test]
fn json_is_the_default_off_a_terminal_and_forwarded_for_is_used_only_when_trusted() {
    let dir = tempfile::tempdir().unwrap();
    // stderr is a pipe here: JSON without asking.
    let server = Server::start(dir.path(), &["--access-log"], Some(TOKEN));
    let xff = [("X-Forwarded-For", "198.51.100.7, 203.0.113.9")];
    let r = server.request(
        "GET",
        "/healthz",
        &[xff[0], ("X-Request-Id", "untrusted")],
        b"",
    );
    assert_eq!(r.header("x-request-id"), Some("untrusted"));
    let mut all = Vec::new();
    lines_until(&server, &mut all, |l| by_id(l, "untrusted").is_some());
    let lines = parse_all(&all);
    assert_eq!(by_id(&lines, "untrusted").unwrap()["client"], "127.0.0.1");
    drop(server);

    let trusting = Server::start(
        dir.path(),
        &["--access-log", "--trust-forwarded-for"],
        Some(TOKEN),
    );
    trusting.request(
        "GET",
        "/healthz",
        &[xff[0], ("X-Request-Id", "trusted")],
        b"",
    );
    trusting.request("GET", "/healthz", &[("X-Request-Id", "direct")], b"");
    let mut all = Vec::new();
    lines_until(&trusting, &mut all, |l| {
        by_id(l, "trusted").is_some() && by_id(l, "direct").is_some()
    });
    let lines = parse_all(&all);
    assert_eq!(by_id(&lines, "trusted").unwrap()["client"], "203.0.113.9");
    assert_eq!(by_id(&lines, "direct").unwrap()["client"], "127.0.0.1");
    drop(trusting);

    // Text when asked (here through the environment): `key=value` lines.
    let mut child = spawn_serve(
        dir.path(),
        "127.0.0.1:0",
        &[],
        &[("AVATAR_EDGE_LOG_FORMAT", "text")],
        Some(TOKEN),
    );
    let stderr = child.stderr.take().unwrap();
    let listening = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("avatar-edge listening"));
    let _ = child.kill();
    let _ = child.wait();
    let line = listening.expect("a listening line");
    assert!(serde_json::from_str::<Value>(&line).is_err(), "{line}");
    assert!(
        line.contains(" INFO ") && line.contains("address=127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn a_stalled_stderr_never_blocks_a_request_and_the_lines_dropped_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_serve(
        dir.path(),
        "127.0.0.1:0",
        &["--access-log"],
        &[],
        Some(TOKEN),
    );
    // stderr is read up to the listening line, then no more: the pipe fills
    // after a few hundred access lines. Before the log had its own writer
    // thread, the server's workers then blocked in write(2) and every request
    // hung.
    let mut stalled = std::io::BufReader::new(child.stderr.take().unwrap());
    let addr = std::io::BufRead::lines(&mut stalled)
        .map_while(Result::ok)
        .find(|l| l.contains("avatar-edge listening"))
        .and_then(|l| listening_address(&l))
        .expect("the listening line");
    let mut conn = KeepAlive::connect(addr);
    // More requests than the pipe and the log queue hold together; each is
    // answered (a stalled one fails the read after 20 s).
    let n = avatar_edge::logging::BUFFERED_LINES + 4_000;
    for i in 0..n {
        assert_eq!(conn.get("/healthz").0, 200, "request {i} of {n}");
    }
    let dropped = metric(addr, "avatar_edge_log_lines_dropped_total");
    assert!(
        dropped > 0 && dropped < n as u64,
        "{dropped} of {n} lines dropped"
    );
    // Once stderr is read again the queued lines arrive, whole.
    let mut lines = std::io::BufRead::lines(stalled);
    for _ in 0..100 {
        let line = lines.next().expect("a queued line").unwrap();
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let _ = child.kill();
    let _ = child.wait();
}
