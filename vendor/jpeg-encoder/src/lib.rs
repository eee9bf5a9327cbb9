//! # JPEG encoder
//!
//! ## Using the encoder
//! ```no_run
//! # use jpeg_encoder::EncodingError;
//! # pub fn main() -> Result<(), EncodingError> {
//! use jpeg_encoder::{Encoder, ColorType};
//!
//! // An array with 4 pixels in RGB format.
//! let data = [
//!     255,0,0,
//!     0,255,0,
//!     0,0,255,
//!     255,255,255,
//! ];
//!
//! // Create new encoder that writes to a file with maximum quality (100)
//! let mut encoder = Encoder::new_file("some.jpeg", 100)?;
//!
//! // Encode the data with dimension 2x2
//! encoder.encode(&data, 2, 2, ColorType::Rgb)?;
//! # Ok(())
//! # }

#![no_std]
#![cfg_attr(not(feature = "simd"), forbid(unsafe_code))]

#[cfg(feature = "std")]
extern crate std;

extern crate alloc;
extern crate core;

#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
mod avx2;
mod encoder;
mod error;
mod fdct;
mod huffman;
mod image_buffer;
mod marker;
mod quantization;
mod tokens;
mod writer;

pub use encoder::{ChromaSubsamplingMethod, ColorType, Encoder, JpegColorType, SamplingFactor};
pub use error::EncodingError;
pub use image_buffer::{ImageBuffer, cmyk_to_ycck, rgb_to_ycbcr};
pub use quantization::QuantizationTableType;
pub use writer::{JfifWrite, PixelDensity, PixelDensityUnit};

#[cfg(feature = "benchmark")]
pub use fdct::fdct;

#[cfg(feature = "benchmark")]
pub use image_buffer::RgbImage;

#[cfg(all(
    feature = "benchmark",
    feature = "simd",
    any(target_arch = "x86", target_arch = "x86_64")
))]
pub use avx2::fdct_avx2;

#[cfg(all(
    feature = "benchmark",
    feature = "simd",
    any(target_arch = "x86", target_arch = "x86_64")
))]
pub use avx2::RgbImageAVX2;

#[cfg(test)]
mod tests {
    use crate::image_buffer::rgb_to_ycbcr;
    use crate::{
        ChromaSubsamplingMethod, ColorType, Encoder, QuantizationTableType, SamplingFactor,
    };
    use jpeg_decoder::{Decoder, ImageInfo, PixelFormat};

    use alloc::boxed::Box;
    use alloc::vec;
    use alloc::vec::Vec;

    fn create_test_img_rgb() -> (Vec<u8>, u16, u16) {
        // Ensure size which which ensures an odd MCU count per row to test chroma subsampling
        let width = 258;
        let height = 128;

        let mut data = Vec::with_capacity(width * height * 3);

        for y in 0..height {
            for x in 0..width {
                let x = x.min(255);
                data.push(x as u8);
                data.push((y * 2) as u8);
                data.push(((x + y * 2) / 2) as u8);
            }
        }

        (data, width as u16, height as u16)
    }

    fn create_test_img_rgba() -> (Vec<u8>, u16, u16) {
        // Ensure size which which ensures an odd MCU count per row to test chroma subsampling
        let width = 258;
        let height = 128;

        let mut data = Vec::with_capacity(width * height * 3);

        for y in 0..height {
            for x in 0..width {
                let x = x.min(255);
                data.push(x as u8);
                data.push((y * 2) as u8);
                data.push(((x + y * 2) / 2) as u8);
                data.push(x as u8);
            }
        }

        (data, width as u16, height as u16)
    }

    fn create_test_img_gray() -> (Vec<u8>, u16, u16) {
        let width = 258;
        let height = 128;

        let mut data = Vec::with_capacity(width * height);

        for y in 0..height {
            for x in 0..width {
                let x = x.min(255);
                let (y, _, _) = rgb_to_ycbcr(x as u8, (y * 2) as u8, ((x + y * 2) / 2) as u8);
                data.push(y);
            }
        }

        (data, width as u16, height as u16)
    }

