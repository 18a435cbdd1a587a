//! Package hints: which package a purchase was bought with, remembered in a
//! fixed table of atomics so a cached read can fetch the purchase and its
//! package from Redis in one pipelined round trip instead of two. A hint is
//! only a guess: the read checks it against the `package_id` of the purchase
//! document it just fetched and, when they differ (or two slots' writes
//! interleaved), fetches the right package. So the table needs no locks, no
//! allocation and no invalidation. Pure.

use std::sync::atomic::{AtomicU64, Ordering};

/// A direct-mapped table of `purchase id -> package id` guesses.
pub struct PackageHints {
    slots: Box<[(AtomicU64, AtomicU64)]>,
}

impl PackageHints {
    /// A table of `size` slots (rounded up to a power of two, at least 1).
    pub fn new(size: usize) -> Self {
        let n = size.max(1).next_power_of_two();
        Self {
            slots: (0..n)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        }
    }

    fn slot(&self, purchase_id: u64) -> Option<&(AtomicU64, AtomicU64)> {
        // Fibonacci hashing spreads sequential ids over the table.
        let h = purchase_id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let i = (h >> 32) as usize & (self.slots.len() - 1);
        self.slots.get(i)
    }

    /// The remembered package of `purchase_id`, if any.
    pub fn get(&self, purchase_id: u64) -> Option<u64> {
        let (p, k) = self.slot(purchase_id)?;
        let pkg = k.load(Ordering::Relaxed);
        (p.load(Ordering::Relaxed) == purchase_id && pkg != 0).then_some(pkg)
    }

    /// Remembers that `purchase_id` was bought with `package_id`.
    pub fn set(&self, purchase_id: u64, package_id: u64) {
        if let Some((p, k)) = self.slot(purchase_id) {
            k.store(package_id, Ordering::Relaxed);
            p.store(purchase_id, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_overwrites() {
        let h = PackageHints::new(1000);
        assert_eq!(h.get(5), None);
        h.set(5, 9);
        assert_eq!(h.get(5), Some(9));
        h.set(5, 10);
        assert_eq!(h.get(5), Some(10));
        let tiny = PackageHints::new(1);
        tiny.set(1, 2);
        tiny.set(3, 4);
        assert_eq!(tiny.get(3), Some(4));
        assert_eq!(tiny.get(1), None, "evicted by a collision");
    }
}
