//! Pipeline benchmarks (criterion 0.5).
//!
//! Run (briefly, filtered — the machine is shared):
//! ```text
//! CARGO_TARGET_DIR=/work/target-pipeline cargo bench --bench pipeline -- \
//!     --warm-up-time 1 --measurement-time 2 <filter>
//! ```
//! Groups: `decode` (full `normalize` of a 512, 1024 and 4032 px JPEG: decode,
//! crop, downscale, ICC, ladder, QOI, BLAKE3), `render` (stored ladder rung →
//! N px variant, `render` = decode_rung + resize_square + encode; formats
//! png, jpg, webp (lossy, photos), webpll (lossless, flat art) and avif, from
//! the 512×600 Hopper photo's ladder, whose 512 px rung is its master; and
//! `planes_jpg` / `planes_png` from the 1024 px retina photo's 512 px rung,
//! stored as YCbCr planes),
//! `resize` (128 px from its rung only), `encode` (128 px pixels only) and
//! `avif_speed` (rav1e presets 4–10 at 128 px; bytes printed to stderr).
//! File reading and normalizing happen outside the timed loops.
//!
//! Results (release, 2 shared cores, x86-64 with AVX2; median of criterion's
//! estimate, `--warm-up-time 1 --measurement-time 2`):
//!
//! | group / bench                  | time (median) |
//! |--------------------------------|---------------|
//! | decode/normalize/512 (512×600) | 14.6 ms       |
//! | decode/normalize/1024          | 51.5 ms       |
//! | decode/normalize/4032 (12 MP)  | 283 ms        |
//! | decode/sniff/4032 (EOI check)  | 140 µs (was 1.23–1.29 ms before memchr; A-B-A-B, 2026-12-01) |
//! | decode/normalize/{1024,4032}, 2026-12-02, `--measurement-time 6`, bench binaries alternated A-B-A-B (load 1.4–1.5): before / after the decoder's 8-byte refill and the master rung on a second thread | 20.5, 20.3 / 11.1, 11.1 ms; 72.0, 69.8 / 63.4, 65.8 ms |
//! | render/{png,jpg,webp}/16       | 107 / 101 / 140 µs |
//! | render/{png,jpg,webp}/32       | 143 / 141 / 190 µs |
//! | render/{png,jpg,webp}/80       | 408 / 484 / 647 µs |
//! | render/{png,jpg,webp}/128      | 421 / 561 / 534 µs |
//! | render/{png,jpg,webp}/256      | 1.92 / 1.87 / 1.95 ms |
//! | render/{png,jpg,webp}/512      | 7.82 / 7.36 / 8.87 ms |
//! | render/jpg/{128,256,512}, quiet machine, 2026-12-01 (load ~2) | 277 µs / 1.23 ms / 4.36 ms (profile per size: BENCHMARKS.md, issue 19) |
//! | render/jpg/{128,256,512}, vendored encoder + raw rungs + scratch, 2026-12-01 (load 1.1–1.7, AMD EPYC VM; the previous code 423–484 µs / 1.45–1.51 ms / 5.6–5.7 ms in the same sitting) | 151–173 µs / 0.67–0.76 ms / 4.2–4.9 ms |
//! | encode/jpg/128, same sitting (previous code 352–369 µs) | 156–179 µs |
//! | 2026-12-03, `9fbb6ba` (striped rungs, parallel JPEG ≥ 384 px), two passes, load 0.7–1.5: render/jpg/{16,32,80,128,256,512} | 29–41 µs / 40–47 µs / 114–164 µs / 94–114 µs / 304–341 µs / **2.07–2.10 ms** |
//! | same sitting, one pass: render/png/{128,256,512}; render/webp/{128,256,512} (lossy) | 85 / 489 µs / 3.09 ms; 1.09 / 3.65 / 12.4 ms |
//! | 2026-12-03, `0deb1c7` (the 512 px rung of a 1024 px photo as YCbCr planes), two passes, load 1.4–1.9: render/planes_jpg/512; render/jpg/512 (Hopper's 512 px master, striped QOI, unchanged) | **0.62–0.72 ms**; 1.75–1.78 ms |
//! | same sitting: render/planes_png/512; render/planes_jpg/300 (the planes converted back); render/jpg/256 | 2.02–2.05 ms; 1.42–1.70 ms; 297–374 µs |
//! | same sitting: resize/decode_rung_128 (uncompressed rung: a copy) | 1.1 µs |
//! | **latest**, 2026-12-04, `8033aa8` (the JPEG encoder's Huffman tokens), one pass, load 0.9–1.7: render/jpg/{16,32,80,128,256,512}; encode/jpg/128 | 29 / 36 / 98 / 61 / 211 µs / **1.27 ms**; 61 µs |
//! | same pass: render/planes_jpg/512; render/planes_jpg/300 | **0.41 ms**; 1.00 ms |
//! | resize/decode_rung_128 (QOI)   | 99 µs         |
//! | resize/decode_rung_128 (uncompressed rung, 2026-12-01) | 1.2–19 µs (a copy; the 19 µs run page-faulted: the bench links glibc's allocator) |
//! | resize/128_from_256            | 305 µs        |
//! | resize/128_from_128_copy       | 2.1 µs        |
//! | resize/80_from_128             | 185 µs        |
//! | encode/{png,jpg,webp}/128      | 350 / 405 / 433 µs |
//!
//! (The render rows above the latest ones are history: the 512 px rung was
//! one QOI image and the JPEG encode serial then. They also predate issue 21:
//! `webp` was lossless then — it is `webpll` now. `avif` is not measured
//! here yet.)
//!
//! `avif_speed` (2026-11-30, `-- --warm-up-time 1 --measurement-time 3
//! avif_speed`, load 6–9): speed 4 103 ms / 2,726 B, 6 82 ms / 2,837 B,
//! 7 67 ms / 2,916 B, 8 67 ms / 2,916 B, 9 34.5 ms / 3,386 B. See
//! BENCHMARKS.md, "Bytes on the wire", for why speed 8 stays.
//!
//! Measured while other developers were compiling on the same 2 cores, so
//! absolute numbers are pessimistic (an unloaded `normalize` of the 12 MP
//! photo took ~215 ms and of the 1024 px JPEG ~31 ms in the corpus probe).

