//! One shutdown deadline: draining open connections and finishing running downloads share
//! `shutdown_grace`, counted from the moment the daemon is asked to stop. A download the upstream
//! holds forever, with its client still reading, does not make shutdown take the grace twice
//! (once for the connection, once more for the download).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::support::daemon::{eventually, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake, Fault};

const GRACE: Duration = Duration::from_secs(3);
/// What shutdown may take past the grace: closing connections, the recency snapshot.
const SLACK: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_download_and_its_client_stop_within_one_grace() {
    let up = Fake::start().await;
    let digest = up.add_blob("library/app", bytes_of(1_000_000, 31));
    // Kept, never opened: the upstream holds the body past any grace.
    let (_held, gate) = watch::channel(false);
    up.set_fault(Some(Fault::Hold {
        after: 100_000,
        gate,
        then_break: false,
    }));
    let mut d = DaemonBuilder::new()
        .upstream(&up)
        .shutdown_grace("3s")
        .start()
        .await;
    let url = format!("http://{}/v2/library/app/blobs/{digest}", d.addr);
    let pull = tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let resp = client
            .get(url.parse().unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let body: Result<_, String> = resp.into_body().collect().await.map_err(|e| e.to_string());
        body.map(|b| b.to_bytes().len())
    });
    eventually("the download to start", || up.count("GET", "/blobs/") == 1).await;

    let started = Instant::now();
    d.running.take().expect("running").shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= GRACE - Duration::from_millis(100),
        "stopped after {took:?}, before the grace was over"
    );
    assert!(
        took <= GRACE + SLACK,
        "shutdown took {took:?} with a grace of {GRACE:?}"
    );
    let pulled = tokio::time::timeout(Duration::from_secs(5), pull)
        .await
        .expect("the cut-off client is told");
    assert!(pulled.unwrap().is_err(), "a cut-off pull must not look complete");
}
