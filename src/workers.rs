//! The bounded pool that runs CPU work (decode, resize, encode, identicons)
//! off the async reactor — or, for jobs of a fraction of a millisecond, on
//! the calling thread once admitted ([`Pool::run_weighted_here`]).
//!
//! At most `threads` jobs run at once (a semaphore in front of tokio's blocking
//! pool); at most `queue` more may wait. Beyond that a job is refused at once
//! ([`PoolError::Busy`] → 503 + `Retry-After`) instead of piling up memory and
//! latency. A panicking job becomes [`PoolError::Panicked`] for that request
//! only; the thread and the process carry on.
//!
//! A pool may also have a memory budget: each job states the working memory
//! it will hold ([`Pool::run_weighted`]) and waits, in the queue, until that
//! much of the budget is free — so many threads rendering large sizes at once
//! cannot add up to more than the budget. A job larger than the whole budget
//! is admitted alone (it reserves all of it), never refused.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("render queue is full")]
    Busy,
    #[error("render panicked: {0}")]
    Panicked(String),
}

/// A bounded pool; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    permits: Arc<Semaphore>,
    /// The memory budget in KiB permits, if any.
    memory: Option<(Arc<Semaphore>, u32)>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
}

struct DepthGuard(Arc<AtomicUsize>);
impl Drop for DepthGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    /// `threads` concurrent jobs, `queue` more waiting.
    pub fn new(threads: usize, queue: usize) -> Pool {
        let threads = threads.max(1);
        Pool {
            permits: Arc::new(Semaphore::new(threads)),
            memory: None,
            depth: Arc::new(AtomicUsize::new(0)),
            capacity: threads + queue,
        }
    }

    /// Like [`Pool::new`], with `budget` bytes of working memory shared by
    /// the jobs in progress (see [`Pool::run_weighted`]).
    pub fn with_memory(threads: usize, queue: usize, budget: u64) -> Pool {
        let kib = u32::try_from((budget >> 10).max(1)).unwrap_or(u32::MAX >> 3);
        Pool {
            memory: Some((Arc::new(Semaphore::new(kib as usize)), kib)),
            ..Pool::new(threads, queue)
        }
    }

    /// KiB of the memory budget reserved by jobs now (0 without a budget).
    pub fn memory_reserved(&self) -> u64 {
        match &self.memory {
            Some((sem, total)) => u64::from(*total) - sem.available_permits() as u64,
            None => 0,
        }
    }

    /// Jobs running or waiting now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Run `job` on a blocking thread once a slot is free.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run_weighted(0, job).await
    }

    /// Run `job`, which holds about `bytes` of working memory, once a slot
    /// and that much of the memory budget are free.
    pub async fn run_weighted<T, F>(&self, bytes: u64, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.admit(bytes, false, job).await
    }

    /// Like [`Pool::run_weighted`], but runs the job on the calling thread
    /// once admitted (it holds a slot and its memory all the same): for jobs
    /// short enough that handing them to a blocking thread and back costs a
    /// large share of their time (small renders; the caller decides).
    pub async fn run_weighted_here<T, F>(&self, bytes: u64, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.admit(bytes, true, job).await
    }

    async fn admit<T, F>(&self, bytes: u64, here: bool, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let prev = self.depth.fetch_add(1, Ordering::AcqRel);
        let _guard = DepthGuard(self.depth.clone());
        if prev >= self.capacity {
            return Err(PoolError::Busy);
        }
        let _memory = match &self.memory {
            Some((sem, total)) if bytes > 0 => {
                let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
                Some(
                    sem.clone()
                        .acquire_many_owned(kib.min(*total))
                        .await
                        .map_err(|_| PoolError::Busy)?,
                )
            }
            _ => None,
        };
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Busy)?;
        if here {
            let _permit = permit;
            return guarded(job).map_err(PoolError::Panicked);
        }
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            guarded(job)
        });
        match handle.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(msg)) => Err(PoolError::Panicked(msg)),
            Err(e) => Err(PoolError::Panicked(e.to_string())),
        }
    }
}

/// Runs `job`, a panic becoming its message.
fn guarded<T>(job: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(job)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Jobs whose memory does not fit together never overlap; a job larger
    /// than the whole budget still runs; small ones share the budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_budget_serializes_big_jobs() {
        use std::sync::atomic::AtomicUsize;
        let pool = Pool::with_memory(4, 16, 100 << 10);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let job = |running: Arc<AtomicUsize>, peak: Arc<AtomicUsize>| {
            move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Long enough that four admitted jobs overlap however late
                // the last one is scheduled on a loaded machine.
                std::thread::sleep(Duration::from_millis(250));
                running.fetch_sub(1, Ordering::SeqCst);
            }
        };
        for (cost, want_peak) in [(60u64 << 10, 1), (500 << 10, 1), (20 << 10, 4)] {
            peak.store(0, Ordering::SeqCst);
            let jobs: Vec<_> = (0..4)
                .map(|_| {
                    let pool = pool.clone();
                    let j = job(running.clone(), peak.clone());
                    tokio::spawn(async move { pool.run_weighted(cost, j).await })
                })
                .collect();
            for j in jobs {
                j.await.unwrap().unwrap();
            }
            assert_eq!(peak.load(Ordering::SeqCst), want_peak, "cost {cost}");
            assert_eq!(pool.memory_reserved(), 0, "budget returned");
        }
    }

    #[tokio::test]
    async fn runs_jobs_and_contains_panics() {
        let p = Pool::new(2, 2);
        assert_eq!(p.run(|| 21 * 2).await, Ok(42));
        let r: Result<(), _> = p.run(|| panic!("decoder exploded")).await;
        assert_eq!(r, Err(PoolError::Panicked("decoder exploded".into())));
        assert_eq!(p.run(|| "still alive").await, Ok("still alive"));
        assert_eq!(p.depth(), 0);
    }

    /// A job run here runs on the calling thread, holds a slot and its
    /// memory while it runs, and a panic is that job's error.
    #[tokio::test]
    async fn jobs_run_here_keep_the_bounds_and_contain_panics() {
        let p = Pool::with_memory(1, 0, 100 << 10);
        let caller = std::thread::current().id();
        let seen = p
            .run_weighted_here(60 << 10, {
                let p = p.clone();
                move || (std::thread::current().id(), p.depth(), p.memory_reserved())
            })
            .await;
        assert_eq!(seen, Ok((caller, 1, 60)));
        let r: Result<(), _> = p.run_weighted_here(1, || panic!("encoder exploded")).await;
        assert_eq!(r, Err(PoolError::Panicked("encoder exploded".into())));
        assert_eq!((p.depth(), p.memory_reserved()), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_when_full() {
        let p = Pool::new(1, 1);
        let slow = |p: Pool| async move {
            p.run(|| std::thread::sleep(Duration::from_millis(300)))
                .await
        };
        let a = tokio::spawn(slow(p.clone()));
        let b = tokio::spawn(slow(p.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(p.depth(), 2);
        assert_eq!(p.run(|| ()).await, Err(PoolError::Busy));
        assert!(a.await.unwrap().is_ok());
        assert!(b.await.unwrap().is_ok());
        assert_eq!(p.depth(), 0);
    }
}
