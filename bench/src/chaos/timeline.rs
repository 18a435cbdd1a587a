//! What happened when, second by second: the writer's committed rows and
//! failed transactions, the API readers' answers (ok, 5xx, connection
//! errors, wrong answers) and the API writes. Every task of the run adds to
//! the same [`Timeline`]; the fault records and the SVG plot are cut from it.
//! Times are seconds since the run's `t0` (when writing started).

use std::sync::Mutex;

use serde::Serialize;
use tokio::time::Instant;

/// Counters of one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Row changes in committed transactions.
    pub rows: u64,
    /// Committed transactions.
    pub txns: u64,
    /// Transactions that failed (rolled back by the failure; not written).
    pub failed_txns: u64,
    /// Transactions whose COMMIT outcome was unknown when it was sent.
    pub unknown_commits: u64,
    /// API reads answered (any status).
    pub reads: u64,
    /// API reads answered with a 5xx.
    pub five_xx: u64,
    /// API reads without an answer (refused, reset, timed out).
    pub read_errors: u64,
    /// API answers that were wrong (newer than MySQL, or different fields at
    /// the same version).
    pub wrong: u64,
    /// API writes that succeeded.
    pub api_writes: u64,
    /// API writes that failed (5xx or no answer).
    pub api_write_failures: u64,
}

impl Bucket {
    /// Adds `other` into `self`.
    pub fn absorb(&mut self, o: &Bucket) {
        self.rows += o.rows;
        self.txns += o.txns;
        self.failed_txns += o.failed_txns;
        self.unknown_commits += o.unknown_commits;
        self.reads += o.reads;
        self.five_xx += o.five_xx;
        self.read_errors += o.read_errors;
        self.wrong += o.wrong;
        self.api_writes += o.api_writes;
        self.api_write_failures += o.api_write_failures;
    }
}

/// Sums the buckets of seconds `from..to` (fractions round outwards).
pub fn sum(buckets: &[Bucket], from: f64, to: f64) -> Bucket {
    let lo = from.max(0.0).floor() as usize;
    let hi = (to.max(0.0).ceil() as usize).min(buckets.len());
    let mut total = Bucket::default();
    for b in buckets.iter().take(hi).skip(lo) {
        total.absorb(b);
    }
    total
}

/// The shared per-second record of a run.
pub struct Timeline {
    t0: Instant,
    buckets: Mutex<Vec<Bucket>>,
    wrong: Mutex<Vec<String>>,
}

impl Timeline {
    /// A timeline starting now.
    pub fn new() -> Self {
        Self {
            t0: Instant::now(),
            buckets: Mutex::new(Vec::new()),
            wrong: Mutex::new(Vec::new()),
        }
    }

    /// Seconds from `t0` to `at` (0 for earlier instants).
    pub fn secs(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// Seconds since `t0`.
    pub fn now(&self) -> f64 {
        self.secs(Instant::now())
    }

    /// The run's start.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Applies `f` to the current second's bucket.
    pub fn add(&self, f: impl FnOnce(&mut Bucket)) {
        let i = self.now() as usize;
        if let Ok(mut b) = self.buckets.lock() {
            if b.len() <= i {
                b.resize(i + 1, Bucket::default());
            }
            f(&mut b[i]);
        }
    }

    /// Records a wrong answer (counted, and the first 50 described).
    pub fn wrong(&self, what: String) {
        self.add(|b| b.wrong += 1);
        if let Ok(mut w) = self.wrong.lock()
            && w.len() < 50
        {
            w.push(format!("t={:.1}s {what}", self.now()));
        }
    }

    /// A copy of every bucket so far.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.buckets.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// The described wrong answers.
    pub fn wrong_examples(&self) -> Vec<String> {
        self.wrong.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cover_the_window() {
        let b: Vec<Bucket> = (0..10)
            .map(|i| Bucket {
                rows: i,
                five_xx: 1,
                ..Bucket::default()
            })
            .collect();
        let s = sum(&b, 2.5, 4.2);
        assert_eq!(s.rows, 2 + 3 + 4);
        assert_eq!(s.five_xx, 3);
        assert_eq!(sum(&b, 8.0, 100.0).rows, 8 + 9);
        assert_eq!(sum(&b, -3.0, 0.0), Bucket::default());
    }

    #[tokio::test]
    async fn adds_to_the_current_second() {
        let t = Timeline::new();
        t.add(|b| b.rows += 5);
        t.wrong("x".into());
        let b = t.buckets();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].rows, 5);
        assert_eq!(b[0].wrong, 1);
        assert_eq!(t.wrong_examples().len(), 1);
    }
}
