//! Durability of the real binary: SIGKILL under concurrent uploads, then
//! restart on the same data directory; and a full / read-only disk.
//!
//! Kill test: a few threads upload small fixtures to their own keys; after
//! N ms the server is SIGKILLed mid-load (3 rounds). After each kill, with the
//! server down, `EmbeddedStore::verify` must find no index entry pointing to a
//! missing or corrupt blob; the server must restart cleanly, leave nothing in
//! `<data>/tmp/`, answer every key with its last acknowledged hash (or the
//! upload that was in flight at the kill, which may or may not have
//! committed) and serve every master with the same bytes as before.
//!
//! Disk test (needs root to mount a tmpfs; says so and skips otherwise): a
//! full disk (an 8 MiB tmpfs, filled) answers 507 `storage_full`, a read-only
//! one (a read-only tmpfs over `<data>/tmp`) 503 `storage_unavailable`, both
//! with a JSON message, while existing avatars keep serving; freeing space
//! recovers without a restart.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avatar_edge::store::embedded::EmbeddedStore;
use common::*;
use serde_json::Value;

/// Small fixtures, so a debug build does many uploads per second.
const FIXTURES: &[&str] = &[
    "photo_cmyk_100.jpg",
    "exif_portrait_2_generic_icc.jpg",
    "webp_lossy_alpha.webp",
    "gif_static_hopper.gif",
    "exif_hopper_orientation_6.webp",
    "apng_ball_20f.png",
];
const THREADS: usize = 4;
const KEYS_PER_THREAD: usize = 2;
/// Load time before each SIGKILL.
const ROUNDS_MS: &[u64] = &[400, 900, 1500];
const TIMEOUT: Duration = Duration::from_secs(20);

fn key(thread: usize, k: usize) -> String {
    format!("load-{thread}-{k}%40example.org")
}

fn put(addr: SocketAddr, key: &str, body: &[u8]) -> std::io::Result<Reply> {
    let (ak, av) = auth();
    try_request(
        addr,
        "PUT",
        &format!("/v1/avatars/{key}"),
        &[(ak, &av)],
        body,
        TIMEOUT,
    )
}

fn json(r: &Reply) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

/// What a key may answer after a kill: its last acknowledged hash (None =
/// never acknowledged, so 404), or the hash of an upload that was in flight.
#[derive(Default, Clone, Debug)]
struct KeyState {
    acked: Option<String>,
    in_flight: Option<String>,
}

