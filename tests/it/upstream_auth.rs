//! Upstream authentication: the Bearer token flow (anonymous and with credentials, `account`,
//! token cache, expiry, one fetch for many waiters, retry on a rejected token, identity tokens),
//! the registry quirks (quay's double challenge, ghcr's placeholder scope, registry.k8s.io's
//! redirects to a backend with its own challenge, ECR's Basic auth), and redirects that must not
//! carry `Authorization` to another host.

use crate::support::daemon::{pass_time, Daemon, DaemonBuilder, Upstream};
use crate::support::fake::{basic, bytes_of, Auth, ChallengeStyle, Fake};

#[tokio::test]
async fn bearer_token_is_fetched_once_per_scope_and_reused() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer {
        expires_in: Some(300),
    });
    let (digest, bytes, layers) = up.add_image("library/app", "1", &[bytes_of(1000, 1), bytes_of(2000, 2)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
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
    let d = DaemonBuilder::new().upstream(&up).start().await;
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
    let d = with_credentials(&up, "puller", "s3cret").await;
    assert_eq!(d.get("/v2/org/private/manifests/1").await.bytes(), bytes);
    let anonymous = DaemonBuilder::new().upstream(&up).start().await;
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
    let d = DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", &up)
                .default_upstream()
                .redirect_hosts(&[up.storage_host()]),
        )
        .start()
        .await;
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

/// A daemon pulling from `up` as docker.io with `username` and `password`, allowed to follow
/// redirects to its storage host; public, so anonymous test clients are served.
async fn with_credentials(up: &Fake, user: &str, pass: &str) -> Daemon {
    DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", up)
                .credentials(user, pass)
                .public()
                .redirect_hosts(&[up.storage_host()]),
        )
        .start()
        .await
}

#[tokio::test]
async fn token_requests_carry_credentials_and_account() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer {
        expires_in: Some(300),
    });
    up.require_token_user("puller", "s3cret");
    let (_, bytes, _) = up.add_image("org/private", "1", &[bytes_of(10, 1)]);
    let d = with_credentials(&up, "puller", "s3cret").await;
    assert_eq!(d.get("/v2/org/private/manifests/1").await.bytes(), bytes);
    let log = up.token_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].param("account").as_deref(), Some("puller"));
    assert_eq!(
        log[0].param("scope").as_deref(),
        Some("repository:org/private:pull")
    );
    assert_eq!(
        log[0].authorization.as_deref(),
        Some(basic("puller", "s3cret").as_str())
    );
    // Anonymous: the token service grants nothing, the registry refuses, the client gets 403.
    let anonymous = DaemonBuilder::new().upstream(&up).start().await;
    let r = anonymous.get("/v2/org/private/manifests/1").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "DENIED"));
    assert_eq!(up.token_log().last().unwrap().param("account"), None);
    // Wrong password: the token service says 401, the client gets a clean 403.
    let wrong = with_credentials(&up, "puller", "wrong").await;
    let r = wrong.get("/v2/org/private/manifests/1").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "DENIED"));
}

#[tokio::test]
async fn quay_style_double_challenge_is_answered_with_bearer() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer { expires_in: None });
    up.set_challenge_style(ChallengeStyle::Quay);
    let (_, bytes, _) = up.add_image("org/app", "1", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(d.get("/v2/org/app/manifests/1").await.bytes(), bytes);
    assert_eq!(up.token_requests().len(), 1);
    let sent: Vec<_> = up
        .requests()
        .into_iter()
        .filter_map(|l| l.authorization)
        .collect();
    assert!(sent.iter().all(|a| a.starts_with("Bearer ")), "{sent:?}");
}

