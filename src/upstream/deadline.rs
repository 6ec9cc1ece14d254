//! How long an upstream has to answer: `header_timeout` counted from the moment the request had
//! a connection, so a registry that accepts at once and never answers fails after
//! `header_timeout`, not after `connect_timeout + header_timeout`. The client's connector is
//! wrapped (`Marked`) to note, in a task-local slot of the waiting request, when it started to
//! connect and when it had a connection (TCP and TLS both done). A request on a pooled
//! connection never connects, so its deadline is `header_timeout` from the start; one that
//! connects gets at most `connect_timeout` for that on top.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use tokio::time::Instant;

/// The phases of one request's connection, as its connector saw them.
#[derive(Default, Clone, Copy)]
struct Phases {
    connecting: Option<Instant>,
    connected: Option<Instant>,
}

tokio::task_local! {
    static PHASES: Cell<Phases>;
}

fn note(update: impl FnOnce(&mut Phases)) {
    // Outside a deadline's scope (a connect finishing in the background) there is no one to tell.
    let _ = PHASES.try_with(|cell| {
        let mut p = cell.get();
        update(&mut p);
        cell.set(p);
    });
}

/// The answer deadline of an upstream's requests.
#[derive(Debug, Clone, Copy)]
pub(super) struct AnswerDeadline {
    pub(super) connect: Duration,
    pub(super) header: Duration,
}

impl AnswerDeadline {
    /// The most a request can take: a full connect, then the header wait.
    pub(super) fn total(&self) -> Duration {
        self.connect + self.header
    }

    /// Runs `request` (one client request, its connect included) until it answers; `None`
    /// when it did not answer within the deadline.
    pub(super) async fn within<F: Future>(&self, request: F) -> Option<F::Output> {
        let start = Instant::now();
        PHASES
            .scope(Cell::new(Phases::default()), async {
                let mut request = std::pin::pin!(request);
                let mut until = start + self.header;
                loop {
                    tokio::select! {
                        out = &mut request => return Some(out),
                        _ = tokio::time::sleep_until(until) => {}
                    }
                    let phases = PHASES.with(Cell::get);
                    let later = match phases {
                        Phases {
                            connected: Some(at), ..
                        } => at + self.header,
                        // Still connecting: look again a header wait later (the connect ends
                        // by then, or its own timeout fails it), never past the total.
                        Phases {
                            connecting: Some(at), ..
                        } => (at + self.total()).min(until + self.header),
                        _ => until,
                    };
                    if later <= until {
                        return None;
                    }
                    until = later;
                }
            })
            .await
    }
}

/// A connector that tells the waiting request when it connects (see the module doc).
#[derive(Clone)]
pub(super) struct Marked<C>(pub(super) C);

impl<C> tower_service::Service<Uri> for Marked<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            note(|p| p.connecting = Some(Instant::now()));
            let out = connecting.await;
            if out.is_ok() {
                note(|p| p.connected = Some(Instant::now()));
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: AnswerDeadline = AnswerDeadline {
        connect: Duration::from_secs(10),
        header: Duration::from_secs(3),
    };

    async fn took(request: impl Future<Output = ()>) -> (bool, Duration) {
        let start = Instant::now();
        let answered = D.within(request).await.is_some();
        (answered, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_a_connect_has_the_header_timeout() {
        let (answered, t) = took(std::future::pending()).await;
        assert_eq!((answered, t), (false, Duration::from_secs(3)));
        let (answered, t) = took(tokio::time::sleep(Duration::from_secs(2))).await;
        assert_eq!((answered, t), (true, Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_timeout_counts_from_the_connection() {
        let slow_connect_then_silence = async {
            note(|p| p.connecting = Some(Instant::now()));
            tokio::time::sleep(Duration::from_secs(5)).await;
            note(|p| p.connected = Some(Instant::now()));
            std::future::pending::<()>().await
        };
        let (answered, t) = took(slow_connect_then_silence).await;
        assert_eq!(
            (answered, t),
            (false, Duration::from_secs(8)),
            "5 s to connect + 3 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_that_never_ends_is_bounded_by_both() {
        let hung_connect = async {
            note(|p| p.connecting = Some(Instant::now()));
            std::future::pending::<()>().await
        };
        let (answered, t) = took(hung_connect).await;
        assert_eq!((answered, t), (false, Duration::from_secs(13)));
    }
}
