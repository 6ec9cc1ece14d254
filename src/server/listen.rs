//! The registry listener: plain HTTP or TLS, HTTP/1.1 and HTTP/2, on the accept loop both
//! listeners share (`accept.rs`: connection cap, accept back-off, header and idle timeouts,
//! drain to the shutdown deadline). The TLS handshake runs in the connection's task under a
//! timeout, so a client that connects and sends nothing holds nothing for long, and a failed
//! handshake (logged at debug) never touches the loop. The client a connection authenticated as
//! (its verified certificate) goes into every request's extensions as a `registry::Client`.
//! A plain-TCP connection is a `SpliceStream`, and its HTTP/1.x requests carry its `Splice`
//! handle, so cached blobs go out with sendfile (`splice.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::accept::{self, Accepted, ConnLimits, FirstRequest};
use super::authn::Peer;
use super::tls::{peer_identity, Tls};
use super::{handle, State};
use crate::registry::Client;
use crate::splice::{Splice, SpliceStream};

/// How long a TLS client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the registry API until `stop` carries the shutdown deadline, then lets open
/// connections finish their requests until that deadline. With `tls`, every connection is a TLS
/// one.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<Arc<Tls>>,
    limits: ConnLimits,
    stop: watch::Receiver<Option<Instant>>,
) {
    let builder = accept::http_builder(limits.idle_timeout);
    let serve = move |accepted: Accepted| {
        let Accepted {
            stream,
            peer,
            watcher,
        } = accepted;
        let conn = Conn {
            peer,
            state: state.clone(),
            builder: builder.clone(),
            watcher,
            idle_timeout: limits.idle_timeout,
        };
        let tls = tls.clone();
        let sendfile_bytes = state.metrics.request.sendfile_bytes.clone();
        async move {
            match tls {
                None => {
                    let stream = SpliceStream::new(stream, sendfile_bytes);
                    let splice = limits.sendfile.then(|| stream.handle());
                    conn.serve(TokioIo::new(stream), Client::anonymous(), false, splice)
                        .await
                }
                Some(tls) => conn.serve_tls(&tls, stream).await,
            }
        }
        .instrument(tracing::debug_span!("conn", peer = %peer))
    };
    let stop = accept::deadline(stop);
    accept::accept_loop("registry", listener, limits.max_connections, stop, serve).await
}

/// One accepted connection, before it is served.
struct Conn {
    peer: SocketAddr,
    state: Arc<State>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    idle_timeout: Duration,
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
        self.serve(TokioIo::new(stream), client, true, None).await
    }

    /// Serves the connection; `splice` is a plain one's sendfile handle (unless sendfile is off).
    async fn serve<I>(self, io: I, client: Client, tls: bool, splice: Option<Splice>)
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
        let first = FirstRequest::default();
        let arrived = first.clone();
        let svc = service_fn(move |mut req: Request<Incoming>| {
            arrived.arrived();
            let state = state.clone();
            req.extensions_mut().insert(client.clone());
            req.extensions_mut().insert(peer);
            if let Some(splice) = splice.as_ref().filter(|_| req.version() < http::Version::HTTP_2) {
                req.extensions_mut().insert(splice.clone());
            }
            let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
            async move { Ok::<_, Infallible>(handle(state, req).await) }.instrument(span)
        });
        let conn = self
            .watcher
            .watch(self.builder.serve_connection(io, svc).into_owned());
        if let Some(Err(e)) = first.within(self.idle_timeout, conn).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}
