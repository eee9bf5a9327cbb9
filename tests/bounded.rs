//! Issue 20: a node holding a bounded replica (`--nats-index-mb 1`) next to
//! one holding the whole index, on a real nats-server. The bounded node
//! reads identities it does not hold from the stream leader, holds what it
//! looked up within its budget (unknown hashes too), and the watch keeps
//! what it holds current: an unknown hash that becomes an identity, an
//! identity that changes. A failed read is the fault default with
//! `no-store`, counted, while identities it holds keep answering.
//! Concurrent look-ups of one cold identity share one read. Masters are
//! looked up the same way, and the bounded node collects the salted master
//! its commit unlisted (every blob) while leaving one stored before salting
//! to a node holding every master.
//! (`tests/cluster.rs` runs its node `n3` bounded in every scenario.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// A small synthetic PNG, different for every `seed`.
fn png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(48, 48, |x, y| {
        image::Rgb([(x * 5 + seed) as u8, (y * 5) as u8, (seed * 37) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Upload `body` as `email`'s avatar through `addr`; its master hash.
fn upload(addr: SocketAddr, email: &str, body: &[u8]) -> String {
    let (k, v) = auth();
    let r = try_request(
        addr,
        "PUT",
        &format!("/v1/avatars/{email}"),
        &[(k, v.as_str())],
        body,
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    j["hash"].as_str().unwrap().to_string()
}

/// `addr`'s answer for identity hash `hex` (`d=404`): the status and the
/// master hash it names, if any.
fn answer(addr: SocketAddr, hex: &str) -> (u16, Option<String>) {
    let r = try_request(
        addr,
        "GET",
        &format!("/avatar/{hex}?s=32&d=404"),
        &[],
        b"",
        Duration::from_secs(5),
    )
    .unwrap();
    let at = r
        .header("content-location")
        .and_then(|l| l.split("/c/").nth(1))
        .map(|l| l.chars().take_while(char::is_ascii_hexdigit).collect());
    (r.status, at)
}

/// Wait until `addr`'s `/readyz` answers 200 (bounded: 10 s).
fn wait_ready(addr: SocketAddr) {
    eventually(Duration::from_secs(10), || {
        let r = try_request(addr, "GET", "/readyz", &[], b"", Duration::from_secs(2)).ok()?;
        (r.status == 200).then_some(())
    })
    .expect("ready");
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn a_bounded_replica_reads_what_it_does_not_hold_and_keeps_what_it_holds_current() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(dir.path(), 1);
    let urls = nats.urls();
    let node = |name: &str, extra: &[&str]| {
        let mut args = vec!["--nats", urls.as_str(), "--render-threads", "1"];
        args.extend_from_slice(extra);
        Server::start(&dir.path().join(name), &args, Some(TOKEN))
    };
    let kv = common::inspector::Inspector::connect(&urls);
    let whole = node("whole", &["--nats-index-mb", "0"]);
    let bounded = node("bounded", &["--nats-index-mb", "1"]);
    let (w, b) = (whole.addr, bounded.addr);
    wait_ready(w);
    wait_ready(b);
    let reads = || metric(b, "avatar_edge_index_cold_reads_total");
    // A new bucket is marked as holding only salted, listed masters, and
    // there a node given no budget holds a bounded replica (64 MiB).
    assert_eq!(
        kv.format_marker().as_deref(),
        Some("salted rungs, listed entries")
    );
    let is_bounded = |addr| {
        let r = common::request(addr, "GET", "/metrics", &[], b"");
        String::from_utf8_lossy(&r.body).contains("\navatar_edge_index_hot_bytes ")
    };
    assert!(is_bounded(b) && !is_bounded(w));
    let default = node("default", &[]);
    wait_ready(default.addr);
    assert!(
        is_bounded(default.addr),
        "bounded by default in a marked bucket"
    );
    default.stop();

    // An unknown hash: its alias entry and record read together, once; the
    // absence is then held.
    let email = "later@example.org";
    let md5 = md5_hex(email);
    assert_eq!(answer(b, &md5), (404, None));
    assert_eq!(reads(), 2, "a. and i. in one round trip");
    assert_eq!(answer(b, &md5), (404, None));
    assert_eq!(reads(), 2, "the absence is held");

    // It becomes an identity on the other node: the watch replaces the held
    // absence, with no read.
    let first = upload(w, email, &png(1));
    eventually(Duration::from_secs(2), || {
        (answer(b, &md5) == (200, Some(first.clone()))).then_some(())
    })
    .expect("the bounded node serves a new identity it had found absent");
    assert_eq!(
        reads(),
        3,
        "the identity applied by the watch, its master's entry read once"
    );
    // Its other alias: an alias entry naming the primary, then the primary
    // (held already).
    assert_eq!(answer(b, &sha256_hex(email)), (200, Some(first.clone())));
    assert_eq!(reads(), 5);

    // A change of a held identity arrives by the watch.
    let second = upload(w, email, &png(2));
    assert_ne!(first, second);
    eventually(Duration::from_secs(2), || {
        (answer(b, &md5) == (200, Some(second.clone()))).then_some(())
    })
    .expect("the bounded node serves the change");
    let second_rungs = kv.rungs(&second);
    assert!(second_rungs.iter().all(|r| kv.holds_blob(r) == Some(true)));
    // This node's own write is read back at once (no watch needed).
    let third = upload(b, email, &png(3));
    assert_eq!(answer(b, &sha256_hex(email)), (200, Some(third.clone())));
    // Its commit unlisted `second`, so it collects it (after the grace):
    // every blob, with no other master in memory (salted rungs).
    eventually(Duration::from_secs(10), || {
        (kv.holds_manifest(&second) == Some(false)).then_some(())
    })
    .expect("the bounded node collects the master its commit unlisted");
    assert!(second_rungs.iter().all(|r| kv.holds_blob(r) == Some(false)));
    // A master stored before salting is left to a node holding every
    // master: it may share rungs with others.
    let old_email = "before-salting@example.org";
    let old = upload(b, old_email, &png(4));
    kv.unsalt(&old);
    upload(b, old_email, &png(5));
    eventually(Duration::from_secs(10), || {
        (metric(b, "avatar_edge_gc_left_unsalted_total") >= 1).then_some(())
    })
    .expect("left for a node holding every master");
    // Without the marker (an earlier release's bucket, `unsalt`), a node
    // given no budget holds every identity.
    let default = node("default", &[]);
    wait_ready(default.addr);
    assert!(
        !is_bounded(default.addr),
        "the whole index in an unmarked bucket"
    );
    default.stop();

    // Many unknown hashes: the budget holds (1 MiB), the oldest go, and an
    // identity that went is read again correctly.
    let before = reads();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..1_500 {
                    let hex = md5_hex(&format!("nobody{t}-{i}@example.org"));
                    assert_eq!(answer(b, &hex).0, 404);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(reads() >= before + 2 * 6_000);
    let held = metric(b, "avatar_edge_index_hot_bytes");
    assert!(held <= 1 << 20, "held {held} bytes");
    let keys = metric(b, "avatar_edge_index_hot_keys");
    assert!(keys > 1_000 && keys < 12_000, "{keys} keys held");
    // Of the masters, only those a sweep must look at.
    assert_eq!(metric(b, "avatar_edge_replica_masters"), 0);
    assert!(metric(w, "avatar_edge_replica_masters") >= 2);
    assert_eq!(answer(b, &md5), (200, Some(third.clone())));
    assert_eq!(
        answer(w, &md5),
        (200, Some(third.clone())),
        "both nodes agree"
    );

    // A restart reads takedowns, then masters in the background, never
    // identities: ready at once, the identity read cold, its content served.
    bounded.stop();
    let bounded = node("bounded", &["--nats-index-mb", "1"]);
    let b = bounded.addr;
    wait_ready(b);
    eventually(Duration::from_secs(10), || {
        (metric(b, "avatar_edge_replica_masters_loading") == 0).then_some(())
    })
    .expect("the masters' read ends");
    assert_eq!(
        metric(b, "avatar_edge_replica_lag_seconds_count"),
        0,
        "no identity change applied at start"
    );
    // A cold identity asked by many at once: its two keys are read once,
    // the look-ups in flight share the read, later ones find it held.
    let reads = || metric(b, "avatar_edge_index_cold_reads_total");
    let before = reads();
    let start = std::sync::Arc::new(std::sync::Barrier::new(32));
    let askers: Vec<_> = (0..32)
        .map(|_| {
            let (start, md5) = (start.clone(), md5.clone());
            std::thread::spawn(move || {
                start.wait();
                answer(b, &md5)
            })
        })
        .collect();
    for a in askers {
        assert_eq!(a.join().unwrap(), (200, Some(third.clone())));
    }
    assert_eq!(
        reads(),
        before + 3,
        "32 look-ups at once, a., i. and the master's m. read once ({} unheld)",
        metric(b, "avatar_edge_index_cold_unheld_total")
    );
    assert_eq!(answer(b, &md5), (200, Some(third.clone())));
    let content = |hash: &str| {
        let path = format!("/c/{hash}?s=32");
        let r = try_request(b, "GET", &path, &[], b"", Duration::from_secs(5));
        r.unwrap().status
    };
    assert_eq!(content(&third), 200, "its master is known here");
    assert_eq!(content(&first), 404, "a master nobody names is not served");
    // New content pinned here once the masters are read.
    let fourth = upload(b, email, &png(6));
    assert_eq!(answer(b, &md5), (200, Some(fourth.clone())));

    // NATS gone: a hash not held is the fault default, never cached and
    // counted; a held identity still answers from memory.
    nats.kill(0);
    let r = try_request(
        b,
        "GET",
        &format!("/avatar/{}?s=32", md5_hex("unseen@example.org")),
        &[],
        b"",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200, "a default, not an error");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(metric(b, "avatar_edge_index_cold_read_errors_total") >= 1);
    assert!(metric(b, "avatar_edge_fault_defaults_total") >= 1);
    assert_eq!(answer(b, &md5), (200, Some(fourth)));
}
