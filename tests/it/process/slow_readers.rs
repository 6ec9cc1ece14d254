//! Many slow readers of a cached blob cost the daemon no thread each: 300 connections that read
//! a little of a cached 8 MiB blob and then stall leave the process with a bounded number of
//! threads (the blocking pool is capped and a cached blob is read as the connection asks),
//! and a normal pull beside them gets every byte.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{get, spawn};
use crate::support::fake::{bytes_of, Fake};

const READERS: usize = 300;

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens a connection, asks for `path` and reads a first piece of the answer, then holds it.
async fn stalled_reader(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: mirror\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(n > 0 && buf.starts_with(b"HTTP/1.1 200"), "answered");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_hold_no_thread_each() {
    let up = Fake::start().await;
    let blob = bytes_of(8 * 1024 * 1024, 21);
    let digest = up.add_blob("library/big", blob.clone());
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path(), &up.url(), "5s").await;
    let path = format!("/v2/library/big/blobs/{digest}");
    assert_eq!(get(p.port, &path).await.unwrap(), blob, "cached");

    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(stalled_reader(p.port, &path).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = threads(p.child.id());
    assert!(
        during <= 64,
        "{during} threads with {READERS} stalled readers (one per reader would be over {READERS})"
    );
    assert_eq!(
        get(p.port, &path).await.unwrap(),
        blob,
        "a normal pull beside them"
    );
    drop(readers);
}