/// One load thread: uploads to its keys until `stop`, or until the server
/// goes away. Returns the state of each of its keys.
fn load(
    addr: SocketAddr,
    thread: usize,
    bodies: Arc<Vec<Vec<u8>>>,
    hashes: Arc<Vec<String>>,
    mut states: Vec<KeyState>,
    stop: Arc<AtomicBool>,
) -> (Vec<KeyState>, usize) {
    let mut acked = 0;
    let mut n = thread;
    while !stop.load(Ordering::Relaxed) {
        let k = n % KEYS_PER_THREAD;
        let f = (n / KEYS_PER_THREAD + thread) % FIXTURES.len();
        n += 1;
        states[k].in_flight = Some(hashes[f].clone());
        match put(addr, &key(thread, k), &bodies[f]) {
            Ok(r) if r.status == 200 => {
                let got = json(&r)["hash"].as_str().unwrap_or_default().to_string();
                assert_eq!(got, hashes[f], "{}: same bytes, same hash", FIXTURES[f]);
                states[k] = KeyState {
                    acked: Some(got),
                    in_flight: None,
                };
                acked += 1;
            }
            Ok(r) if r.status == 503 => {
                // Overloaded: refused before anything was stored.
                states[k].in_flight = None;
            }
            Ok(r) => panic!(
                "{}: {} {}",
                FIXTURES[f],
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            // The server was killed: this upload may or may not have committed.
            Err(_) => break,
        }
    }
    (states, acked)
}

/// With the server down: the index points only at present, intact blobs.
fn verify_offline(data: &Path) {
    let store = EmbeddedStore::open(data).expect("store opens after a crash");
    let problems = store.verify().expect("verify runs");
    assert!(problems.is_empty(), "index problems: {problems:#?}");
}

/// With the server up: every key answers an allowed hash, every master
/// serves the bytes recorded before any kill.
fn check_served(server: &Server, states: &[Vec<KeyState>], renders: &HashMap<String, Vec<u8>>) {
    for (t, keys) in states.iter().enumerate() {
        for (k, st) in keys.iter().enumerate() {
            let r = server.request("GET", &format!("/v1/avatars/{}", key(t, k)), &[], b"");
            let got = match r.status {
                200 => Some(json(&r)["hash"].as_str().unwrap_or_default().to_string()),
                404 => None,
                s => panic!("GET {}: {s}", key(t, k)),
            };
            let allowed = got == st.acked || (got.is_some() && got == st.in_flight);
            assert!(allowed, "{}: serves {got:?}, expected {st:?}", key(t, k));
        }
    }
    for (hash, bytes) in renders {
        let r = server.request("GET", &format!("/c/{hash}.png?s=64"), &[], b"");
        assert_eq!(r.status, 200, "/c/{hash}");
        assert!(
            &r.body == bytes,
            "/c/{hash}.png?s=64 changed across restarts"
        );
    }
}

#[test]
fn sigkill_under_concurrent_uploads_loses_nothing_acknowledged() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(FIXTURES.iter().map(|f| fixture(f)).collect());

    // Learn each fixture's hash and its 64 px render; these stay bound to
    // `warm-*` keys for the whole test, so they must keep serving.
    let server = Server::start(&data, &[], Some(TOKEN));
    let mut hashes = Vec::new();
    let mut renders = HashMap::new();
    for (i, body) in bodies.iter().enumerate() {
        let r = put(server.addr, &format!("warm-{i}%40example.org"), body).unwrap();
        assert_eq!(r.status, 200, "{}", FIXTURES[i]);
        let hash = json(&r)["hash"].as_str().unwrap().to_string();
        let png = server.request("GET", &format!("/c/{hash}.png?s=64"), &[], b"");
        assert_eq!(png.status, 200);
        renders.insert(hash.clone(), png.body);
        hashes.push(hash);
    }
    let hashes = Arc::new(hashes);
    let mut states = vec![vec![KeyState::default(); KEYS_PER_THREAD]; THREADS];
    let mut server = Some(server);

    for (round, &ms) in ROUNDS_MS.iter().enumerate() {
        let s = match server.take() {
            Some(s) => s,
            None => {
                // A stale temp file, as a write cut by a crash leaves it.
                std::fs::write(data.join("tmp").join("deadbeef.1.0"), b"partial").unwrap();
                let s = Server::start(&data, &[], Some(TOKEN));
                let left = files_under(&data.join("tmp"));
                assert!(left.is_empty(), "round {round}: left in tmp/: {left:?}");
                check_served(&s, &states, &renders);
                s
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (b, h, st, stop) = (
                    bodies.clone(),
                    hashes.clone(),
                    states[t].clone(),
                    stop.clone(),
                );
                let addr = s.addr;
                std::thread::spawn(move || load(addr, t, b, h, st, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(ms));
        kill_hard(s);
        stop.store(true, Ordering::Relaxed);
        let mut acked = 0;
        for (t, w) in workers.into_iter().enumerate() {
            let (st, n) = w.join().expect("load thread");
            states[t] = st;
            acked += n;
        }
        let in_flight = states
            .iter()
            .flatten()
            .filter(|s| s.in_flight.is_some())
            .count();
        let tmp_left = files_under(&data.join("tmp")).len();
        eprintln!(
            "round {round}: killed after {ms} ms, {acked} uploads acknowledged, {in_flight} in flight, {tmp_left} temp files left by the kill"
        );
        assert!(acked > 0, "round {round}: no upload acknowledged");
        verify_offline(&data);
    }

    let s = Server::start(&data, &[], Some(TOKEN));
    assert!(files_under(&data.join("tmp")).is_empty());
    check_served(&s, &states, &renders);
    let status = s.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    verify_offline(&data);
    eprintln!("kill test took {:?}", started.elapsed());
}

/// A tmpfs mounted for the test; unmounted (lazily) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the filesystem refuses (ENOSPC).
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    // Also the last partial pages.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
}

fn assert_storage_error(r: &Reply, status: u16, code: &str) {
    let body = json(r);
    assert_eq!(
        (r.status, body["error"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(msg.contains("storage"), "{msg}");
}

#[test]
fn full_or_read_only_disk_refuses_uploads_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(fs) = Tmpfs::mount(&mnt, "size=8m") else {
        eprintln!(
            "SKIPPED full/read-only disk test: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)"
        );
        return;
    };
    let data = mnt.join("data");
    let server = Server::start(&data, &[], Some(TOKEN));
    let a = put(
        server.addr,
        "a%40example.org",
        &fixture("photo_cmyk_100.jpg"),
    )
    .unwrap();
    assert_eq!(a.status, 200);
    let a_hash = json(&a)["hash"].as_str().unwrap().to_string();

    // Full disk: 507 with a JSON message; what is stored keeps serving.
    let filler = mnt.join("filler");
    fill(&filler);
    let b_body = fixture("gif_static_hopper.gif");
    let r = put(server.addr, "b%40example.org", &b_body).unwrap();
    assert_storage_error(&r, 507, "storage_full");
    assert_eq!(
        server
            .request("GET", "/v1/avatars/b%40example.org", &[], b"")
            .status,
        404
    );
    let r = server.request("GET", "/v1/avatars/a%40example.org", &[], b"");
    assert_eq!((r.status, json(&r)["hash"].as_str()), (200, Some(&*a_hash)));
    // A size never asked before: rendered from the stored rungs now.
    let r = server.request("GET", &format!("/c/{a_hash}.png?s=77"), &[], b"");
    assert_eq!(r.status, 200);

    // Space freed: uploads work again without a restart.
    std::fs::remove_file(&filler).unwrap();
    let r = put(server.addr, "b%40example.org", &b_body).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b_hash = json(&r)["hash"].as_str().unwrap().to_string();

    // Read-only disk: 503 with a JSON message; reads keep working. A live
    // filesystem with files open for writing cannot be remounted read-only
    // ("busy"), so a read-only tmpfs is laid over `<data>/tmp`, where every
    // blob write starts.
    let ro = Tmpfs::mount(&data.join("tmp"), "ro,size=1m").expect("read-only tmpfs over tmp/");
    let r = put(
        server.addr,
        "c%40example.org",
        &fixture("webp_lossy_alpha.webp"),
    )
    .unwrap();
    assert_storage_error(&r, 503, "storage_unavailable");
    for hash in [&a_hash, &b_hash] {
        let r = server.request("GET", &format!("/c/{hash}.webp?s=51"), &[], b"");
        assert_eq!(r.status, 200, "/c/{hash}");
    }
    kill_hard(server);
    drop(ro);
    drop(fs);
}
