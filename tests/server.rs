//! Integration test: the real `avatar-edge` binary on an ephemeral loopback
//! port, driven over TCP like any client would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "integration-token-0123456789";

struct Server {
    child: Child,
    addr: SocketAddr,
    _log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    // On the success path the child moves into `Server`, whose Drop kills and
    // waits; a panic before that ends the test process, reaping it.
    #[allow(clippy::zombie_processes)]
    fn start(data: &Path, extra: &[&str], token: Option<&str>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_avatar-edge"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data)
            .args(extra)
            .env_remove("AVATAR_EDGE_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("AVATAR_EDGE_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Keep draining even when nobody listens: a full pipe would block the server.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("server logs its address within 30 s");
            if line.contains("avatar-edge listening") {
                let addr = line
                    .split("address=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse().ok())
                    .expect("address in the log line");
                return Server {
                    child,
                    addr,
                    _log: rx,
                };
            }
        }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(self.addr, method, path, headers, body)
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        wait_with_timeout(&mut self.child, Duration::from_secs(40))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "server did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .unwrap()
}

fn auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

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
