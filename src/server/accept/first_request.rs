//! A connection must bring its first request within `idle_timeout` of being accepted (or of its
//! TLS handshake). hyper's deadline for a request head starts only once hyper-util's auto
//! builder has read enough bytes to tell HTTP/1.1 from HTTP/2, and that first read has no
//! deadline of its own: a client that connects and sends nothing, half an HTTP/2 preface, or a
//! preface and no request would otherwise hold its connection, and its place under the cap,
//! forever. After the first request hyper's own deadlines take over (the head deadline for an
//! idle HTTP/1.1 connection, keep-alive pings for HTTP/2).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Told by the connection's service of each request; watched until the first one.
#[derive(Clone, Default)]
pub(crate) struct FirstRequest(Arc<Notify>);

impl FirstRequest {
    /// A request arrived on the connection (cheap: every request says so).
    pub(crate) fn arrived(&self) {
        self.0.notify_one();
    }

    /// Runs `conn` to its end, or drops it (None) when no request arrived within `timeout`.
    pub(crate) async fn within<F: Future>(&self, timeout: Duration, conn: F) -> Option<F::Output> {
        tokio::pin!(conn);
        let first = async {
            tokio::select! {
                done = &mut conn => Some(done),
                _ = self.0.notified() => None,
            }
        };
        match tokio::time::timeout(timeout, first).await {
            Err(_) => {
                tracing::debug!(?timeout, "no request on a new connection; closing it");
                None
            }
            Ok(Some(done)) => Some(done),
            Ok(None) => Some(conn.await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_dropped_at_the_deadline() {
        let first = FirstRequest::default();
        let silent = std::future::pending::<()>();
        assert_eq!(first.within(Duration::from_secs(30), silent).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_first_request_the_connection_runs_to_its_end() {
        let first = FirstRequest::default();
        let told = first.clone();
        let conn = async move {
            told.arrived();
            tokio::time::sleep(Duration::from_secs(300)).await;
            "done"
        };
        assert_eq!(first.within(Duration::from_secs(30), conn).await, Some("done"));
    }
}
