//! Pushes to the mirror get their 405 `UNSUPPORTED` as an answer the client can read: the body is
//! read (up to a bound) before the answer, so a client that writes a whole 4 MiB manifest before
//! reading sees the 405, not a broken pipe; a body over the bound is not read on.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::daemon::DaemonBuilder;
use crate::support::fake::Fake;

const LIMIT: Duration = Duration::from_secs(20);

/// Reads one HTTP/1.1 response with a `Content-Length` body: (head, body).
async fn read_response(rd: &mut (impl AsyncReadExt + Unpin)) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if got.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
                return (head, body);
            }
        }
        let n = rd.read(&mut buf).await.expect("the answer arrives whole");
        assert!(
            n > 0,
            "closed before a whole answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_mib_manifest_push_reads_its_405() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    let len = 4 << 20;
    let head = format!(
        "PUT /v2/x/manifests/latest HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {len}\r\n\r\n",
        d.addr
    );
    // Like a Go client: the whole body first, then the answer.
    let sent = async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(&vec![b'{'; len]).await?;
        s.flush().await
    };
    tokio::time::timeout(LIMIT, sent)
        .await
        .expect("the body is taken in time")
        .expect("no broken pipe while sending the body");
    let (head, body) = tokio::time::timeout(LIMIT, read_response(&mut s))
        .await
        .expect("answered in time");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("OCI error JSON");
    assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{body}");
    // The connection stays usable: the body was read to its end.
    let get = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", d.addr);
    s.write_all(get.as_bytes()).await.unwrap();
    let (head, _) = tokio::time::timeout(LIMIT, read_response(&mut s)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Sends `head` then up to `body_len` bytes while reading the answer; returns (what was read,
/// bytes of the body written before the server stopped taking them).
async fn push_long(addr: std::net::SocketAddr, head: String, body_len: u64) -> (String, u64) {
    let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let writer = tokio::spawn(async move {
        let mut written = 0u64;
        if wr.write_all(head.as_bytes()).await.is_err() {
            return written;
        }
        let chunk = vec![b'x'; 64 * 1024];
        while written < body_len {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            written += chunk.len() as u64;
        }
        written
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout(LIMIT, rd.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    drop(rd);
    let written = tokio::time::timeout(LIMIT, writer)
        .await
        .expect("the server stops taking the body")
        .unwrap();
    (String::from_utf8_lossy(&got).into_owned(), written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_bound_is_not_read_on() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let huge: u64 = 256 << 20;
    for head in [
        format!("PUT /v2/x/blobs/uploads/1 HTTP/1.1\r\nHost: h\r\nContent-Length: {huge}\r\n\r\n"),
        "PATCH /v2/x/blobs/uploads/1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1000000\r\n"
            .into(),
    ] {
        let (answer, written) = push_long(d.addr, head.clone(), huge).await;
        // An answer, or a close if the reset overtook it; a server that neither answers nor
        // stops taking the body fails push_long's deadline on the writer.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 405"),
            "{head}: {answer}"
        );
        assert!(written < 64 << 20, "{head}: regcache took {written} bytes");
    }
}
