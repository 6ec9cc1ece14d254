//! The accept loop both listeners share, and the HTTP settings of every connection they serve.
//!
//! A listener serves at most `max_connections` connections at once: the loop takes a place (a
//! semaphore permit, held by the connection's task until it ends) before it accepts, so one
//! connection more waits in the kernel's backlog until another closes, and a flood of
//! connections cannot take every file descriptor the cache and the upstreams need. A failed
//! `accept` pauses the loop with a growing back-off (`accept/backoff.rs`) instead of spinning.
//!
//! Every connection gets its deadlines from `http_builder`: a request head must arrive within
//! `idle_timeout` (hyper starts that clock again when a keep-alive connection goes idle, so an
//! idle HTTP/1.1 connection is closed after it as well), and an HTTP/2 connection is pinged every
//! `idle_timeout` and closed when a ping goes unanswered for as long. The first request must come
//! within `idle_timeout` too (`accept/first_request.rs`), which hyper alone does not enforce.
//!
//! On shutdown the loop stops accepting, asks open connections to finish (HTTP/1.1 after the
//! response under way, HTTP/2 with a GOAWAY) and closes whatever is still open at the deadline
//! it was given, so a listener never outlives the daemon's one shutdown deadline.

mod backoff;
mod first_request;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use backoff::Backoff;
pub(super) use first_request::FirstRequest;

/// The admin listener's cap: scrapes, probes and operator commands, never a crowd.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// How a listener treats its client connections (from the top-level config keys).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once; one more waits until one closes.
    pub max_connections: usize,
    /// Deadline of a request head (an idle keep-alive connection's too); HTTP/2 ping interval
    /// and the time a ping has to be answered.
    pub idle_timeout: Duration,
    /// Plain-TCP connections send cached blobs with sendfile (`splice.rs`).
    pub sendfile: bool,
}

/// The most a connection buffers, each way: a request head must fit, and a response body is not
/// asked for more while this much waits for the client (hyper's default is about 400 KiB, which
/// a thousand slow clients turn into 400 MB). nginx's own request head limit is 4 x 8 KiB.
const CONNECTION_BUFFER: usize = 32 * 1024;

/// The HTTP/1.1 and HTTP/2 connection builder both listeners use.
pub(super) fn http_builder(idle_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper enforces these only with a timer.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .max_buf_size(CONNECTION_BUFFER)
        // Body frames are written by reference, never copied into hyper's buffer: the sendfile
        // stand-ins of `splice.rs` depend on it.
        .writev(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle_timeout)
        .keep_alive_timeout(idle_timeout);
    builder
}

/// A connection the loop accepted, with the watcher that tells it when to finish.
pub(super) struct Accepted {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) watcher: Watcher,
}

/// Resolves to the shutdown deadline once `stop` carries one (at once if its sender is gone).
pub(super) async fn deadline(mut stop: watch::Receiver<Option<Instant>>) -> Instant {
    loop {
        if let Some(deadline) = *stop.borrow_and_update() {
            return deadline;
        }
        if stop.changed().await.is_err() {
            return Instant::now();
        }
    }
}

/// Accepts connections on `listener` (called `name` in logs), at most `max_connections` served at
/// once, each served by the task `serve` makes of it, until `stop` resolves to the deadline;
/// then drains open connections until that deadline and closes the rest.
pub(super) async fn accept_loop<F, C>(
    name: &'static str,
    listener: TcpListener,
    max_connections: usize,
    stop: impl Future<Output = Instant>,
    mut serve: F,
) where
    F: FnMut(Accepted) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    let places = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new(name);
    let mut at_cap = false;
    tokio::pin!(stop);
    let deadline = loop {
        // Finished connections, collected as we go so the set stays as small as the cap.
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            deadline = &mut stop => break deadline,
            (stream, peer, place) = next(&listener, &places, &mut backoff, &mut at_cap) => {
                let _ = stream.set_nodelay(true);
                let conn = serve(Accepted { stream, peer, watcher: graceful.watcher() });
                tasks.spawn(async move {
                    conn.await;
                    drop(place);
                });
            }
        }
    };
    drop(listener);
    let drain = async {
        graceful.shutdown().await;
        while tasks.join_next().await.is_some() {}
    };
    match tokio::time::timeout_at(deadline, drain).await {
        Ok(()) => tracing::info!(listener = name, "all connections closed"),
        Err(_) => tracing::warn!(
            listener = name,
            open = tasks.len(),
            "shutdown deadline reached; closing the remaining connections"
        ),
    }
    tasks.shutdown().await;
}

/// Waits for a free place, then for a connection to fill it. Running out of places is logged
/// once per episode (`at_cap`: until a place is free at once again).
async fn next(
    listener: &TcpListener,
    places: &Arc<Semaphore>,
    backoff: &mut Backoff,
    at_cap: &mut bool,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let free = places.clone().try_acquire_owned().ok();
    if free.is_none() && !*at_cap {
        tracing::warn!(
            listener = backoff.listener(),
            "connection cap reached; new connections wait until one closes"
        );
    }
    *at_cap = free.is_none();
    let place = match free {
        Some(p) => p,
        None => match places.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => unreachable!("the listener's semaphore is never closed"),
        },
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff.succeeded();
                return (stream, peer, place);
            }
            Err(e) => {
                if let Some(pause) = backoff.failed(&e) {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}
