//! avatar-edge fork: the sequential encode (one scan per component, the mode
//! optimized Huffman tables use) split across rayon's current pool
//! (`Encoder::set_parallel`, feature `rayon`).
//!
//! A restart interval makes the scans' parts independent: every segment of
//! `interval` blocks starts with an empty bit buffer and a DC prediction of
//! zero. So each segment's blocks are made and turned into Huffman tokens
//! (`tokens.rs`) on the pool, their symbols counted per segment and summed
//! (the same integer sums as the serial count, so the same tables), and each
//! segment's tokens written by its own `JfifWriter`; the segments are then
//! joined with their `RST` markers. The output is byte-identical to the
//! serial encode with the same settings
//! (`tests::fork_parallel_encode_is_byte_identical_to_the_serial_one`).
//! The pixel rows are still filled on the calling thread.

use alloc::vec::Vec;

use rayon::prelude::*;

use super::{Encoder, Operations, quantized_block, scratch};
use crate::EncodingError;
use crate::huffman::HuffmanTable;
use crate::image_buffer::ImageBuffer;
use crate::marker::Marker;
use crate::quantization::QuantizationTable;
use crate::tokens::{Codes, Frequencies, tokenize_block};
use crate::writer::{JfifWrite, JfifWriter};

/// One restart segment of a scan: its component, its first block and how
/// many blocks it has, the tokens of those blocks (`tokens.rs`) and their
/// symbols' counts.
struct Segment {
    component: usize,
    first: usize,
    blocks: usize,
    tokens: Vec<u32>,
    freq: Frequencies,
}

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

        // Every (component, segment), in the order the scans write them, each
        // with a token buffer of an earlier encode on this thread.
        let interval = usize::from(interval);
        let mut pool = scratch::take_segment_tokens();
        let mut segments: Vec<Segment> = Vec::new();
        for (component, grid) in grids.iter().enumerate() {
            let count = grid.rows * grid.cols;
            for first in (0..count).step_by(interval) {
                segments.push(Segment {
                    component,
                    first,
                    blocks: interval.min(count - first),
                    tokens: pool.pop().unwrap_or_default(),
                    freq: Frequencies::zero(),
                });
            }
        }

        // The blocks of each segment, made and tokenized on the pool.
        segments.par_iter_mut().for_each(|seg| {
            let (grid, samples) = (&grids[seg.component], &row[seg.component]);
            seg.tokens.clear();
            let mut prev_dc = 0;
            for at in seg.first..seg.first + seg.blocks {
                let block = quantized_block::<OP>(
                    samples,
                    grid,
                    at % grid.cols,
                    at / grid.cols,
                    buffer_width,
                    q_tables,
                );
                tokenize_block(&block, prev_dc, &mut seg.freq, &mut seg.tokens);
                prev_dc = block.data[0];
            }
        });
        scratch::give_rows(row);

        if self.optimize_huffman_table {
            self.optimize_huffman_table_parallel(&segments);
        }

        self.write_frame_header(&image, q_tables)?;

        let codes: Vec<Codes> = self
            .components
            .iter()
            .map(|c| {
                Codes::new(
                    &self.huffman_tables[c.dc_huffman_table as usize].0,
                    &self.huffman_tables[c.ac_huffman_table as usize].1,
                )
            })
            .collect();
        let written: Vec<Result<Vec<u8>, EncodingError>> = segments
            .par_iter()
            .map(|seg| {
                // Most blocks of a photo take 4–12 bytes at avatar qualities.
                let mut w = JfifWriter::new(Vec::with_capacity(seg.blocks * 8));
                w.write_tokens(&seg.tokens, &codes[seg.component])?;
                w.finalize_bit_buffer()?;
                Ok(w.into_inner())
            })
            .collect();

        let mut written = written.into_iter();
        for (i, component) in self.components.iter().enumerate() {
            self.writer.write_scan_header(&[component], None)?;
            let count = (grids[i].rows * grids[i].cols).div_ceil(interval);
            for s in 0..count {
                if s > 0 {
                    self.writer.write_marker(Marker::RST(((s - 1) % 8) as u8))?;
                }
                let bytes = written.next().expect("one result per segment")?;
                self.writer.write(&bytes)?;
            }
        }
        pool.extend(segments.into_iter().map(|seg| seg.tokens));
        scratch::give_segment_tokens(pool);
        Ok(())
    }

    /// `optimize_huffman_table` for the sequential scans with a restart
    /// interval: the segments' counts summed per table.
    fn optimize_huffman_table_parallel(&mut self, segments: &[Segment]) {
        let max_tables = self.components.len().min(2) as u8;
        for table in 0..max_tables {
            let mut freq = Frequencies::new();
            let (mut had_dc, mut had_ac) = (false, false);
            for seg in segments {
                let c = &self.components[seg.component];
                if c.dc_huffman_table == table {
                    had_dc = true;
                    freq.dc
                        .iter_mut()
                        .zip(&seg.freq.dc)
                        .for_each(|(f, n)| *f += n);
                }
                if c.ac_huffman_table == table {
                    had_ac = true;
                    freq.ac
                        .iter_mut()
                        .zip(&seg.freq.ac)
                        .for_each(|(f, n)| *f += n);
                }
            }
            assert!(had_dc, "Missing DC data for table {}", table);
            assert!(had_ac, "Missing AC data for table {}", table);
            self.huffman_tables[table as usize] = (
                HuffmanTable::new_optimized(freq.dc),
                HuffmanTable::new_optimized(freq.ac),
            );
        }
    }
}
