//! The in-process cache of rendered variants: a sharded LRU bounded in
//! **bytes**, with request coalescing (concurrent misses for one key render once).
//!
//! Generic over key and value; knows nothing of URLs or formats. Invariants:
//! - a hit is a shard lock, a hash lookup and a value clone (`Bytes`/`Arc`
//!   clones are reference-count bumps); no lock is held across an await;
//! - the sum of the weights of cached values never exceeds the budget (each
//!   shard enforces `budget / shards`); a value heavier than a shard's budget is
//!   served but not cached;
//! - at most one producer runs per key at a time; its result (success only) is
//!   inserted before waiters are released, and errors are not cached.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use tokio::sync::OnceCell;

/// Number of independently locked shards.
pub const SHARDS: usize = 16;

/// Anything that can be cached reports its size in bytes.
pub trait Weighted {
    fn weight(&self) -> usize;
}

impl Weighted for bytes::Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// Bytes an allocator really holds for an `n`-byte allocation: jemalloc (our
/// binary's allocator) rounds to four size classes per power of two, so a
/// 5.3 MB body occupies 6 MiB. Weights built on this keep the budget honest
/// about resident memory, not just payload.
pub fn allocated(n: usize) -> usize {
    if n <= 16 {
        return 16;
    }
    let step = (1usize << (usize::BITS - 1 - (n - 1).leading_zeros())) / 4;
    let step = step.max(16);
    n.div_ceil(step) * step
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    /// Waited for another request's render of the same key.
    Coalesced,
    /// Produced by this request.
    Produced,
}

impl Outcome {
    /// As the access log says it: `hit`, `miss` (produced here) or `coalesced`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Coalesced => "coalesced",
            Outcome::Produced => "miss",
        }
    }
}

/// Counters, read by `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub coalesced: AtomicU64,
    pub evictions: AtomicU64,
    pub inserts: AtomicU64,
}

struct Shard<K: Hash + Eq, V> {
    lru: LruCache<K, V>,
    bytes: usize,
}

type Inflight<K, V, E> = Mutex<HashMap<K, Arc<OnceCell<Result<V, E>>>>>;

