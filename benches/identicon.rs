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
//! | style     |    16 px |    80 px |   512 px |
//! |-----------|---------:|---------:|---------:|
//! | identicon |  1.87 µs |  5.95 µs |   107 µs |
//! | retro     |  1.55 µs |  8.54 µs |   194 µs |
//! | monsterid |  25.0 µs |   230 µs |  3.40 ms |
//! | wavatar   |  25.9 µs |   151 µs |  3.35 ms |
//! | robohash  |  17.0 µs |   130 µs |  1.89 ms |
//! | mp        |  5.99 µs |  79.6 µs |  1.63 ms |
//! | blank     |   189 ns |   889 ns |  37.8 µs |
//! | initials  |  9.93 µs |  49.5 µs |  1.43 ms |
//! | color     |   595 ns |  1.79 µs |  99.9 µs |
//!
//! identicon at 80 px: 5.95 µs ≈ 168,000 renders/s on one core (target met).
//! The vector styles pay one blend per covered pixel; at 512 px that, not the
//! outline, dominates (a memcpy fast path for fully covered runs is the next
//! step if they ever matter — the HTTP layer caches rendered defaults).
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
