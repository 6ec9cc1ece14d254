//! Upstream limits: a 429's `Retry-After` holds requests back (TOOMANYREQUESTS without asking
//! the upstream) while cached content keeps being served; `RateLimit-*` headers become gauges;
//! `max_connections` caps concurrent upstream requests, blob bodies included, and every place is
//! given back when its download ends, also when it fails.

use std::sync::Arc;
use std::time::Duration;

use crate::support::daemon::{eventually, pass_time, Daemon, DaemonBuilder, Upstream};
use crate::support::fake::{bytes_of, Fake, Fault};
use tokio::sync::watch;

#[tokio::test]
async fn retry_after_holds_requests_back_while_the_cache_serves() {
    let up = Fake::start().await;
    let (_, bytes, layers) = up.add_image("library/app", "1", &[bytes_of(1000, 1), bytes_of(1000, 2)]);
    up.add_image("library/app", "2", &[bytes_of(10, 3)]);
    let d = DaemonBuilder::new().upstream(&up).tag_ttl("0s").start().await;
    assert_eq!(d.get("/v2/library/app/manifests/1").await.bytes(), bytes);
    assert_eq!(
        d.get(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .status,
        200
    );

    up.set_fault(Some(Fault::RateLimit {
        retry_after: "120".into(),
    }));
    // The tag's revalidation meets the 429; the cached tag is served.
    let sent = up.requests().len();
    let r = d.get("/v2/library/app/manifests/1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), bytes);
    assert_eq!(up.requests().len(), sent + 1);
    // From now on nothing is sent upstream: what is cached is served, the rest fails fast.
    let r = d.get("/v2/library/app/manifests/1").await;
    assert_eq!(r.bytes(), bytes);
    assert_eq!(
        d.get(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .status,
        200
    );
    for path in [
        "/v2/library/app/manifests/2".to_string(),
        format!("/v2/library/app/blobs/{}", layers[1]),
    ] {
        let r = d.get(&path).await;
        assert_eq!(r.status, 429, "{path}");
        assert_eq!(r.error_code(), "TOOMANYREQUESTS");
        let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((100..=120).contains(&after), "Retry-After {after}");
    }
    assert_eq!(up.requests().len(), sent + 1, "{:?}", &up.requests()[sent..]);
    assert_eq!(
        d.metric("regcache_upstream_throttled_total", &[("upstream", "docker.io")])
            .await,
        3.0
    );
}

#[tokio::test]
async fn requests_resume_once_retry_after_has_passed() {
    let up = Fake::start().await;
    up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    up.set_fault(Some(Fault::RateLimit {
        retry_after: "1".into(),
    }));
    let r = d.get("/v2/library/app/manifests/1").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    up.set_fault(None);
    assert_eq!(
        d.get("/v2/library/app/manifests/1").await.status,
        429,
        "still waiting"
    );
    pass_time(Duration::from_millis(1_100)).await;
    assert_eq!(d.get("/v2/library/app/manifests/1").await.status, 200);
}

#[tokio::test]
async fn ratelimit_headers_become_gauges() {
    let up = Fake::start().await;
    up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    up.set_ratelimit(100, 42);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(d.get("/v2/library/app/manifests/1").await.status, 200);
    let labels = [("upstream", "docker.io")];
    assert_eq!(
        d.metric("regcache_upstream_ratelimit_limit", &labels).await,
        100.0
    );
    assert_eq!(
        d.metric("regcache_upstream_ratelimit_remaining", &labels).await,
        42.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_upstream_requests_including_blob_bodies() {
    let up = Fake::start().await;
    let a = bytes_of(200_000, 1);
    let b = bytes_of(200_000, 2);
    let da = up.add_blob("library/app", a.clone());
    let db = up.add_blob("library/app", b.clone());
    let d = Arc::new(
        DaemonBuilder::new()
            .with_upstream(Upstream::new("docker.io", &up).max_connections(1))
            .start()
            .await,
    );
    let (open, gate) = watch::channel(false);
    up.set_fault(Some(Fault::Hold {
        after: 50_000,
        gate,
        then_break: false,
    }));
    let get = |digest: String| {
        let d = d.clone();
        tokio::spawn(async move { d.get(&format!("/v2/library/app/blobs/{digest}")).await })
    };
    let first = get(da.clone());
    eventually("the first blob GET", || up.count("GET", &da) == 1).await;
    let second = get(db.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count("GET", &db), 0, "the second download waits for a place");
    assert_eq!(active_requests(&d), 1.0);
    open.send(true).unwrap();
    assert_eq!(first.await.unwrap().bytes(), a);
    assert_eq!(second.await.unwrap().bytes(), b);
    assert_eq!(up.count("GET", &db), 1);
    eventually("every place to be given back", || active_requests(&d) == 0.0).await;
}

/// `regcache_upstream_active_requests{upstream="docker.io"}`.
fn active_requests(d: &Daemon) -> f64 {
    d.metric_now("regcache_upstream_active_requests", &[("upstream", "docker.io")])
}

#[tokio::test]
async fn a_failed_download_gives_its_place_back() {
    let up = Fake::start().await;
    let a = bytes_of(100_000, 1);
    let b = bytes_of(100_000, 2);
    let da = up.add_blob("library/app", a);
    let db = up.add_blob("library/app", b.clone());
    let d = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &up).max_connections(1))
        .start()
        .await;
    up.set_fault(Some(Fault::Break { after: 30_000 }));
    let r = d.get(&format!("/v2/library/app/blobs/{da}")).await;
    assert!(r.body.is_err() || r.status != 200, "the broken download fails");
    up.set_fault(Some(Fault::Status(500)));
    assert_eq!(d.head(&format!("/v2/library/app/blobs/{db}")).await.status, 502);
    up.set_fault(None);
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        d.get(&format!("/v2/library/app/blobs/{db}")),
    )
    .await
    .expect("a place was free again");
    assert_eq!(r.bytes(), b);
    eventually("every place to be given back", || active_requests(&d) == 0.0).await;
}
