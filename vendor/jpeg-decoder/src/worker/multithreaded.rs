//! This module implements per-component parallelism.
//! It should be possible to implement per-row parallelism as well,
//! which should also boost performance of grayscale images
//! and allow scaling to more cores.
//! However, that would be more complex, so we use this as a starting point.

use super::immediate::ImmediateWorker;
use super::{RowData, Worker};
use crate::decoder::MAX_COMPONENTS;
use crate::error::Result;
use std::{
    mem,
    sync::mpsc::{self, Receiver, Sender},
};

enum WorkerMsg {
    Start(RowData),
    /// avatar-edge fork: rows go in batches of [`BATCH`], in upstream's order
/// among the other messages (FORK.md).
    AppendRows(Vec<Vec<i16>>),
    GetResult(Sender<Vec<u8>>),
}

/// avatar-edge fork: MCU rows sent to a component's thread per message. One
/// message per row woke the thread for every row (a futex wake-up and a
/// context switch each, ~570 per 12 MP decode per component).
const BATCH: usize = 8;

#[derive(Default)]
pub struct MpscWorker {
    senders: [Option<Sender<WorkerMsg>>; MAX_COMPONENTS],
    /// avatar-edge fork: rows each component's thread has finished with,
    /// sent back for reuse (FORK.md).
    spares: [Option<Receiver<Vec<i16>>>; MAX_COMPONENTS],
    /// avatar-edge fork: rows not sent yet, at most [`BATCH`] per component.
    pending: [Vec<Vec<i16>>; MAX_COMPONENTS],
}

impl MpscWorker {
    fn start_with(
        &mut self,
        row_data: RowData,
        spawn_worker: impl FnOnce(usize) -> Result<(Sender<WorkerMsg>, Receiver<Vec<i16>>)>,
    ) -> Result<()> {
        // if there is no worker thread for this component yet, start one
        let component = row_data.index;
        // avatar-edge fork: rows queued before this start go first, as
        // upstream sent them.
        if self.senders[component].is_some() {
            self.flush(component);
        }
        if self.senders[component].is_none() {
            let (sender, spares) = spawn_worker(component)?;
            self.senders[component] = Some(sender);
            self.spares[component] = Some(spares);
        }

        // we do the "take out value and put it back in once we're done" dance here
        // and in all other message-passing methods because there's not that many rows
        // and this should be cheaper than spawning MAX_COMPONENTS many threads up front
        let sender = self.senders[component].as_mut().unwrap();
        sender
            .send(WorkerMsg::Start(row_data))
            .expect("jpeg-decoder worker thread error");
        Ok(())
    }

    fn append_row(&mut self, row: (usize, Vec<i16>)) -> Result<()> {
        let component = row.0;
        self.pending[component].push(row.1);
        if self.pending[component].len() >= BATCH {
            self.flush(component);
        }
        Ok(())
    }

    /// avatar-edge fork: send `component`'s pending rows, if any.
    fn flush(&mut self, component: usize) {
        if self.pending[component].is_empty() {
            return;
        }
        let rows = mem::replace(&mut self.pending[component], Vec::with_capacity(BATCH));
        let sender = self.senders[component].as_mut().unwrap();
        sender
            .send(WorkerMsg::AppendRows(rows))
            .expect("jpeg-decoder worker thread error");
    }

    fn get_result_with(
        &mut self,
        index: usize,
        collect: impl FnOnce(Receiver<Vec<u8>>) -> Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.flush(index);
        let (tx, rx) = mpsc::channel();
        let sender = mem::take(&mut self.senders[index]).unwrap();
        sender
            .send(WorkerMsg::GetResult(tx))
            .expect("jpeg-decoder worker thread error");
        Ok(collect(rx))
    }
}

impl Worker for MpscWorker {
    fn start(&mut self, row_data: RowData) -> Result<()> {
        self.start_with(row_data, spawn_worker_thread)
    }
    fn append_row(&mut self, row: (usize, Vec<i16>)) -> Result<()> {
        MpscWorker::append_row(self, row)
    }
    fn get_result(&mut self, index: usize) -> Result<Vec<u8>> {
        self.spares[index] = None;
        self.get_result_with(index, collect_worker_thread)
    }
    fn take_spare(&mut self, index: usize) -> Option<Vec<i16>> {
        self.spares[index].as_ref()?.try_recv().ok()
    }
}

fn create_worker() -> (Sender<WorkerMsg>, Receiver<Vec<i16>>, impl FnOnce() + 'static) {
    let (tx, rx) = mpsc::channel();
    // avatar-edge fork: finished rows go back to the decoding thread. At most
    // about one row waits here: the decoder takes one back per row it sends.
    let (spare_tx, spare_rx) = mpsc::channel();
    let closure = move || {
        let mut worker = ImmediateWorker::default();

        while let Ok(message) = rx.recv() {
            match message {
                WorkerMsg::Start(mut data) => {
                    // we always set component index to 0 for worker threads
                    // because they only ever handle one per thread and we don't want them
                    // to attempt to access nonexistent components
                    data.index = 0;
                    worker.start_immediate(data);
                }
                WorkerMsg::AppendRows(rows) => {
                    for row in rows {
                        // Zeroed here, beside the decoding thread, which takes
                        // spares as rows of zeros (`Worker::take_spare`).
                        let mut row = worker.append_row_immediate((0, row));
                        row.fill(0);
                        let _ = spare_tx.send(row);
                    }
                }
                WorkerMsg::GetResult(chan) => {
                    let _ = chan.send(worker.get_result_immediate(0));
                    break;
                }
            }
        }
    };

    (tx, spare_rx, closure)
}

fn spawn_worker_thread(component: usize) -> Result<(Sender<WorkerMsg>, Receiver<Vec<i16>>)> {
    let (tx, spares, worker) = create_worker();
    let thread_builder =
        std::thread::Builder::new().name(format!("worker thread for component {}", component));
    thread_builder.spawn(worker)?;
    Ok((tx, spares))
}

fn collect_worker_thread(rx: Receiver<Vec<u8>>) -> Vec<u8> {
    rx.recv().expect("jpeg-decoder worker thread error")
}
