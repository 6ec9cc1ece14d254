//! The registry listener's accept loop: plain HTTP or TLS, HTTP/1.1 and HTTP/2 through
//! hyper-util's auto builder, one task per connection, and a graceful drain on shutdown. The TLS
//! handshake runs in the connection's task under a timeout, so a client that connects and sends
//! nothing holds nothing for long, and a failed handshake (logged at debug) never touches the
//! loop. The client a connection authenticated as (its verified certificate) goes into every
//! request's extensions as a `registry::Client`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use super::authn::Peer;
use super::tls::{peer_identity, Tls};
use super::{handle, State};
use crate::registry::Client;

/// How long a client may take to send a request head (also how long an idle HTTP/1.1
/// keep-alive connection stays open).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a connection buffers, each way: a request head must fit, and a response body is not
/// asked for more while this much waits for the client (hyper's default is about 400 KiB, which
/// a thousand slow clients turn into 400 MB). nginx's own request head limit is 4 x 8 KiB.
const CONNECTION_BUFFER: usize = 32 * 1024;

/// How long a TLS client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` turns true, then lets open connections finish their
/// requests (up to `grace`). With `tls`, every connection is a TLS one.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that opens a connection and sends half a request head does not hold it forever
    // (hyper enforces the head's deadline only with a timer).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(CONNECTION_BUFFER);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            peer,
            state: state.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
        };
        let tls = tls.clone();
        tokio::spawn(
            async move {
                match tls {
                    None => conn.serve(TokioIo::new(stream), Client::anonymous(), false).await,
                    Some(tls) => conn.serve_tls(&tls, stream).await,
                }
            }
            .instrument(tracing::debug_span!("conn", peer = %peer)),
        );
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "shutdown grace period over; closing remaining connections"),
    }
}

/// One accepted connection, before it is served.
struct Conn {
    peer: SocketAddr,
    state: Arc<State>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
}

impl Conn {
    async fn serve_tls(self, tls: &Tls, stream: TcpStream) {
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!(timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out"),
        };
        let client = Client {
            identity: peer_identity(stream.get_ref().1),
        };
        self.serve(TokioIo::new(stream), client, true).await
    }

    async fn serve<I>(self, io: I, client: Client, tls: bool)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (state, peer) = (
            self.state,
            Peer {
                ip: self.peer.ip(),
                tls,
            },
        );
        let svc = service_fn(move |mut req: Request<Incoming>| {
            let state = state.clone();
            req.extensions_mut().insert(client.clone());
            req.extensions_mut().insert(peer);
            let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
            async move { Ok::<_, Infallible>(handle(state, req).await) }.instrument(span)
        });
        let conn = self.builder.serve_connection(io, svc).into_owned();
        if let Err(e) = self.watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}
