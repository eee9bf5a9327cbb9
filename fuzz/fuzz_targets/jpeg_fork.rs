//! Fuzz target: the vendored JPEG encoder (`vendor/jpeg-encoder`, an
//! optimized fork with SIMD and per-thread scratch buffers) against the
//! released crate it was forked from. The input chooses the size, colour
//! type, quality, sampling factor, baseline or progressive, standard or
//! optimized Huffman tables, restart interval and the pixels. The fork's
//! output must decode (jpeg-decoder); both encoders must return the same
//! result and, on success, the same bytes — except with optimized tables and
//! a restart interval, where upstream writes corrupt JPEGs (found here, fixed
//! in the fork, see its FORK.md): there the fork's output must decode to the
//! same pixels as its output with the standard tables. With a restart
//! interval, the fork's parallel encode (`set_parallel`, in a pool of three
//! threads) must write the serial encode's bytes. Encodes run one after
//! another on one thread, so a scratch buffer left dirty by an earlier
//! (larger, other-shaped) encode would show as a difference.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (head, pixels) = data.split_at(8);
    // Up to 300 × 64: wider than one 256 px rung, any MCU remainder.
    let w = 1 + (u16::from_le_bytes([head[0], head[1]]) % 300);
    let h = 1 + (head[2] % 64) as u16;
    let colors = [
        (
            jpeg_encoder::ColorType::Rgb,
            upstream::ColorType::Rgb,
            3usize,
        ),
        (jpeg_encoder::ColorType::Luma, upstream::ColorType::Luma, 1),
        (jpeg_encoder::ColorType::Rgba, upstream::ColorType::Rgba, 4),
        (jpeg_encoder::ColorType::Bgr, upstream::ColorType::Bgr, 3),
        (
            jpeg_encoder::ColorType::Ycbcr,
            upstream::ColorType::Ycbcr,
            3,
        ),
        (jpeg_encoder::ColorType::Bgra, upstream::ColorType::Bgra, 4),
        (jpeg_encoder::ColorType::Cmyk, upstream::ColorType::Cmyk, 4),
        (
            jpeg_encoder::ColorType::CmykAsYcck,
            upstream::ColorType::CmykAsYcck,
            4,
        ),
        (jpeg_encoder::ColorType::Ycck, upstream::ColorType::Ycck, 4),
    ];
    let samplings = [
        (
            jpeg_encoder::SamplingFactor::F_1_1,
            upstream::SamplingFactor::F_1_1,
        ),
        (
            jpeg_encoder::SamplingFactor::F_2_2,
            upstream::SamplingFactor::F_2_2,
        ),
        (
            jpeg_encoder::SamplingFactor::F_2_1,
            upstream::SamplingFactor::F_2_1,
        ),
        (
            jpeg_encoder::SamplingFactor::F_1_2,
            upstream::SamplingFactor::F_1_2,
        ),
        (
            jpeg_encoder::SamplingFactor::F_4_1,
            upstream::SamplingFactor::F_4_1,
        ),
        (
            jpeg_encoder::SamplingFactor::F_4_2,
            upstream::SamplingFactor::F_4_2,
        ),
        (
            jpeg_encoder::SamplingFactor::F_1_4,
            upstream::SamplingFactor::F_1_4,
        ),
        (
            jpeg_encoder::SamplingFactor::F_2_4,
            upstream::SamplingFactor::F_2_4,
        ),
        (
            jpeg_encoder::SamplingFactor::R_4_2_0,
            upstream::SamplingFactor::R_4_2_0,
        ),
    ];
    let (color, up_color, channels) = colors[head[3] as usize % colors.len()];
    let (sampling, up_sampling) = samplings[head[4] as usize % samplings.len()];
    let quality = 1 + head[5] % 100;
    let optimize = head[6] & 1 != 0;
    let progressive = head[6] & 2 != 0;
    let restart = u16::from(head[7] % 8);
    // The pixels: the input repeated (long runs when it is short, noise when
    // it is long), so every size has data.
    let n = w as usize * h as usize * channels;
    let image: Vec<u8> = if pixels.is_empty() {
        vec![128; n]
    } else {
        pixels.iter().copied().cycle().take(n).collect()
    };

    // One encode with `krate`'s encoder (the fork or the release).
    macro_rules! encode {
        ($krate:ident, $color:expr, $sampling:expr, $optimize:expr) => {{
            let mut out = Vec::new();
            let done = {
                let mut e = $krate::Encoder::new(&mut out, quality);
                e.set_sampling_factor($sampling);
                e.set_optimized_huffman_tables($optimize);
                e.set_progressive(progressive);
                if restart > 0 {
                    e.set_restart_interval(restart);
                }
                e.encode(&image, w, h, $color)
            };
            done.map(|()| out)
        }};
    }
    let ours = |optimize: bool| encode!(jpeg_encoder, color, sampling, optimize);
    let what = format!(
        "{w}x{h} {color:?} {sampling:?} q{quality} optimize {optimize} progressive {progressive} restart {restart}"
    );
    let decode = |jpeg: &[u8]| {
        jpeg_decoder::Decoder::new(jpeg)
            .decode()
            .unwrap_or_else(|e| panic!("{what}: the fork's output does not decode: {e}"))
    };
    let mine = ours(optimize);
    if let Ok(jpeg) = &mine {
        decode(jpeg);
    }
    if restart > 0 {
        static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
        let pool = POOL.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap()
        });
        let parallel = pool.install(|| {
            let mut out = Vec::new();
            let mut e = jpeg_encoder::Encoder::new(&mut out, quality);
            e.set_sampling_factor(sampling);
            e.set_optimized_huffman_tables(optimize);
            e.set_progressive(progressive);
            e.set_restart_interval(restart);
            e.set_parallel(true);
            e.encode(&image, w, h, color).map(|()| out)
        });
        match (&mine, &parallel) {
            (Ok(a), Ok(b)) => assert!(a == b, "{what}: the parallel encode's bytes differ"),
            (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "{what}: parallel"),
        }
    }
    if optimize && restart > 0 {
        let standard = ours(false);
        match (&mine, &standard) {
            (Ok(a), Ok(b)) => assert!(decode(a) == decode(b), "{what}: pixels differ"),
            (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "{what}"),
        }
        return;
    }

    let theirs = encode!(upstream, up_color, up_sampling, optimize);

    match (mine, theirs) {
        (Ok(a), Ok(b)) => assert!(a == b, "{what}: bytes differ"),
        (a, b) => assert_eq!(a.is_ok(), b.is_ok(), "{what}: one encoder failed"),
    }
});
