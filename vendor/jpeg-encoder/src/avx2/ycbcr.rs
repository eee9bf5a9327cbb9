#[cfg(target_arch = "x86")]
use core::arch::x86::{
    __m128i, __m256i, _mm_loadu_si128, _mm256_add_epi32, _mm256_loadu_si256, _mm256_mullo_epi32,
    _mm256_packus_epi16, _mm256_packus_epi32, _mm256_permutevar8x32_epi32, _mm256_set_m128i,
    _mm256_set1_epi32, _mm256_setr_epi32, _mm256_shuffle_epi8, _mm256_srli_epi32,
    _mm256_storeu_si256, _mm256_sub_epi32,
};

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{
    __m128i, __m256i, _mm_loadu_si128, _mm256_add_epi32, _mm256_loadu_si256, _mm256_mullo_epi32,
    _mm256_packus_epi16, _mm256_packus_epi32, _mm256_permutevar8x32_epi32, _mm256_set_m128i,
    _mm256_set1_epi32, _mm256_setr_epi32, _mm256_shuffle_epi8, _mm256_srli_epi32,
    _mm256_storeu_si256, _mm256_sub_epi32,
};

use alloc::vec::Vec;

use crate::{ImageBuffer, JpegColorType, rgb_to_ycbcr};

/// avatar-edge fork: a `pshufb` mask that moves channel `offset` of four
/// pixels of `num_colors` bytes each (one 128-bit lane) into the low byte of
/// four 32-bit values, zero-extended; the same in both lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn channel_mask(num_colors: usize, offset: usize) -> __m256i {
    let mut mask = [-128i8; 32];
    for lane in 0..2 {
        for pixel in 0..4 {
            mask[lane * 16 + pixel * 4] = (offset + pixel * num_colors) as i8;
        }
    }
    // SAFETY: `mask` is 32 bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(mask.as_ptr().cast()) }
}

