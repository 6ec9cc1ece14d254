//! The bucket's budget on the real store: `regcache bucket gc` (the operator command, as the
//! CronJob runs it) lists the cluster's bucket and deletes nothing a replica used within the
//! grace, however far over the budget; and the collector itself, with no grace, on objects of
//! its own under another prefix of the same bucket, deletes the least recently used first,
//! counting a use record as a use, and merges the records.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use regcache::cache::shared::Shared as _;
use regcache::cache::shared_gc::collect;
use regcache::config::S3Config;
use regcache::secret::Secret;

use super::Cluster;
use crate::support::replica;

pub async fn bucket_budget(cluster: &Cluster) {
    operator_command(cluster).await;
    least_recently_used_first(cluster).await;
}

async fn operator_command(cluster: &Cluster) {
    let dir = cluster.work.path().join("gc-cache");
    let config = cluster.work.path().join("gc.toml");
    std::fs::write(
        &config,
        replica::config(&dir, "http://127.0.0.1:9", &cluster.bucket),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_regcache"))
        .args(["bucket", "gc", "--to", "0", "--json", "--config"])
        .arg(&config)
        .output()
        .await
        .expect("regcache bucket gc runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    let blobs = cluster.cold.blobs.len() + cluster.crash.blobs.len();
    let objects = report["objects"].as_u64().unwrap();
    assert!(
        objects >= blobs as u64 + 2,
        "{report}: the blobs and both manifests"
    );
    assert_eq!(
        report["deleted"], 0,
        "{report}: everything was used within the grace"
    );
    assert_eq!(report["over_budget"], report["bytes"], "{report}");
    cluster.clock.mark(&format!(
        "budget: `regcache bucket gc --to 0` kept all {objects} objects, used within the grace"
    ));
}

async fn least_recently_used_first(cluster: &Cluster) {
    let b = &cluster.bucket;
    let secret = std::fs::read_to_string(&b.secret_file).unwrap();
    let s3 = S3Config {
        bucket: b.bucket.clone(),
        endpoint: Some(b.endpoint.clone()),
        region: b.region.clone(),
        prefix: "gc-test/".into(),
        path_style: true,
        credentials: Some((b.access_key_id.clone(), Secret::new(secret.trim()))),
        max_size: None,
        gc_grace: Duration::from_secs(3600),
    };
    let bucket =
        regcache::bucket::open(&s3, &regcache::config::EgressConfig::default()).expect("the bucket's client");
    for key in ["blobs/sha256/aa", "blobs/sha256/bb", "manifests/sha256/cc"] {
        let path = Path::from(format!("gc-test/{key}"));
        cluster
            .store
            .put(&path, PutPayload::from(vec![1u8; 1000]))
            .await
            .unwrap();
        // S3 modification times have a resolution of a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let uses = serde_json::json!({ "blobs/sha256/aa": now }).to_string();
    bucket
        .put_small("uses/1-1-test.json", uses.into(), None, true)
        .await
        .unwrap();
    let report = collect(&*Arc::clone(&bucket), 2000, Duration::ZERO, false, &[])
        .await
        .unwrap();
    assert_eq!(
        (report.objects, report.deleted, report.use_records),
        (3, 1, 1),
        "{report:?}"
    );
    let left: Vec<String> = bucket
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert!(!left.contains(&"blobs/sha256/bb".to_string()), "{left:?}");
    assert!(
        left.contains(&"blobs/sha256/aa".to_string()),
        "used last: {left:?}"
    );
    let records: Vec<_> = left.iter().filter(|k| k.starts_with("uses/")).collect();
    assert_eq!(records.len(), 1, "merged into one: {left:?}");
    cluster
        .clock
        .mark("budget: on SeaweedFS the least recently used went first, a use record counting");
}
