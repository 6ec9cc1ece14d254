use std::io::Write;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A file holding `bytes` (also for the cache's file-body tests).
pub(crate) fn file_of(bytes: &[u8]) -> Arc<File> {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    Arc::new(f)
}

/// `len` bytes in a pattern that repeats every 251.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// A connected pair: the server's end as a `SpliceStream`, the client's as a plain stream.
async fn pair() -> (SpliceStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let sent = IntCounter::new("sent", "bytes sent with sendfile").unwrap();
    (SpliceStream::new(server, sent), client)
}

/// Writes `frames` the way hyper's vectored write queue does: all pending frames offered at
/// once, advanced by what each write reports.
async fn write_like_hyper(stream: &mut SpliceStream, mut frames: VecDeque<Bytes>) -> io::Result<()> {
    while !frames.is_empty() {
        let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let front = frames.front_mut().unwrap();
            let step = n.min(front.len());
            front.advance(step);
            n -= step;
            if front.is_empty() {
                frames.pop_front();
            }
        }
    }
    stream.flush().await
}

#[tokio::test]
async fn stand_ins_go_out_as_the_files_bytes_between_plain_bytes() {
    let bytes = pattern(5 * 1024 * 1024 + 3);
    let file = file_of(&bytes);
    let (mut server, mut client) = pair().await;
    let splice = server.handle();
    let frames = VecDeque::from([
        Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"),
        splice.queue(file.clone(), 0, SEGMENT_MAX),
        splice.queue(file.clone(), SEGMENT_MAX as u64, SEGMENT_MAX),
        Bytes::from_static(b"\r\n"),
        splice.queue(
            file.clone(),
            2 * SEGMENT_MAX as u64,
            bytes.len() - 2 * SEGMENT_MAX,
        ),
        splice.queue(file.clone(), 1, 10),
    ]);
    // A client that takes its time, so the socket fills and sends come back partial.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = client.read(&mut buf).await.unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() < 1024 * 1024 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    });
    write_like_hyper(&mut server, frames).await.unwrap();
    let splice_sent = server.sent.get();
    server.shutdown().await.unwrap();
    drop(server);
    let got = reader.await.unwrap();
    let by_sendfile = (bytes.len() + 10) as u64;
    assert_eq!(
        splice_sent, by_sendfile,
        "counted: the segments' bytes, not the plain ones"
    );
    let mut want = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    want.extend_from_slice(&bytes[..2 * SEGMENT_MAX]);
    want.extend_from_slice(b"\r\n");
    want.extend_from_slice(&bytes[2 * SEGMENT_MAX..]);
    want.extend_from_slice(&bytes[1..11]);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the bytes differ");
    assert_eq!(splice.queued(), 0, "every segment sent and dropped");
}

#[tokio::test]
async fn a_stand_in_that_cannot_be_placed_breaks_the_connection() {
    let file = file_of(&pattern(4096));
    // Nothing queued: a stand-in from elsewhere.
    let (mut server, _client) = pair().await;
    let stray = Splice::default().queue(file.clone(), 0, 100);
    let err = write_like_hyper(&mut server, VecDeque::from([stray]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("out of step"), "{err}");

    // A stand-in shorter than what is left of the queued segment.
    let (mut server, _client) = pair().await;
    let queued = server.handle().queue(file.clone(), 0, 100);
    let err = write_like_hyper(&mut server, VecDeque::from([queued.slice(..50)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("out of step"), "{err}");

    // Another segment's stand-in of the same length, where the head segment is left over (a
    // response that ended without sending it).
    let (mut server, _client) = pair().await;
    let splice = server.handle();
    let _left_over = splice.queue(file.clone(), 0, 100);
    let next = splice.queue(file.clone(), 100, 100);
    let err = write_like_hyper(&mut server, VecDeque::from([next]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("out of step"), "{err}");

    // Plain bytes are written; the stand-in after them fails on the next write.
    let (mut server, mut client) = pair().await;
    let frames = VecDeque::from([Bytes::from_static(b"head"), Splice::default().queue(file, 0, 10)]);
    assert!(write_like_hyper(&mut server, frames).await.is_err());
    drop(server);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"head", "no stand-in byte reaches the client");
}

#[tokio::test]
async fn a_file_shorter_than_its_segment_is_an_error_not_an_early_end() {
    let (mut server, mut client) = pair().await;
    let file = file_of(&pattern(1000));
    let frames = VecDeque::from([server.handle().queue(file, 0, 5000)]);
    let err = write_like_hyper(&mut server, frames).await.unwrap_err();
    assert!(err.to_string().contains("shorter"), "{err}");
    drop(server);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(
        got,
        pattern(1000),
        "what the file has, and then the connection ends"
    );
}
