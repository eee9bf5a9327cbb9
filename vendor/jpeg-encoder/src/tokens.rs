//! avatar-edge fork: a sequential scan with optimized Huffman tables as a
//! stream of symbols, made while the blocks are made.
//!
//! Upstream stores every quantized block, walks them all once to count the
//! symbols for the optimized tables (`optimize_huffman_table`) and once more to
//! write them (`write_block`), finding each symbol again. Here the symbols are
//! found once, as each block leaves the quantizer, counted and kept as a
//! token each (`u32`: the symbol, whether it is a DC one, and its extra bits);
//! the write pass is then a table look-up and a bit write per token, and the
//! blocks are never stored. The output is byte-identical: the same symbols, in
//! the same order, with the same counts (`tests::fork_output_is_byte_identical_to_upstream`).
//! A serial scan with a restart interval keeps upstream's path (its DC
//! prediction restarts); the parallel encode tokenizes each of its restart
//! segments on its own (`parallel.rs`).

use alloc::vec::Vec;

use crate::encoder::AlignedBlock;
use crate::huffman::HuffmanTable;
use crate::writer::{get_code, nonzero_mask};

/// The token flag of a DC symbol: its code comes from the DC table.
const DC: u32 = 1 << 24;

/// At most this many tokens per block: one DC, then for `k` non-zero AC
/// coefficients `k` symbols, at most `(63 - k) / 16` ZRLs (the zeros before
/// them number at most `63 - k`) and an EOB only if `k < 63`: at most 63 AC tokens,
/// 64 in all (`tests::token_bound_and_counts`).
const MAX_TOKENS_PER_BLOCK: usize = 64;

/// Counts of the symbols of one table pair, as `HuffmanTable::new_optimized`
/// takes them (entry 256: the reserved code point, always 1).
pub(crate) struct Frequencies {
    pub dc: [u32; 257],
    pub ac: [u32; 257],
}

impl Frequencies {
    pub fn new() -> Self {
        let mut f = Frequencies {
            dc: [0; 257],
            ac: [0; 257],
        };
        f.dc[256] = 1;
        f.ac[256] = 1;
        f
    }

    /// No counts at all: a part of a scan, to be summed into [`Self::new`].
    #[cfg_attr(not(feature = "rayon"), allow(dead_code))]
    pub fn zero() -> Self {
        Frequencies {
            dc: [0; 257],
            ac: [0; 257],
        }
    }
}

/// Appends the tokens of `block` (its DC difference to `prev_dc`, then its AC
/// coefficients 1..64 as `write_ac_block` writes them) to `out` and counts
/// their symbols into `freq`.
#[inline(always)]
pub(crate) fn tokenize_block(
    block: &AlignedBlock,
    prev_dc: i16,
    freq: &mut Frequencies,
    out: &mut Vec<u32>,
) {
    // A `push` per token. Writing into spare capacity and setting the length
    // once per block (one `unsafe`) was 1-3 % faster on the whole encode
    // (eight alternating rounds, twice: 256 px 170 against 171-172 µs, 512 px
    // 650 against 663-670 µs), not worth an `unsafe`; a buffer on the stack
    // copied with `extend_from_slice` was 6-7 % slower than either.
    out.reserve(MAX_TOKENS_PER_BLOCK);
    let (size, value) = get_code(block.data[0] - prev_dc);
    freq.dc[usize::from(size)] += 1;
    out.push(DC | (u32::from(size) << 16) | u32::from(value));

    // Bit 0 is the DC coefficient.
    let mut mask = nonzero_mask(&block.data) & !1;
    let mut next = 1;
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;

        let mut zero_run = i - next;
        while zero_run > 15 {
            freq.ac[0xF0] += 1;
            out.push(0xF0 << 16);
            zero_run -= 16;
        }
        let (size, value) = get_code(block.data[i]);
        let symbol = (zero_run << 4) | usize::from(size);
        freq.ac[symbol] += 1;
        out.push(((symbol as u32) << 16) | u32::from(value));

        next = i + 1;
    }
    if next < 64 {
        freq.ac[0] += 1;
        out.push(0);
    }
}

/// Per token index (`token >> 16`: the DC flag and the symbol), the code
/// shifted left past the token's extra bits and the number of bits in all.
pub(crate) struct Codes([(u32, u8); 512]);

impl Codes {
    pub fn new(dc: &HuffmanTable, ac: &HuffmanTable) -> Self {
        let mut codes = [(0u32, 0u8); 512];
        for symbol in 0..=255u8 {
            // A DC symbol is the size of its extra bits; an AC symbol's size
            // is its low nibble.
            let &(len, code) = dc.get_for_value_unchecked(symbol);
            let extra = symbol.min(16);
            codes[256 + usize::from(symbol)] = (u32::from(code) << extra, len + extra);

            let &(len, code) = ac.get_for_value_unchecked(symbol);
            let extra = symbol & 0x0F;
            codes[usize::from(symbol)] = (u32::from(code) << extra, len + extra);
        }
        Codes(codes)
    }

    /// The bits to write for `token` and how many there are.
    #[inline(always)]
    pub fn get(&self, token: u32) -> (u32, u8) {
        let (code, bits) = self.0[(token >> 16) as usize & 0x1FF];
        (code | (token & 0xFFFF), bits)
    }
}

#[cfg(test)]
mod tests {
    use super::{Frequencies, MAX_TOKENS_PER_BLOCK, tokenize_block};
    use crate::encoder::AlignedBlock;
    use crate::writer::count_ac_symbols;
    use alloc::vec::Vec;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    /// Blocks with every count of non-zero AC coefficients, placed to make
    /// the longest zero runs (after the DC, between, before the end) and at
    /// random: the tokens fit the bound, and their symbols are counted as
    /// upstream's counting pass counts them.
    #[test]
    fn token_bound_and_counts() {
        let mut seed = 7;
        let mut blocks = Vec::new();
        for k in 0..=63usize {
            // Non-zeros at the end, at the start, and spread evenly.
            let mut end = [0i16; 64];
            let mut start = [0i16; 64];
            let mut spread = [0i16; 64];
            for j in 0..k {
                end[63 - j] = 1;
                start[1 + j] = -3;
                spread[1 + j * 63 / k.max(1)] = 1000;
            }
            blocks.extend([end, start, spread]);
            for _ in 0..50 {
                let mut random = [0i16; 64];
                for _ in 0..k {
                    let i = 1 + (lcg(&mut seed) % 63) as usize;
                    random[i] = (lcg(&mut seed) % 4095) as i16 - 2047;
                }
                random[0] = (lcg(&mut seed) % 4095) as i16 - 2047;
                blocks.push(random);
            }
        }
        let mut most = 0;
        for data in blocks {
            let block = AlignedBlock::new(data);
            let mut freq = Frequencies::new();
            let mut out = Vec::new();
            tokenize_block(&block, 5, &mut freq, &mut out);
            most = most.max(out.len());
            assert!(out.len() <= MAX_TOKENS_PER_BLOCK, "{data:?}");

            let mut ac = [0u32; 257];
            ac[256] = 1;
            count_ac_symbols(&mut ac, &block, 1, 64);
            assert_eq!(freq.ac, ac, "{data:?}");
            assert_eq!(
                freq.dc.iter().sum::<u32>(),
                2,
                "one DC symbol and the reserved point"
            );
            let ac_symbols = ac.iter().sum::<u32>() - 1;
            assert_eq!(out.len() as u32, 1 + ac_symbols, "{data:?}");
        }
        assert_eq!(most, MAX_TOKENS_PER_BLOCK, "the bound is reached");
    }
}
