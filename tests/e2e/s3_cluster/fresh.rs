//! The upstream and its token server stopped, a fresh replica (empty cache directory, the same
//! bucket) serves everything the cluster stored: both images by tag and by digest, every blob,
//! byte for byte, straight and to skopeo.

use std::time::{Duration, Instant};

use super::pull::{self, NameForm};
use super::Cluster;
use crate::support::replica::Replica;

pub async fn bucket_only_replica(cluster: &mut Cluster) {
    let logged = cluster.registry.requests().len();
    cluster.registry.kill();
    drop(cluster.token.take());
    assert!(
        tokio::net::TcpStream::connect(cluster.registry.addr())
            .await
            .is_err(),
        "the registry still accepts connections"
    );
    let relayed = cluster.throttle.accepted();
    let fresh = Replica::start("replica-fresh", &cluster.throttle.url(), &cluster.bucket)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", fresh.addr());
    cluster.clock.mark(&format!(
        "fresh: upstream stopped; {} started at {base}",
        fresh.name
    ));

    let client = pull::client();
    let started = Instant::now();
    let mut bytes = 0;
    for image in [&cluster.cold, &cluster.crash] {
        for reference in [&image.tag, &image.digest] {
            bytes += pull::image(&client, &base, NameForm::Dockerd, image, reference)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "pull {}@{reference} from the bucket: {e}\n{}",
                        image.repo,
                        fresh.log()
                    )
                });
        }
    }
    cluster.clock.mark(&format!(
        "fresh: both images by tag and by digest, {} MiB, byte-exact from the bucket in {:.2?}",
        bytes >> 20,
        started.elapsed()
    ));

    for image in [&cluster.cold, &cluster.crash] {
        let out = cluster.work.path().join("oci").join(image.short_name());
        std::fs::create_dir_all(&out).expect("OCI layout dir");
        let src = format!("docker://{}/{}", fresh.addr(), image.reference());
        let dst = format!("oci:{}:{}", out.display(), image.tag);
        cluster
            .skopeo
            .copy(
                &src,
                &dst,
                &["--src-tls-verify=false", "--preserve-digests"],
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("skopeo from the fresh replica: {e}\n{}", fresh.log()));
        for digest in image.blobs.iter().chain([&image.digest]) {
            let file = out
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            let stored = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(
                &crate::support::e2e::images::sha256_digest(&stored),
                digest,
                "{}",
                file.display()
            );
        }
    }
    cluster
        .clock
        .mark("fresh: skopeo copied both images through it to OCI layouts");

    // Nothing reached the registry: it is stopped, and its log has not grown.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cluster.registry.requests().len(),
        logged,
        "the stopped registry logged requests"
    );
    let gets = fresh
        .metric(
            "regcache_shared_store_requests_total",
            &[r#"op="get_blob""#, r#"result="hit""#],
        )
        .await;
    let needed = cluster.cold.blobs.len() + cluster.crash.blobs.len();
    assert!(
        gets as usize >= needed,
        "{gets} blob reads from the bucket, {needed} blobs"
    );
    // The replica's own count: failed attempts only (the tag revalidations), not one answer
    // and not one byte from the upstream.
    let upstream = fresh.metric("regcache_upstream_requests_total", &[]).await;
    let failed = fresh
        .metric("regcache_upstream_requests_total", &[r#"class="error""#])
        .await;
    assert_eq!(upstream, failed, "upstream answers counted by the fresh replica");
    let fetched = fresh.metric("regcache_upstream_bytes_total", &[]).await;
    assert_eq!(fetched, 0.0, "bytes the fresh replica fetched from the upstream");
    cluster.clock.mark(&format!(
        "fresh: {gets} blobs read from the bucket; {failed} failed upstream attempts and {} \
         connections toward the stopped upstream",
        cluster.throttle.accepted() - relayed
    ));
}
