//! One raw HTTP exchange over a plain TCP socket, so a case can send bytes no HTTP client would
//! (NUL in a path, two `Content-Length`s, a 1 GiB body on a `GET`). The request is written by its
//! own task while the answer is read, so a server that answers before reading a huge body is not
//! mistaken for one that hangs.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the server did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A status line (and what arrived of the head and body, capped).
    Answered { status: u16, text: String },
    /// The connection closed (or was reset) before a status line.
    Closed,
    /// Nothing within the case's time limit.
    Hung,
}

/// How much of an answer is kept for `body_contains` checks.
const KEEP: usize = 64 * 1024;

/// Sends `head`, then `body_len` filler bytes (streamed, not buffered), and reads the answer.
pub async fn exchange(target: &str, head: Vec<u8>, body_len: u64, limit: Duration) -> Outcome {
    let Ok(Ok(stream)) = tokio::time::timeout(limit, TcpStream::connect(target)).await else {
        return Outcome::Hung;
    };
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(&head).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if wr.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n as u64;
        }
        // Keep the write half open: a half-close reads as the client giving up.
        std::future::pending::<()>().await;
    });
    let outcome = read_answer(&mut rd, limit).await;
    writer.abort();
    outcome
}

async fn read_answer(rd: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration) -> Outcome {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    // The status line first: its absence in time is a hang.
    while !got.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => return Outcome::Hung,
            Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let Some(status) = status_of(&got) else {
        return Outcome::Answered {
            status: 0,
            text: String::from_utf8_lossy(&got).into_owned(),
        };
    };
    // Then whatever follows soon, for checks on the body; a kept-alive connection just stops.
    let rest = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
    while got.len() < KEEP {
        match tokio::time::timeout_at(rest, rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    got.truncate(KEEP);
    Outcome::Answered {
        status,
        text: String::from_utf8_lossy(&got).into_owned(),
    }
}

/// The code of `HTTP/1.x NNN ...`.
fn status_of(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}