macro_rules! ycbcr_image_avx2 {
    ($name:ident, $num_colors:expr, $o1:expr, $o2:expr, $o3:expr) => {
        pub struct $name<'a>(pub &'a [u8], pub u16, pub u16);

        impl<'a> $name<'a> {
            /// avatar-edge fork: eight pixels are loaded as two 16-byte
            /// halves and spread into 32-bit lanes by `pshufb`, and the
            /// results packed to bytes by `packus` (upstream built each
            /// vector from 24 scalar loads and stored through arrays: 13.5 %
            /// of a 256 px render). The arithmetic is upstream's, so the
            /// output is identical (`avx_matches_scalar`); every result is in
            /// 0..=255, where `packus` saturation and upstream's `as u8`
            /// agree. The last group of the last row, whose second load
            /// would read past the image, takes the scalar path.
            #[target_feature(enable = "avx2")]
            fn fill_buffers_avx2(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
                let [y_buffer, cb_buffer, cr_buffer, _] = buffers;
                y_buffer.reserve(self.width() as usize);
                cb_buffer.reserve(self.width() as usize);
                cr_buffer.reserve(self.width() as usize);

                let ymulr = _mm256_set1_epi32(19595);
                let ymulg = _mm256_set1_epi32(38470);
                let ymulb = _mm256_set1_epi32(7471);

                let cbmulr = _mm256_set1_epi32(-11059);
                let cbmulg = _mm256_set1_epi32(21709);
                let cbmulb = _mm256_set1_epi32(32768);

                let crmulr = _mm256_set1_epi32(32768);
                let crmulg = _mm256_set1_epi32(27439);
                let crmulb = _mm256_set1_epi32(5329);

                let round = _mm256_set1_epi32(0x7FFF);
                let offset = _mm256_set1_epi32((128 << 16) + 0x7FFF);
                let r_mask = channel_mask($num_colors, $o1);
                let g_mask = channel_mask($num_colors, $o2);
                let b_mask = channel_mask($num_colors, $o3);
                // Dwords y0-3 y4-7 cb0-3 cb4-7 cr0-3 cr4-7 after the packs.
                let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);

                let mut data = &self.0[(y as usize * self.1 as usize * $num_colors)..];
                let mut left = self.width() as usize;

                while left >= 8 && data.len() >= 4 * $num_colors + 16 {
                    // SAFETY: both 16-byte loads are within `data` (checked
                    // just above); they are unaligned loads.
                    let px = unsafe {
                        let lo = _mm_loadu_si128(data.as_ptr().cast::<__m128i>());
                        let hi =
                            _mm_loadu_si128(data.as_ptr().add(4 * $num_colors).cast::<__m128i>());
                        _mm256_set_m128i(hi, lo)
                    };
                    data = &data[($num_colors * 8)..];
                    left -= 8;

                    let r = _mm256_shuffle_epi8(px, r_mask);
                    let g = _mm256_shuffle_epi8(px, g_mask);
                    let b = _mm256_shuffle_epi8(px, b_mask);

                    let yr = _mm256_mullo_epi32(ymulr, r);
                    let yg = _mm256_mullo_epi32(ymulg, g);
                    let yb = _mm256_mullo_epi32(ymulb, b);
                    let y = _mm256_add_epi32(_mm256_add_epi32(yr, yg), yb);
                    let y = _mm256_srli_epi32(_mm256_add_epi32(y, round), 16);

                    let cbr = _mm256_mullo_epi32(cbmulr, r);
                    let cbg = _mm256_mullo_epi32(cbmulg, g);
                    let cbb = _mm256_mullo_epi32(cbmulb, b);
                    let cb = _mm256_add_epi32(_mm256_sub_epi32(cbr, cbg), cbb);
                    let cb = _mm256_srli_epi32(_mm256_add_epi32(cb, offset), 16);

                    let crr = _mm256_mullo_epi32(crmulr, r);
                    let crg = _mm256_mullo_epi32(crmulg, g);
                    let crb = _mm256_mullo_epi32(crmulb, b);
                    let cr = _mm256_sub_epi32(_mm256_sub_epi32(crr, crg), crb);
                    let cr = _mm256_srli_epi32(_mm256_add_epi32(cr, offset), 16);

                    // Per lane: y, cb, cr, cr of its four pixels as bytes.
                    let packed = _mm256_packus_epi16(
                        _mm256_packus_epi32(y, cb),
                        _mm256_packus_epi32(cr, cr),
                    );
                    let mut out = [0u8; 32];
                    // SAFETY: `out` is 32 bytes; the store is unaligned.
                    unsafe {
                        _mm256_storeu_si256(
                            out.as_mut_ptr().cast(),
                            _mm256_permutevar8x32_epi32(packed, order),
                        );
                    }
                    y_buffer.extend_from_slice(&out[..8]);
                    cb_buffer.extend_from_slice(&out[8..16]);
                    cr_buffer.extend_from_slice(&out[16..24]);
                }

                for _ in 0..left {
                    let (y, cb, cr) = rgb_to_ycbcr(data[$o1], data[$o2], data[$o3]);
                    data = &data[$num_colors..];

                    y_buffer.push(y);
                    cb_buffer.push(cb);
                    cr_buffer.push(cr);
                }
            }
        }

        impl<'a> ImageBuffer for $name<'a> {
            fn get_jpeg_color_type(&self) -> JpegColorType {
                JpegColorType::Ycbcr
            }

            fn width(&self) -> u16 {
                self.1
            }

            fn height(&self) -> u16 {
                self.2
            }

            #[inline(always)]
            fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
                unsafe {
                    self.fill_buffers_avx2(y, buffers);
                }
            }
        }
    };
}

