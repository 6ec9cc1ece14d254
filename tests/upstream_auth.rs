//! Upstream authentication: the anonymous Bearer token flow with a token cache, retry on a
//! rejected token, Basic credentials from the config, and blob redirects that must not carry
//! `Authorization` to another host.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/fake.rs"]
mod fake;

use daemon::Daemon;
use fake::{bytes_of, Auth, Fake};

#[tokio::test]
async fn bearer_token_is_fetched_once_per_scope_and_reused() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer {
        expires_in: Some(300),
    });
    let (digest, bytes, layers) = up.add_image("library/app", "1", &[bytes_of(1000, 1), bytes_of(2000, 2)]);
    let d = Daemon::start(&up.url(), "").await;
    assert_eq!(d.get("/v2/library/app/manifests/1").await.bytes(), bytes);
    for l in &layers {
        assert_eq!(d.get(&format!("/v2/library/app/blobs/{l}")).await.status, 200);
    }
    assert_eq!(
        d.head(&format!("/v2/library/app/manifests/{digest}"))
            .await
            .status,
        200
    );
    let tokens = up.token_requests();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(
        tokens[0].contains("scope=repository%3Alibrary%2Fapp%3Apull"),
        "{tokens:?}"
    );
    assert!(tokens[0].contains("service=fake"), "{tokens:?}");
    // Exactly one 401 round trip: the first request.
    let unauthenticated = up.requests().iter().filter(|l| l.authorization.is_none()).count();
    assert_eq!(unauthenticated, 1);
    // Another repository needs its own scope, fetched straight away (no second 401).
    up.add_image("library/other", "1", &[bytes_of(10, 3)]);
    assert_eq!(d.get("/v2/library/other/manifests/1").await.status, 200);
    assert_eq!(up.token_requests().len(), 2);
    assert_eq!(
        up.requests().iter().filter(|l| l.authorization.is_none()).count(),
        1
    );
}

#[tokio::test]
async fn a_rejected_token_is_renewed_once() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer {
        expires_in: Some(300),
    });
    up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    up.add_image("library/app", "2", &[bytes_of(10, 2)]);
    let d = Daemon::start(&up.url(), "").await;
    assert_eq!(d.get("/v2/library/app/manifests/1").await.status, 200);
    up.expire_tokens();
    assert_eq!(d.get("/v2/library/app/manifests/2").await.status, 200);
    assert_eq!(up.token_requests().len(), 2);
}

#[tokio::test]
async fn basic_credentials_from_config() {
    let up = Fake::start().await;
    up.set_auth(Auth::Basic {
        user: "puller".into(),
        pass: "s3cret".into(),
    });
    let (_, bytes, _) = up.add_image("org/private", "1", &[bytes_of(10, 1)]);
    let d = Daemon::start_with(&format!(
        "[[upstreams]]\nhost = \"docker.io\"\nurl = \"{}\"\nusername = \"puller\"\npassword = \"s3cret\"\n",
        up.url()
    ))
    .await;
    assert_eq!(d.get("/v2/org/private/manifests/1").await.bytes(), bytes);
    let anonymous = Daemon::start(&up.url(), "").await;
    let r = anonymous.get("/v2/org/private/manifests/1").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "DENIED");
}

#[tokio::test]
async fn blob_redirects_are_followed_without_authorization() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer { expires_in: None });
    up.redirect_blobs(true);
    let layer = bytes_of(50_000, 4);
    let (_, _, layers) = up.add_image("library/app", "1", std::slice::from_ref(&layer));
    let d = Daemon::start(&up.url(), "").await;
    let r = d.get(&format!("/v2/library/app/blobs/{}", layers[0])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), layer);
    let storage: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|l| l.host == "storage")
        .collect();
    assert_eq!(storage.len(), 1);
    assert!(
        storage[0].authorization.is_none(),
        "Authorization leaked to the storage host"
    );
    let r = d
        .head(&format!("/v2/library/app/blobs/{}", bytes_of(1, 1).len()))
        .await;
    assert_eq!(r.status, 400, "not a digest");
}
