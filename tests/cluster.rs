//! Several avatar-edge nodes on a real three-server NATS JetStream cluster
//! (`nats-server`, loopback ports, own store directories): propagation within
//! 100 ms at every size, no lost update under concurrent changes (and many
//! writers on one identity through two nodes, every one acknowledged), delivery of
//! each webhook once cluster-wide, a NATS server lost, an avatar-edge node
//! lost mid-burst, the whole cluster lost (stale answers, 503 uploads) and
//! automatic recovery. Plus: an unreachable NATS at start is a clear error.
//!
//! One cluster serves the scenarios in order (starting one costs seconds);
//! every wait is a bounded poll.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::inspector::Inspector;
use common::*;

/// Uploads of new identities, one writer per node, from 300 ms before
/// `event` until 1.5 s after it: (status, time to answer, body).
fn uploads_during(
    nodes: &[SocketAddr],
    prefix: &str,
    seed: u32,
    event: impl FnOnce(),
) -> Vec<(u16, Duration, String)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writers: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(k, node)| {
                let stop = &stop;
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut j = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        j += 1;
                        let key = format!("{prefix}-{k}-{j}@example.org");
                        let sent = Instant::now();
                        out.push(match put(*node, &key, &png(seed + 100 * k as u32 + j)) {
                            Ok(r) => (
                                r.status,
                                sent.elapsed(),
                                String::from_utf8_lossy(&r.body).into_owned(),
                            ),
                            Err(e) => (0, sent.elapsed(), e.to_string()),
                        });
                    }
                    out
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        event();
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// A small synthetic PNG, different for every `seed`.
fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(96, 96, |x, y| {
        let s = seed.wrapping_mul(2_654_435_761);
        image::Rgb([
            (x.wrapping_mul(3) ^ s) as u8,
            (y.wrapping_mul(5) ^ (s >> 8)) as u8,
            ((x + y) ^ (s >> 16)) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A 1024 px photo-like master: its ladder has rungs above and below 256 px.
fn big_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(1024, 1024, |x, y| {
        let n = (x.wrapping_mul(7_919) ^ y.wrapping_mul(104_729)).wrapping_mul(2_654_435_761);
        image::Rgb([
            (x / 4) as u8 ^ (n >> 29) as u8,
            (y / 4) as u8,
            (n >> 24) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("JSON body, got {}", String::from_utf8_lossy(&r.body)))
}

fn put(addr: SocketAddr, key: &str, body: &[u8]) -> std::io::Result<Reply> {
    let (k, v) = auth();
    try_request(
        addr,
        "PUT",
        &format!("/v1/avatars/{key}"),
        &[(k, v.as_str())],
        body,
        Duration::from_secs(20),
    )
}

/// Upload through `addr`; returns (hash, version) of the acknowledged upload.
fn upload(addr: SocketAddr, key: &str, body: &[u8]) -> (String, u64) {
    let r = put(addr, key, body).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = json(&r);
    (
        j["hash"].as_str().unwrap().to_string(),
        j["version"].as_u64().unwrap(),
    )
}

/// Does `addr` answer `key`'s identity URL at `size` with master `hash`?
fn serves(addr: SocketAddr, md5: &str, size: u32, hash: &str) -> Option<Reply> {
    let r = try_request(
        addr,
        "GET",
        // d=404: until the change arrives the answer is a cheap 404, not a
        // generated default competing for the two cores.
        &format!("/avatar/{md5}?s={size}&d=404"),
        &[],
        b"",
        Duration::from_secs(5),
    )
    .ok()?;
    (r.status == 200
        && r.header("content-location")
            .is_some_and(|l| l.contains(hash)))
    .then_some(r)
}

/// Poll every (node, size) at once until each serves `hash`; the time from
/// `acked` to the last one.
fn time_until_served(
    nodes: &[SocketAddr],
    md5: &str,
    sizes: &[u32],
    hash: &str,
    acked: Instant,
) -> Duration {
    let handles: Vec<_> = nodes
        .iter()
        .flat_map(|a| sizes.iter().map(move |s| (*a, *s)))
        .map(|(addr, size)| {
            let (md5, hash) = (md5.to_string(), hash.to_string());
            std::thread::spawn(move || {
                let deadline = acked + Duration::from_secs(5);
                loop {
                    if serves(addr, &md5, size, &hash).is_some() {
                        return Some(acked.elapsed());
                    }
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("served within 5 s"))
        .max()
        .unwrap_or_default()
}

/// `addr`'s `/readyz` answer: (status, body).
fn readyz(addr: SocketAddr) -> Option<(u16, String)> {
    let r = try_request(addr, "GET", "/readyz", &[], b"", Duration::from_secs(2)).ok()?;
    Some((r.status, String::from_utf8_lossy(&r.body).into_owned()))
}

/// The version and master hash `addr` answers for identity `key`.
fn state(addr: SocketAddr, key: &str) -> Option<(u64, String)> {
    let (k, v) = auth();
    let r = try_request(
        addr,
        "GET",
        &format!("/v1/avatars/{key}"),
        &[(k, v.as_str())],
        b"",
        Duration::from_secs(5),
    )
    .ok()?;
    if r.status != 200 {
        return None;
    }
    let j = json(&r);
    Some((j["version"].as_u64()?, j["hash"].as_str()?.to_string()))
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Issue 20: the node named `n3` holds a bounded replica (the identities it
/// looked up, within 1 MiB; the rest read from NATS), the others the whole
/// index, so every scenario runs both kinds of node.
fn bounded_if_n3(dir: &std::path::Path) -> &'static [&'static str] {
    if dir.file_name().is_some_and(|n| n == "n3") {
        &["--nats-index-mb", "1"]
    } else {
        &["--nats-index-mb", "0"]
    }
}

fn start_node(dir: &std::path::Path, nats: &str, hook: &str) -> Server {
    let mut args = vec![
        "--nats",
        nats,
        "--nats-replicas",
        "3",
        "--webhook",
        hook,
        "--render-threads",
        "2",
    ];
    args.extend_from_slice(bounded_if_n3(dir));
    Server::start(dir, &args, Some(TOKEN))
}

/// A node in `dir/name` on the NATS at `urls`: R3 buckets, one render
/// thread; `n3` bounded.
fn r3_node(dir: &std::path::Path, urls: &str, name: &str) -> Server {
    let dir = dir.join(name);
    let mut args = vec![
        "--nats",
        urls,
        "--nats-replicas",
        "3",
        "--render-threads",
        "1",
    ];
    args.extend_from_slice(bounded_if_n3(&dir));
    Server::start(&dir, &args, Some(TOKEN))
}

/// Wait until every node's `/readyz` answers 200.
fn wait_ready(nodes: &[SocketAddr]) {
    for n in nodes {
        eventually(Duration::from_secs(10), || {
            readyz(*n).filter(|(s, _)| *s == 200)
        })
        .expect("every node becomes ready");
    }
}

/// The cluster tests take turns: each starts its own nats-servers and nodes,
/// and their latency bounds (100 ms, 2 s) are about one cluster on this
/// machine, not several sharing two cores.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn three_nodes_on_a_three_server_jetstream_cluster() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(dir.path(), 3);
    let urls = nats.urls();
    let hook_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://{}/hook", hook_listener.local_addr().unwrap());
    let hooks = HookReceiver::start(hook_listener);
    let n1 = start_node(&dir.path().join("n1"), &urls, &hook);
    let n2 = start_node(&dir.path().join("n2"), &urls, &hook);
    let n3 = start_node(&dir.path().join("n3"), &urls, &hook);
    let others = [n2.addr, n3.addr];
    let _dump = DumpLogsOnPanic(vec![&n1, &n2]);

    // 0. Ready means ready: once all three `/readyz` answer 200, the very
    // first upload reaches nodes 2 and 3 within 100 ms (step 1, round 0).
    for n in [&n1, &n2, &n3] {
        let (status, body) = eventually(Duration::from_secs(10), || {
            readyz(n.addr).filter(|(s, _)| *s == 200)
        })
        .expect("every node becomes ready");
        assert_eq!((status, body.trim()), (200, r#"{"status":"ready"}"#));
        assert_eq!(n.request("GET", "/healthz", &[], b"").status, 200);
    }

    // 1. Upload through node 1: nodes 2 and 3 serve it at every size within
    // 100 ms — new content (fetched from the object store and rendered on
    // each node: the user's real case), and known content bound to a new
    // identity (the index alone). The crate builds at opt-level 1 in tests,
    // so render times are near the server's (bench/cluster.sh measures the
    // release build).
    let sizes = [32u32, 80, 256];
    let mut warm_worst = Duration::ZERO;
    let mut cold_worst = Duration::ZERO;
    for round in 0..3u32 {
        let body = png(round);
        // Cold: new content, never rendered anywhere.
        let email = format!("cold{round}@example.org");
        let (hash, _) = upload(n1.addr, &email, &body);
        let took = time_until_served(&others, &md5_hex(&email), &sizes, &hash, Instant::now());
        cold_worst = cold_worst.max(took);
        // Warm: the same content (now rendered on nodes 2 and 3) bound to a new identity.
        let email = format!("prop{round}@example.org");
        let md5 = md5_hex(&email);
        let (hash2, _) = upload(n1.addr, &email, &body);
        assert_eq!(hash, hash2, "content-addressed");
        let took = time_until_served(&others, &md5, &sizes, &hash, Instant::now());
        eprintln!("round {round}: warm {took:?}");
        warm_worst = warm_worst.max(took);
        // Same bytes as node 1 renders for the same content URL.
        for size in sizes {
            let want = n1.request("GET", &format!("/avatar/{md5}?s={size}&d=404"), &[], b"");
            for addr in others {
                let got = serves(addr, &md5, size, &hash).unwrap();
                assert_eq!(got.body, want.body, "node {addr} size {size}");
            }
        }
    }
    eprintln!(
        "propagation (ack on node 1 -> nodes 2 and 3 serve it at 3 sizes), worst of 3: \
         warm {warm_worst:?}, cold with renders {cold_worst:?}"
    );
    assert!(
        warm_worst <= Duration::from_millis(100),
        "nodes 2 and 3 served the new avatar {warm_worst:?} after the acknowledgement (limit 100 ms)"
    );
    assert!(
        cold_worst <= Duration::from_millis(100),
        "nodes 2 and 3 served a new avatar (fetch + render) {cold_worst:?} after the \
         acknowledgement (limit 100 ms)"
    );

    // 1b. A change prefetches, on the other nodes, only the rungs renders up
    // to 256 px read; a larger render fetches its rung when first asked.
    let fetched = |addr| metric(addr, "avatar_edge_blob_fetched_bytes_total");
    // The counter once it stops moving (bounded: 10 s).
    let settled = |addr| {
        let mut last = fetched(addr);
        for _ in 0..33 {
            std::thread::sleep(Duration::from_millis(300));
            let now = fetched(addr);
            if now == last {
                return now;
            }
            last = now;
        }
        panic!("node {addr} kept fetching blobs for 10 s");
    };
    let before = settled(n2.addr);
    let email = "big@example.org";
    let (hash, _) = upload(n1.addr, email, &big_png());
    time_until_served(&[n2.addr], &md5_hex(email), &[64], &hash, Instant::now());
    let small = settled(n2.addr) - before;
    let r = n2.request(
        "GET",
        &format!("/avatar/{}?s=1024", md5_hex(email)),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    let large = settled(n2.addr) - before - small;
    eprintln!("node 2 fetched {small} B on the change, {large} B for its first 1024 px render");
    assert!(small > 0, "the change prefetched the small rungs");
    assert!(
        large > 4 * small,
        "the change prefetched large rungs: {small} B on the change, {large} B for the 1024 px render"
    );

    // 2. One identity changed through two nodes at once: no lost update.
    let email = "race@example.org";
    let (_, v0) = upload(n1.addr, email, &png(100));
    let (a, b) = (png(101), png(102));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let racers: Vec<_> = [(n1.addr, a), (n2.addr, b)]
        .into_iter()
        .map(|(addr, body)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                upload(addr, email, &body)
            })
        })
        .collect();
    let results: Vec<(String, u64)> = racers.into_iter().map(|h| h.join().unwrap()).collect();
    let mut versions: Vec<u64> = results.iter().map(|r| r.1).collect();
    versions.sort();
    assert_eq!(
        versions,
        vec![v0 + 1, v0 + 2],
        "each change got its own version"
    );
    let (k, v) = auth();
    for node in [&n1, &n2, &n3] {
        let fin = eventually(Duration::from_secs(5), || {
            let r = node.request(
                "GET",
                &format!("/v1/avatars/{email}"),
                &[(k, v.as_str())],
                b"",
            );
            let j = json(&r);
            (j["version"].as_u64() == Some(v0 + 2)).then_some(j)
        })
        .expect("every node reaches version +2");
        let hash = fin["hash"].as_str().unwrap();
        assert!(
            results.iter().any(|r| r.0 == hash),
            "final state is one of the two uploads"
        );
        let last = results.iter().find(|r| r.1 == v0 + 2).unwrap();
        assert_eq!(hash, last.0, "the later version's upload wins");
    }

    // 2b. Different identities written at once through three nodes never
    // conflict (per-identity compare-and-set): all acknowledged, versions 1.
    let writers: Vec<_> = (0..12u32)
        .map(|i| {
            let addr = [n1.addr, n2.addr, n3.addr][i as usize % 3];
            std::thread::spawn(move || upload(addr, &format!("par{i}@example.org"), &png(300 + i)))
        })
        .collect();
    for w in writers {
        assert_eq!(w.join().unwrap().1, 1, "a new identity's first version");
    }

    // 2c. An md5-only identity, a sha256-only identity and the email joining
    // them, written at once through three nodes: as on the single node, both
    // hashes end up naming one record (whatever the order), on every node.
    let email = "merge@example.org";
    let (md5, sha) = (md5_hex(email), sha256_hex(email));
    let merged = race(vec![
        (n1.addr, md5.clone(), png(400)),
        (n2.addr, sha.clone(), png(401)),
        (n3.addr, email.to_string(), png(402)),
    ]);
    if merged.iter().any(|r| r.is_err()) {
        for (i, n) in [&n1, &n2, &n3].iter().enumerate() {
            for line in n.drain_log() {
                eprintln!("node {}: {line}", i + 1);
            }
        }
        panic!("merge race: {merged:?}");
    }
    let merged: Vec<(String, u64)> = merged.into_iter().map(Result::unwrap).collect();
    let last = merged.iter().max_by_key(|r| r.1).unwrap().clone();
    for node in [&n1, &n2, &n3] {
        let both = eventually(Duration::from_secs(5), || {
            let a = state(node.addr, &md5)?;
            let b = state(node.addr, &sha)?;
            (a == b && a.0 >= last.1).then_some(a)
        });
        let (version, hash) = both.unwrap_or_else(|| {
            panic!(
                "node {}: md5 {:?} and sha256 {:?} name different records ({merged:?})",
                node.addr,
                state(node.addr, &md5),
                state(node.addr, &sha)
            )
        });
        assert!(merged.iter().any(|r| r.0 == hash), "one of the uploads");
        assert!(version >= 2, "a merge made a new version: {version}");
    }

    // 3. Webhooks: every change delivered, each once across the three nodes.
    // Six propagation uploads, three race uploads, twelve parallel ones and
    // at least three around the merge (a merge a racer finished counts once).
    let expected_events = 6 + 3 + 12 + 3;
    eventually(Duration::from_secs(10), || {
        (hooks.ids.lock().unwrap().len() >= expected_events).then_some(())
    })
    .expect("all webhooks delivered");
    std::thread::sleep(Duration::from_millis(300)); // a duplicate would show up by now
    let ids = hooks.ids.lock().unwrap().clone();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        *counts.entry(id.clone()).or_default() += 1;
    }
    assert!(
        (expected_events..=expected_events + 1).contains(&counts.len()),
        "distinct event ids: {counts:?}"
    );
    assert!(
        counts.values().all(|n| *n == 1),
        "delivered once: {counts:?}"
    );

    // 4. Kill avatar-edge node 3 during an upload burst: no acknowledged upload is lost.
    let n3_addr = n3.addr;
    let burst = std::thread::spawn(move || {
        let mut acked: Vec<(String, String)> = Vec::new();
        for i in 0..200u32 {
            let email = format!("burst{i}@example.org");
            match put(n3_addr, &email, &png(1000 + i)) {
                Ok(r) if r.status == 200 => {
                    acked.push((email, json(&r)["hash"].as_str().unwrap().to_string()))
                }
                _ => break,
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(700));
    kill_hard(n3);
    let acked = burst.join().unwrap();
    assert!(acked.len() >= 2, "the burst got going before the kill");
    for (email, hash) in &acked {
        for node in [&n1, &n2] {
            let md5 = md5_hex(email);
            assert!(
                eventually(Duration::from_secs(5), || serves(node.addr, &md5, 40, hash)).is_some(),
                "{email} acknowledged by the killed node but missing on {}",
                node.addr
            );
        }
    }
    eprintln!(
        "burst: {} uploads acknowledged before node 3 died",
        acked.len()
    );

    // 5. Lose one NATS server: the nodes keep serving and accepting uploads.
    nats.kill(0);
    let email = "after-kill@example.org";
    let md5 = md5_hex(email);
    let body = png(2000);
    let started = Instant::now();
    let hash = eventually(Duration::from_secs(20), || {
        put(n1.addr, email, &body)
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| json(&r)["hash"].as_str().unwrap().to_string())
    })
    .expect("uploads are accepted again with one NATS server down");
    eprintln!(
        "first upload accepted {:?} after a NATS server died",
        started.elapsed()
    );
    // Object-store reads need the blob stream's new leader (elected in seconds).
    assert!(
        eventually(Duration::from_secs(15), || serves(n2.addr, &md5, 64, &hash)).is_some(),
        "node 2 serves an upload made after the NATS server died"
    );
    let old_hash = acked[0].1.clone();
    let r = n2.request("GET", &format!("/c/{old_hash}.png?s=48"), &[], b"");
    assert_eq!(r.status, 200, "content URLs keep serving");

    // 6. Lose the whole NATS cluster: cached content serves, identities answer
    // from the replica (short-lived, with a warning), uploads are refused with 503.
    let cached = format!("/c/{hash}.png?s=64");
    assert_eq!(n2.request("GET", &cached, &[], b"").status, 200);
    nats.kill(1);
    nats.kill(2);
    let stale = eventually(Duration::from_secs(10), || {
        let r = n2.request("GET", &format!("/avatar/{md5}?s=64"), &[], b"");
        r.header("warning").is_some().then_some(r)
    })
    .expect("identity answers are marked stale once NATS is gone");
    assert_eq!(stale.status, 200);
    assert!(stale.header("content-location").unwrap().contains(&hash));
    assert_eq!(stale.header("cache-control"), Some("public, max-age=5"));
    assert!(stale.header("warning").unwrap().starts_with("110"));
    assert_eq!(
        n2.request("GET", &cached, &[], b"").status,
        200,
        "cached content serves"
    );
    let refused = put(n2.addr, "down@example.org", &png(3000)).unwrap();
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert!(refused.header("retry-after").is_some());
    let (status, body) = readyz(n2.addr).unwrap();
    assert_eq!(status, 503, "a node cut off from NATS is not ready: {body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["error"], "not_ready");
    assert!(!j["message"].as_str().unwrap().is_empty(), "{body}");

    // 7. Recovery is automatic.
    for i in 0..3 {
        nats.restart(i);
    }
    let started = Instant::now();
    let (down_hash, _) = eventually(Duration::from_secs(40), || {
        put(n2.addr, "down@example.org", &png(3000))
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| {
                let j = json(&r);
                (j["hash"].as_str().unwrap().to_string(), ())
            })
    })
    .expect("uploads succeed again once NATS is back");
    eprintln!("recovered {:?} after restarting NATS", started.elapsed());
    assert!(eventually(Duration::from_secs(20), || {
        serves(n1.addr, &md5_hex("down@example.org"), 64, &down_hash)
    })
    .is_some());
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = n2.request("GET", &format!("/avatar/{md5}?s=64"), &[], b"");
            (r.status == 200 && r.header("warning").is_none()).then_some(())
        })
        .is_some(),
        "identity answers are no longer marked stale"
    );
    assert!(
        eventually(Duration::from_secs(10), || readyz(n2.addr)
            .filter(|r| r.0 == 200))
        .is_some(),
        "ready again once NATS is back"
    );
}

/// Prints the nodes' logs when the test fails.
struct DumpLogsOnPanic<'a>(Vec<&'a Server>);

impl Drop for DumpLogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, s) in self.0.iter().enumerate() {
                for line in s.drain_log() {
                    eprintln!("node {}: {line}", i + 1);
                }
            }
        }
    }
}

/// Many writers on ONE identity through two nodes of an R3 cluster, all
/// released at once, round after round: every upload is acknowledged (a lost
/// compare-and-set is retried, never answered 503), each gets its own
/// version (consecutive, none lost), and the record ends holding the upload
/// acknowledged with the highest version, on both nodes. The keys alternate
/// between the email and its two hashes (one record), and the content is
/// stored beforehand, so the racers meet on the identity's key alone.
#[test]
fn concurrent_writers_on_one_identity_through_two_nodes() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 3);
    let urls = nats.urls();
    let start = |name: &str| r3_node(dir.path(), &urls, name);
    let (n1, n2) = (start("n1"), start("n2"));
    let _dump = DumpLogsOnPanic(vec![&n1, &n2]);
    wait_ready(&[n1.addr, n2.addr]);
    const ROUNDS: u32 = 6;
    const WRITERS: u32 = 8;
    let bodies: Vec<Vec<u8>> = (0..ROUNDS * WRITERS).map(|i| png(5000 + i)).collect();
    for (i, body) in bodies.iter().enumerate() {
        upload(n1.addr, &format!("seed{i}@example.org"), body);
    }
    let email = "contended@example.org";
    let keys = [email.to_string(), md5_hex(email), sha256_hex(email)];
    let (_, mut version) = upload(n2.addr, email, &png(4999));
    for round in 0..ROUNDS {
        let results = race(
            (0..WRITERS)
                .map(|i| {
                    (
                        [n1.addr, n2.addr][i as usize % 2],
                        keys[i as usize % keys.len()].clone(),
                        bodies[(round * WRITERS + i) as usize].clone(),
                    )
                })
                .collect(),
        );
        let acked: Vec<(String, u64)> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        assert_eq!(
            acked.len(),
            WRITERS as usize,
            "round {round}: every racer acknowledged: {results:?}"
        );
        let mut versions: Vec<u64> = acked.iter().map(|r| r.1).collect();
        versions.sort();
        let want: Vec<u64> = (version + 1..=version + u64::from(WRITERS)).collect();
        assert_eq!(versions, want, "round {round}: each change its own version");
        version += u64::from(WRITERS);
        let last = acked.iter().find(|r| r.1 == version).unwrap().0.clone();
        for node in [&n1, &n2] {
            for key in &keys {
                let got = eventually(Duration::from_secs(5), || {
                    state(node.addr, key).filter(|s| s.0 == version)
                });
                assert_eq!(
                    got,
                    Some((version, last.clone())),
                    "round {round}: {} {key} holds the last acknowledged upload",
                    node.addr
                );
            }
        }
    }
}

/// Binds of one content at once (an adoption wave of one default), through
/// two nodes: every upload is acknowledged, and the master's entry lists
/// every identity key. A node writes its pins of one master in batches
/// (`gc/pins.rs`): no pin of a batch may go unlisted.
#[test]
fn binds_of_one_content_at_once_are_each_listed() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1);
    let urls = nats.urls();
    let node = |name: &str| {
        let args = ["--nats", urls.as_str(), "--render-threads", "2"];
        Server::start(&dir.path().join(name), &args, Some(TOKEN))
    };
    let (n1, n2) = (node("n1"), node("n2"));
    let _dump = DumpLogsOnPanic(vec![&n1, &n2]);
    wait_ready(&[n1.addr, n2.addr]);
    const BINDS: usize = 24;
    let email = |i: usize| format!("wave{i}@example.org");
    let body = png(6100);
    let results = race(
        (0..BINDS)
            .map(|i| ([n1.addr, n2.addr][i % 2], email(i), body.clone()))
            .collect(),
    );
    let hashes: std::collections::HashSet<String> = results
        .iter()
        .map(|r| r.as_ref().expect("every bind acknowledged").0.clone())
        .collect();
    assert_eq!(hashes.len(), 1, "one content");
    let hash = hashes.into_iter().next().unwrap();
    let (_, entry) = Inspector::connect(&urls).master_entry(&hash).unwrap();
    let mut listed: Vec<String> = entry["refs"]["by"]
        .as_object()
        .unwrap_or_else(|| panic!("a listing: {entry}"))
        .keys()
        .cloned()
        .collect();
    listed.sort();
    let mut want: Vec<String> = (0..BINDS).map(|i| md5_hex(&email(i))).collect();
    want.sort();
    assert_eq!(listed, want, "every identity key listed");
    // By its pin: none had to pin again after writing its record (the
    // check that would repair a pin listed without its key).
    for n in [&n1, &n2] {
        let again: Vec<String> = n
            .drain_log()
            .into_iter()
            .filter(|l| l.contains("pinning again"))
            .collect();
        assert!(again.is_empty(), "{again:#?}");
    }
    for i in 0..BINDS {
        assert!(serves(n2.addr, &md5_hex(&email(i)), 32, &hash).is_some());
    }
}

