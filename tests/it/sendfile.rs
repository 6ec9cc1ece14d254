//! Cached blobs on plain HTTP/1.1 go out with sendfile (`splice.rs`): the bytes must be the
//! file's, whole and by range, back to back with other responses on one keep-alive connection,
//! and with requests pipelined; `sendfile = false` serves the same bytes by reading the file.
//! `regcache_sendfile_bytes_total` tells which way they went.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::daemon::{Daemon, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake};

/// More than two sendfile segments of 2 MiB, and not a multiple of a page.
const SIZE: usize = 5 * 1024 * 1024 + 3;

/// One response read off a raw connection: status and body (by its Content-Length).
async fn read_response(conn: &mut BufReader<TcpStream>) -> (u16, Vec<u8>) {
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status: u16 = line.split(' ').nth(1).expect("a status line").parse().unwrap();
    let mut length = 0;
    loop {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await.unwrap();
    (status, body)
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: mirror\r\n{extra}\r\n")
}

/// Warms the blob, then asks for it in several forms on one connection, pipelined: each
/// response must carry exactly its bytes. Returns the bytes of the cached blob it was sent.
async fn serves_exact_bytes(d: &Daemon, blob: &[u8], digest: &str, manifest: &[u8]) -> u64 {
    let path = format!("/v2/library/sent/blobs/{digest}");
    assert_eq!(d.get(&path).await.bytes(), blob, "the cold pull");
    d.download_settled(digest).await;

    let mut conn = BufReader::new(TcpStream::connect(d.addr).await.unwrap());
    let requests = [
        get(&path, ""),
        get(
            "/v2/library/sent/manifests/v1",
            "Accept: application/vnd.oci.image.manifest.v1+json\r\n",
        ),
        get(&path, "Range: bytes=4095-3000000\r\n"),
        get(&path, "Range: bytes=-10\r\n"),
        get("/v2/", ""),
        get(&path, ""),
    ];
    conn.get_mut()
        .write_all(requests.concat().as_bytes())
        .await
        .unwrap();
    let mut answers = Vec::new();
    for _ in &requests {
        answers.push(read_response(&mut conn).await);
    }
    assert_eq!(answers[0].0, 200);
    assert!(answers[0].1 == blob, "the whole blob differs");
    assert_eq!((answers[1].0, answers[1].1.as_slice()), (200, manifest));
    assert_eq!(answers[2].0, 206);
    assert!(answers[2].1 == blob[4095..=3_000_000], "the range differs");
    assert_eq!((answers[3].0, answers[3].1.as_slice()), (206, &blob[SIZE - 10..]));
    assert_eq!((answers[4].0, answers[4].1.as_slice()), (200, &b"{}"[..]));
    assert!(answers[5].1 == blob, "the blob again differs");

    // One request at a time on the same connection, as clients do.
    for range in ["bytes=0-0", "bytes=2097151-2097152", "bytes=0-"] {
        let req = get(&path, &format!("Range: {range}\r\n"));
        conn.get_mut().write_all(req.as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut conn).await;
        let (start, end) = match range.trim_start_matches("bytes=").split_once('-').unwrap() {
            (s, "") => (s.parse::<usize>().unwrap(), SIZE - 1),
            (s, e) => (s.parse().unwrap(), e.parse().unwrap()),
        };
        assert_eq!(status, 206, "{range}");
        assert!(body == blob[start..=end], "{range} differs");
    }
    let ranges = (3_000_000 - 4095 + 1) + 10 + 1 + 2 + SIZE;
    (2 * SIZE + ranges) as u64
}

async fn sent_by_sendfile(d: &Daemon) -> u64 {
    d.metric("regcache_sendfile_bytes_total", &[]).await as u64
}

async fn upstream() -> (Fake, Vec<u8>, String, Vec<u8>) {
    let up = Fake::start().await;
    let blob = bytes_of(SIZE, 41);
    let (_, manifest, layers) = up.add_image("library/sent", "v1", std::slice::from_ref(&blob));
    (up, blob, layers[0].clone(), manifest.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_blobs_sent_with_sendfile_are_exact_among_other_responses() {
    let (up, blob, digest, manifest) = upstream().await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let cached = serves_exact_bytes(&d, &blob, &digest, &manifest).await;
    assert_eq!(
        sent_by_sendfile(&d).await,
        cached,
        "every cached byte went by sendfile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sendfile_off_the_same_bytes_are_read_and_written() {
    let (up, blob, digest, manifest) = upstream().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .toml_entry("sendfile", false)
        .start()
        .await;
    serves_exact_bytes(&d, &blob, &digest, &manifest).await;
    assert_eq!(sent_by_sendfile(&d).await, 0);
}
