//! What the accept loop does when `accept` fails. An error that belongs to one connection (it
//! was reset or aborted before we took it) costs nothing: the loop goes on at once. Anything else,
//! above all running out of file descriptors (EMFILE, ENFILE) or kernel memory, will fail again
//! straight away, so the loop pauses, 10 ms at first and twice as long each time up to 1 s, and
//! says so once per burst at warn (the rest at debug); the first accepted connection ends the
//! burst, resets the pause and logs how many accepts failed.

use std::io;
use std::time::Duration;

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The back-off state of one listener's accept loop.
pub(super) struct Backoff {
    listener: &'static str,
    next_pause: Duration,
    /// Failed accepts since the last one that worked.
    failures: u64,
}

impl Backoff {
    pub(super) fn new(listener: &'static str) -> Backoff {
        Backoff {
            listener,
            next_pause: FIRST_PAUSE,
            failures: 0,
        }
    }

    /// The listener's name, for logs.
    pub(super) fn listener(&self) -> &'static str {
        self.listener
    }

    /// After a failed accept: how long to pause before the next one (None: go on at once).
    pub(super) fn failed(&mut self, e: &io::Error) -> Option<Duration> {
        if one_connection(e) {
            tracing::debug!(listener = self.listener, error = %e, "a connection failed before it was accepted");
            return None;
        }
        self.failures += 1;
        let pause = self.next_pause;
        self.next_pause = (pause * 2).min(MAX_PAUSE);
        if self.failures == 1 {
            tracing::warn!(listener = self.listener, error = %e, "accept failed; pausing new connections (up to 1 s at a time) until it works again");
        } else {
            tracing::debug!(listener = self.listener, error = %e, ?pause, "accept failed again");
        }
        Some(pause)
    }

    /// After an accepted connection: the burst, if any, is over.
    pub(super) fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                listener = self.listener,
                failed = self.failures,
                "accepting connections again"
            );
        }
        self.failures = 0;
        self.next_pause = FIRST_PAUSE;
    }
}

/// An error of the one connection being accepted, not of the listener.
fn one_connection(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted
            | ConnectionReset
            | Interrupted
            | PermissionDenied
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMFILE: i32 = 24;

    #[test]
    fn descriptor_exhaustion_pauses_longer_each_time_up_to_a_second() {
        let mut b = Backoff::new("test");
        let emfile = io::Error::from_raw_os_error(EMFILE);
        let pauses: Vec<Duration> = (0..10).map(|_| b.failed(&emfile).unwrap()).collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(pauses[9], MAX_PAUSE);
        b.succeeded();
        assert_eq!(b.failed(&emfile), Some(FIRST_PAUSE), "a success resets the pause");
    }

    #[test]
    fn a_connection_reset_before_accept_does_not_pause() {
        let mut b = Backoff::new("test");
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(b.failed(&reset), None);
        assert_eq!(b.failures, 0);
    }
}
