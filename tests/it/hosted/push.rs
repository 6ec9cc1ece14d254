//! Pushing to and pulling from a hosted repository: monolithic and chunked uploads, manifests by
//! tag and digest, who may push, the spec's workflows in full, the catalog, and the challenge an
//! anonymous client gets.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_by_tag_and_digest() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let (m, layer) = push_image(&d, "local/team/app", "v1", 1).await;
    let digest = sha256(m.as_bytes());

    let by_tag = d.get("/v2/local/team/app/manifests/v1").await;
    assert_eq!(by_tag.status, 200);
    assert_eq!(by_tag.bytes(), m.as_bytes());
    assert_eq!(by_tag.header("content-type"), Some(OCI_MANIFEST));
    let by_digest = d.get(&format!("/v2/local/team/app/manifests/{digest}")).await;
    assert_eq!(by_digest.bytes(), m.as_bytes());
    let blob = d
        .get(&format!("/v2/local/team/app/blobs/{}", sha256(&layer)))
        .await;
    assert_eq!(blob.status, 200);
    assert_eq!(blob.bytes(), layer);
    let tags = d.get("/v2/local/team/app/tags/list").await;
    let tags: serde_json::Value = serde_json::from_slice(&tags.bytes()).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]), "{tags}");
    assert_eq!(up.requests().len(), 0, "a hosted name never reaches the upstream");

    // Pinned: a gc to nothing keeps hosted content.
    assert_eq!(d.admin_post("/admin/gc?to=0").await.status, 200);
    assert_eq!(
        d.get("/v2/local/team/app/manifests/v1").await.bytes(),
        m.as_bytes()
    );
    assert_eq!(
        d.get(&format!("/v2/local/team/app/blobs/{}", sha256(&layer)))
            .await
            .bytes(),
        layer
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_is_checked_in_order_and_by_digest() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let auth = basic(WRITER.0, WRITER.1);
    let blob = bytes_of(100_000, 9);
    let started = d
        .request_body(
            "POST",
            "/v2/local/app/blobs/uploads/",
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    let location = started.header("location").unwrap().to_string();
    let chunk = |from: usize, to: usize| {
        let range = format!("{from}-{}", to - 1);
        (blob[from..to].to_vec(), range)
    };
    let (first, range) = chunk(0, 60_000);
    let r = d
        .request_body(
            "PATCH",
            &location,
            &[("authorization", &auth), ("content-range", &range)],
            first,
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.header("range"), Some("0-59999"));
    // Out of order: refused, and the upload goes on from where it stands.
    let (skipped, range) = chunk(70_000, 100_000);
    let r = d
        .request_body(
            "PATCH",
            &location,
            &[("authorization", &auth), ("content-range", &range)],
            skipped,
        )
        .await;
    assert_eq!(r.status, 416, "{:?}", r.body);
    let status = d.request("GET", &location, &[("authorization", &auth)]).await;
    assert_eq!(
        (status.status.as_u16(), status.header("range")),
        (204, Some("0-59999"))
    );
    let (rest, range) = chunk(60_000, 100_000);
    let r = d
        .request_body(
            "PATCH",
            &location,
            &[("authorization", &auth), ("content-range", &range)],
            rest,
        )
        .await;
    assert_eq!(r.status, 202);
    // A wrong digest is refused; a right one finishes (in another upload: a refused one ends).
    let wrong = format!("{location}?digest={}", sha256(b"other"));
    let r = d
        .request_body("PUT", &wrong, &[("authorization", &auth)], Vec::new())
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error_code().contains("DIGEST_INVALID"), "{:?}", r.body);
    let r = push_blob(&d, "local/app", &blob).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&blob)))
            .await
            .bytes(),
        blob
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_need_write_access_and_a_hosted_namespace() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let blob = b"hello".to_vec();
    let path = format!("/v2/local/app/blobs/uploads/?digest={}", sha256(&blob));
    let anonymous = d.request_body("POST", &path, &[], blob.clone()).await;
    assert_eq!(anonymous.status, 401);
    let reader = basic("reader", "reader-pw");
    let r = d
        .request_body("POST", &path, &[("authorization", &reader)], blob.clone())
        .await;
    assert_eq!(r.status, 403);
    // A mirrored namespace is read-only whoever asks.
    let writer = basic(WRITER.0, WRITER.1);
    let mirror = format!("/v2/library/app/blobs/uploads/?digest={}", sha256(&blob));
    let r = d
        .request_body("POST", &mirror, &[("authorization", &writer)], blob.clone())
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(up.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distribution_spec_push_discovery_and_management_workflows_pass() {
    use crate::support::push_spec::{run_all, Target};
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let target = Target {
        auth_header: Some(basic(WRITER.0, WRITER.1)),
        ..Target::conformant(&format!("http://{}", d.addr), "local/spec/one", "local/spec/two")
    };
    let report = run_all(&target).await;
    println!("{report}");
    assert_eq!(up.requests().len(), 0, "a hosted name never reaches the upstream");
}

/// A site with users challenges anonymous clients on `GET /v2/` (so `docker login` checks the
/// password) with the token flow alone. Docker Engine's client runs the handler of every
/// challenge it knows; with `Basic` beside `Bearer` its Basic handler failed each request of an
/// anonymous dockerd ("no basic auth credentials") before sending it, so a `registry-mirrors`
/// pull through a site that hosts repositories fell back to Docker Hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_are_offered_only_the_token_flow() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    for path in ["/v2/", "/v2/local/app/blobs/uploads/"] {
        let method = if path == "/v2/" { "GET" } else { "POST" };
        let r = d.request(method, path, &[]).await;
        assert_eq!(r.status, 401, "{method} {path}");
        let all: Vec<&str> = r
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all.len(), 1, "{method} {path}: {all:?}");
        assert!(all[0].starts_with("Bearer realm=\"http://"), "{all:?}");
    }
    // The anonymous token dockerd fetches then reads hosted content; Basic still pushes.
    let token = d
        .get("/token?service=regcache&scope=repository:local/app:pull")
        .await;
    assert_eq!(token.status, 200);
    let token: serde_json::Value = serde_json::from_slice(&token.bytes()).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    push_image(&d, "local/app", "v1", 5).await;
    let r = d
        .request("GET", "/v2/local/app/manifests/v1", &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_hosted_repositories_page_by_page() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let (_, _, mirrored) = up.add_image("library/base", "1", &[bytes_of(1_000, 20)]);
    let d = daemon(&up, &dir).await;
    d.pull("library/base", "1", &mirrored).await;
    for repo in ["local/b", "local/a", "local/team/c"] {
        push_image(&d, repo, "v1", 21).await;
    }
    assert_eq!(regcache_repo_create(&d, "strict/empty").await.status, 200);
    let all: serde_json::Value = serde_json::from_slice(&d.get("/v2/_catalog").await.bytes()).unwrap();
    assert_eq!(
        all["repositories"],
        serde_json::json!(["local/a", "local/b", "local/team/c", "strict/empty"]),
        "hosted repositories only, sorted: {all}"
    );
    let first = d.get("/v2/_catalog?n=2").await;
    let page: serde_json::Value = serde_json::from_slice(&first.bytes()).unwrap();
    assert_eq!(page["repositories"], serde_json::json!(["local/a", "local/b"]));
    assert_eq!(
        first.header("link"),
        Some("</v2/_catalog?n=2&last=local%2Fb>; rel=\"next\"")
    );
    let next: serde_json::Value =
        serde_json::from_slice(&d.get("/v2/_catalog?n=2&last=local%2Fb").await.bytes()).unwrap();
    assert_eq!(
        next["repositories"],
        serde_json::json!(["local/team/c", "strict/empty"])
    );
}
