//! The one retry schedule of the crate: a delay that doubles from a first
//! value up to a cap. Pure (no clock, no sleeping): each caller decides what
//! it retries, for how long, and what it logs — the NATS store's start-up
//! steps and leader requests, its compare-and-set retries (with jitter under
//! the delay) and the webhook and purge deliveries.

use std::time::Duration;

/// Delays doubling from `first`, never above `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doubling {
    pub first: Duration,
    pub cap: Duration,
}

impl Doubling {
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Doubling { first, cap }
    }

    /// The delay before retry `n` (from 0): `first · 2ⁿ`, at most `cap`.
    pub fn nth(&self, n: u32) -> Duration {
        self.first.saturating_mul(1u32 << n.min(31)).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_from_first_to_cap() {
        let d = Doubling::new(Duration::from_millis(100), Duration::from_secs(2));
        let ms: Vec<u128> = (0..7).map(|n| d.nth(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    proptest! {
        #[test]
        fn never_shrinks_never_exceeds_the_cap(first in 0u64..10_000_000, cap in 0u64..100_000_000, n in 0u32..200) {
            let d = Doubling::new(Duration::from_micros(first), Duration::from_micros(cap));
            prop_assert!(d.nth(n) <= d.cap);
            prop_assert!(d.nth(n) <= d.nth(n + 1));
            prop_assert_eq!(d.nth(0), d.first.min(d.cap));
        }
    }
}