    fn create_test_img_cmyk() -> (Vec<u8>, u16, u16) {
        let width = 258;
        let height = 192;

        let mut data = Vec::with_capacity(width * height * 4);

        for y in 0..height {
            for x in 0..width {
                let x = x.min(255);
                data.push(x as u8);
                data.push((y * 3 / 2) as u8);
                data.push(((x + y * 3 / 2) / 2) as u8);
                data.push((255 - (x + y) / 2) as u8);
            }
        }

        (data, width as u16, height as u16)
    }

    fn decode(data: &[u8]) -> (Vec<u8>, ImageInfo) {
        let mut decoder = Decoder::new(data);

        (decoder.decode().unwrap(), decoder.info().unwrap())
    }

    fn check_result(
        data: Vec<u8>,
        width: u16,
        height: u16,
        result: &mut Vec<u8>,
        pixel_format: PixelFormat,
    ) {
        let (img, info) = decode(&result);

        assert_eq!(info.pixel_format, pixel_format);
        assert_eq!(info.width, width);
        assert_eq!(info.height, height);
        assert_eq!(img.len(), data.len());

        for (i, (&v1, &v2)) in data.iter().zip(img.iter()).enumerate() {
            let diff = (v1 as i16 - v2 as i16).abs();
            assert!(
                diff < 20,
                "Large color diff at index: {}: {} vs {}",
                i,
                v1,
                v2
            );
        }
    }

