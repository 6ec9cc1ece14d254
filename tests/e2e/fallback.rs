//! A fallback registry (`[[upstreams]] fallback`) against the real registry: the configured
//! upstream is a loopback port where nothing listens (Docker Hub down), the fallback is the
//! distribution registry behind the Docker-Hub-like token server, asked anonymously with its
//! own token; skopeo pulls an image through regcache byte for byte, and a second pull with the
//! fallback gone too is served from the cache; a fallback with credentials signs in for the
//! registry's private image. Needs `docker-registry` and `skopeo`. Loopback only.

use crate::support::e2e::pushed::Pushed;
use crate::support::e2e::registry::free_port;
use crate::support::e2e::{self, tools_present};

const TEST: &str = "fallback::a_down_upstream_is_stood_in_for_by_its_fallback";

#[tokio::test]
async fn a_down_upstream_is_stood_in_for_by_its_fallback() {
    if !tools_present(TEST) {
        return;
    }
    let mut up = Pushed::start("regcache-e2e-fallback-", "library/alpine").await;
    let down = free_port().expect("a free port");
    let (mirror, _cache) = e2e::start_mirror_with(&format!(
        "[[upstreams]]\nhost = \"docker.io\"\nurl = \"http://{down}\"\ndefault = true\nfallback = [\"{}\"]\n",
        up.registry.url()
    ))
    .await;
    let at = mirror.local_addr().to_string();

    let out = up
        .pull_from(&at, "first")
        .await
        .expect("pull through the fallback");
    let files = up.same_as_pushed(&out).expect("identical to the pushed image");
    eprintln!("[{TEST}] {files} files identical, served by the fallback");
    assert!(up.registry.blob_gets() >= 1, "the fallback served no blob");
    assert!(
        up.token.counts().anonymous >= 1,
        "the fallback was not asked with its own token"
    );

    // The fallback goes down too: what was pulled is served from the cache.
    up.registry.kill();
    let out = up.pull_from(&at, "second").await.expect("pull from the cache");
    up.same_as_pushed(&out).expect("identical from the cache");
    mirror.shutdown().await;
}

/// A fallback with credentials: the private image of the real registry, pulled through a
/// regcache whose upstream is down and whose fallback signs in as `reader` (the token server
/// refuses anonymous pulls of it). `public = true` lets the anonymous skopeo read it.
#[tokio::test]
async fn a_fallback_signs_in_with_its_own_credentials() {
    const TEST: &str = "fallback::a_fallback_signs_in_with_its_own_credentials";
    if !tools_present(TEST) {
        return;
    }
    let up = Pushed::start("regcache-e2e-fallback-creds-", "myorg/private").await;
    let down = free_port().expect("a free port");
    let (mirror, _cache) = e2e::start_mirror_with(&format!(
        "[[upstreams]]\nhost = \"docker.io\"\nurl = \"http://{down}\"\ndefault = true\npublic = true\n\
         fallback = [{{ url = \"{}\", username = \"reader\", password = \"reader-secret\" }}]\n",
        up.registry.url()
    ))
    .await;
    let out = up
        .pull_from(&mirror.local_addr().to_string(), "private")
        .await
        .expect("pull through the fallback with credentials");
    up.same_as_pushed(&out).expect("identical to the pushed image");
    let readers = up
        .token
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some("reader") && r.status == 200)
        .count();
    assert!(
        readers >= 1,
        "no token was taken as reader: {:?}",
        up.token.requests()
    );
    mirror.shutdown().await;
}
