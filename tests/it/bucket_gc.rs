//! The shared bucket's budget (`regcache bucket gc`, `cache/shared_gc.rs`), on `object_store`'s
//! in-memory store through the same `Bucket` code the S3 backend uses: the least recently used
//! blobs and manifests go first, where a replica's use records count as uses; nothing used within
//! the grace goes, however far over the budget; use records are merged into one and still count
//! on the next run; a replica that served content reports its uses when it stops.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use regcache::bucket::Bucket;
use regcache::cache::shared::Shared;
use regcache::cache::shared_gc::collect;

use crate::support::daemon::DaemonBuilder;
use crate::support::fake::{bytes_of, Fake};

const HOUR: Duration = Duration::from_secs(3600);

async fn put(store: &InMemory, key: &str, len: usize) {
    store
        .put(&Path::from(key), PutPayload::from(vec![7u8; len]))
        .await
        .unwrap();
    // Modification times have millisecond resolution: keep the order unambiguous.
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn keys(bucket: &Bucket, prefix: &str) -> Vec<String> {
    let mut all: Vec<String> = bucket
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    all.sort();
    all
}

fn uses(keys: &[&str]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let map: std::collections::HashMap<&str, u64> = keys.iter().map(|k| (*k, now)).collect();
    serde_json::to_vec(&map).unwrap()
}

#[tokio::test]
async fn least_recently_used_go_first_and_uses_count() {
    let store = Arc::new(InMemory::new());
    let bucket = Bucket::on(store.clone(), "test", "");
    for k in ["blobs/sha256/a", "blobs/sha256/b", "manifests/sha256/c"] {
        put(&store, k, 1000).await;
    }
    // A replica used `a` after all three were written.
    store
        .put(
            &Path::from("uses/1-1-x.json"),
            PutPayload::from(uses(&["blobs/sha256/a"])),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;

    let dry = collect(&*bucket, 2000, Duration::ZERO, true, &[]).await.unwrap();
    assert_eq!(
        (dry.objects, dry.bytes, dry.deleted, dry.dry_run),
        (3, 3000, 1, true)
    );
    assert_eq!(
        keys(&bucket, "blobs/").await.len(),
        2,
        "a dry run deletes nothing"
    );

    let r = collect(&*bucket, 2000, Duration::ZERO, false, &[]).await.unwrap();
    assert_eq!(
        (r.deleted, r.deleted_bytes, r.over_budget, r.use_records),
        (1, 1000, 0, 1)
    );
    assert_eq!(
        keys(&bucket, "blobs/").await,
        ["blobs/sha256/a"],
        "b was the least recently used"
    );
    let records = keys(&bucket, "uses/").await;
    assert_eq!(records.len(), 1, "merged into one: {records:?}");
    assert!(records[0].contains("merged"), "{records:?}");

    // The merged record still counts: `c` (written after `a`, never used) goes before `a`.
    let r = collect(&*bucket, 1000, Duration::ZERO, false, &[]).await.unwrap();
    assert_eq!(r.deleted, 1);
    assert_eq!(keys(&bucket, "manifests/").await, Vec::<String>::new());
    assert_eq!(keys(&bucket, "blobs/").await, ["blobs/sha256/a"]);
}

#[tokio::test]
async fn nothing_used_within_the_grace_goes() {
    let store = Arc::new(InMemory::new());
    let bucket = Bucket::on(store.clone(), "test", "cluster/");
    put(&store, "cluster/blobs/sha256/a", 4000).await;
    put(&store, "cluster/blobs/sha256/b", 4000).await;
    let r = collect(&*bucket, 0, HOUR, false, &[]).await.unwrap();
    assert_eq!((r.deleted, r.over_budget), (0, 8000));
    assert_eq!(keys(&bucket, "blobs/").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reports_what_it_used_and_that_protects_it() {
    let fake = Fake::start().await;
    let (_, _, blobs) = fake.add_image("library/app", "v1", &[bytes_of(50_000, 3)]);
    let store = Arc::new(InMemory::new());
    let bucket = Bucket::on(store.clone(), "test", "");
    let replica = DaemonBuilder::new()
        .upstream(&fake)
        .start_sharing(bucket.clone())
        .await;
    replica.pull("library/app", "v1", &blobs).await;
    replica.cache().wait_idle().await;
    replica.stop().await;
    let records = keys(&bucket, "uses/").await;
    assert_eq!(records.len(), 1, "{records:?}");
    let (body, _) = bucket.get_small(&records[0]).await.unwrap().unwrap();
    let used: std::collections::HashMap<String, u64> = serde_json::from_slice(&body).unwrap();
    let layer = format!("blobs/sha256/{}", blobs[0].trim_start_matches("sha256:"));
    assert!(used.contains_key(&layer), "{used:?}");
    assert!(used.keys().any(|k| k.starts_with("manifests/")), "{used:?}");

    // Over budget, but all of it used within the grace: nothing goes.
    let r = collect(&*bucket, 0, HOUR, false, &[]).await.unwrap();
    assert_eq!(r.deleted, 0);
    assert!(r.over_budget > 50_000);
    // Without a grace, everything goes.
    let r = collect(&*bucket, 0, Duration::ZERO, false, &[]).await.unwrap();
    assert_eq!(r.over_budget, 0);
    assert!(keys(&bucket, "blobs/").await.is_empty());
}

#[tokio::test]
async fn content_a_hosted_repository_links_is_never_deleted() {
    let store = Arc::new(InMemory::new());
    let bucket = Bucket::on(store.clone(), "test", "");
    put(&store, "blobs/sha256/pushed", 1000).await;
    put(&store, "blobs/sha256/pulled", 1000).await;
    put(&store, "records/local/team/app/@links/sha256-pushed", 0).await;
    put(&store, "records/docker.io/library/app/@links/sha256-pulled", 0).await;
    let r = collect(&*bucket, 0, Duration::ZERO, false, &["local".to_string()])
        .await
        .unwrap();
    assert_eq!((r.deleted, r.over_budget), (1, 1000));
    assert_eq!(keys(&bucket, "blobs/").await, ["blobs/sha256/pushed"]);
}
