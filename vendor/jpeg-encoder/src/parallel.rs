//! avatar-edge fork: the sequential encode (one scan per component, the mode
//! optimized Huffman tables use) split across rayon's current pool
//! (`Encoder::set_parallel`, feature `rayon`).
//!
//! A restart interval makes the scans' parts independent: every segment of
//! `interval` blocks starts with an empty bit buffer and a DC prediction of
//! zero. So the blocks are computed in bands of block rows, the Huffman
//! symbols counted per segment and summed (the same integer sums as the
//! serial count, so the same tables), and each segment written by its own
//! `JfifWriter`; the segments are then joined with their `RST` markers. The
//! output is byte-identical to the serial encode with the same settings
//! (`tests::fork_parallel_encode_is_byte_identical_to_the_serial_one`).
//! The pixel rows are still filled on the calling thread.

use alloc::vec::Vec;

use rayon::prelude::*;

use super::{AlignedBlock, Encoder, Operations, get_num_bits, quantized_block, scratch};
use crate::EncodingError;
use crate::huffman::HuffmanTable;
use crate::image_buffer::ImageBuffer;
use crate::marker::Marker;
use crate::quantization::QuantizationTable;
use crate::writer::{JfifWrite, JfifWriter, count_ac_symbols};

/// Block rows per task when computing blocks: 8 tasks for a 512 px luma
/// component.
const BAND_BLOCK_ROWS: usize = 8;

impl<W: JfifWrite> Encoder<W> {
    pub(crate) fn encode_image_sequential_parallel<I: ImageBuffer, OP: Operations>(
        &mut self,
        image: I,
        q_tables: &[QuantizationTable; 2],
        interval: u16,
    ) -> Result<(), EncodingError> {
        let (row, buffer_width) = self.fill_rows(&image);
        let grids: Vec<_> = (0..self.components.len())
            .map(|i| self.component_grid(&image, i))
            .collect();
        let mut blocks = self.init_block_buffers(row[0].len() / 64);

        rayon::scope(|s| {
            for ((out, grid), samples) in blocks.iter_mut().zip(&grids).zip(&row) {
                out.resize(grid.rows * grid.cols, AlignedBlock::default());
                let band = grid.cols * BAND_BLOCK_ROWS;
                for (n, chunk) in out.chunks_mut(band).enumerate() {
                    s.spawn(move |_| {
                        for (k, block) in chunk.iter_mut().enumerate() {
                            let at = n * band + k;
                            *block = quantized_block::<OP>(
                                samples,
                                grid,
                                at % grid.cols,
                                at / grid.cols,
                                buffer_width,
                                q_tables,
                            );
                        }
                    });
                }
            }
        });
        scratch::give_rows(row);

        // Every (component, segment), in the order the scans write them.
        let interval = usize::from(interval);
        let segments: Vec<(usize, &[AlignedBlock])> = blocks[..self.components.len()]
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.chunks(interval).map(move |seg| (i, seg)))
            .collect();

        if self.optimize_huffman_table {
            self.optimize_huffman_table_parallel(&segments);
        }

        self.write_frame_header(&image, q_tables)?;

        let tables = &self.huffman_tables;
        let components = &self.components;
        let written: Vec<Result<Vec<u8>, EncodingError>> = segments
            .par_iter()
            .map(|&(i, seg)| {
                let c = &components[i];
                let (dc, ac) = (
                    &tables[c.dc_huffman_table as usize].0,
                    &tables[c.ac_huffman_table as usize].1,
                );
                // Most blocks of a photo take 4–12 bytes at avatar qualities.
                let mut w = JfifWriter::new(Vec::with_capacity(seg.len() * 8));
                let mut prev_dc = 0;
                for block in seg {
                    w.write_block(block, prev_dc, dc, ac)?;
                    prev_dc = block.data[0];
                }
                w.finalize_bit_buffer()?;
                Ok(w.into_inner())
            })
            .collect();

        let mut written = written.into_iter();
        for (i, component) in self.components.iter().enumerate() {
            self.writer.write_scan_header(&[component], None)?;
            let count = blocks[i].len().div_ceil(interval);
            for s in 0..count {
                if s > 0 {
                    self.writer.write_marker(Marker::RST(((s - 1) % 8) as u8))?;
                }
                let bytes = written.next().expect("one result per segment")?;
                self.writer.write(&bytes)?;
            }
        }
        drop(segments);
        scratch::give_blocks(blocks);
        Ok(())
    }

    /// `optimize_huffman_table` for the sequential scans with a restart
    /// interval, counted per segment in parallel and summed.
    fn optimize_huffman_table_parallel(&mut self, segments: &[(usize, &[AlignedBlock])]) {
        let counts: Vec<(usize, [u32; 257], [u32; 257])> = segments
            .par_iter()
            .map(|&(i, seg)| {
                let (mut dc, mut ac) = ([0u32; 257], [0u32; 257]);
                let mut prev_dc = 0;
                for block in seg {
                    let value = block.data[0];
                    dc[get_num_bits(value - prev_dc) as usize] += 1;
                    prev_dc = value;
                    count_ac_symbols(&mut ac, block, 1, 64);
                }
                (i, dc, ac)
            })
            .collect();

        let max_tables = self.components.len().min(2) as u8;
        for table in 0..max_tables {
            let (mut dc_freq, mut ac_freq) = ([0u32; 257], [0u32; 257]);
            dc_freq[256] = 1;
            ac_freq[256] = 1;
            let (mut had_dc, mut had_ac) = (false, false);
            for (i, dc, ac) in &counts {
                let c = &self.components[*i];
                if c.dc_huffman_table == table {
                    had_dc = true;
                    dc_freq.iter_mut().zip(dc).for_each(|(f, n)| *f += n);
                }
                if c.ac_huffman_table == table {
                    had_ac = true;
                    ac_freq.iter_mut().zip(ac).for_each(|(f, n)| *f += n);
                }
            }
            assert!(had_dc, "Missing DC data for table {}", table);
            assert!(had_ac, "Missing AC data for table {}", table);
            self.huffman_tables[table as usize] = (
                HuffmanTable::new_optimized(dc_freq),
                HuffmanTable::new_optimized(ac_freq),
            );
        }
    }
}
