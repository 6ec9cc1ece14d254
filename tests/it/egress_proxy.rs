//! Upstreams behind an egress proxy (`[fetch] proxy`): every upstream connection, token service
//! and blob redirects included, goes through the proxy's CONNECT tunnel, except the hosts in
//! `no_proxy`. The upstream URL names a loopback port where nothing listens and the test proxy
//! routes that target to the fake upstream, so a pull that works went through the proxy.
//! Loopback only.

use crate::support::connect_proxy::ConnectProxy;
use crate::support::daemon::{DaemonBuilder, Upstream};
use crate::support::fake::{bytes_of, Auth, Fake};
use crate::support::listeners::free_port;

/// A fake upstream with one image, reachable only through `proxy` as `http://127.0.0.1:<closed>`.
async fn behind(proxy: &ConnectProxy) -> (Fake, String, Vec<u8>, Vec<String>) {
    let up = Fake::start().await;
    let layer = bytes_of(300_000, 21);
    let (_, _, layers) = up.add_image("library/app", "1", std::slice::from_ref(&layer));
    let hidden = format!("127.0.0.1:{}", free_port());
    proxy.route(&hidden, up.addr);
    (up, format!("http://{hidden}"), layer, layers)
}

#[tokio::test]
async fn every_upstream_connection_goes_through_the_proxy() {
    let proxy = ConnectProxy::start().await;
    let (up, url, layer, layers) = behind(&proxy).await;
    // Docker-Hub-style token auth: the token service is the fake's own address, through the proxy too.
    up.set_auth(Auth::Bearer { expires_in: None });
    let d = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &url).default_upstream())
        .egress_proxy(&proxy.url())
        .start()
        .await;
    let got = d.pull("library/app", "1", &layers).await;
    assert!(!got.is_empty());
    let r = d.get(&format!("/v2/library/app/blobs/{}", layers[0])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), layer);

    let targets = proxy.targets();
    let hidden = url.trim_start_matches("http://");
    assert!(targets.iter().any(|t| t == hidden), "{targets:?}");
    let token_service = up.addr.to_string();
    assert!(
        targets.contains(&token_service),
        "the token fetch bypassed the proxy: {targets:?}"
    );
    assert!(!up.token_requests().is_empty(), "no token was fetched");
}

#[tokio::test]
async fn hosts_in_no_proxy_are_reached_directly() {
    let proxy = ConnectProxy::start().await;
    let up = Fake::start().await;
    let layer = bytes_of(10_000, 22);
    let (_, _, layers) = up.add_image("library/app", "1", std::slice::from_ref(&layer));
    let d = DaemonBuilder::new()
        .upstream(&up)
        .egress_proxy(&proxy.url())
        .no_proxy(&["localhost", "127.0.0.0/8"])
        .start()
        .await;
    d.pull("library/app", "1", &layers).await;
    assert_eq!(proxy.targets(), Vec::<String>::new());
}

#[tokio::test]
async fn proxy_credentials_are_sent_and_a_407_is_named() {
    let proxy = ConnectProxy::start().await;
    proxy.require_basic("robot@corp", "p:ss");
    let (_, url, _, layers) = behind(&proxy).await;

    let without = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &url).default_upstream())
        .egress_proxy(&proxy.url())
        .start()
        .await;
    let r = without.get("/v2/library/app/manifests/1").await;
    assert!(r.status == 502 || r.status == 503, "{}", r.status);
    let m = r.error_message();
    assert!(
        m.contains("answered \"407 Proxy Authentication Required\""),
        "{m}"
    );
    assert!(m.contains("the proxy wants credentials"), "{m}");

    // The user and password are percent-encoded in the URL, as in HTTPS_PROXY.
    let with_url = format!("http://robot%40corp:p%3Ass@{}", proxy.addr);
    let with = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &url).default_upstream())
        .egress_proxy(&with_url)
        .start()
        .await;
    with.pull("library/app", "1", &layers).await;
}

#[tokio::test]
async fn redirect_targets_keep_their_rules_through_the_proxy() {
    let proxy = ConnectProxy::start().await;
    let (up, url, layer, layers) = behind(&proxy).await;
    let path = format!("/v2/library/app/blobs/{}", layers[0]);

    // https to a loopback literal or to localhost passes the scheme rule; the proxy would resolve
    // and reach it, so regcache refuses it by what it can see (the literal, the name localhost)
    // before asking for a tunnel.
    let unlisted = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &url).default_upstream())
        .egress_proxy(&proxy.url())
        .start()
        .await;
    for (target, why) in [
        ("127.0.0.1", "127.0.0.1 is loopback"),
        ("[::1]", "[::1] is loopback"),
        ("api.localhost", "api.localhost resolves to 127.0.0.1, loopback"),
    ] {
        let target = format!("{target}:{}", free_port());
        up.redirect_blobs_to(&format!("https://{target}"));
        let r = unlisted.get(&path).await;
        assert_eq!(r.status, 502);
        let m = r.error_message();
        assert!(m.contains("refusing a redirect") && m.contains(why), "{m}");
        assert!(
            !proxy.targets().contains(&target),
            "a refused redirect reached the proxy"
        );
    }

    // Listed, the storage host (plain http, like the upstream) is reached through the proxy.
    up.redirect_blobs(true);
    let storage = up.storage_host();
    let listed = DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", &url)
                .default_upstream()
                .redirect_hosts(std::slice::from_ref(&storage)),
        )
        .egress_proxy(&proxy.url())
        .start()
        .await;
    let r = listed.get(&path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), layer);
    assert!(proxy.targets().contains(&storage), "{:?}", proxy.targets());
}

#[tokio::test]
async fn a_proxy_that_is_down_is_a_clear_503_or_502() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let up = Fake::start().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .egress_proxy(&closed)
        .start()
        .await;
    let r = d.get("/v2/library/app/manifests/1").await;
    assert!(r.status == 502 || r.status == 503, "{}", r.status);
    let m = r.error_message();
    assert!(
        m.contains(&format!(
            "cannot connect to the egress proxy {}",
            closed.trim_start_matches("http://")
        )),
        "{m}"
    );
    assert!(up.requests().is_empty(), "went around the proxy");
}