/// A sharded, byte-bounded LRU with coalescing.
pub struct Cache<K: Hash + Eq, V, E> {
    shards: Vec<Mutex<Shard<K, V>>>,
    shard_budget: usize,
    hasher: std::collections::hash_map::RandomState,
    inflight: Inflight<K, V, E>,
    pub stats: CacheStats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard lock cannot leave it inconsistent in a way
    // that matters more than losing the cache: keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K, V, E> Cache<K, V, E>
where
    K: Hash + Eq + Clone,
    V: Clone + Weighted,
    E: Clone,
{
    /// A cache holding at most `budget_bytes` of values.
    pub fn new(budget_bytes: u64) -> Self {
        Cache::with_shards(budget_bytes, SHARDS)
    }

    /// A cache of `shards` independently locked shards (at least one): fewer
    /// shards admit heavier values (a value may weigh `budget / shards`).
    pub fn with_shards(budget_bytes: u64, shards: usize) -> Self {
        let shards = shards.max(1);
        let budget = usize::try_from(budget_bytes).unwrap_or(usize::MAX);
        Cache {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        lru: LruCache::unbounded(),
                        bytes: 0,
                    })
                })
                .collect(),
            shard_budget: budget / shards,
            hasher: Default::default(),
            inflight: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<Shard<K, V>> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % self.shards.len()]
    }

    /// Look up `key`, marking it recently used. Counts a hit or a miss.
    pub fn get(&self, key: &K) -> Option<V> {
        let found = lock(self.shard(key)).lru.get(key).cloned();
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Insert, evicting least recently used values until the shard fits.
    pub fn insert(&self, key: K, value: V) {
        let w = value.weight();
        if w > self.shard_budget {
            return;
        }
        let mut shard = lock(self.shard(&key));
        if let Some(old) = shard.lru.pop(&key) {
            shard.bytes -= old.weight();
        }
        while shard.bytes + w > self.shard_budget {
            match shard.lru.pop_lru() {
                Some((_, old)) => {
                    shard.bytes -= old.weight();
                    self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
        shard.bytes += w;
        shard.lru.put(key, value);
        self.stats.inserts.fetch_add(1, Ordering::Relaxed);
    }

    /// Remove every entry for which `pred` holds (used when an identity changes).
    pub fn remove_where(&self, mut pred: impl FnMut(&K) -> bool) {
        for s in &self.shards {
            let mut shard = lock(s);
            let doomed: Vec<K> = shard
                .lru
                .iter()
                .filter(|(k, _)| pred(k))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                if let Some(v) = shard.lru.pop(&k) {
                    shard.bytes -= v.weight();
                }
            }
        }
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }

    /// Entries currently held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).lru.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Renders currently in flight.
    pub fn inflight(&self) -> usize {
        lock(&self.inflight).len()
    }

    /// The cached value, or the result of `produce` — run once for all
    /// concurrent callers with the same key.
    ///
    /// A hit returns without touching the producing future: that one is
    /// boxed, so the caller's own future stays the size of a hit's state
    /// (it is moved into a box per request by the HTTP layer; a render's
    /// state inline made every hit copy kilobytes).
    pub async fn get_or_produce<F, Fut>(&self, key: K, produce: F) -> Result<(V, Outcome), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(&key) {
            return Ok((v, Outcome::Hit));
        }
        Box::pin(self.produce_once(key, produce)).await
    }

    /// The miss path of [`Cache::get_or_produce`].
    async fn produce_once<F, Fut>(&self, key: K, produce: F) -> Result<(V, Outcome), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = lock(&self.inflight)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let mut produced = false;
        let result = cell
            .get_or_init(|| async {
                produced = true;
                let r = produce().await;
                if let Ok(v) = &r {
                    self.insert(key.clone(), v.clone());
                }
                lock(&self.inflight).remove(&key);
                r
            })
            .await
            .clone();
        // Whoever reaches the cell first runs `produce`, which need not be
        // the caller that created it: the creator can be preempted between
        // releasing `inflight` and polling the cell. Count by `produced`
        // alone, the same rule as the outcome.
        let outcome = if produced {
            Outcome::Produced
        } else {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            Outcome::Coalesced
        };
        result.map(|v| (v, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn allocated_follows_four_classes_per_power_of_two() {
        let cases = [
            (0, 16),
            (16, 16),
            (17, 32),
            (100, 112),
            (4096, 4096),
            (4097, 5120),
            (5_100_000, 5 << 20),
            (5_300_000, 6 << 20),
            (8 << 20, 8 << 20),
        ];
        for (n, want) in cases {
            assert_eq!(allocated(n), want, "{n}");
        }
    }

    proptest! {
        #[test]
        fn allocated_is_a_tight_upper_bound(n in 0usize..(1 << 40)) {
            let a = allocated(n);
            prop_assert!(a >= n);
            prop_assert!(a <= n + n / 2 + 16, "{} -> {}", n, a);
            prop_assert_eq!(allocated(a), a, "classes are fixed points");
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    struct Blob(usize);
    impl Weighted for Blob {
        fn weight(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        // One shard's budget is 1/SHARDS of the total: make keys land in one
        // shard by using a budget large enough per shard and checking totals.
        let c: Cache<u32, Blob, ()> = Cache::new((SHARDS * 100) as u64);
        for k in 0..1000 {
            c.insert(k, Blob(30));
        }
        assert!(c.bytes() <= SHARDS * 100);
        assert!(c.stats.evictions.load(Ordering::Relaxed) > 0);
        // Too heavy for a shard: not cached at all.
        c.insert(5000, Blob(101));
        assert_eq!(c.get(&5000), None);
    }

    #[test]
    fn recently_used_survives() {
        let c: Cache<u32, Blob, ()> = Cache::new((SHARDS * 100) as u64);
        // Find three keys in the same shard.
        let shard_of = |k: &u32| c.hasher.hash_one(k) as usize % SHARDS;
        let mut same: Vec<u32> = (0..10_000)
            .filter(|k| shard_of(k) == shard_of(&0))
            .take(3)
            .collect();
        let (a, b, d) = (same.remove(0), same.remove(0), same.remove(0));
        c.insert(a, Blob(40));
        c.insert(b, Blob(40));
        assert!(c.get(&a).is_some()); // a is now most recent
        c.insert(d, Blob(40)); // evicts b
        assert!(c.get(&a).is_some());
        assert!(c.get(&b).is_none());
        assert!(c.get(&d).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_produce_once() {
        let c: Arc<Cache<u32, Blob, String>> = Arc::new(Cache::new(1 << 20));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (c, calls) = (c.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_produce(7, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Ok(Blob(10))
                })
                .await
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap().unwrap().1);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            outcomes.iter().filter(|o| **o == Outcome::Produced).count(),
            1
        );
        // The counter agrees with the outcomes, whichever task produced.
        let coalesced = outcomes
            .iter()
            .filter(|o| **o == Outcome::Coalesced)
            .count();
        let hits = outcomes.iter().filter(|o| **o == Outcome::Hit).count();
        assert_eq!(c.stats.coalesced.load(Ordering::SeqCst) as usize, coalesced);
        assert_eq!(coalesced + hits, 49);
        assert_eq!(c.inflight(), 0);
        let (_, o) = c.get_or_produce(7, || async { Ok(Blob(1)) }).await.unwrap();
        assert_eq!(o, Outcome::Hit);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let c: Cache<u32, Blob, String> = Cache::new(1 << 20);
        let r = c
            .get_or_produce(1, || async { Err("boom".to_string()) })
            .await;
        assert_eq!(r.unwrap_err(), "boom");
        let (v, o) = c.get_or_produce(1, || async { Ok(Blob(3)) }).await.unwrap();
        assert_eq!((v, o), (Blob(3), Outcome::Produced));
    }

    #[test]
    fn fewer_shards_admit_heavier_values() {
        let c: Cache<u32, Blob, ()> = Cache::with_shards(400, 4);
        c.insert(1, Blob(100));
        assert_eq!(c.get(&1), Some(Blob(100)));
        c.insert(2, Blob(101));
        assert_eq!(c.get(&2), None, "heavier than a shard");
        assert!(c.bytes() <= 400);
    }

    #[test]
    fn remove_where_drops_matching_keys() {
        let c: Cache<u32, Blob, ()> = Cache::new(1 << 20);
        for k in 0..100 {
            c.insert(k, Blob(10));
        }
        c.remove_where(|k| k % 2 == 0);
        assert_eq!(c.len(), 50);
        assert_eq!(c.bytes(), 500);
    }

    proptest! {
        #[test]
        fn budget_is_never_exceeded(budget in 1u64..100_000, ops in proptest::collection::vec((0u32..500, 1usize..5000), 1..400)) {
            let c: Cache<u32, Blob, ()> = Cache::new(budget);
            for (k, w) in ops {
                c.insert(k, Blob(w));
                prop_assert!(c.bytes() as u64 <= budget);
            }
            let sum: usize = c.shards.iter().map(|s| lock(s).lru.iter().map(|(_, v)| v.0).sum::<usize>()).sum();
            prop_assert_eq!(sum, c.bytes());
        }
    }
}
