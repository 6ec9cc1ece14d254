//! A per-upstream circuit breaker. After `threshold` consecutive failures (connect errors,
//! timeouts, 5xx) the upstream is marked down: requests fail at once instead of each waiting for
//! a timeout, so cached content is served immediately and clients fall back quickly. While down,
//! one background task probes `GET /v2/` every `probe_interval`; any HTTP answer marks it up.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;

pub(super) struct Breaker {
    threshold: u32,
    probe_interval: Duration,
    failures: AtomicU32,
    open: AtomicBool,
    /// 1 while the upstream is marked down.
    gauge: IntGauge,
}

impl Breaker {
    pub(super) fn new(threshold: u32, probe_interval: Duration, gauge: IntGauge) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            probe_interval,
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            gauge,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub(super) fn probe_interval(&self) -> Duration {
        self.probe_interval
    }

    pub(super) fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.open.swap(false, Ordering::AcqRel) {
            self.gauge.set(0);
        }
    }

    /// Records a failure; true when this one marked the upstream down (start probing).
    pub(super) fn failure(self: &Arc<Self>) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold && !self.open.swap(true, Ordering::AcqRel) {
            self.gauge.set(1);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_closes_on_success() {
        let b = Arc::new(Breaker::new(
            3,
            Duration::from_secs(1),
            IntGauge::new("g", "g").unwrap(),
        ));
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.failure(), "third failure opens");
        assert!(b.is_open());
        assert!(!b.failure(), "already open");
        b.success();
        assert!(!b.is_open());
        assert!(!b.failure(), "count restarted");
    }
}