use std::hint::black_box;

use avatar_edge::pipeline::{
    decode_rung, encode, encode_avif_at, normalize, pick_rung, render, resize_square, sniff,
    Encoding, Limits, OutputFormat,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The size matrix: every format, WebP both ways (`webp` = lossy, the
/// photo default; `webpll` = lossless, flat art and generated defaults).
const FORMATS: [(&str, OutputFormat, Encoding); 5] = [
    ("png", OutputFormat::Png, Encoding::LOSSY),
    ("jpg", OutputFormat::Jpeg, Encoding::LOSSY),
    ("webp", OutputFormat::Webp, Encoding::LOSSY),
    ("webpll", OutputFormat::Webp, Encoding::LOSSLESS),
    ("avif", OutputFormat::Avif, Encoding::LOSSY),
];

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.sample_size(10);
    for (label, name) in [
        ("512", "photo_grace_hopper_512x600.jpg"),
        ("1024", "photo_retina_baseline_1024.jpg"),
        ("4032", "photo_large_4032x3024.jpg"),
    ] {
        let bytes = fixture(name);
        let limits = Limits::default();
        g.bench_function(BenchmarkId::new("normalize", label), |b| {
            b.iter(|| normalize(black_box(&bytes), None, &limits).unwrap())
        });
        // The structural check every upload passes first (a JPEG must reach
        // its end-of-image marker: a scan of the whole entropy-coded data).
        g.bench_function(BenchmarkId::new("sniff", label), |b| {
            b.iter(|| sniff(black_box(&bytes)).unwrap())
        });
    }
    g.finish();
}

/// A photo's stored ladder (default limits) and its rungs' sides.
fn ladder(name: &str) -> (Vec<Vec<u8>>, Vec<u32>) {
    let n = normalize(&fixture(name), None, &Limits::default()).unwrap();
    n.ladder.into_iter().map(|r| (r.bytes, r.side)).unzip()
}

fn bench_render(c: &mut Criterion) {
    let (rungs, sides) = ladder("photo_grace_hopper_512x600.jpg");
    let mut g = c.benchmark_group("render");
    for size in [16u32, 32, 80, 128, 256, 512] {
        let rung = &rungs[pick_rung(&sides, size)];
        for (label, f, e) in FORMATS {
            g.bench_function(BenchmarkId::new(label, size), |b| {
                b.iter(|| render(black_box(rung), size, f, e).unwrap())
            });
        }
    }
    // A 1024 px photo's ladder, the one `bench/compare.sh` renders from: its
    // 512 px rung is YCbCr planes, so a 512 px JPEG is encoded from them and
    // every other render from that rung converts them back first.
    let (rungs, sides) = ladder("photo_retina_baseline_1024.jpg");
    for (size, label, f) in [
        (512, "planes_jpg", OutputFormat::Jpeg),
        (512, "planes_png", OutputFormat::Png),
        (300, "planes_jpg", OutputFormat::Jpeg),
    ] {
        let rung = &rungs[pick_rung(&sides, size)];
        g.bench_function(BenchmarkId::new(label, size), |b| {
            b.iter(|| render(black_box(rung), size, f, Encoding::LOSSY).unwrap())
        });
    }
    g.finish();
}

fn bench_resize_encode(c: &mut Criterion) {
    let (rungs, sides) = ladder("photo_grace_hopper_512x600.jpg");
    let rung = &rungs[pick_rung(&sides, 128)];
    let src = decode_rung(rung).unwrap();

    let mut g = c.benchmark_group("resize");
    g.bench_function("decode_rung_128", |b| {
        b.iter(|| decode_rung(black_box(rung)).unwrap())
    });
    let big = decode_rung(&rungs[pick_rung(&sides, 129)]).unwrap();
    g.bench_function("128_from_256", |b| {
        b.iter(|| resize_square(black_box(&big), 128).unwrap())
    });
    g.bench_function("128_from_128_copy", |b| {
        b.iter(|| resize_square(black_box(&src), 128).unwrap())
    });
    g.bench_function("80_from_128", |b| {
        b.iter(|| resize_square(black_box(&src), 80).unwrap())
    });
    g.finish();

    let px = resize_square(&src, 128).unwrap();
    let mut g = c.benchmark_group("encode");
    for (label, f, e) in FORMATS {
        g.bench_function(BenchmarkId::new(label, 128), |b| {
            b.iter(|| encode(black_box(&px), f, e).unwrap())
        });
    }
    g.finish();

    // rav1e's speed presets at 128 px, quality 60: time here, bytes printed
    // once (the speed/bytes trade-off behind `AVIF_SPEED`).
    let mut g = c.benchmark_group("avif_speed");
    g.sample_size(20);
    for speed in [4u8, 6, 7, 8, 9, 10] {
        let len = encode_avif_at(&px, 60, speed).unwrap().len();
        eprintln!("avif_speed/{speed}/128: {len} bytes");
        g.bench_function(BenchmarkId::new("128", speed), |b| {
            b.iter(|| encode_avif_at(black_box(&px), 60, speed).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_decode, bench_render, bench_resize_encode);
criterion_main!(benches);