ycbcr_image_avx2!(RgbImageAVX2, 3, 0, 1, 2);
ycbcr_image_avx2!(RgbaImageAVX2, 4, 0, 1, 2);
ycbcr_image_avx2!(BgrImageAVX2, 3, 2, 1, 0);
ycbcr_image_avx2!(BgraImageAVX2, 4, 2, 1, 0);

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    // A very basic linear congruential generator (LCG) to avoid external dependencies.
    pub struct SimpleRng {
        state: u64,
    }

    impl SimpleRng {
        /// Create a new RNG with a given seed.
        pub fn new(seed: u64) -> Self {
            Self { state: seed }
        }

        /// Generate the next random u64 value.
        pub fn next_u64(&mut self) -> u64 {
            // Constants from Numerical Recipes
            self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1);
            self.state
        }

        /// Generate a random byte in 0..=255
        pub fn next_byte(&mut self) -> u8 {
            (self.next_u64() & 0xFF) as u8
        }

        /// Fill a Vec<u8> with random bytes of the given length.
        pub fn random_bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next_byte()).collect()
        }
    }

    #[test]
    #[cfg(feature = "simd")]
    fn avx_matches_scalar_rgb() {
        // Do not run AVX2 test on machines without it
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut rng = SimpleRng::new(42);
        let width = 512 + 3; // power of two plus a bit to stress remainder handling
        let height = 1;
        let bpp = 3;

        let input = rng.random_bytes(width * height * bpp); // power of two plus a bit to exercise remainder handling

        let scalar_result: Vec<[u8; 3]> = input
            .chunks_exact(bpp)
            .map(|chunk| {
                let [r, g, b, ..] = chunk else { unreachable!() };
                let (y, cb, cr) = rgb_to_ycbcr(*r, *g, *b);
                [y, cb, cr]
            })
            .collect();

        let mut buffers = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let avx_input = RgbImageAVX2(
            &input,
            width.try_into().unwrap(),
            height.try_into().unwrap(),
        );
        // SAFETY: we've checked above that AVX2 is present
        unsafe {
            avx_input.fill_buffers_avx2(0, &mut buffers);
        }

        for i in 0..3 {
            assert_eq!(buffers[i].len(), input.len() / 3);
        }

        for (i, pixel) in scalar_result.iter().copied().enumerate() {
            let avx_pixel: [u8; 3] = [buffers[0][i], buffers[1][i], buffers[2][i]];
            if pixel != avx_pixel {
                panic!(
                    "Mismatch at index {i}: scalar result is {pixel:?}, avx result is {avx_pixel:?}"
                );
            }
        }
    }

    /// avatar-edge fork: every row of images of every width from 1 to 41
    /// (and 515), in all four layouts, against the scalar conversion —
    /// including the extremes of each channel, and the last group of the
    /// last row, which the vector loads must not read past.
    #[test]
    #[cfg(feature = "simd")]
    fn avx_matches_scalar() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        fn check<F: Fn(&[u8], u16, u16, u16, &mut [Vec<u8>; 4])>(
            bpp: usize,
            [o1, o2, o3]: [usize; 3],
            fill: F,
        ) {
            let mut rng = SimpleRng::new(7);
            for width in (1..=41).chain([515]) {
                for height in 1..=3 {
                    let mut input = rng.random_bytes(width * height * bpp);
                    // Extremes: all black, all white, one channel alone.
                    for (i, v) in input.iter_mut().enumerate().take(8 * bpp) {
                        *v = match (i / bpp) % 4 {
                            0 => 0,
                            1 => 255,
                            2 => {
                                if i % bpp == o1 {
                                    255
                                } else {
                                    0
                                }
                            }
                            _ => {
                                if i % bpp == o3 {
                                    255
                                } else {
                                    0
                                }
                            }
                        };
                    }
                    for row in 0..height {
                        let mut buffers = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
                        fill(
                            &input,
                            width as u16,
                            height as u16,
                            row as u16,
                            &mut buffers,
                        );
                        let start = row * width * bpp;
                        for (i, p) in input[start..start + width * bpp]
                            .chunks_exact(bpp)
                            .enumerate()
                        {
                            let (y, cb, cr) = rgb_to_ycbcr(p[o1], p[o2], p[o3]);
                            assert_eq!(
                                [buffers[0][i], buffers[1][i], buffers[2][i]],
                                [y, cb, cr],
                                "{bpp} bytes a pixel, {width}x{height}, row {row}, pixel {i}"
                            );
                        }
                        assert!(buffers[..3].iter().all(|b| b.len() == width));
                    }
                }
            }
        }
        // SAFETY (each closure): AVX2 is present, checked above.
        check(3, [0, 1, 2], |d, w, h, y, b| unsafe {
            RgbImageAVX2(d, w, h).fill_buffers_avx2(y, b)
        });
        check(4, [0, 1, 2], |d, w, h, y, b| unsafe {
            RgbaImageAVX2(d, w, h).fill_buffers_avx2(y, b)
        });
        check(3, [2, 1, 0], |d, w, h, y, b| unsafe {
            BgrImageAVX2(d, w, h).fill_buffers_avx2(y, b)
        });
        check(4, [2, 1, 0], |d, w, h, y, b| unsafe {
            BgraImageAVX2(d, w, h).fill_buffers_avx2(y, b)
        });
    }
}
