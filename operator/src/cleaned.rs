//! The pipelines whose cleanup this process finished. Their finalizer is
//! off, but the cached object can outlive that for a moment, and the
//! deletions of their children queue reconciles of it: at 1,000 pipelines
//! deleted at once, nearly half the cleanups ran again on an object already
//! cleaned up, deleting nothing and publishing another Event. A reconcile of
//! a pipeline listed here is skipped. Entries are keyed by uid (a pipeline
//! recreated under the same name is another object) and forgotten after a
//! time to live; the caller passes the clock, so the set is pure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Uids of cleaned-up pipelines, each with when it was cleaned up.
#[derive(Debug)]
pub struct Cleaned {
    ttl: Duration,
    done: HashMap<String, Instant>,
}

impl Cleaned {
    /// An empty set whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            done: HashMap::new(),
        }
    }

    /// Records that `uid`'s cleanup finished at `now`, and forgets the
    /// entries older than the time to live.
    pub fn mark(&mut self, uid: &str, now: Instant) {
        let ttl = self.ttl;
        self.done
            .retain(|_, at| now.saturating_duration_since(*at) < ttl);
        self.done.insert(uid.to_string(), now);
    }

    /// Whether `uid`'s cleanup finished less than the time to live before
    /// `now`.
    pub fn contains(&self, uid: &str, now: Instant) -> bool {
        self.done
            .get(uid)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cleaned_up_uid_is_remembered_for_its_time_to_live() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(600);
        let mut c = Cleaned::new(ttl);
        assert!(!c.contains("u1", t0));
        c.mark("u1", t0);
        assert!(c.contains("u1", t0));
        assert!(c.contains("u1", t0 + ttl - Duration::from_secs(1)));
        assert!(!c.contains("u1", t0 + ttl), "expired");
        assert!(!c.contains("u2", t0), "another object");
    }

    #[test]
    fn marking_forgets_expired_entries() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut c = Cleaned::new(ttl);
        c.mark("old", t0);
        c.mark("recent", t0 + Duration::from_secs(30));
        assert_eq!(c.len(), 2);
        c.mark("new", t0 + Duration::from_secs(61));
        assert_eq!(c.len(), 2, "old is gone, recent and new stay");
        assert!(!c.contains("old", t0 + Duration::from_secs(61)));
        assert!(c.contains("recent", t0 + Duration::from_secs(61)));
    }
}
