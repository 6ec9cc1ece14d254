//! A client that opens a connection and never finishes its request head does not hold the
//! connection forever: the registry listener closes it after its header deadline (30 s, passed
//! here on tokio's paused clock), while a complete request on another connection is answered.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::daemon::DaemonBuilder;
use crate::support::fake::Fake;

#[tokio::test(start_paused = true)]
async fn a_half_sent_request_head_is_dropped_after_the_deadline() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let mut slow = TcpStream::connect(d.addr).await.unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: mirror\r\n")
        .await
        .unwrap();

    assert_eq!(d.get("/v2/").await.status, 200, "others are served meanwhile");

    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(120), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 120 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(29) && waited <= Duration::from_secs(61),
        "closed after {waited:?}"
    );
}
