//! avatar-edge fork: quantization and the zig-zag reorder with AVX2.
//!
//! The portable `quantize_block` reorders with one load and one store per
//! coefficient; compiled with AVX2, LLVM turned that into 64
//! `vpextrb`/`vpinsrw` pairs, a third of a 256 px encode's block work.
//! Here each output row of eight coefficients is gathered from the input
//! rows it draws on by `pshufb` and `por` (36 shuffles a block).

#[cfg(target_arch = "x86")]
use core::arch::x86::{
    __m128i, _mm_loadu_si128, _mm_or_si128, _mm_setzero_si128, _mm_shuffle_epi8, _mm_storeu_si128,
};
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{
    __m128i, _mm_loadu_si128, _mm_or_si128, _mm_setzero_si128, _mm_shuffle_epi8, _mm_storeu_si128,
};

use crate::encoder::AlignedBlock;
use crate::quantization::QuantizationTable;
use crate::writer::ZIGZAG;

/// `MASKS[k][r]`: the `pshufb` mask that moves the coefficients of zig-zag
/// row `k` (positions `8k..8k+8`) found in natural row `r` into place; the
/// other bytes have their high bit set (`pshufb` writes zero there).
const MASKS: [[[i8; 16]; 8]; 8] = {
    let mut masks = [[[-128i8; 16]; 8]; 8];
    let mut z = 0;
    while z < 64 {
        let n = ZIGZAG[z] as usize;
        let (k, j, r, c) = (z / 8, z % 8, n / 8, n % 8);
        masks[k][r][2 * j] = (2 * c) as i8;
        masks[k][r][2 * j + 1] = (2 * c + 1) as i8;
        z += 1;
    }
    masks
};

/// `USES[k]`: bit `r` set when zig-zag row `k` draws on natural row `r`.
const USES: [u8; 8] = {
    let mut uses = [0u8; 8];
    let mut z = 0;
    while z < 64 {
        uses[z / 8] |= 1 << (ZIGZAG[z] / 8);
        z += 1;
    }
    uses
};

/// Quantizes `block` (natural order) into `q_block` in zig-zag order: the
/// same values as the portable `quantize_block`.
#[target_feature(enable = "avx2")]
pub(crate) fn quantize_block_avx2(
    block: &AlignedBlock,
    q_block: &mut AlignedBlock,
    table: &QuantizationTable,
) {
    let mut natural = [0i16; 64];
    table.quantize_all(&block.data, &mut natural);
    // SAFETY: every load and store is of 16 bytes at `8 * r` or `8 * k`
    // (r, k < 8) of a 64-element i16 array; all are unaligned accesses.
    unsafe {
        let rows: [__m128i; 8] =
            core::array::from_fn(|r| _mm_loadu_si128(natural.as_ptr().add(8 * r).cast()));
        for k in 0..8 {
            let mut out = _mm_setzero_si128();
            for (r, row) in rows.iter().enumerate() {
                if USES[k] & (1 << r) != 0 {
                    let mask = _mm_loadu_si128(MASKS[k][r].as_ptr().cast());
                    out = _mm_or_si128(out, _mm_shuffle_epi8(*row, mask));
                }
            }
            _mm_storeu_si128(q_block.data.as_mut_ptr().add(8 * k).cast(), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantization::QuantizationTableType;

    /// Against the portable quantization and reorder, over the FDCT's output
    /// range and its extremes, for several tables.
    #[test]
    fn matches_portable() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut seed = 3u64;
        for quality in [1u8, 50, 85, 100] {
            for luma in [true, false] {
                let table = QuantizationTable::new_with_quality(
                    &QuantizationTableType::Default,
                    quality,
                    luma,
                );
                for _ in 0..2000 {
                    let mut block = AlignedBlock::default();
                    for v in block.data.iter_mut() {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        *v = match seed >> 60 {
                            0 => i16::MIN + 1,
                            1 => i16::MAX,
                            2 => 0,
                            _ => (seed >> 32) as i16 >> (seed >> 61),
                        };
                    }
                    let (mut want, mut got) = (AlignedBlock::default(), AlignedBlock::default());
                    crate::encoder::quantize_block(&block, &mut want, &table);
                    // SAFETY: AVX2 is present, checked above.
                    unsafe { quantize_block_avx2(&block, &mut got, &table) };
                    assert_eq!(got.data, want.data, "quality {quality}, luma {luma}");
                }
            }
        }
    }

    /// Each zig-zag position is filled from exactly one place.
    #[test]
    fn masks_cover_each_position_once() {
        for (k, masks) in MASKS.iter().enumerate() {
            let mut sources = [0usize; 16];
            for (r, mask) in masks.iter().enumerate() {
                for (byte, &b) in mask.iter().enumerate() {
                    sources[byte] += usize::from(b >= 0);
                }
                let used = mask.iter().any(|&b| b >= 0);
                assert_eq!(used, USES[k] & (1 << r) != 0, "row {k}, input row {r}");
            }
            assert!(sources.iter().all(|&n| n == 1), "row {k}: {sources:?}");
        }
    }
}
