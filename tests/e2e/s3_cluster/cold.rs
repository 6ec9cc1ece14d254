//! Cold pulls through the balancer: 3 x 16 at once, one group per name form, all checked byte
//! for byte; the registry served each blob once for the whole cluster, and the bucket ends up
//! holding every blob whole.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::pull::{self, NameForm};
use super::{bucket, Cluster};

/// Concurrent pulls per name form.
const PULLS_PER_FORM: usize = 16;

pub async fn pulls(cluster: &Cluster) {
    let image = &cluster.cold;
    let client = pull::client();
    let started = Instant::now();
    let mut pulls = tokio::task::JoinSet::new();
    for form in NameForm::ALL {
        for _ in 0..PULLS_PER_FORM {
            let (client, base, image) = (client.clone(), cluster.balancer(), image.clone());
            pulls.spawn(async move {
                let pulled = pull::image(&client, &base, form, &image, &image.tag).await;
                (form, pulled)
            });
        }
    }
    let mut bytes = 0;
    let mut failures = Vec::new();
    while let Some(done) = pulls.join_next().await {
        match done.expect("pull task") {
            (_, Ok(n)) => bytes += n,
            (form, Err(e)) => failures.push(format!("{form:?}: {e}")),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {} cold pulls failed: {failures:#?}\nnginx: {}",
        failures.len(),
        3 * PULLS_PER_FORM,
        cluster.nginx.error_log()
    );
    cluster.clock.mark(&format!(
        "cold: {} concurrent pulls (3 name forms) of {} MiB each, all byte-exact, in {elapsed:.2?} \
         ({:.0} MB/s through nginx)",
        3 * PULLS_PER_FORM,
        (bytes / (3 * PULLS_PER_FORM as u64)) >> 20,
        bytes as f64 / 1e6 / elapsed.as_secs_f64()
    ));

    // One upstream download per blob, cluster-wide.
    let seen = cluster
        .registry
        .settled_requests(Duration::from_millis(600), Duration::from_secs(10))
        .await;
    let mut gets: BTreeMap<String, usize> = BTreeMap::new();
    for request in seen.iter().filter(|r| r.is_blob_get()) {
        let path = request.uri.split('?').next().unwrap_or_default();
        let digest = path.rsplit_once("/blobs/").map(|(_, d)| d).unwrap_or_default();
        *gets.entry(digest.to_string()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = image.blobs.iter().map(|d| (d.clone(), 1)).collect();
    assert_eq!(gets, expected, "upstream blob GETs per digest, cluster-wide");
    let manifests = seen
        .iter()
        .filter(|r| r.is_manifest() && r.method == "GET")
        .count();
    cluster.clock.mark(&format!(
        "cold: the registry served each of the {} blobs once ({manifests} manifest GETs)",
        image.blobs.len()
    ));

    // Every blob reaches the bucket whole.
    let (waited, stored) = bucket::settled(&cluster.store, &image.blobs).await;
    for digest in &image.blobs {
        assert!(stored.contains(digest), "{digest} not listed in the bucket");
    }
    let uploads = put_blob_ok(cluster, image.blobs.len()).await;
    assert_eq!(uploads, image.blobs.len(), "blob uploads cluster-wide");
    cluster.clock.mark(&format!(
        "cold: the bucket held all {} blobs {waited:.2?} after the pulls ended; {} objects under \
         blobs/ read back and verified",
        image.blobs.len(),
        stored.len()
    ));
}

/// The replicas' successful blob uploads, once they reach `expected` (or after 10 s).
async fn put_blob_ok(cluster: &Cluster, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ok = 0.0;
        for replica in &cluster.replicas {
            let labels = [r#"op="put_blob""#, r#"result="ok""#];
            ok += replica
                .metric("regcache_shared_store_requests_total", &labels)
                .await;
        }
        if ok as usize >= expected || Instant::now() > deadline {
            return ok as usize;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
