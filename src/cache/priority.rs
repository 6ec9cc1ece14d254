//! Ranged fetches go first. A lazy puller waits on its range (`ahead.rs`), while the fill's one
//! full download is work for the cache: on a small machine the two compete for the CPU and the
//! link, and a 1 MiB range asked while the download streams took 10-50 ms instead of 5-10. While
//! a ranged fetch of the blob runs, the download reads nothing more from its origin, for at most
//! `HOLD` after the range began (a long range must not stall the download), then goes on; and a
//! download yields `BUDGET` at most in all, so a puller asking range after range cannot keep
//! the blob from being cached.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The longest a ranged fetch holds the download back.
const HOLD: Duration = Duration::from_millis(500);
/// The most a download waits for ranged fetches in all.
const BUDGET: Duration = Duration::from_secs(2);

/// The ranged fetches under way, and until when the download waits for them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Ranges {
    active: usize,
    until: Option<Instant>,
}

pub(super) fn channel() -> watch::Sender<Ranges> {
    watch::Sender::new(Ranges::default())
}

/// Held while a ranged fetch runs.
pub(super) struct Priority<'a>(&'a watch::Sender<Ranges>);

/// Gives a ranged fetch the lead over the download (until the `Priority` is dropped, at most
/// `HOLD`).
pub(super) fn take(ranges: &watch::Sender<Ranges>) -> Priority<'_> {
    let until = Instant::now() + HOLD;
    ranges.send_modify(|r| {
        r.active += 1;
        r.until = Some(r.until.map_or(until, |u| u.max(until)));
    });
    Priority(ranges)
}

impl Drop for Priority<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|r| r.active -= 1);
    }
}

/// The download's side: it asks before each read whether a ranged fetch has the lead.
pub(super) struct Yielding {
    ranges: watch::Receiver<Ranges>,
    /// What is left of `BUDGET`.
    left: Duration,
}

impl Yielding {
    pub(super) fn new(ranges: &watch::Sender<Ranges>) -> Yielding {
        Yielding {
            ranges: ranges.subscribe(),
            left: BUDGET,
        }
    }

    /// Waits while a ranged fetch has the lead, within what is left of the budget.
    pub(super) async fn wait(&mut self) {
        let began = Instant::now();
        let stop = began + self.left;
        loop {
            let r = *self.ranges.borrow_and_update();
            let Some(until) = r.until.filter(|u| r.active > 0 && Instant::now() < *u) else {
                break;
            };
            tokio::select! {
                changed = self.ranges.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(until.min(stop)) => break,
            }
        }
        self.left = self.left.saturating_sub(began.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_download_waits_for_a_range_at_most_hold_and_budget_in_all() {
        let tx = channel();
        let mut download = Yielding::new(&tx);
        let started = Instant::now();
        download.wait().await;
        assert_eq!(started.elapsed(), Duration::ZERO, "no range: no wait");

        let priority = take(&tx);
        let waiter = tokio::spawn(async move {
            download.wait().await;
            (Instant::now() - started, download)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(priority);
        let (waited, mut download) = waiter.await.unwrap();
        assert_eq!(waited, Duration::from_millis(100), "until the range ended");

        let _long = take(&tx);
        let started = Instant::now();
        download.wait().await;
        assert_eq!(
            started.elapsed(),
            HOLD,
            "a long range holds the download for HOLD at most"
        );

        // Range after range: the download waits BUDGET in all, then not at all.
        let mut waited = Duration::from_millis(100) + HOLD;
        for _ in 0..10 {
            let _next = take(&tx);
            let started = Instant::now();
            download.wait().await;
            waited += started.elapsed();
        }
        assert_eq!(waited, BUDGET);
        let _more = take(&tx);
        let started = Instant::now();
        download.wait().await;
        assert_eq!(started.elapsed(), Duration::ZERO, "the budget is spent");
    }
}