/// Nodes and NATS servers started together (a compose file, a reboot): a
/// node whose NATS has no quorum yet (one of three servers up, so no
/// JetStream meta leader and nowhere to place R3 buckets) waits, logging each
/// retry, and serves once the others have joined, instead of exiting.
#[test]
fn a_node_started_before_its_nats_cluster_has_a_quorum_waits_for_it() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::configure(dir.path(), 3);
    nats.spawn(0);
    // Listening, so the node finds a server (one it cannot reach at all is
    // an error at start, `unreachable_nats_at_start_is_an_error_naming_the_url`).
    nats.wait_listening(0);
    let first = format!("nats://127.0.0.1:{}", nats.client_ports[0]);
    let data = dir.path().join("n1");
    let node = std::thread::spawn(move || {
        Server::start(
            &data,
            &["--nats", &first, "--nats-replicas", "3"],
            Some(TOKEN),
        )
    });
    std::thread::sleep(Duration::from_secs(5));
    assert!(!node.is_finished(), "listening without a JetStream quorum");
    nats.spawn(1);
    nats.spawn(2);
    let n1 = node.join().expect("the node starts once the cluster forms");
    let _dump = DumpLogsOnPanic(vec![&n1]);
    let retries = n1
        .startup_log
        .iter()
        .filter(|l| l.contains("not ready at start-up; retrying"))
        .count();
    assert!(retries >= 1, "each retry is logged: {:#?}", n1.startup_log);
    wait_ready(&[n1.addr]);
    let (hash, version) = upload(n1.addr, "quorum@example.org", &png(7100));
    assert_eq!(version, 1);
    assert_eq!(content_status(n1.addr, &hash), 200);
}

