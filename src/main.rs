//! The `avatar-edge` binary: everything lives in the library; see `cli`.
//!
//! The one thing decided here is the allocator: jemalloc. Rendered variants
//! of every size (100 B … 200 KB) are allocated and evicted from many threads;
//! glibc malloc's per-thread arenas kept that memory as fragmentation (peak
//! RSS twice the cache budget), jemalloc's size classes and decay return it.
//! The library stays allocator-agnostic (tests and benches use the system one).
#![forbid(unsafe_code)]

#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    avatar_edge::cli::main()
}
