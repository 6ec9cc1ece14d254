//! The shared level behind the cache directory (`[storage]`), here on `object_store`'s
//! in-memory store through the same `Bucket` code the S3 backend uses (the real store,
//! SeaweedFS, is in `tests/e2e/s3_cluster.rs`). Two replicas with their own directories share
//! one store: what one fetched, the other serves with the upstream down, by tag and by digest,
//! and a `HEAD` of a blob it never held; a corrupt shared copy is refused by its digest and
//! deleted, so the next pull goes upstream; an upload is whole or absent.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use regcache::bucket::Bucket;

use crate::support::daemon::{Daemon, DaemonBuilder};
use crate::support::fake::{bytes_of, sha256, Fake, Fault};

async fn replica(fake: &Fake, store: &Arc<InMemory>) -> Daemon {
    let shared = Bucket::on(store.clone(), "test", "cluster/");
    DaemonBuilder::new().upstream(fake).start_sharing(shared).await
}

async fn keys(store: &InMemory) -> Vec<String> {
    use futures_util::TryStreamExt as _;
    let mut all: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    all.sort();
    all
}

fn blob_key(digest: &str) -> Path {
    Path::from(format!(
        "cluster/blobs/sha256/{}",
        digest.trim_start_matches("sha256:")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_what_another_fetched_with_the_upstream_down() {
    let fake = Fake::start().await;
    let layers = [bytes_of(3 << 20, 1), bytes_of(20_000, 2)];
    let (digest, manifest, blobs) = fake.add_image("library/app", "v1", &layers);
    let store = Arc::new(InMemory::new());
    let first = replica(&fake, &store).await;
    assert_eq!(first.pull("library/app", "v1", &blobs).await, manifest);
    first.cache().wait_idle().await;
    let held = keys(&store).await;
    for b in &blobs {
        assert!(held.contains(&blob_key(b).to_string()), "{b} in {held:?}");
        let stored = store.get(&blob_key(b)).await.unwrap().bytes().await.unwrap();
        assert_eq!(sha256(&stored), *b, "the shared copy is the verified bytes");
    }
    assert!(held
        .iter()
        .any(|k| k.ends_with(digest.trim_start_matches("sha256:")) && k.contains("/manifests/")));
    assert!(
        held.iter()
            .any(|k| k.contains("/records/") && k.ends_with("/@tags/v1")),
        "{held:?}"
    );

    fake.set_fault(Some(Fault::Down(503)));
    fake.clear_log();
    let second = replica(&fake, &store).await;
    assert_eq!(second.pull("library/app", "v1", &blobs).await, manifest, "by tag");
    let by_digest = second.get(&format!("/v2/library/app/manifests/{digest}")).await;
    assert_eq!(by_digest.bytes(), manifest);
    let head = second
        .request("HEAD", &format!("/v2/library/app/blobs/{}", blobs[0]), &[])
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some((3u64 << 20).to_string().as_str())
    );
    let blob_gets = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, 0, "no blob asked of the upstream");
    // Another repository's name does not reach the content (links are shared records too).
    let other = second.get(&format!("/v2/library/other/blobs/{}", blobs[1])).await;
    assert_ne!(other.status, 200);
    let hits = second
        .metric(
            "regcache_shared_store_requests_total",
            &[("op", "get_blob"), ("result", "hit")],
        )
        .await;
    assert_eq!(hits, 2.0);
    // Bytes read from the shared store are not bytes fetched from the upstream.
    let fetched = second
        .metric("regcache_upstream_bytes_total", &[("upstream", "docker.io")])
        .await;
    assert_eq!(
        fetched, 0.0,
        "upstream bytes counted for blobs from the shared store"
    );
    let first_fetched = first
        .metric("regcache_upstream_bytes_total", &[("upstream", "docker.io")])
        .await;
    assert!(
        first_fetched >= ((3 << 20) + 20_000) as f64,
        "the first replica fetched the layers upstream: {first_fetched} bytes counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_shared_copy_is_refused_and_deleted() {
    let fake = Fake::start().await;
    let layer = bytes_of(100_000, 7);
    let (_, _, blobs) = fake.add_image("library/app", "v1", std::slice::from_ref(&layer));
    let store = Arc::new(InMemory::new());
    let mut wrong = layer.clone();
    wrong[50_000] ^= 1;
    store
        .put(&blob_key(&blobs[0]), PutPayload::from(wrong))
        .await
        .unwrap();
    let daemon = replica(&fake, &store).await;
    let path = format!("/v2/library/app/blobs/{}", blobs[0]);
    let first = daemon.get(&path).await;
    assert!(
        first.status != 200 || first.body.is_err(),
        "a corrupt body never ends as if complete"
    );
    daemon.cache().wait_idle().await;
    // Deleted, then fetched from the upstream and uploaded again, verified.
    let again = daemon.get(&path).await;
    assert_eq!(again.status, 200);
    assert_eq!(sha256(&again.bytes()), blobs[0]);
    daemon.cache().wait_idle().await;
    let stored = store
        .get(&blob_key(&blobs[0]))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&stored), blobs[0]);
    assert_eq!(fake.count("GET", &blobs[0]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_download_uploads_nothing() {
    let fake = Fake::start().await;
    let (_, _, blobs) = fake.add_image("library/app", "v1", &[bytes_of(1 << 20, 9)]);
    fake.set_fault(Some(Fault::Break { after: 300_000 }));
    let store = Arc::new(InMemory::new());
    let daemon = replica(&fake, &store).await;
    let reply = daemon.get(&format!("/v2/library/app/blobs/{}", blobs[0])).await;
    assert!(reply.body.is_err() || reply.status != 200);
    daemon.cache().wait_idle().await;
    assert!(
        !keys(&store).await.iter().any(|k| k.contains("/blobs/")),
        "nothing of a broken download in the shared store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_the_shared_store() {
    let fake = Fake::start().await;
    let (_, _, blobs) = fake.add_image("library/app", "v1", &[bytes_of(10_000, 4)]);
    fake.add_image("library/app", "v2", &[bytes_of(10_000, 5)]);
    let store = Arc::new(InMemory::new());
    let daemon = replica(&fake, &store).await;
    daemon.pull("library/app", "v1", &blobs).await;
    assert_eq!(daemon.get("/v2/library/app/manifests/v2").await.status, 200);
    daemon.cache().wait_idle().await;
    let tags = |all: Vec<String>| all.into_iter().filter(|k| k.contains("/@tags/")).count();
    assert_eq!(tags(keys(&store).await), 2);
    // One tag, then the whole repository: another replica would not find them either.
    let r = daemon
        .admin_post("/admin/purge?image=docker.io%2Flibrary%2Fapp%3Av1")
        .await;
    assert_eq!(r.status, 200);
    daemon.cache().wait_idle().await;
    assert_eq!(tags(keys(&store).await), 1);
    let r = daemon
        .admin_post("/admin/purge?image=docker.io%2Flibrary%2Fapp")
        .await;
    assert_eq!(r.status, 200);
    daemon.cache().wait_idle().await;
    assert_eq!(tags(keys(&store).await), 0, "{:?}", keys(&store).await);
    assert!(
        keys(&store).await.iter().any(|k| k.contains("/blobs/")),
        "content stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_costs_one_failed_read_then_is_skipped() {
    let fake = Fake::start().await;
    let layers = [bytes_of(30_000, 1), bytes_of(30_000, 2), bytes_of(30_000, 3)];
    let (_, manifest, blobs) = fake.add_image("library/app", "v1", &layers);
    // The S3 client itself, toward a loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s3 = regcache::config::S3Config {
        bucket: "down".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        prefix: String::new(),
        path_style: true,
        credentials: Some(("k".into(), regcache::secret::Secret::new("s"))),
        max_size: None,
        gc_grace: std::time::Duration::from_secs(3600),
    };
    let daemon = DaemonBuilder::new()
        .upstream(&fake)
        .start_sharing(regcache::bucket::open(&s3, &regcache::config::EgressConfig::default()).unwrap())
        .await;
    assert_eq!(
        daemon.pull("library/app", "v1", &blobs).await,
        manifest,
        "served from the upstream"
    );
    let count = |op: &'static str, result: &'static str| {
        daemon.metric_now(
            "regcache_shared_store_requests_total",
            &[("op", op), ("result", result)],
        )
    };
    let errors: f64 = ["get", "get_blob", "head"]
        .iter()
        .map(|op| count(op, "error"))
        .sum();
    let skipped: f64 = ["get", "get_blob", "head"]
        .iter()
        .map(|op| count(op, "skipped"))
        .sum();
    assert_eq!(errors, 1.0, "one failed read");
    assert!(skipped >= 3.0, "then the blobs' reads skip the store: {skipped}");
}
