//! Readiness as a set of named checks. Each dependency (the database, Kafka,
//! Redis) owns one [`Check`] and flips it as its connection comes and goes; the
//! process is ready only when every registered check is. `/readyz` reports the
//! names of the checks that are failing, so a probe log says what is wrong.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A registered check: its name and its flag.
type Named = (String, Arc<AtomicBool>);

/// The set of readiness checks of one process.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<Named>>>,
}

/// One named readiness check, initially not ready.
#[derive(Debug, Clone)]
pub struct Check {
    flag: Arc<AtomicBool>,
}

impl Check {
    /// Marks the dependency usable (`true`) or not (`false`).
    pub fn set(&self, ready: bool) {
        self.flag.store(ready, Ordering::Relaxed);
    }

    /// Whether the dependency is currently usable.
    pub fn is_ready(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

impl Readiness {
    /// A new, empty set: ready until a check is registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a check named `name`, initially not ready.
    pub fn register(&self, name: &str) -> Check {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut checks) = self.checks.lock() {
            checks.push((name.to_string(), flag.clone()));
        }
        Check { flag }
    }

    /// Names of the checks that are not ready; empty when ready.
    pub fn failing(&self) -> Vec<String> {
        match self.checks.lock() {
            Ok(checks) => checks
                .iter()
                .filter(|(_, f)| !f.load(Ordering::Relaxed))
                .map(|(n, _)| n.clone())
                .collect(),
            Err(_) => vec!["readiness-lock-poisoned".to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_is() {
        let r = Readiness::new();
        assert!(r.failing().is_empty());
        let db = r.register("mysql");
        let kafka = r.register("kafka");
        assert_eq!(r.failing(), vec!["mysql", "kafka"]);
        db.set(true);
        assert_eq!(r.failing(), vec!["kafka"]);
        kafka.set(true);
        assert!(r.failing().is_empty());
        db.set(false);
        assert_eq!(r.failing(), vec!["mysql"]);
        assert!(!db.is_ready());
    }
}
