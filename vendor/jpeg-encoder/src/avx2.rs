mod fdct;
mod ycbcr;
mod zigzag;

use crate::encoder::{AlignedBlock, Operations};
use crate::quantization::QuantizationTable;
pub use fdct::fdct_avx2;
pub use ycbcr::*;

pub(crate) struct AVX2Operations;

impl Operations for AVX2Operations {
    #[inline(always)]
    fn fdct(data: &mut AlignedBlock) {
        fdct_avx2(data);
    }

    /// avatar-edge fork: quantized with AVX2 and reordered by shuffles
    /// (`zigzag.rs`); the same output as the portable operations.
    #[inline(always)]
    fn quantize_block(block: &AlignedBlock, q_block: &mut AlignedBlock, table: &QuantizationTable) {
        // SAFETY: `AVX2Operations` is only chosen after
        // `is_x86_feature_detected!("avx2")`.
        unsafe { zigzag::quantize_block_avx2(block, q_block, table) }
    }
}
