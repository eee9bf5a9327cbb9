//! Render time of every generated default style at 16, 80 and 512 px.
//!
//! Run (briefly, filtered — the machine is shared):
//! `cargo bench --bench identicon -- --warm-up-time 1 --measurement-time 2 identicon/80`
//! or without a filter for the whole table.
//!
//! Target: identicon at 80 px ≤ 20 µs (≥ 50,000 renders/s per core).
//!
//! Measured (bench profile, 2 shared cores, median of criterion's estimate):
//!
//! | style     |   16 px |   80 px |  512 px |
//! |-----------|--------:|--------:|--------:|
//! | (filled in below by the measurement run)  |
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

use avatar_edge::identicon::{render, Style};

fn bench(c: &mut Criterion) {
    // MD5("alice@example.org"), the same seed the golden tests use.
    let seed: [u8; 16] = [
        0xfb, 0xf7, 0xc6, 0xae, 0xc1, 0xd4, 0x28, 0x0b, 0x7c, 0x27, 0x04, 0xc1, 0xc0, 0x47, 0x8b,
        0xd6,
    ];
    for style in Style::ALL {
        let mut group = c.benchmark_group(style.as_str());
        for size in [16u32, 80, 512] {
            group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
                b.iter(|| render(style, black_box(&seed), black_box(size), Some("AL")))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
