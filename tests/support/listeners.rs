//! Upstreams that misbehave at the TCP level: one that accepts connections and never answers
//! (a black hole), counting what it accepted; `free_port`, a loopback port nothing listens on
//! (an upstream that refuses, or a port for a daemon to take); and `serve_each`, the accept loop
//! of the test proxies. Loopback only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct BlackHole {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl BlackHole {
    /// Accepts and holds every connection without reading or writing.
    pub async fn start() -> BlackHole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        BlackHole { addr, accepted }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Listens on a free loopback port and serves each connection with `serve` (given `state`) on a
/// task of its own; the address.
pub async fn serve_each<S, F, Fut>(state: Arc<S>, serve: F) -> SocketAddr
where
    S: Send + Sync + 'static,
    F: Fn(tokio::net::TcpStream, Arc<S>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(serve(client, state.clone()));
        }
    });
    addr
}

/// A loopback port nothing listens on (bound, then let go).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
