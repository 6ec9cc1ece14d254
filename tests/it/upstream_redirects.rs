//! Where an upstream may redirect regcache: its own origin always; other hosts only over https
//! to public addresses, or when listed in `redirect_hosts`; link-local (metadata) addresses
//! never. The fake upstream on 127.0.0.1 redirects blobs to a small listener on 127.0.0.77 that
//! counts connections, so a refused redirect is seen to connect nowhere. Loopback only: the
//! metadata address appears in a `Location` header and is never connected to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::daemon::{DaemonBuilder, Upstream};
use crate::support::fake::{bytes_of, Fake};

/// A blob store on another loopback address: answers every request with `body`, counting the
/// connections it accepts.
struct BlobHost {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl BlobHost {
    async fn start(ip: &str, body: Vec<u8>) -> BlobHost {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let body = Arc::new(body);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    // One request per connection is enough: read the head, answer, close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        BlobHost { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

const REFUSED: &str = "regcache_upstream_redirects_refused_total";

#[tokio::test]
async fn a_private_blob_host_is_reached_only_when_listed() {
    let up = Fake::start().await;
    let layer = bytes_of(40_000, 77);
    let (_, _, layers) = up.add_image("library/app", "1", std::slice::from_ref(&layer));
    let blobs = BlobHost::start("127.0.0.77", layer.clone()).await;
    up.redirect_blobs_to(&format!("http://{}", blobs.addr));
    let path = format!("/v2/library/app/blobs/{}", layers[0]);

    let plain = DaemonBuilder::new().upstream(&up).start().await;
    let r = plain.get(&path).await;
    assert_eq!(r.status, 502);
    let m = r.error_message();
    assert!(
        m.contains(&format!("refusing a redirect to http://{}", blobs.addr)),
        "{m}"
    );
    assert!(
        !m.contains("/storage/"),
        "the target's path stays out of the message: {m}"
    );
    assert_eq!(blobs.connections(), 0, "the unlisted host was contacted");
    assert_eq!(plain.metric(REFUSED, &[("upstream", "docker.io")]).await, 1.0);

    let listed = DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", &up)
                .default_upstream()
                .redirect_hosts(&["127.0.0.77".into()]),
        )
        .start()
        .await;
    let r = listed.get(&path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), layer);
    assert_eq!(blobs.connections(), 1);
    // Kept after its digest was checked: served again from disk.
    assert_eq!(listed.get(&path).await.bytes(), layer);
    assert_eq!(blobs.connections(), 1);
    assert_eq!(listed.metric(REFUSED, &[("upstream", "docker.io")]).await, 0.0);
}

#[tokio::test]
async fn a_wrong_blob_from_a_listed_host_is_not_kept() {
    let up = Fake::start().await;
    let (_, _, layers) = up.add_image("library/app", "1", &[bytes_of(10_000, 7)]);
    let blobs = BlobHost::start("127.0.0.77", bytes_of(10_000, 8)).await;
    up.redirect_blobs_to(&format!("http://{}", blobs.addr));
    let d = DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", &up)
                .default_upstream()
                .redirect_hosts(&[blobs.addr.to_string()]),
        )
        .start()
        .await;
    let path = format!("/v2/library/app/blobs/{}", layers[0]);
    for attempt in 1..=2 {
        let r = d.get(&path).await;
        assert!(
            r.status != 200 || r.body.is_err(),
            "a wrong blob was served whole"
        );
        // Not kept: the second request goes to the blob host again.
        assert_eq!(blobs.connections(), attempt);
    }
}

#[tokio::test]
async fn metadata_addresses_are_refused_without_connecting() {
    let up = Fake::start().await;
    let (_, _, layers) = up.add_image("library/app", "1", &[bytes_of(1_000, 3)]);
    let d = DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", &up)
                .default_upstream()
                .redirect_hosts(&["127.0.0.77".into()]),
        )
        .read_timeout("30s")
        .start()
        .await;
    let path = format!("/v2/library/app/blobs/{}", layers[0]);
    for target in [
        "http://169.254.169.254",
        "https://[fe80::1]",
        "http://[::ffff:169.254.169.254]",
    ] {
        up.redirect_blobs_to(target);
        let started = Instant::now();
        let r = d.get(&path).await;
        assert_eq!(r.status, 502);
        let m = r.error_message();
        assert!(m.contains("never followed on a redirect"), "{target}: {m}");
        assert!(m.contains(&format!("refusing a redirect to {target}")), "{m}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{target}: took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(d.metric(REFUSED, &[("upstream", "docker.io")]).await, 3.0);
}

#[tokio::test]
async fn names_are_judged_by_the_addresses_they_resolve_to() {
    // `localhost` is a name, not a literal: the redirect client resolves it, finds loopback
    // and refuses before connecting.
    let up = Fake::start().await;
    let layer = bytes_of(5_000, 5);
    let (_, _, layers) = up.add_image("library/app", "1", std::slice::from_ref(&layer));
    let blobs = BlobHost::start("127.0.0.1", layer).await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    up.redirect_blobs_to(&format!("https://localhost:{}", blobs.addr.port()));
    let r = d.get(&format!("/v2/library/app/blobs/{}", layers[0])).await;
    assert_eq!(r.status, 502);
    let m = r.error_message();
    assert!(m.contains("localhost resolves to"), "{m}");
    assert!(m.contains("not in redirect_hosts"), "{m}");
    assert_eq!(blobs.connections(), 0);
}
