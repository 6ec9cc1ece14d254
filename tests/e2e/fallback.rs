//! A fallback registry (`[[upstreams]] fallback`) against the real registry: the configured
//! upstream is a loopback port where nothing listens (Docker Hub down), the fallback is the
//! distribution registry behind the Docker-Hub-like token server, asked anonymously with its
//! own token; skopeo pulls an image through regcache byte for byte, and a second pull with the
//! fallback gone too is served from the cache. Needs `docker-registry` and `skopeo`. Loopback
//! only.

use std::time::Duration;

use crate::support::e2e::images;
use crate::support::e2e::registry::{free_port, Registry};
use crate::support::e2e::token_server::TokenServer;
use crate::support::e2e::{self, tools_present, Skopeo};

const TEST: &str = "fallback::a_down_upstream_is_stood_in_for_by_its_fallback";

#[tokio::test]
async fn a_down_upstream_is_stood_in_for_by_its_fallback() {
    if !tools_present(TEST) {
        return;
    }
    let token = TokenServer::start().await.expect("token server");
    let mut registry = Registry::start(&token).await.expect("docker-registry");
    let work = tempfile::Builder::new()
        .prefix("regcache-e2e-fallback-")
        .tempdir()
        .expect("work dir");
    let skopeo = Skopeo::new().expect("skopeo setup");
    let image = images::push_one(&skopeo, &registry.host(), work.path(), "library/alpine").await;

    let cache = work.path().join("cache");
    let down = free_port().expect("a free port");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nbuiltin_upstreams = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [cache]\ndir = \"{}\"\n[[upstreams]]\nhost = \"docker.io\"\nurl = \"http://{down}\"\n\
         default = true\nfallback = [\"{}\"]\n",
        cache.display(),
        registry.url()
    );
    let config = regcache::config::Config::from_toml_str(&text).expect("regcache config");
    let mirror = regcache::app::start(config).await.expect("start regcache");
    let src = format!("docker://{}/{}", mirror.local_addr(), image.reference());
    let pull = |name: &str| {
        let out = work.path().join(name);
        let skopeo = skopeo.clone();
        let src = src.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(120),
                skopeo.copy(
                    &src,
                    &format!("dir:{}", out.display()),
                    &["--src-tls-verify=false", "--src-no-creds"],
                    None,
                ),
            )
            .await
            .expect("skopeo copy within 120 s")
            .map(|_| out)
        }
    };
    let out = pull("first").await.expect("pull through the fallback");
    let files = e2e::compare_dirs(&image.layout, &out).expect("identical to the pushed image");
    eprintln!("[{TEST}] {files} files identical, served by the fallback");
    assert!(registry.blob_gets() >= 1, "the fallback served no blob");
    assert!(
        token.counts().anonymous >= 1,
        "the fallback was not asked with its own token"
    );

    // The fallback goes down too: what was pulled is served from the cache.
    registry.kill();
    let out = pull("second").await.expect("pull from the cache");
    e2e::compare_dirs(&image.layout, &out).expect("identical from the cache");
    mirror.shutdown().await;
}