#[test]
fn unreachable_nats_at_start_is_an_error_naming_the_url() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_avatar-edge"))
        .args(["serve", "--listen", "127.0.0.1:0", "--nats", &url, "--data"])
        .arg(dir.path())
        .env("AVATAR_EDGE_TOKEN", TOKEN)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "must not start without its store");
    assert!(err.contains(&url), "the error names the URL: {err}");
}

/// Issue 14: a page's `POST /v1/subscriptions` may reach one node and its
/// event stream another (the subscription lives in a NATS KV bucket); a
/// change committed on a third node reaches that stream; a versioned identity
/// URL answers that version on every node.
#[test]
fn subscriptions_span_the_nodes_of_a_cluster() {
    let _turn = one_at_a_time();
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1);
    let urls = nats.urls();
    let start = |name: &str| {
        Server::start(
            &dir.path().join(name),
            &["--nats", &urls, "--render-threads", "1"],
            Some(TOKEN),
        )
    };
    let (n1, n2, n3) = (start("n1"), start("n2"), start("n3"));
    let _dump = DumpLogsOnPanic(vec![&n1, &n2]);
    let email = "span@example.org";
    let mut keys: Vec<String> = (0..1500)
        .map(|i| md5_hex(&format!("m{i}@example.org")))
        .collect();
    keys.push(md5_hex(email));
    let body = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
    let r = n1.request("POST", "/v1/subscriptions", &[], &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sub = json(&r);
    let id = sub["id"].as_str().unwrap();
    // Idempotent on another node: same id.
    let again = json(&n3.request("POST", "/v1/subscriptions", &[], &body));
    assert_eq!(again["id"], id);
    // Unknown ids are a 404 on every node.
    let unknown = format!("/v1/events?sub={}", "0".repeat(32));
    assert_eq!(n2.request("GET", &unknown, &[], b"").status, 404);

    // The stream on node 2, read raw (it never ends).
    let mut s = std::net::TcpStream::connect(n2.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let after = sub["last_event_id"].as_u64().unwrap();
    write!(
        s,
        "GET /v1/events?sub={id}&last_event_id={after} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    read_until(&mut s, &mut seen, ": connected", Duration::from_secs(5));
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let (hash, version) = upload(n3.addr, email, &png(7));
    read_until(&mut s, &mut seen, &hash, Duration::from_secs(2));
    // The page then asks every node for that version: each answers it.
    for node in [&n1, &n2, &n3] {
        let r = node.request(
            "GET",
            &format!("/avatar/{}?s=48&v={version}", md5_hex(email)),
            &[],
            b"",
        );
        assert_eq!(r.status, 200);
        assert!(
            r.header("content-location").unwrap().contains(&hash),
            "node {} answers version {version}",
            node.addr
        );
        assert_ne!(r.header("cache-control"), Some("no-store"));
    }
}

/// Read an event stream into `seen` until it contains `needle`.
fn read_until(s: &mut std::net::TcpStream, seen: &mut String, needle: &str, limit: Duration) {
    use std::io::Read;
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        assert!(
            t0.elapsed() < limit,
            "no {needle:?} within {limit:?}: {seen}"
        );
        match s.read(&mut buf) {
            Ok(0) => panic!("stream closed: {seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
}

/// A page resuming its event stream from further back than the events a
/// node keeps in memory is replayed from JetStream: nothing in between is
/// lost (a laptop waking up, a page moved to a node that just restarted).
#[test]
fn an_event_stream_resumes_from_before_the_events_a_node_keeps() {
    let _turn = one_at_a_time();
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1);
    let urls = nats.urls();
    let node = Server::start(
        &dir.path().join("n1"),
        &["--nats", &urls, "--nats-resume-events", "2"],
        Some(TOKEN),
    );
    let _dump = DumpLogsOnPanic(vec![&node]);
    let emails: Vec<String> = (0..6).map(|i| format!("resume{i}@example.org")).collect();
    let hashes: Vec<String> = emails
        .iter()
        .enumerate()
        .map(|(i, e)| upload(node.addr, e, &png(100 + i as u32)).0)
        .collect();
    let keys: Vec<String> = emails.iter().map(|e| md5_hex(e)).collect();
    // From the beginning: four events are only in the stream now.
    let mut s = std::net::TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "GET /v1/events?keys={}&last_event_id=0 HTTP/1.1\r\nHost: x\r\n\r\n",
        keys.join(",")
    )
    .unwrap();
    let mut seen = String::new();
    for h in &hashes {
        read_until(&mut s, &mut seen, h, Duration::from_secs(5));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let at = |h: &String| seen.find(h.as_str()).unwrap();
    assert!(
        hashes.windows(2).all(|w| at(&w[0]) < at(&w[1])),
        "in order: {seen}"
    );
    // Each change once.
    for h in &hashes {
        assert_eq!(seen.matches(&format!("\"{h}\"")).count(), 1, "{h}: {seen}");
    }
}

/// A master stored before `m.` entries listed their identity keys (issue
/// 20) gets its listing from the sweep's audit: the key naming it, verified.
#[test]
fn masters_stored_before_listings_get_theirs() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 1);
    let urls = nats.urls();
    // The audit of entries stored before listings needs every record.
    let args = ["--nats", &urls, "--nats-index-mb", "0"];
    let node = Server::start(&dir.path().join("n1"), &args, Some(TOKEN));
    let _dump = DumpLogsOnPanic(vec![&node]);
    let email = "legacy@example.org";
    let (hash, _) = upload(node.addr, email, &png(300));
    let key = format!("m.{hash}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(urls.as_str()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("avatar_edge_index")
            .await
            .unwrap();
        let read = || async {
            let e = kv.entry(key.as_str()).await.unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
            (e.revision, v)
        };
        let (rev, mut v) = read().await;
        let listed = v["refs"]["by"].as_object().cloned().unwrap_or_default();
        assert_eq!(listed.len(), 1, "a new bind lists its key: {v}");
        // As an entry written before listings: no `refs`.
        v.as_object_mut().unwrap().remove("refs");
        kv.update(key.as_str(), serde_json::to_vec(&v).unwrap().into(), rev)
            .await
            .unwrap();
        // The first sweep runs 5-10 s after start.
        let t0 = Instant::now();
        loop {
            let (_, v) = read().await;
            let refs = &v["refs"];
            if refs.is_object() && refs.get("verify").is_none() {
                assert_eq!(
                    refs["by"].as_object().unwrap().keys().collect::<Vec<_>>(),
                    listed.keys().collect::<Vec<_>>(),
                    "{v}"
                );
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(40),
                "not listed again: {v}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    // Still served: the audit changed the listing, nothing else.
    assert!(serves(node.addr, &md5_hex(email), 64, &hash).is_some());
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and, signed by it, a server certificate for 127.0.0.1 and a client
/// certificate (P-256), as PEM files in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=avatar-edge test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &ca);
    for (name, usage, san) in [
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
        ("client", "clientAuth", ""),
    ] {
        let ext = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n{san}"
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, extf, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN={name}"),
        );
        let mut req = vec!["req", "-subj", &subj, "-keyout", &key, "-out", &csr];
        req.extend(ec);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &extf,
                "-out",
                &pem,
            ],
        );
    }
}

/// A node started with `env` (secrets stay out of the command line), its
/// stderr lines collected.
fn spawn_node(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_avatar-edge"))
        .arg("serve")
        .arg("--data")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .env("AVATAR_EDGE_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

#[test]
fn secured_nats_with_tls_client_certificates_and_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certificates(d);
    let (port, monitor) = (free_port(), free_port());
    let password = "s3cret-Pw-9f2c";
    let conf = format!(
        "listen: 127.0.0.1:{port}\nhttp_port: {monitor}\nserver_name: secured\n\
         jetstream {{ store_dir: \"{store}\" }}\n\
         tls {{ cert_file: \"{d}/server.pem\", key_file: \"{d}/server.key\", \
         ca_file: \"{d}/ca.pem\", verify: true, timeout: 2 }}\n\
         authorization {{ user: alice, password: \"{password}\" }}\n",
        store = d.join("js").display(),
        d = d.display(),
    );
    std::fs::write(d.join("nats.conf"), conf).unwrap();
    let server = KillOnDrop(
        Command::new(nats_server_bin())
            .arg("-c")
            .arg(d.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let health: SocketAddr = ([127, 0, 0, 1], monitor).into();
    let healthy = eventually(Duration::from_secs(30), || {
        try_request(health, "GET", "/healthz", &[], b"", Duration::from_secs(2))
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(healthy.is_some(), "the secured nats-server did not start");
    let url = format!("tls://127.0.0.1:{port}");
    let (ca, cert, key) = (
        format!("{}/ca.pem", d.display()),
        format!("{}/client.pem", d.display()),
        format!("{}/client.key", d.display()),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--nats",
        &url,
        "--nats-replicas",
        "1",
        "--nats-tls-ca",
        &ca,
        "--nats-tls-cert",
        &cert,
        "--nats-tls-key",
        &key,
    ];

    // Wrong password: refused at start within 10 s, naming the server and
    // "authorization", never the password.
    let wrong = "Wr0ng-pass-77aa";
    let (mut bad, lines) = spawn_node(
        &d.join("bad"),
        &[&args[..], &["--listen", &listen]].concat(),
        &[
            ("AVATAR_EDGE_NATS_USER", "alice"),
            ("AVATAR_EDGE_NATS_PASSWORD", wrong),
        ],
    );
    let started = Instant::now();
    let status = wait_with_timeout(&mut bad, Duration::from_secs(10));
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(100)); // the last lines
    let log = lines.lock().unwrap().join("\n");
    assert!(!status.success(), "wrong credentials must not start: {log}");
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    assert!(
        log.contains(&format!("127.0.0.1:{port}")),
        "names the server: {log}"
    );
    assert!(log.to_lowercase().contains("authorization"), "{log}");
    assert!(!log.contains(wrong), "the password leaked: {log}");

    // Right password, TLS with a client certificate: ready, uploads work.
    let (good, lines) = spawn_node(
        &d.join("good"),
        &[&args[..], &["--listen", &listen]].concat(),
        &[
            ("AVATAR_EDGE_NATS_USER", "alice"),
            ("AVATAR_EDGE_NATS_PASSWORD", password),
        ],
    );
    let good = KillOnDrop(good);
    let addr: SocketAddr = listen.parse().unwrap();
    let ready = eventually(Duration::from_secs(30), || {
        readyz(addr).filter(|r| r.0 == 200)
    });
    let log = || lines.lock().unwrap().join("\n");
    assert!(
        ready.is_some(),
        "a node on a secured NATS becomes ready: {}",
        log()
    );
    let (hash, _) = upload(addr, "secure@example.org", &png(7));
    assert!(serves(addr, &md5_hex("secure@example.org"), 48, &hash).is_some());
    drop((good, server));
    assert!(
        !log().contains(password),
        "the password leaked into the log"
    );
}

/// Issue 16: a takedown through node 1 answers 410 on nodes 2 and 3 within
/// 2 s (the `t.` key rides the index watch), the identity shows its default
/// there, a re-upload through node 3 is refused, the audit trail is shared,
/// and a lift through node 2 brings everything back everywhere.
#[test]
fn takedowns_reach_every_node_of_a_cluster_within_two_seconds() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 3);
    let urls = nats.urls();
    let start = |name: &str| r3_node(dir.path(), &urls, name);
    let (n1, n2, n3) = (start("n1"), start("n2"), start("n3"));
    let _dump = DumpLogsOnPanic(vec![&n1, &n2, &n3]);
    wait_ready(&[n1.addr, n2.addr, n3.addr]);
    let email = "gone@example.org";
    let md5 = md5_hex(email);
    let body = png(16);
    let (hash, _) = upload(n1.addr, email, &body);
    let content = [format!("/c/{hash}?s=64"), format!("/c/{hash}.png?s=32")];
    for n in [&n2, &n3] {
        let served = eventually(Duration::from_secs(5), || {
            content
                .iter()
                .all(|p| n.request("GET", p, &[], b"").status == 200)
                .then_some(())
        });
        assert!(served.is_some(), "node {} serves the upload", n.addr);
    }

    let (k, v) = auth();
    let req = format!(r#"{{"hash":"{hash}","reason":"cluster"}}"#);
    let r = n1.request("POST", "/v1/takedowns", &[(k, &v)], req.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let taken = Instant::now();
    let everywhere = |want: u16, default: bool| {
        eventually(Duration::from_secs(2), || {
            [&n1, &n2, &n3]
                .iter()
                .all(|n| {
                    let avatar = n.request("GET", &format!("/avatar/{md5}?s=48"), &[], b"");
                    content
                        .iter()
                        .all(|p| n.request("GET", p, &[], b"").status == want)
                        && avatar.header("x-avatar-default").is_some() == default
                })
                .then_some(())
        })
    };
    assert!(
        everywhere(410, true).is_some(),
        "410 and defaults on every node within 2 s"
    );
    eprintln!("takedown visible on every node after {:?}", taken.elapsed());
    let r = n3.request("GET", &content[0], &[], b"");
    assert_eq!(json(&r)["error"], "gone");
    let refused = put(n3.addr, "again@example.org", &body).unwrap();
    assert_eq!(
        refused.status,
        451,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let list = json(&n2.request("GET", "/v1/takedowns", &[(k, &v)], b""));
    assert_eq!(list["takedowns"][0]["hash"], hash.as_str());

    let r = n2.request("DELETE", &format!("/v1/takedowns/{hash}"), &[(k, &v)], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        everywhere(200, false).is_some(),
        "the lift reaches every node within 2 s"
    );
    assert_eq!(
        put(n3.addr, "again@example.org", &body).unwrap().status,
        200
    );
    // Taken down again after a lift (the deleted key is written anew).
    let r = n3.request("POST", "/v1/takedowns", &[(k, &v)], req.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let again = eventually(Duration::from_secs(2), || {
        (n1.request("GET", &content[0], &[], b"").status == 410).then_some(())
    });
    assert!(again.is_some(), "the second takedown reaches node 1");

    // One audit trail for the cluster, read through any node.
    let audit = json(&n3.request("GET", "/v1/audit", &[(k, &v)], b""));
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["upload", "takedown", "lift", "upload", "takedown"]
    );
}

fn delete(addr: SocketAddr, key: &str) -> u16 {
    let (k, v) = auth();
    try_request(
        addr,
        "DELETE",
        &format!("/v1/avatars/{key}"),
        &[(k, v.as_str())],
        b"",
        Duration::from_secs(10),
    )
    .map(|r| r.status)
    .unwrap_or(0)
}

/// `/c/{hash}` at 64 px on `addr`: its status.
fn content_status(addr: SocketAddr, hash: &str) -> u16 {
    try_request(
        addr,
        "GET",
        &format!("/c/{hash}.png?s=64"),
        &[],
        b"",
        Duration::from_secs(5),
    )
    .map(|r| r.status)
    .unwrap_or(0)
}

/// Poll every node until `/c/{hash}` answers `status`; the slowest time.
fn time_until_content(nodes: &[SocketAddr], hash: &str, status: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    let handles: Vec<_> = nodes
        .iter()
        .map(|addr| {
            let (addr, hash) = (*addr, hash.to_string());
            std::thread::spawn(move || {
                eventually(limit, || {
                    (content_status(addr, &hash) == status).then(|| started.elapsed())
                })
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .unwrap_or_else(|| panic!("/c/{hash} never answered {status} within {limit:?}"))
        })
        .max()
        .unwrap_or_default()
}

/// Issue 15 on a real cluster: erased content leaves every node and the
/// object store (content shared by two identities survives deleting one; a
/// bind racing the collection of its content keeps its blobs), and losing the
/// nats-server that leads the index stream costs uploads at most a few
/// seconds of quick 503s while every node keeps receiving changes.
#[test]
fn erasure_and_failover_on_a_three_server_cluster() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(dir.path(), 3);
    let urls = nats.urls();
    let start = |name: &str| r3_node(dir.path(), &urls, name);
    let (n1, n2, n3) = (start("n1"), start("n2"), start("n3"));
    let _dump = DumpLogsOnPanic(vec![&n1, &n2, &n3]);
    let nodes = [n1.addr, n2.addr, n3.addr];
    wait_ready(&nodes);
    let inspect = Inspector::connect(&urls);

    // 1. Content shared by two identities survives deleting one of them
    // (past the collector's grace period).
    let shared = png(7000);
    let (hx, _) = upload(n1.addr, "first@example.org", &shared);
    let (hx2, _) = upload(n2.addr, "second@example.org", &shared);
    assert_eq!(hx, hx2);
    time_until_content(&nodes, &hx, 200, Duration::from_secs(2)); // cached everywhere
    assert_eq!(delete(n1.addr, "first@example.org"), 204);
    std::thread::sleep(Duration::from_secs(5));
    for n in &nodes {
        assert_eq!(
            content_status(*n, &hx),
            200,
            "{n}: shared content still served"
        );
    }
    assert_eq!(inspect.holds_blob(&hx), Some(true), "shared blobs stay");

    // 2. Deleting the last identity: 404 on every node within 2 s (their
    // caches held it), then the blobs and the entry leave the buckets.
    assert_eq!(delete(n2.addr, "second@example.org"), 204);
    let took = time_until_content(&nodes, &hx, 404, Duration::from_secs(2));
    eprintln!("deleted content answered 404 on every node after {took:?}");
    assert!(
        eventually(Duration::from_secs(20), || {
            (inspect.holds_blob(&hx) == Some(false) && inspect.holds_manifest(&hx) == Some(false))
                .then_some(())
        })
        .is_some(),
        "the object store still holds the deleted content's blobs"
    );

    // 3. Replacing an avatar erases the old content the same way.
    let (hy, _) = upload(n3.addr, "replaced@example.org", &png(7001));
    time_until_content(&nodes, &hy, 200, Duration::from_secs(2));
    let (hz, _) = upload(n3.addr, "replaced@example.org", &png(7002));
    time_until_content(&nodes, &hy, 404, Duration::from_secs(2));
    time_until_content(&nodes, &hz, 200, Duration::from_secs(2));
    assert!(
        eventually(Duration::from_secs(20), || (inspect.holds_blob(&hy)
            == Some(false))
        .then_some(()))
        .is_some(),
        "a replaced avatar's blobs leave the object store"
    );

    // 4. The race: one identity's content deleted while another identity
    // uploads the same bytes, around the moment the collector decides
    // (its grace is 3 s). Every acknowledged upload keeps its blobs.
    let mut raced = Vec::new();
    for round in 0..6u32 {
        let body = png(7100 + round);
        let (h, _) = upload(n1.addr, &format!("going{round}@example.org"), &body);
        assert_eq!(delete(n1.addr, &format!("going{round}@example.org")), 204);
        std::thread::sleep(Duration::from_millis(2_900 + u64::from(round) * 80));
        let r = put(n2.addr, &format!("coming{round}@example.org"), &body).unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(json(&r)["hash"], h.as_str());
        let key = format!("coming{round}@example.org");
        std::thread::sleep(Duration::from_secs(1));
        for n in &nodes {
            assert!(
                serves(*n, &md5_hex(&key), 64, &h).is_some(),
                "round {round}: {n} serves the acknowledged upload"
            );
        }
        assert_eq!(
            inspect.holds_blob(&h),
            Some(true),
            "round {round}: blobs kept"
        );
        raced.push(h);
    }
    // Past every grace period: still there.
    std::thread::sleep(Duration::from_secs(4));
    for h in &raced {
        assert_eq!(inspect.holds_blob(h), Some(true), "{h}: blobs kept");
        assert_eq!(content_status(n3.addr, h), 200);
    }

    // 5. A stream leader stepping down (what a rolling restart of
    // nats-server does to every stream its server leads) fails no upload:
    // the requests the old leader dropped are asked again of the new one.
    // Before, each upload right after a step-down waited 2 s and got a 503;
    // of the uploads sent while it stepped down (three writers), 2 of 889
    // did, an index write or blob chunk caught in flight (6 bursts, before
    // writes were sent again with their message id).
    for (i, stream) in ["KV_avatar_edge_index", "OBJ_avatar_edge_blobs"]
        .into_iter()
        .enumerate()
    {
        let during = uploads_during(
            &nodes,
            &format!("during{i}"),
            8000 + 1000 * i as u32,
            || inspect.step_down(stream).expect("the leader steps down"),
        );
        let failed: Vec<_> = during.iter().filter(|u| u.0 != 200).collect();
        eprintln!(
            "{} uploads while {stream}'s leader stepped down: {} failed {failed:?}; slowest {:?}",
            during.len(),
            failed.len(),
            during.iter().map(|u| u.1).max()
        );
        assert!(
            failed.is_empty(),
            "uploads failed while {stream}'s leader stepped down"
        );
        inspect.step_down(stream).expect("the leader steps down");
        let key = format!("step-down{i}@example.org");
        let sent = Instant::now();
        let r = put(n2.addr, &key, &png(7100 + i as u32)).unwrap();
        let waited = sent.elapsed();
        eprintln!(
            "upload right after {stream}'s leader stepped down: {} in {waited:?}",
            r.status
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let hash = json(&r)["hash"].as_str().unwrap().to_string();
        let took = time_until_served(&nodes, &md5_hex(&key), &[64], &hash, Instant::now());
        assert!(
            took <= Duration::from_secs(2),
            "reached every node after {took:?}"
        );
    }

    // 6. Kill the nats-server leading the index stream (the worst case:
    // writes wait for a new leader). No upload waits more than 5 s for its
    // answer (a 503 with Retry-After meanwhile), one is accepted once the
    // new leader is elected, and a change through node 2 reaches nodes 1
    // and 3 within 2 s.
    let leader = inspect.index_leader();
    drop(inspect);
    nats.kill(leader);
    let killed = Instant::now();
    let email = "failover@example.org";
    let md5 = md5_hex(email);
    let mut attempt = 0u32;
    let (hash, accepted) = loop {
        attempt += 1;
        let sent = Instant::now();
        let r = put(n2.addr, email, &png(7200 + attempt));
        let waited = sent.elapsed();
        assert!(
            waited <= Duration::from_secs(5),
            "an upload waited {waited:?}"
        );
        match r {
            Ok(r) if r.status == 200 => {
                break (
                    json(&r)["hash"].as_str().unwrap().to_string(),
                    Instant::now(),
                )
            }
            Ok(r) => {
                assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
                assert!(r.header("retry-after").is_some(), "503 with Retry-After");
            }
            Err(e) => panic!("upload {attempt}: {e}"),
        }
        // nats-server elects a new stream leader after its raft election
        // timeout (4-9 s, not configurable): with the leader killed, the
        // 5 s of the issue cannot be met; 12 s bounds the election.
        assert!(
            killed.elapsed() <= Duration::from_secs(12),
            "no upload accepted within 12 s of losing the index leader"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "first upload accepted {:?} after the index leader died ({attempt} attempts)",
        accepted - killed
    );
    let took = time_until_served(&[n1.addr, n3.addr], &md5, &[64], &hash, accepted);
    eprintln!("then served by nodes 1 and 3 after {took:?}");
    assert!(
        took <= Duration::from_secs(2),
        "change reached nodes 1 and 3 after {took:?}"
    );
    for i in 0..3u32 {
        let key = format!("after-failover{i}@example.org");
        let (h, _) = upload(
            [n1.addr, n2.addr, n3.addr][i as usize],
            &key,
            &png(7300 + i),
        );
        let took = time_until_served(&nodes, &md5_hex(&key), &[64], &h, Instant::now());
        assert!(
            took <= Duration::from_secs(2),
            "change {i} reached every node after {took:?}"
        );
    }
}

/// Issue 15, "a node killed during a delete burst": the node that deleted
/// (and would collect) is SIGKILLed while its collections run. No blob of
/// content another identity still uses is ever removed: a node started
/// afterwards (no blob cached) renders every kept identity from the object
/// store, and the erased content stays unreachable on the survivors.
#[test]
fn a_node_killed_during_a_delete_burst_never_removes_a_referenced_blob() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(dir.path(), 3);
    let urls = nats.urls();
    let start = |name: &str| r3_node(dir.path(), &urls, name);
    let (n1, n2) = (start("n1"), start("n2"));
    wait_ready(&[n1.addr, n2.addr]);
    const N: u32 = 8;
    let mut kept = Vec::new();
    let mut erased = Vec::new();
    for i in 0..N {
        let shared = png(7600 + i);
        let (h, _) = upload(n2.addr, &format!("keep{i}@example.org"), &shared);
        assert_eq!(
            upload(n1.addr, &format!("drop{i}@example.org"), &shared).0,
            h
        );
        kept.push(h);
        let (solo, _) = upload(n1.addr, &format!("solo{i}@example.org"), &png(7700 + i));
        erased.push(solo);
    }
    // The burst through node 1; its collectors start 3 s after each delete.
    let burst = Instant::now();
    for i in 0..N {
        assert_eq!(delete(n1.addr, &format!("drop{i}@example.org")), 204);
        assert_eq!(delete(n1.addr, &format!("solo{i}@example.org")), 204);
    }
    let into_collection = Duration::from_millis(3_300).saturating_sub(burst.elapsed());
    std::thread::sleep(into_collection);
    kill_hard(n1);

    let n3 = start("n3");
    let _dump = DumpLogsOnPanic(vec![&n2, &n3]);
    wait_ready(&[n3.addr]);
    // Past the survivors' own collections of anything the burst touched.
    std::thread::sleep(Duration::from_secs(5));
    let inspect = Inspector::connect(&urls);
    for (i, h) in kept.iter().enumerate() {
        assert_eq!(inspect.holds_blob(h), Some(true), "{h}: blobs kept");
        let key = format!("keep{i}@example.org");
        for size in [40, 200] {
            assert!(
                serves(n3.addr, &md5_hex(&key), size, h).is_some(),
                "the new node renders {key} at {size} px from the object store"
            );
        }
    }
    for h in &erased {
        for n in [n2.addr, n3.addr] {
            assert_eq!(content_status(n, h), 404, "{n}: erased content {h}");
        }
    }
}

/// PUTs every `(node, key, body)` at once (one thread each, released by one
/// barrier): each racer's `(hash, version)`, or what went wrong.
fn race(racers: Vec<(SocketAddr, String, Vec<u8>)>) -> Vec<Result<(String, u64), String>> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(racers.len()));
    let threads: Vec<_> = racers
        .into_iter()
        .map(|(addr, key, body)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let r = put(addr, &key, &body).map_err(|e| format!("{addr} {key}: {e}"))?;
                if r.status != 200 {
                    return Err(format!(
                        "{addr} {key}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                }
                let j = json(&r);
                Ok((
                    j["hash"].as_str().unwrap().to_string(),
                    j["version"].as_u64().unwrap(),
                ))
            })
        })
        .collect();
    threads.into_iter().map(|h| h.join().unwrap()).collect()
}
