//! A hosted namespace's policies: `create_on_push = false` (and `regcache repo create`),
//! references a manifest may name, deletes, immutable tags, and the namespace's quota.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_policies_hold() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    // `create_on_push = false`: no such repository until it is created.
    let r = push_blob(&d, "strict/app", b"layer").await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert!(r.error_code().contains("NAME_UNKNOWN"), "{:?}", r.body);
    assert!(
        String::from_utf8_lossy(&r.bytes()).contains("regcache repo create strict/app"),
        "{:?}",
        r.body
    );
    // A manifest with a blob the repository does not hold is refused.
    let (m, _) = push_image(&d, "local/app", "v1", 2).await;
    let elsewhere = put_manifest(&d, "local/other", "v1", &m, WRITER).await;
    assert_eq!(elsewhere.status, 400);
    assert!(
        elsewhere.error_code().contains("MANIFEST_BLOB_UNKNOWN"),
        "{:?}",
        elsewhere.body
    );
    // Deleting by digest makes the manifest unknown, by tag and by digest.
    let digest = sha256(m.as_bytes());
    let writer = basic(WRITER.0, WRITER.1);
    let r = d
        .request(
            "DELETE",
            &format!("/v2/local/app/manifests/{digest}"),
            &[("authorization", &writer)],
        )
        .await;
    assert_eq!(r.status, 202);
    for reference in ["v1", digest.as_str()] {
        let r = d.get(&format!("/v2/local/app/manifests/{reference}")).await;
        assert_eq!(r.status, 404, "{reference}");
        assert!(r.error_code().contains("MANIFEST_UNKNOWN"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_never_move() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    // `regcache repo create`, the binary, through the running daemon.
    let config = d.dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "builtin_upstreams = false\n[admin]\nlisten = \"{}\"\n[cache]\ndir = \"{}\"\n\
             [[upstreams]]\nhost = \"docker.io\"\nurl = \"{}\"\ndefault = true\n",
            d.admin_addr,
            d.dir.path().display(),
            up.url()
        ),
    )
    .unwrap();
    let out = crate::support::commands::command(&["repo", "create", "strict/app"], &config);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("created strict/app"),
        "{out:?}"
    );
    // A name outside every hosted namespace is refused.
    let r = regcache_repo_create(&d, "library/app").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let (first, _) = push_image(&d, "strict/app", "v1", 3).await;
    // The same content again is fine; other content under the tag is refused.
    assert_eq!(
        put_manifest(&d, "strict/app", "v1", &first, WRITER).await.status,
        201
    );
    let config = br#"{"architecture":"amd64","os":"linux","seed":4}"#;
    let layer = bytes_of(30_000, 4);
    push_blob(&d, "strict/app", config).await;
    push_blob(&d, "strict/app", &layer).await;
    let other = manifest(config, &[&layer]);
    let r = put_manifest(&d, "strict/app", "v1", &other, WRITER).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.error_code().contains("TAG_INVALID"), "{:?}", r.body);
    assert_eq!(
        d.get("/v2/strict/app/manifests/v1").await.bytes(),
        first.as_bytes()
    );
    assert_eq!(
        put_manifest(&d, "strict/app", "v2", &other, WRITER).await.status,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_quota_refuses_the_push_that_would_pass_it() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    push_image(&d, "small/app", "v1", 11).await;
    // The same layer again, in another repository of the namespace, costs nothing.
    let (_, layer) = push_image(&d, "small/copy", "v1", 11).await;
    assert_eq!(layer, bytes_of(30_000, 11));
    let r = push_blob(&d, "small/app", &bytes_of(30_000, 12)).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.error_code().contains("DENIED"), "{:?}", r.body);
    let text = String::from_utf8_lossy(&r.bytes()).to_string();
    assert!(
        text.contains("max_size") && text.contains("gc --hosted"),
        "{text}"
    );
    // Nothing of the refused push is kept or linked.
    assert_eq!(
        d.get(&format!("/v2/small/app/blobs/{}", sha256(&bytes_of(30_000, 12))))
            .await
            .status,
        404
    );
}
