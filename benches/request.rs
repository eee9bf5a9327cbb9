//! Full in-process request benchmarks (criterion 0.5): `avatar_edge::http::handle`
//! for a cache hit and for a cold miss (render from the stored ladder), no socket.
//!
//! Run (briefly, filtered — the machine is shared):
//! ```text
//! CARGO_TARGET_DIR=/work/target-perf cargo bench --bench request -- \
//!     --warm-up-time 1 --measurement-time 2 [hit|cold]
//! ```
//! Setup (outside the timed loops): two apps from
//! `cli::build_app(Config::for_tests(dir), false)`, one with the default cache
//! and one with a zero byte budget (every request renders), each holding
//! `fixtures/photo_retina_baseline_1024.jpg` uploaded once. The timed loop builds the
//! `Request` (a few allocations hyper would also make), calls `handle` on a
//! current-thread Tokio runtime and drops the response.
//!
//! Allocations per request are counted with `stats_alloc` (the bench's global
//! allocator; the crate itself stays `forbid(unsafe_code)`) around `handle`
//! only, and printed to stderr.
//!
//! Results (release, 2 shared cores — others were compiling; compare rows of
//! the same run):
//!
//! | bench                    | before (main) | after  | allocations / request (before → after) |
//! |--------------------------|---------------|--------|------------------------------------------|
//! | hit/c_jpg_128            | 12.2 µs       | 4.1 µs | 46 → 12                                  |
//! | hit/c_negotiated_128     | 12.2 µs       | 4.0 µs | 45 → 11                                  |
//! | hit/304_if_none_match    | 12.9 µs       | 4.3 µs | 35 → 11                                  |
//! | cold/c_jpg_128           | —             | 608 µs | —                                        |
//! | cold/c_webp_80           | —             | 597 µs | —                                        |
//!
//! Before/after measured back to back in one session (the "before" is the
//! branch point's `src/` with these benches). A later rerun under heavier load
//! gave 4.8–8.0 µs for the hits: trust the ratio, not the absolute value.

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;

use avatar_edge::config::Config;
use avatar_edge::http::{handle, App};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const TOKEN: &str = "test-token-0123456789";

struct Env {
    app: Arc<App>,
    hash: String,
    _dir: tempfile::TempDir,
}

fn env(rt: &tokio::runtime::Runtime, cache_bytes: u64) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::for_tests(dir.path());
    config.render.cache_bytes = cache_bytes;
    let app = avatar_edge::cli::build_app(config, false).expect("app").app;
    let path = format!(
        "{}/fixtures/photo_retina_baseline_1024.jpg",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hash = rt.block_on(async {
        let req = Request::put("/v1/avatars/bench@example.org")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let resp = handle(&app, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        v["hash"].as_str().expect("hash").to_string()
    });
    Env {
        app,
        hash,
        _dir: dir,
    }
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).expect("request")
}

/// Allocations made by one `handle` call (after a warm-up call).
fn allocs_per_request(
    rt: &tokio::runtime::Runtime,
    app: &App,
    uri: &str,
    headers: &[(&str, &str)],
) -> usize {
    let n = 100;
    let mut total = 0;
    for _ in 0..n {
        let req = get(uri, headers);
        let reg = Region::new(GLOBAL);
        let resp = rt.block_on(handle(app, req));
        drop(black_box(resp));
        total += reg.change().allocations;
    }
    total / n
}

fn bench_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let e = env(&rt, 256 << 20);
    let jpg = format!("/c/{}.jpg?s=128", e.hash);
    let neg = format!("/c/{}?s=128", e.hash);
    let accept = [("accept", "image/avif,image/webp,*/*")];
    // Warm the cache and learn the ETag.
    let etag = {
        let r = rt.block_on(handle(&e.app, get(&jpg, &[])));
        assert_eq!(r.status(), StatusCode::OK);
        r.headers()["etag"].to_str().expect("etag").to_string()
    };
    rt.block_on(handle(&e.app, get(&neg, &accept)));
    let inm = [("if-none-match", etag.as_str())];
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], StatusCode);
    let cases: [Case; 3] = [
        ("c_jpg_128", &jpg, &[], StatusCode::OK),
        ("c_negotiated_128", &neg, &accept, StatusCode::OK),
        ("304_if_none_match", &jpg, &inm, StatusCode::NOT_MODIFIED),
    ];
    let mut g = c.benchmark_group("hit");
    for (name, uri, headers, status) in cases {
        assert_eq!(
            rt.block_on(handle(&e.app, get(uri, headers))).status(),
            status
        );
        eprintln!(
            "hit/{name}: {} allocations per request",
            allocs_per_request(&rt, &e.app, uri, headers)
        );
        g.bench_function(name, |b| {
            b.iter(|| black_box(rt.block_on(handle(&e.app, get(uri, headers)))))
        });
    }
    g.finish();
}

fn bench_cold(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let e = env(&rt, 0);
    let mut g = c.benchmark_group("cold");
    g.sample_size(20);
    for (name, uri) in [
        ("c_jpg_128", format!("/c/{}.jpg?s=128", e.hash)),
        ("c_webp_80", format!("/c/{}.webp?s=80", e.hash)),
    ] {
        assert_eq!(
            rt.block_on(handle(&e.app, get(&uri, &[]))).status(),
            StatusCode::OK
        );
        g.bench_function(name, |b| {
            b.iter(|| black_box(rt.block_on(handle(&e.app, get(&uri, &[])))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_hit, bench_cold);
criterion_main!(benches);
