//! A loopback TCP relay whose server-to-client direction can be slowed to a set rate, so a test
//! can make a download last long enough to interrupt it. It counts the connections it accepted.
//! Dropping it stops accepting and ends every relayed connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The unit the slowed direction is paced in.
const SLICE: usize = 64 << 10;

/// A running relay from a loopback port to `target`.
pub struct Throttle {
    addr: SocketAddr,
    /// Bytes per second from the target to the client; 0: as fast as it goes.
    rate: Arc<AtomicU64>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Throttle {
    pub async fn start(target: SocketAddr) -> std::io::Result<Throttle> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let rate = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (r, a) = (rate.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                connections.spawn(relay(client, target, r.clone()));
            }
        });
        Ok(Throttle {
            addr,
            rate,
            accepted,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Slows the target-to-client direction to `bytes_per_second` (0: no limit).
    pub fn set_rate(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every relay.
        self.task.abort();
    }
}

async fn relay(client: TcpStream, target: SocketAddr, rate: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; SLICE];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            let bytes_per_second = rate.load(Ordering::SeqCst);
            if bytes_per_second > 0 {
                let pause = n as f64 / bytes_per_second as f64;
                tokio::time::sleep(Duration::from_secs_f64(pause)).await;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
