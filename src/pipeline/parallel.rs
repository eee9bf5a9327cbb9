//! The pipeline's helper threads (issue 19): a rayon pool of one thread per
//! core, its own rather than rayon's global pool (which any crate in the
//! process may fill), for work that splits into independent parts — a striped rung's stripes
//! (`encode`), a planar rung's bands of rows (`ycc`), a large JPEG's restart
//! segments (the `jpeg-encoder` fork).
//!
//! Invariants:
//! - Work split here is split only where the parts are independent by the
//!   format (a stripe is a whole QOI image, a band whole rows of planes, a
//!   restart segment a whole run of blocks), so the output is the same bytes whichever threads run it and in
//!   whatever order; tests compare the split work with the serial one.
//! - A caller outside the pool waits while the pool's threads run its work
//!   (rayon's `install`): at most one thread per core computes split work at
//!   a time, whatever the number of render threads; an idle machine gives a
//!   single render every core.
//! - If the pool cannot be built (no threads), the work runs in rayon's
//!   global pool instead: slower to start, the same bytes.

use std::sync::OnceLock;

/// At most this many helper threads, whatever the core count: a 1024 px rung
/// has 8 stripes.
const MAX_THREADS: usize = 8;

fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores.clamp(1, MAX_THREADS))
            .thread_name(|i| format!("ae-split-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Runs `work` in the helper pool, where rayon's parallel iterators and
/// `join` (ours and the JPEG encoder's) split it across the pool's threads.
pub(crate) fn install<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    match pool() {
        Some(p) => p.install(work),
        None => work(),
    }
}
