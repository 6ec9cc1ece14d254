//! Where hosted content lives: pinned in the shared store, released by `gc --hosted` (and only
//! then, sparing uploads in progress), kept when a mirrored image sharing a layer is unpinned,
//! and carried in bundles like mirrored images.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_hosted_deletes_what_no_repository_holds_and_spares_uploads() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let (_, _, mirrored) = up.add_image("library/base", "1", &[bytes_of(20_000, 50)]);
    let d = daemon(&up, &dir).await;
    d.pull("library/base", "1", &mirrored).await;
    let (old, old_layer) = push_image(&d, "local/app", "v1", 5).await;
    let (new, new_layer) = push_image(&d, "local/app", "v2", 6).await;
    let writer = basic(WRITER.0, WRITER.1);
    // An upload in progress, its first chunk in.
    let started = d
        .request_body(
            "POST",
            "/v2/local/app/blobs/uploads/",
            &[("authorization", &writer)],
            Vec::new(),
        )
        .await;
    let upload = started.header("location").unwrap().to_string();
    let pending = bytes_of(10_000, 7);
    let r = d
        .request_body(
            "PATCH",
            &upload,
            &[("authorization", &writer), ("content-range", "0-4999")],
            pending[..5000].to_vec(),
        )
        .await;
    assert_eq!(r.status, 202);
    // v1 goes: its manifest, and its layer (the config too: only v1 named it).
    let old_config = serde_json::from_str::<serde_json::Value>(&old).unwrap()["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        format!("/v2/local/app/manifests/{}", sha256(old.as_bytes())),
        format!("/v2/local/app/blobs/{}", sha256(&old_layer)),
        format!("/v2/local/app/blobs/{old_config}"),
    ] {
        assert_eq!(
            d.request("DELETE", &path, &[("authorization", &writer)])
                .await
                .status,
            202,
            "{path}"
        );
    }
    let gc = d.admin_post("/admin/gc?hosted=true").await;
    assert_eq!(gc.status, 200);
    let report: serde_json::Value = serde_json::from_slice(&gc.bytes()).unwrap();
    assert_eq!(report["released"]["deleted"], 3, "{report}");
    let file = |digest: &str| {
        d.dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    assert!(
        !file(&sha256(&old_layer)).exists(),
        "the deleted layer's file is gone"
    );
    assert!(file(&sha256(&new_layer)).exists());
    assert_eq!(d.get("/v2/local/app/manifests/v2").await.bytes(), new.as_bytes());
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&new_layer)))
            .await
            .bytes(),
        new_layer
    );
    d.pull("library/base", "1", &mirrored).await;
    // The upload goes on where it stood.
    let done = format!("{upload}?digest={}", sha256(&pending));
    let r = d
        .request_body(
            "PUT",
            &done,
            &[("authorization", &writer), ("content-range", "5000-9999")],
            pending[5000..].to_vec(),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&pending)))
            .await
            .bytes(),
        pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_hosted_unlinks_blobs_no_manifest_names_once_idle() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let (old, old_layer) = push_image(&d, "local/app", "v1", 8).await;
    let (new, new_layer) = push_image(&d, "local/app", "v2", 9).await;
    let orphan = bytes_of(7_000, 10);
    assert_eq!(push_blob(&d, "local/app", &orphan).await.status, 201);
    let writer = basic(WRITER.0, WRITER.1);
    let path = format!("/v2/local/app/manifests/{}", sha256(old.as_bytes()));
    assert_eq!(
        d.request("DELETE", &path, &[("authorization", &writer)])
            .await
            .status,
        202
    );
    // Within the grace period the unreferenced blobs stay: they may be a push in progress.
    let gc: serde_json::Value =
        serde_json::from_slice(&d.admin_post("/admin/gc?hosted=true").await.bytes()).unwrap();
    assert_eq!(gc["released"]["deleted"], 1, "only the deleted manifest: {gc}");
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&orphan)))
            .await
            .status,
        200
    );
    // Past it, every blob no manifest names goes: v1's config and layer, and the orphan.
    let gc: serde_json::Value =
        serde_json::from_slice(&d.admin_post("/admin/gc?hosted=true&grace=0s").await.bytes()).unwrap();
    assert_eq!(gc["released"]["deleted"], 3, "{gc}");
    for gone in [sha256(&old_layer), sha256(&orphan)] {
        assert_eq!(
            d.get(&format!("/v2/local/app/blobs/{gone}")).await.status,
            404,
            "{gone}"
        );
    }
    assert_eq!(d.get("/v2/local/app/manifests/v2").await.bytes(), new.as_bytes());
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&new_layer)))
            .await
            .bytes(),
        new_layer
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_images_travel_in_bundles_too() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let (m, layer) = push_image(&d, "local/team/app", "v1", 13).await;
    let config =
        crate::support::commands::operator_config(d.dir.path(), &d.admin_addr.to_string(), &up.url(), false);
    let bundle = dir.path().join("bundle.tar");
    let out = crate::support::commands::command(
        &["export", "-o", bundle.to_str().unwrap(), "local/team/app:v1"],
        &config,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("local/team/app:v1"),
        "{out:?}"
    );

    // Another site with the same hosted namespace imports it: pinned, served as pushed.
    let other_dir = tempfile::tempdir().unwrap();
    let other = daemon(&up, &other_dir).await;
    let config = crate::support::commands::operator_config(
        other.dir.path(),
        &other.admin_addr.to_string(),
        &up.url(),
        false,
    );
    let out = crate::support::commands::command(&["import", bundle.to_str().unwrap()], &config);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        other.get("/v2/local/team/app/manifests/v1").await.bytes(),
        m.as_bytes()
    );
    assert_eq!(
        other
            .get(&format!("/v2/local/team/app/blobs/{}", sha256(&layer)))
            .await
            .bytes(),
        layer
    );
    let tags: serde_json::Value =
        serde_json::from_slice(&other.get("/v2/local/team/app/tags/list").await.bytes()).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    assert_eq!(up.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinning_a_mirrored_image_keeps_a_layer_a_hosted_image_shares() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let shared = bytes_of(30_000, 14);
    let (_, _, mirrored) = up.add_image("library/base", "1", std::slice::from_ref(&shared));
    let d = daemon(&up, &dir).await;
    let config =
        crate::support::commands::operator_config(d.dir.path(), &d.admin_addr.to_string(), &up.url(), false);
    let out = crate::support::commands::command(&["prefetch", "--pin", "base:1"], &config);
    assert!(out.status.success(), "{out:?}");
    // The same layer pushed to a hosted repository: one copy in the store.
    let (m, layer) = push_image(&d, "local/app", "v1", 14).await;
    assert_eq!(layer, shared);
    let out = crate::support::commands::command(&["unpin", "base:1"], &config);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.admin_post("/admin/gc?to=0").await.status, 200);
    // The mirrored image's own config went; the shared layer stayed for the hosted image.
    let file = |digest: &str| {
        d.dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    assert!(
        file(&sha256(&shared)).exists(),
        "the shared layer is still pinned"
    );
    assert_eq!(d.get("/v2/local/app/manifests/v1").await.bytes(), m.as_bytes());
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&shared)))
            .await
            .bytes(),
        shared
    );
    assert!(
        mirrored.iter().all(|l| *l == sha256(&shared)),
        "the fake image's one layer is the shared one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_one_replica_is_pulled_from_another_sharing_its_bucket() {
    use regcache::bucket::Bucket;
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let bucket = Bucket::on(
        std::sync::Arc::new(object_store::memory::InMemory::new()),
        "t",
        "",
    );
    let first = builder(&up, &dir).start_sharing(bucket.clone()).await;
    let (m, layer) = push_image(&first, "local/app", "v1", 9).await;
    first.cache().wait_idle().await;
    // Another replica (its own directory), the upstream down: it never had any of this.
    up.set_fault(Some(crate::support::fake::Fault::Down(503)));
    let second = builder(&up, &dir).start_sharing(bucket).await;
    let by_tag = second.get("/v2/local/app/manifests/v1").await;
    assert_eq!(by_tag.status, 200);
    assert_eq!(by_tag.bytes(), m.as_bytes());
    let blob = second
        .get(&format!("/v2/local/app/blobs/{}", sha256(&layer)))
        .await;
    assert_eq!(blob.status, 200);
    assert_eq!(blob.bytes(), layer);
}