#[tokio::test]
async fn ghcr_placeholder_scope_is_replaced_by_the_real_one() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer { expires_in: None });
    up.set_challenge_style(ChallengeStyle::Ghcr);
    let (_, bytes, layers) = up.add_image("owner/app", "1", &[bytes_of(100, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(d.get("/v2/owner/app/manifests/1").await.bytes(), bytes);
    assert_eq!(
        d.get(&format!("/v2/owner/app/blobs/{}", layers[0])).await.status,
        200
    );
    let scopes: Vec<_> = up.token_log().iter().map(|t| t.param("scope")).collect();
    assert_eq!(scopes, vec![Some("repository:owner/app:pull".to_string())]);
}

#[tokio::test]
async fn tokens_are_renewed_when_expires_in_runs_out() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer { expires_in: Some(1) });
    up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    up.add_image("library/app", "2", &[bytes_of(10, 2)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(d.get("/v2/library/app/manifests/1").await.status, 200);
    assert_eq!(up.token_requests().len(), 1);
    pass_time(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(d.get("/v2/library/app/manifests/2").await.status, 200);
    assert_eq!(up.token_requests().len(), 2, "the expired token was renewed");
    // Renewed before use, not after a refusal: only the very first request was unauthenticated.
    assert_eq!(
        up.requests().iter().filter(|l| l.authorization.is_none()).count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_needing_one_token_cause_one_token_fetch() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer {
        expires_in: Some(300),
    });
    up.delay_tokens(std::time::Duration::from_millis(300));
    let layers: Vec<Vec<u8>> = (0..8).map(|i| bytes_of(1000, 10 + i)).collect();
    let (_, _, digests) = up.add_image("library/app", "1", &layers);
    let d = std::sync::Arc::new(DaemonBuilder::new().upstream(&up).start().await);
    let mut tasks = Vec::new();
    for digest in digests {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            d.get(&format!("/v2/library/app/blobs/{digest}")).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(up.token_requests().len(), 1, "{:?}", up.token_requests());
    assert_eq!(
        d.metric(
            "regcache_upstream_token_fetches_total",
            &[("upstream", "docker.io")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn identity_tokens_are_exchanged_by_oauth2_post() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer {
        expires_in: Some(300),
    });
    up.require_token_user("someone", "unused");
    up.accept_refresh_token("refresh-xyz");
    let (_, bytes, _) = up.add_image("org/private", "1", &[bytes_of(10, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"refresh-xyz"}}}}}}"#,
            up.addr
        ),
    )
    .unwrap();
    let d = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &up).docker_config(&config).public())
        .start()
        .await;
    assert_eq!(d.get("/v2/org/private/manifests/1").await.bytes(), bytes);
    let log = up.token_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].param("grant_type").as_deref(), Some("refresh_token"));
    assert_eq!(log[0].param("service").as_deref(), Some("fake"));
    assert_eq!(
        log[0].param("scope").as_deref(),
        Some("repository:org/private:pull")
    );
    assert_eq!(log[0].param("client_id").as_deref(), Some("regcache"));
}

#[tokio::test]
async fn registry_k8s_io_redirects_authenticate_against_the_backend() {
    // registry.k8s.io answers /v2/ itself and redirects everything else to a regional backend,
    // which challenges on its own; the backend redirects blobs to storage in turn.
    let front = Fake::start().await;
    let back = Fake::start().await;
    back.set_auth(Auth::Bearer {
        expires_in: Some(300),
    });
    back.redirect_blobs(true);
    front.redirect_all(&back.url(), "k8s-artifacts-prod/images");
    let layer = bytes_of(20_000, 9);
    let (_, bytes, layers) = back.add_image(
        "k8s-artifacts-prod/images/pause",
        "3.9",
        std::slice::from_ref(&layer),
    );
    let d = DaemonBuilder::new()
        .with_upstream(
            Upstream::new("registry.k8s.io", &front)
                .default_upstream()
                .redirect_hosts(&[back.addr.to_string(), back.storage_host()]),
        )
        .start()
        .await;
    assert_eq!(d.get("/v2/pause/manifests/3.9").await.bytes(), bytes);
    let r = d
        .get(&format!("/v2/pause/blobs/{}?ns=registry.k8s.io", layers[0]))
        .await;
    assert_eq!(r.bytes(), layer);
    let scopes: Vec<_> = back.token_log().iter().map(|t| t.param("scope")).collect();
    assert_eq!(
        scopes,
        vec![Some(
            "repository:k8s-artifacts-prod/images/pause:pull".to_string()
        )],
        "one token, for the backend's own repository name"
    );
    assert!(front.requests().iter().all(|l| l.authorization.is_none()));
    let storage: Vec<_> = back
        .requests()
        .into_iter()
        .filter(|l| l.host == "storage")
        .collect();
    assert_eq!(storage.len(), 1);
    assert!(storage[0].authorization.is_none());
    let backend_unauthenticated = back
        .requests()
        .iter()
        .filter(|l| l.host == "registry" && l.authorization.is_none())
        .count();
    assert_eq!(backend_unauthenticated, 1, "the backend token is reused");
}

#[tokio::test]
async fn ecr_basic_auth_stays_off_signed_storage_urls() {
    let up = Fake::start().await;
    up.set_auth(Auth::Basic {
        user: "AWS".into(),
        pass: "ecr-token".into(),
    });
    up.redirect_blobs(true);
    let layer = bytes_of(30_000, 5);
    let (_, _, layers) = up.add_image("team/app", "1", std::slice::from_ref(&layer));
    let d = with_credentials(&up, "AWS", "ecr-token").await;
    assert_eq!(d.get("/v2/team/app/manifests/1").await.status, 200);
    assert_eq!(
        d.get(&format!("/v2/team/app/blobs/{}", layers[0])).await.bytes(),
        layer
    );
    let registry: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|l| l.host == "registry")
        .collect();
    let want = basic("AWS", "ecr-token");
    assert_eq!(registry[0].authorization, None, "first contact is anonymous");
    assert!(registry[1..]
        .iter()
        .all(|l| l.authorization.as_deref() == Some(want.as_str())));
    let storage: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|l| l.host == "storage")
        .collect();
    assert_eq!(storage.len(), 1);
    assert!(
        storage[0].authorization.is_none(),
        "Authorization reached the signed URL"
    );
    assert!(up.token_requests().is_empty(), "Basic needs no token service");
}
