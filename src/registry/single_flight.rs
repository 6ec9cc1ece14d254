//! Single-flight for small upstream requests (manifest GETs, tag HEADs): concurrent callers with
//! the same key share one run of the operation. The operation runs in its own task, so a caller
//! that goes away (client disconnect) neither cancels it for the others nor leaves them waiting.
//! The key is removed by a drop guard, so a run that panics or is cancelled leaves nothing
//! behind: its waiters get `None` once, and the next caller starts a new run.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

type Running<K, V> = Mutex<HashMap<K, watch::Receiver<Option<V>>>>;

pub(super) struct SingleFlight<K, V> {
    running: Arc<Running<K, V>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// Removes a run's key when the run's task ends, however it ends.
struct KeyGuard<K: Hash + Eq, V> {
    running: Arc<Running<K, V>>,
    key: Option<K>,
}

impl<K: Hash + Eq, V> Drop for KeyGuard<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `op()` unless a run for `key` is already under way, and returns that run's result
    /// with whether this caller joined someone else's run. `None` if the run's task died.
    pub(super) async fn run<F, Fut>(&self, key: K, op: F) -> (Option<V>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (mut rx, joined) = self.start(key, op);
        let v = rx.wait_for(Option::is_some).await.ok().and_then(|v| v.clone());
        (v, joined)
    }

    /// Starts `op()` unless a run for `key` is already under way, without waiting for it: the
    /// run's result arrives on the receiver; `true` when someone else's run was joined.
    pub(super) fn start<F, Fut>(&self, key: K, op: F) -> (watch::Receiver<Option<V>>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = running.get(&key) {
            return (rx.clone(), true);
        }
        let (tx, rx) = watch::channel(None);
        running.insert(key.clone(), rx.clone());
        let fut = op();
        let guard = KeyGuard {
            running: self.running.clone(),
            key: Some(key),
        };
        tokio::spawn(async move {
            let v = fut.await;
            drop(guard);
            let _ = tx.send(Some(v));
        });
        (rx, false)
    }

    /// Whether a run for `key` is under way.
    pub(super) fn is_running(&self, key: &K) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let c: Arc<SingleFlight<&'static str, usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (go, gate) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let c = c.clone();
            let runs = runs.clone();
            let mut gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                c.run("k", move || async move {
                    let _ = gate.wait_for(|g| *g).await;
                    runs.fetch_add(1, Ordering::SeqCst) + 41
                })
                .await
            }));
        }
        tokio::task::yield_now().await;
        go.send(true).unwrap();
        let mut joined = 0;
        for t in tasks {
            let (v, j) = t.await.unwrap();
            assert_eq!(v, Some(41));
            joined += j as usize;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 4);
        // A later call runs again.
        assert_eq!(c.run("k", || async { 7 }).await, (Some(7), false));
    }

    #[tokio::test]
    async fn a_run_that_panics_does_not_poison_its_key() {
        let c: SingleFlight<&'static str, usize> = SingleFlight::default();
        let (v, joined) = c
            .run("k", || async {
                if true {
                    panic!("the operation failed hard");
                }
                1
            })
            .await;
        assert_eq!((v, joined), (None, false));
        assert_eq!(c.run("k", || async { 2 }).await, (Some(2), false));
    }
}
