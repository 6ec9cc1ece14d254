//! Connections that hold: both listeners close a connection that sends no request head within
//! `idle_timeout` (a fresh one that sends nothing or half an HTTP/2 preface, an idle HTTP/1.1
//! keep-alive one, an HTTP/2 one whose client stops answering pings), and the registry listener serves at most `max_connections` at once, the
//! next one waiting until one closes and then served. Raw sockets, so nothing reconnects behind
//! the test's back.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::support::daemon::DaemonBuilder;
use crate::support::fake::Fake;

/// Far longer than any timeout under test: a connection still open after it is held.
const BOUND: Duration = Duration::from_secs(10);

/// Sends a keep-alive `GET path` and reads its answer (head and `Content-Length` body); returns
/// the status line.
async fn request(conn: &mut TcpStream, path: &str) -> String {
    let head = format!("GET {path} HTTP/1.1\r\nHost: regcache\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = timeout(BOUND, conn.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while got.len() < end + length {
        let n = timeout(BOUND, conn.read(&mut buf))
            .await
            .expect("the body")
            .unwrap();
        assert!(n > 0, "closed within the body");
        got.extend_from_slice(&buf[..n]);
    }
    head.lines().next().unwrap_or_default().to_string()
}

/// Reads until the server closes `conn` (bounded); returns how long that took.
async fn closed_by_server(conn: &mut TcpStream, what: &str) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    match timeout(BOUND, conn.read_to_end(&mut sink)).await {
        Ok(_) => started.elapsed(),
        Err(_) => panic!("{what}: still open after {BOUND:?}"),
    }
}

#[tokio::test]
async fn the_admin_listener_closes_idle_connections() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .idle_timeout("1s")
        .start()
        .await;

    let mut silent = TcpStream::connect(d.admin_addr).await.unwrap();
    let mut idle = TcpStream::connect(d.admin_addr).await.unwrap();
    assert_eq!(request(&mut idle, "/healthz").await, "http/1.1 200 ok");

    let waited = closed_by_server(&mut idle, "an idle keep-alive admin connection").await;
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}, before it was idle"
    );
    closed_by_server(&mut silent, "an admin connection that never sent a request").await;
    assert_eq!(
        d.admin("/healthz").await.status,
        200,
        "new connections are served"
    );
}

#[tokio::test]
async fn the_registry_listener_closes_silent_and_idle_connections() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .idle_timeout("1s")
        .start()
        .await;
    let mut silent = TcpStream::connect(d.addr).await.unwrap();
    // Half an HTTP/2 preface: not enough to tell the protocol, so hyper has not started a clock.
    let mut half = TcpStream::connect(d.addr).await.unwrap();
    half.write_all(&H2_PREFACE[..10]).await.unwrap();
    let mut idle = TcpStream::connect(d.addr).await.unwrap();
    assert_eq!(request(&mut idle, "/v2/").await, "http/1.1 200 ok");
    closed_by_server(&mut idle, "an idle keep-alive registry connection").await;
    closed_by_server(&mut silent, "a registry connection that never sent a byte").await;
    closed_by_server(&mut half, "a registry connection that sent half a preface").await;
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A HEADERS frame (stream 1, END_STREAM | END_HEADERS) for `GET http://regcache<path>`, HPACK
/// by hand: indexed `:method GET`, `:scheme http`, literal `:path` and `:authority`.
fn h2_get(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 8]);
    block.extend_from_slice(b"regcache");
    let mut frame = (block.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[0x01, 0x05, 0, 0, 0, 1]);
    frame.extend_from_slice(&block);
    frame
}

/// The frame types in `bytes`, a stream of whole HTTP/2 frames (a cut last frame is ignored).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

const PING: u8 = 0x06;

#[tokio::test]
async fn an_http2_client_that_stops_answering_pings_is_dropped() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .idle_timeout("1s")
        .start()
        .await;
    for (addr, path) in [(d.addr, "/v2/"), (d.admin_addr, "/healthz")] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(H2_PREFACE).await.unwrap();
        conn.write_all(&h2_get(path)).await.unwrap();
        // Then silence: the server's SETTINGS and pings are read, never acknowledged.
        let mut got = Vec::new();
        timeout(BOUND, conn.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| panic!("{addr}: an HTTP/2 connection that answers no ping is still open"))
            .unwrap();
        let types = frame_types(&got);
        assert!(
            types.contains(&0x01),
            "{addr}: the request was answered: {types:?}"
        );
        assert!(types.contains(&PING), "{addr}: closed after a ping: {types:?}");
    }
}

/// Opens a connection to `addr` and has one request answered on it.
async fn served(addr: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    assert_eq!(request(&mut conn, "/v2/").await, "http/1.1 200 ok");
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_cap_waits_for_a_place() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .max_connections(2)
        .start()
        .await;
    let first = served(d.addr).await;
    let _second = served(d.addr).await;

    let mut third = TcpStream::connect(d.addr).await.unwrap();
    let answer = tokio::spawn(async move { request(&mut third, "/v2/").await });
    // A negative check, bounded: the third connection has no place, so it gets no answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !answer.is_finished(),
        "the third connection was served past a cap of 2"
    );

    drop(first);
    let status = timeout(BOUND, answer).await.expect("served once a place is free");
    assert_eq!(status.unwrap(), "http/1.1 200 ok");
}