    #[test]
    fn test_gray_100() {
        let (data, width, height) = create_test_img_gray();

        let mut result = Vec::new();
        let encoder = Encoder::new(&mut result, 100);
        encoder
            .encode(&data, width, height, ColorType::Luma)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::L8);
    }

    #[test]
    fn test_rgb_100() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let encoder = Encoder::new(&mut result, 100);
        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_80() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let encoder = Encoder::new(&mut result, 80);
        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgba_80() {
        let (data, width, height) = create_test_img_rgba();

        let mut result = Vec::new();
        let encoder = Encoder::new(&mut result, 80);
        encoder
            .encode(&data, width, height, ColorType::Rgba)
            .unwrap();

        let (data, width, height) = create_test_img_rgb();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_custom_q_table() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);

        let table = QuantizationTableType::Custom(Box::new([
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
            1, 1, 1, 1, 1, 1,
        ]));

        encoder.set_quantization_tables(table.clone(), table);

        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_2_2() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_2_2);
        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_2_2_box_average() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_2_2);
        encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_2_2_box_average_progressive() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_2_2);
        encoder.set_chroma_subsampling_method(ChromaSubsamplingMethod::Average);
        encoder.set_progressive(true);
        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_2_1() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_2_1);
        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_4_1() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_4_1);
        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_1_1() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_1_1);
        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_1_4() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_1_4);
        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_progressive() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_2_1);
        encoder.set_progressive(true);

        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    /// avatar-edge fork: every change keeps the bytes the released crate
    /// writes, over sizes (odd, tiny, wide), colour types, qualities,
    /// sampling factors, baseline and progressive, standard and optimized
    /// Huffman tables, restart intervals — except optimized tables with a
    /// restart interval, where upstream's tables could lack a code the scan
    /// writes (FORK.md): there the fork's output must decode to the same
    /// pixels as its output with the standard tables (same coefficients).
    #[test]
    fn fork_output_is_byte_identical_to_upstream() {
        let colors = [
            (ColorType::Rgb, upstream::ColorType::Rgb, 3usize),
            (ColorType::Luma, upstream::ColorType::Luma, 1),
            (ColorType::Rgba, upstream::ColorType::Rgba, 4),
            (ColorType::Ycbcr, upstream::ColorType::Ycbcr, 3),
            (ColorType::Cmyk, upstream::ColorType::Cmyk, 4),
        ];
        let samplings = [
            (SamplingFactor::F_1_1, upstream::SamplingFactor::F_1_1),
            (SamplingFactor::F_2_2, upstream::SamplingFactor::F_2_2),
            (SamplingFactor::F_2_1, upstream::SamplingFactor::F_2_1),
            (SamplingFactor::F_4_1, upstream::SamplingFactor::F_4_1),
        ];
        let mut seed = 3u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let mut compared = 0;
        for case in 0..240 {
            let (w, h) = [(1, 1), (7, 5), (8, 8), (33, 17), (128, 128), (258, 31)][case % 6];
            let (color, up_color, channels) = colors[case % colors.len()];
            let (sampling, up_sampling) = samplings[(case / 5) % samplings.len()];
            let quality = [1u8, 50, 85, 100][(case / 3) % 4];
            let optimize = case % 2 == 0;
            let progressive = (case / 2) % 2 == 0;
            let restart = if case % 7 == 0 { 3 } else { 0 };
            // Smooth areas (long zero runs) and noise (dense coefficients).
            let noisy = case % 3 == 0;
            let data: Vec<u8> = (0..w * h * channels)
                .map(|i| {
                    if noisy {
                        next() as u8
                    } else {
                        ((i / channels) % w * 255 / w) as u8
                    }
                })
                .collect();

            let ours = |optimize: bool| {
                let mut out = Vec::new();
                let mut e = Encoder::new(&mut out, quality);
                e.set_sampling_factor(sampling);
                e.set_optimized_huffman_tables(optimize);
                e.set_progressive(progressive);
                if restart > 0 {
                    e.set_restart_interval(restart);
                }
                e.encode(&data, w as u16, h as u16, color).unwrap();
                out
            };
            if optimize && restart > 0 {
                assert_eq!(
                    decode(&ours(true)).0,
                    decode(&ours(false)).0,
                    "case {case}: {w}x{h} {color:?} q{quality} progressive {progressive}"
                );
                continue;
            }

            let mut theirs = Vec::new();
            let mut e = upstream::Encoder::new(&mut theirs, quality);
            e.set_sampling_factor(up_sampling);
            e.set_optimized_huffman_tables(optimize);
            e.set_progressive(progressive);
            if restart > 0 {
                e.set_restart_interval(restart);
            }
            e.encode(&data, w as u16, h as u16, up_color).unwrap();

            assert!(
                ours(optimize) == theirs,
                "case {case}: {w}x{h} {color:?} q{quality} optimize {optimize} progressive {progressive}"
            );
            compared += 1;
        }
        assert!(compared > 200, "{compared} cases compared byte for byte");
    }

    /// avatar-edge fork: `set_parallel` (feature `rayon`) writes the bytes
    /// the serial encode writes with the same settings, whichever way the
    /// pool splits the work: sizes around the bands and segments, every
    /// colour type and sampling factor, standard and optimized tables,
    /// intervals of one block to more than the image; and a parallel
    /// setting without an interval, or progressive, is the serial encode.
    #[cfg(feature = "rayon")]
    #[test]
    fn fork_parallel_encode_is_byte_identical_to_the_serial_one() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let colors = [
            (ColorType::Rgb, 3usize),
            (ColorType::Luma, 1),
            (ColorType::Rgba, 4),
            (ColorType::Cmyk, 4),
        ];
        let samplings = [
            SamplingFactor::F_2_2,
            SamplingFactor::F_1_1,
            SamplingFactor::F_2_1,
            SamplingFactor::F_4_1,
        ];
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let mut parallel_cases = 0;
        for case in 0..96 {
            let (w, h) = [
                (1, 1),
                (9, 130),
                (64, 64),
                (300, 299),
                (512, 512),
                (1000, 8),
            ][case % 6];
            let (color, channels) = colors[(case / 6) % colors.len()];
            let sampling = samplings[(case / 2) % samplings.len()];
            let quality = [85u8, 10, 100][case % 3];
            let optimize = case % 4 != 3;
            let progressive = case % 16 == 5;
            let restart = [0u16, 1, 3, 64, 1024, 65535][(case / 5) % 6];
            let noisy = case % 2 == 0;
            let data: Vec<u8> = (0..w * h * channels)
                .map(|i| {
                    if noisy {
                        next() as u8
                    } else {
                        ((i / channels) % w * 255 / w + (i / channels / w) % 7) as u8
                    }
                })
                .collect();
            let encode = |parallel: bool| {
                let mut out = Vec::new();
                let mut e = Encoder::new(&mut out, quality);
                e.set_sampling_factor(sampling);
                e.set_optimized_huffman_tables(optimize);
                e.set_progressive(progressive);
                e.set_restart_interval(restart);
                e.set_parallel(parallel);
                e.encode(&data, w as u16, h as u16, color).unwrap();
                out
            };
            let serial = encode(false);
            let parallel = pool.install(|| encode(true));
            assert!(
                serial == parallel,
                "case {case}: {w}x{h} {color:?} {sampling:?} q{quality} optimize {optimize} restart {restart}"
            );
            let decoded = match color {
                ColorType::Luma => 1,
                ColorType::Cmyk => 4,
                _ => 3,
            };
            assert_eq!(decode(&parallel).0.len(), w * h * decoded, "case {case}");
            parallel_cases += usize::from(restart > 0 && !progressive);
        }
        assert!(
            parallel_cases > 60,
            "{parallel_cases} cases took the parallel path"
        );
    }

    /// avatar-edge fork: optimized Huffman tables with restart intervals.
    /// Upstream counted the DC differences without the restarts' resets of
    /// the prediction, so a scan could write a category its table had no
    /// code for: a panic in debug builds, a corrupt JPEG in release. The
    /// first case is the `jpeg_fork` fuzz target's find (upstream fails it).
    #[test]
    fn fork_restart_intervals_with_optimized_tables_decode() {
        let cmyk: Vec<u8> = [123u8, 247, 207]
            .iter()
            .copied()
            .cycle()
            .take(66 * 60 * 4)
            .collect();
        let cases = [(
            66u16,
            60u16,
            ColorType::Cmyk,
            SamplingFactor::F_1_2,
            10u8,
            true,
            2u16,
        )];
        let more = (1..8u16).flat_map(|restart| {
            [
                SamplingFactor::F_1_1,
                SamplingFactor::F_2_2,
                SamplingFactor::F_4_1,
            ]
            .into_iter()
            .flat_map(move |s| {
                [false, true].map(|p| (97u16, 45u16, ColorType::Rgb, s, 60u8, p, restart))
            })
        });
        for (w, h, color, sampling, quality, progressive, restart) in cases.into_iter().chain(more)
        {
            let data = if color == ColorType::Cmyk {
                cmyk.clone()
            } else {
                // Blocks whose DC steps up and down across the image.
                (0..w as usize * h as usize * 3)
                    .map(|i| {
                        if (i / 3 / 8) % 3 == 0 {
                            250
                        } else {
                            (i % 7 * 3) as u8
                        }
                    })
                    .collect()
            };
            let encode = |optimize: bool| {
                let mut out = Vec::new();
                let mut e = Encoder::new(&mut out, quality);
                e.set_sampling_factor(sampling);
                e.set_optimized_huffman_tables(optimize);
                e.set_progressive(progressive);
                e.set_restart_interval(restart);
                e.encode(&data, w, h, color).unwrap();
                out
            };
            assert_eq!(
                decode(&encode(true)).0,
                decode(&encode(false)).0,
                "{w}x{h} {color:?} {sampling:?} progressive {progressive} restart {restart}"
            );
        }
    }

    /// avatar-edge fork: encodes that reuse this thread's scratch buffers
    /// (after larger ones, other component counts and settings) give the
    /// same bytes as encodes on a fresh thread.
    #[test]
    fn fork_scratch_reuse_changes_no_output() {
        fn encode(case: usize) -> Vec<u8> {
            let (w, h) = [(258u16, 128u16), (7, 5), (64, 64), (300, 17)][case % 4];
            let color = [
                ColorType::Rgb,
                ColorType::Luma,
                ColorType::Cmyk,
                ColorType::Rgba,
            ][case % 4];
            let channels = [3usize, 1, 4, 4][case % 4];
            let data: Vec<u8> = (0..w as usize * h as usize * channels)
                .map(|i| ((i * 7919) % 251) as u8)
                .collect();
            let mut out = Vec::new();
            let mut encoder = Encoder::new(&mut out, 80 + case as u8 % 20);
            encoder.set_optimized_huffman_tables(case % 3 != 2);
            encoder.set_progressive(case % 2 == 1);
            encoder.encode(&data, w, h, color).unwrap();
            out
        }
        let fresh: Vec<Vec<u8>> = (0..12)
            .map(|case| std::thread::spawn(move || encode(case)).join().unwrap())
            .collect();
        for (case, expected) in fresh.iter().enumerate().rev() {
            assert_eq!(&encode(case), expected, "case {case}");
        }
        for (case, expected) in fresh.iter().enumerate() {
            assert_eq!(&encode(case), expected, "case {case}, second pass");
        }
    }

    #[test]
    fn test_rgb_optimized() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_2_2);
        encoder.set_optimized_huffman_tables(true);

        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_rgb_optimized_progressive() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_2_1);
        encoder.set_progressive(true);
        encoder.set_optimized_huffman_tables(true);

        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_cmyk() {
        let (data, width, height) = create_test_img_cmyk();

        let mut result = Vec::new();
        let encoder = Encoder::new(&mut result, 100);
        encoder
            .encode(&data, width, height, ColorType::Cmyk)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::CMYK32);
    }

    #[test]
    fn test_ycck() {
        let (data, width, height) = create_test_img_cmyk();

        let mut result = Vec::new();
        let encoder = Encoder::new(&mut result, 100);
        encoder
            .encode(&data, width, height, ColorType::CmykAsYcck)
            .unwrap();

        check_result(data, width, height, &mut result, PixelFormat::CMYK32);
    }

    #[test]
    fn test_restart_interval() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);

        encoder.set_restart_interval(32);
        const DRI_DATA: &[u8; 6] = b"\xFF\xDD\0\x04\0\x20";

        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        assert!(
            result
                .as_slice()
                .windows(DRI_DATA.len())
                .any(|w| w == DRI_DATA)
        );

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_restart_interval_4_1() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_4_1);

        encoder.set_restart_interval(32);
        const DRI_DATA: &[u8; 6] = b"\xFF\xDD\0\x04\0\x20";

        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        assert!(
            result
                .as_slice()
                .windows(DRI_DATA.len())
                .any(|w| w == DRI_DATA)
        );

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_restart_interval_progressive() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 85);
        encoder.set_progressive(true);

        encoder.set_restart_interval(32);
        const DRI_DATA: &[u8; 6] = b"\xFF\xDD\0\x04\0\x20";

        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        assert!(
            result
                .as_slice()
                .windows(DRI_DATA.len())
                .any(|w| w == DRI_DATA)
        );

        check_result(data, width, height, &mut result, PixelFormat::RGB24);
    }

    #[test]
    fn test_app_segment() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);

        encoder.add_app_segment(15, b"HOHOHO\0".to_vec()).unwrap();

        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        let segment_data = b"\xEF\0\x09HOHOHO\0";

        assert!(
            result
                .as_slice()
                .windows(segment_data.len())
                .any(|w| w == segment_data)
        );
    }

    #[test]
    fn test_icc_profile() {
        let (data, width, height) = create_test_img_rgb();

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);

        let mut icc = Vec::with_capacity(128 * 1024);

        for i in 0..128 * 1024 {
            icc.push((i % 255) as u8);
        }

        encoder.add_icc_profile(&icc).unwrap();

        encoder
            .encode(&data, width, height, ColorType::Rgb)
            .unwrap();

        const MARKER: &[u8; 12] = b"ICC_PROFILE\0";

        assert!(result.as_slice().windows(MARKER.len()).any(|w| w == MARKER));

        let mut decoder = Decoder::new(result.as_slice());

        decoder.decode().unwrap();

        let icc_out = match decoder.icc_profile() {
            Some(icc) => icc,
            None => panic!("Missing icc profile"),
        };

        assert_eq!(icc, icc_out);
    }

    #[test]
    fn test_rgb_optimized_missing_table_frequency() {
        let data = vec![0xfb, 0x15, 0x15];

        let mut result = Vec::new();
        let mut encoder = Encoder::new(&mut result, 100);
        encoder.set_sampling_factor(SamplingFactor::F_2_2);
        encoder.set_optimized_huffman_tables(true);

        encoder.encode(&data, 1, 1, ColorType::Rgb).unwrap();

        check_result(data, 1, 1, &mut result, PixelFormat::RGB24);
    }
}
