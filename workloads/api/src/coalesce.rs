//! Request coalescing ("single flight"): concurrent loads of the same key
//! share one execution. The first caller starts the load on its own task,
//! later callers wait for the same result, and the entry is removed the
//! moment the load finishes, so a thousand simultaneous misses on one key
//! make one MySQL query and a later miss makes a fresh one. A caller that
//! goes away (client disconnect, timeout) does not cancel the load the
//! others wait for. The map's mutex is only taken on a cache miss.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

type Flight<V> = Shared<BoxFuture<'static, Option<V>>>;
type Flights<K, V> = Arc<Mutex<HashMap<K, (u64, Flight<V>)>>>;

/// Loads in flight, by key.
pub struct Coalescer<K, V> {
    flights: Flights<K, V>,
    generation: AtomicU64,
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
            generation: AtomicU64::new(0),
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `load` for `key`, or joins the run already in flight. Returns
    /// the value (`None` if the load task panicked) and whether this call
    /// joined another's load.
    pub async fn run<F, Fut>(&self, key: K, load: F) -> (Option<V>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (flight, joined) = {
            let Ok(mut map) = self.flights.lock() else {
                // A poisoned map only loses coalescing, never the read.
                return (Some(load().await), false);
            };
            match map.get(&key) {
                Some((_, f)) => (f.clone(), true),
                None => {
                    let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                    let flights = Arc::clone(&self.flights);
                    let k = key.clone();
                    let fut = load();
                    let task = tokio::spawn(async move {
                        let v = fut.await;
                        if let Ok(mut map) = flights.lock()
                            && map.get(&k).is_some_and(|(g, _)| *g == generation)
                        {
                            map.remove(&k);
                        }
                        v
                    });
                    let flight: Flight<V> = async move { task.await.ok() }.boxed().shared();
                    map.insert(key, (generation, flight.clone()));
                    (flight, false)
                }
            }
        };
        (flight.await, joined)
    }

    /// Loads in flight (tests).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_loads_of_one_key_run_once() {
        let c: Arc<Coalescer<u64, u64>> = Arc::new(Coalescer::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let (c, runs, gate) = (c.clone(), runs.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                c.run(7, move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    42
                })
                .await
            }));
        }
        // Every caller has joined once the one load is waiting at the gate.
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        let mut joined = 0;
        for t in tasks {
            let (v, j) = t.await.unwrap_or((None, false));
            assert_eq!(v, Some(42));
            joined += usize::from(j);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 999);
        assert_eq!(c.in_flight(), 0);
        // A later load runs again.
        let (v, j) = c.run(7, || async { 43 }).await;
        assert_eq!((v, j), (Some(43), false));
    }

    #[tokio::test]
    async fn a_departed_caller_does_not_cancel_the_load() {
        let c: Arc<Coalescer<u64, u64>> = Arc::new(Coalescer::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c2 = c.clone();
        let first = tokio::spawn(async move {
            c2.run(1, move || async move {
                let _ = rx.await;
                5
            })
            .await
        });
        while c.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        first.abort();
        let c3 = c.clone();
        let second = tokio::spawn(async move { c3.run(1, || async { 6 }).await });
        let _ = tx.send(());
        assert_eq!(second.await.ok(), Some((Some(5), true)));
    }
}
