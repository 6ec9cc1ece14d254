//! A replica killed with SIGKILL in the middle of a download a client is reading through the
//! balancer: the client's body must end short or in an error, never as a complete-looking
//! body; its retry through nginx gets the whole blob from another replica; and the bucket holds
//! no partial object.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pull::{self, BlobRead, NameForm};
use super::{bucket, Cluster};
use crate::support::big_image;

/// The upstream's speed while the big layer downloads: 64 MiB take about four seconds.
const SLOW: u64 = 16 << 20;
/// What the client must have read before the kill: it is mid-body.
const READ_BEFORE_KILL: u64 = 2 << 20;

pub async fn kill_mid_download(cluster: &mut Cluster) {
    let image = cluster.crash.clone();
    let big = image.blobs.last().expect("big layer").clone();
    let size = big_image::blob_size(&image, &big);
    let client = pull::client();
    let url = NameForm::Dockerd.url(&cluster.balancer(), &image.repo, "blobs", &big);

    cluster.throttle.set_rate(SLOW);
    let progress = Arc::new(AtomicU64::new(0));
    let reading = {
        let (client, url, progress) = (client.clone(), url.clone(), progress.clone());
        tokio::spawn(async move { pull::read_blob(&client, &url, size, Some(&progress)).await })
    };

    // The replica downloading it: the one whose gauge of downloads in progress is up.
    let started = Instant::now();
    let victim = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no replica started downloading {big} (client read {} bytes)",
            progress.load(Ordering::SeqCst)
        );
        let mut downloading = None;
        for (index, replica) in cluster.replicas.iter().enumerate() {
            if replica.metric("regcache_inflight_downloads", &[]).await > 0.0 {
                downloading = Some(index);
            }
        }
        match downloading {
            Some(index) if progress.load(Ordering::SeqCst) >= READ_BEFORE_KILL => break index,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let read_at_kill = progress.load(Ordering::SeqCst);
    cluster.replicas[victim].kill9();
    cluster.throttle.set_rate(0);
    let name = cluster.replicas[victim].name.clone();
    cluster.clock.mark(&format!(
        "crash: SIGKILL to {name} while it downloaded {big} ({size} bytes); the client had read \
         {read_at_kill}"
    ));

    let read = reading
        .await
        .expect("reader task")
        .unwrap_or_else(|e| panic!("{e}"));
    match &read {
        BlobRead::Broken { len, error } => {
            assert!(*len < size, "a broken body cannot be whole");
            cluster.clock.mark(&format!(
                "crash: the client's body broke after {len} bytes: {error}"
            ));
        }
        BlobRead::Complete { len, digest } => panic!(
            "the client read a complete-looking body ({len} bytes, {digest}) from a replica killed \
             mid-download (the kill came after {read_at_kill} of {size} bytes)"
        ),
    }

    // The retry goes to the next replica on the ring, which gets it whole.
    let retried = Instant::now();
    match pull::read_blob(&client, &url, size, None).await {
        Ok(BlobRead::Complete { len, digest }) if digest == big => {
            assert_eq!(len, size);
        }
        other => panic!(
            "the retry through nginx failed: {other:?}\nnginx: {}",
            cluster.nginx.error_log()
        ),
    }
    cluster.clock.mark(&format!(
        "crash: the retry got the whole blob in {:.2?}",
        retried.elapsed()
    ));

    // The whole image through the survivors, so the bucket holds all of it.
    for form in pull::NameForm::ALL {
        pull::image(&client, &cluster.balancer(), form, &image, &image.tag)
            .await
            .unwrap_or_else(|e| panic!("pull {} after the kill: {e}", image.reference()));
    }
    let (waited, stored) = bucket::settled(&cluster.store, &image.blobs).await;
    let expected = cluster.cold.blobs.len() + image.blobs.len();
    assert_eq!(stored.len(), expected, "blobs in the bucket: {stored:?}");
    cluster.clock.mark(&format!(
        "crash: {} pulled by the survivors; the bucket had its blobs {waited:.2?} later; all {} \
         objects under blobs/ whole",
        image.reference(),
        stored.len()
    ));
}
