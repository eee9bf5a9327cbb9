//! The pipeline's helper threads (issue 19): a rayon pool of one thread per
//! core, its own rather than rayon's global pool (which any crate in the
//! process may fill), for work that splits into independent parts — a striped rung's stripes
//! (`encode`), a planar rung's bands of rows (`ycc`), a large JPEG's restart
//! segments (the `jpeg-encoder` fork), a resize's rows (fast_image_resize's
//! `rayon` feature), an upload's ladder tasks and a shrunk JPEG's planes
//! (`ladder`, `shrunk`).
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
//! - fast_image_resize splits a resize over `rayon::current_num_threads()`,
//!   which outside any pool is the global pool's size: the global pool is
//!   built with one thread with this pool (`init`, before every resize), so
//!   a resize splits only here (a small render's resize stays on its own
//!   thread; a split costs more than it saves there). Its rows are computed
//!   with the same coefficients however they are split: the same bytes.
//! - If the pool cannot be built (no threads), the work runs in rayon's
//!   global pool instead: one thread, the same bytes.

use std::sync::OnceLock;

/// At most this many helper threads, whatever the core count: a 1024 px rung
/// has 8 stripes.
const MAX_THREADS: usize = 8;

fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        // Fails only if the global pool exists already (something used it
        // first); resizes outside this pool could then split there.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build_global();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores.clamp(1, MAX_THREADS))
            .thread_name(|i| format!("ae-split-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Builds the pool (and sets the global one to one thread) if not yet done:
/// called before every resize, so that none splits on a global pool of
/// rayon's default size.
pub(crate) fn init() {
    let _ = pool();
}

/// Runs `work` in the helper pool, where rayon's parallel iterators and
/// `join` (ours and the JPEG encoder's) split it across the pool's threads.
pub(crate) fn install<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    match pool() {
        Some(p) => p.install(work),
        None => work(),
    }
}

/// `work` on the helper pool when `split`, else on the calling thread.
pub(crate) fn install_if<T: Send>(split: bool, work: impl FnOnce() -> T + Send) -> T {
    if split {
        install(work)
    } else {
        work()
    }
}

/// `a` and `b`, side by side on the pool when `split` (the caller is on it).
pub(crate) fn join<A: Send, B: Send>(
    split: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if split {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}

/// `f` over `items` in order, side by side on the pool when `split`.
pub(crate) fn map<T: Sync, R: Send, E: Send>(
    split: bool,
    items: &[T],
    f: impl Fn(usize, &T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    use rayon::prelude::*;
    if split {
        items.par_iter().enumerate().map(|(i, t)| f(i, t)).collect()
    } else {
        items.iter().enumerate().map(|(i, t)| f(i, t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{fixture, geometry::Square, resize::crop_resize, Layout, Pixels};

    #[test]
    fn a_resize_splits_only_on_the_pool_and_gives_the_same_bytes() {
        init();
        assert_eq!(rayon::current_num_threads(), 1, "global pool");
        let img = image::load_from_memory(&fixture("photo_retina_baseline_1024.jpg")).unwrap();
        let px = Pixels {
            width: img.width(),
            height: img.height(),
            layout: Layout::Rgb8,
            data: img.into_rgb8().into_raw(),
        };
        for (x, y, side, out) in [(0, 0, 1024, 700), (13, 7, 1001, 1024), (100, 50, 600, 37)] {
            let sq = Square { x, y, side };
            let alone = crop_resize(&px, sq, out).unwrap();
            let split = install(|| crop_resize(&px, sq, out)).unwrap();
            assert!(alone.data == split.data, "{sq:?} to {out}");
        }
    }
}
