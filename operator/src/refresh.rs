//! When a pipeline's status is refreshed next. Every pipeline asks for a
//! refresh each status interval, but the operator bounds the refreshes per
//! second: with more pipelines than the budget covers in one interval, the
//! interval stretches (1,000 pipelines at 25 refreshes a second: every 40 s),
//! so refreshes never crowd out the reconciles of new or changed pipelines.
//! Each pipeline's interval is shifted by up to a tenth, by a hash of its
//! name, so pipelines created together do not refresh in waves. While a
//! workload is not fully rolled out and ready, the interval asked is at
//! most [`SETTLING`], so a problem of its pods shows soon after it starts
//! (the budget still bounds it). Pure.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

/// The interval asked while a workload is not ready yet.
pub const SETTLING: Duration = Duration::from_secs(10);

/// The interval to ask: `status_interval`, at most [`SETTLING`] while a
/// workload is `settling`.
pub fn interval(status_interval: Duration, settling: bool) -> Duration {
    if settling {
        status_interval.min(SETTLING)
    } else {
        status_interval
    }
}

/// The delay until `key`'s next refresh, with `pipelines` pipelines sharing
/// `per_sec` refreshes a second (0: no bound) and `interval` asked.
pub fn next_refresh(interval: Duration, pipelines: usize, per_sec: f64, key: &str) -> Duration {
    let needed = if per_sec > 0.0 {
        Duration::from_secs_f64(pipelines as f64 / per_sec)
    } else {
        Duration::ZERO
    };
    let base = interval.max(needed);
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    // 0..=1000 thousandths of a tenth of the base.
    let spread = (h.finish() % 1001) as f64 / 1000.0;
    base + base.mul_f64(0.1 * spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn few_pipelines_refresh_every_interval_plus_at_most_a_tenth() {
        for key in ["a/x", "b/y", "c/z"] {
            let d = next_refresh(15 * S, 100, 25.0, key);
            assert!(
                d >= 15 * S && d <= 15 * S + 1500 * Duration::from_millis(1),
                "{d:?}"
            );
        }
    }

    #[test]
    fn many_pipelines_stretch_the_interval_to_the_budget() {
        let d = next_refresh(15 * S, 1000, 25.0, "ns/p0001");
        assert!(d >= 40 * S && d <= 44 * S, "{d:?}");
        let d = next_refresh(15 * S, 1000, 0.0, "ns/p0001");
        assert!(d < 17 * S, "no budget, no stretch: {d:?}");
    }

    #[test]
    fn settling_pipelines_refresh_sooner_within_the_budget() {
        assert_eq!(interval(15 * S, true), 10 * S);
        assert_eq!(interval(15 * S, false), 15 * S);
        assert_eq!(interval(2 * S, true), 2 * S, "never slower");
        let d = next_refresh(interval(15 * S, true), 10, 25.0, "ns/a");
        assert!(d >= 10 * S && d <= 11 * S, "{d:?}");
        let d = next_refresh(interval(15 * S, true), 1000, 25.0, "ns/a");
        assert!(d >= 40 * S, "the budget still holds: {d:?}");
    }

    #[test]
    fn pipelines_are_spread_and_each_keeps_its_place() {
        let a = next_refresh(15 * S, 10, 25.0, "ns/a");
        assert_eq!(a, next_refresh(15 * S, 10, 25.0, "ns/a"));
        let distinct: std::collections::BTreeSet<Duration> = (0..50)
            .map(|i| next_refresh(15 * S, 10, 25.0, &format!("ns/p{i}")))
            .collect();
        assert!(distinct.len() > 40, "{}", distinct.len());
    }
}
