//! regcache behind a real egress proxy (tinyproxy, with Basic credentials) in front of the real
//! registry and its Docker-Hub-like token server. Without the proxy's credentials a pull fails
//! and the client's error names the proxy's 407; with them in `[fetch] proxy`, skopeo pulls an
//! image through regcache byte for byte, and the proxy logged a CONNECT to the registry and one
//! to the token service, so nothing went around it; `check-config --probe` says the same of
//! both configurations. The same pull through a real SOCKS5 proxy (microsocks). Needs
//! `tinyproxy` (Debian's tinyproxy-bin), `microsocks`, `docker-registry` and `skopeo`. Loopback
//! only.

use crate::support::e2e::pushed::Pushed;
use crate::support::e2e::registry::Registry;
use crate::support::e2e::{self, tools_present, HttpClient};
use crate::support::egress_proxies::{self, Proxy, MICROSOCKS_BIN, TINYPROXY_BIN};

const TEST: &str = "egress_proxy::pulls_through_a_real_egress_proxy";

/// The registry as the default upstream, reached through `proxy`.
fn behind(registry: &Registry, proxy: &str) -> String {
    format!(
        "[fetch]\nproxy = \"{proxy}\"\n[[upstreams]]\nhost = \"docker.io\"\nurl = \"{}\"\ndefault = true\n",
        registry.url()
    )
}

/// regcache in-process with the registry as its default upstream, reached through `proxy`.
async fn mirror(registry: &Registry, proxy: &str) -> (regcache::app::Running, tempfile::TempDir) {
    e2e::start_mirror_with(&behind(registry, proxy)).await
}

/// What `check-config --probe` says of that configuration, and whether every probe answered.
async fn probe(registry: &Registry, proxy: &str) -> (String, bool) {
    let text = format!("builtin_upstreams = false\n{}", behind(registry, proxy));
    let config = regcache::config::Config::from_toml_str(&text).expect("config");
    regcache::cli::probe_cmd::probe_all(&config).await.expect("probe")
}

#[tokio::test]
async fn pulls_through_a_real_egress_proxy() {
    if !tools_present(TEST) {
        return;
    }
    if !egress_proxies::present(TEST, TINYPROXY_BIN) {
        return;
    }
    let up = Pushed::start("regcache-e2e-egress-", "library/alpine").await;
    let (registry, image) = (&up.registry, &up.image);
    let proxy = Proxy::tinyproxy("regcache", "proxy-secret")
        .await
        .expect("tinyproxy");

    // The proxy's credentials missing: refused at the proxy, and the client is told so.
    let (without, _cache) = mirror(registry, &format!("http://{}", proxy.addr)).await;
    let url = format!(
        "http://{}/v2/{}/manifests/{}",
        without.local_addr(),
        image.repo,
        image.tag
    );
    let r = HttpClient::new().get(&url, None).await.expect("manifest request");
    let body = String::from_utf8_lossy(&r.body);
    assert!(r.status == 502 || r.status == 503, "{} {body}", r.status);
    assert!(
        body.contains(&format!("the egress proxy {} answered \\\"407", proxy.addr)),
        "{body}"
    );
    without.shutdown().await;
    let (report, ok) = probe(registry, &format!("http://{}", proxy.addr)).await;
    assert!(
        !ok && report.contains("answered \"407 Proxy Authentication Required\""),
        "{report}"
    );
    let (report, ok) = probe(registry, &format!("http://regcache:proxy-secret@{}", proxy.addr)).await;
    assert!(ok, "{report}");

    let (with, _cache) = mirror(registry, &format!("http://regcache:proxy-secret@{}", proxy.addr)).await;
    let out = up
        .pull_from(&with.local_addr().to_string(), "out")
        .await
        .expect("skopeo copy through regcache and the proxy");
    let files = up.same_as_pushed(&out).expect("identical to the pushed image");
    eprintln!("[{TEST}] {files} files identical through the egress proxy");

    let targets = proxy.connect_targets();
    assert!(targets.contains(&registry.host()), "{targets:?}");
    assert!(
        targets.contains(&up.token.addr().to_string()),
        "the token fetch went around the proxy: {targets:?}"
    );
    with.shutdown().await;
}

/// The same pull through a real SOCKS5 proxy (microsocks, with a user and password) as
/// `[fetch] proxy = "socks5h://..."`: byte for byte, and microsocks connected to the registry and
/// the token service for regcache.
#[tokio::test]
async fn pulls_through_a_real_socks5_proxy() {
    const TEST: &str = "egress_proxy::pulls_through_a_real_socks5_proxy";
    if !tools_present(TEST) {
        return;
    }
    if !egress_proxies::present(TEST, MICROSOCKS_BIN) {
        return;
    }
    let up = Pushed::start("regcache-e2e-socks-", "library/alpine").await;
    let proxy = Proxy::microsocks("regcache", "socks-secret")
        .await
        .expect("microsocks");
    let url = format!("socks5h://regcache:socks-secret@{}", proxy.addr);
    let (mirror, _cache) = mirror(&up.registry, &url).await;
    let out = up
        .pull_from(&mirror.local_addr().to_string(), "out")
        .await
        .expect("skopeo copy through regcache and microsocks");
    let files = up.same_as_pushed(&out).expect("identical to the pushed image");
    eprintln!("[{TEST}] {files} files identical through the SOCKS5 proxy");
    // microsocks writes its log lines as it goes; give the last one a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let targets = proxy.socks_targets();
    assert!(targets.contains(&up.registry.host()), "{targets:?}");
    assert!(
        targets.contains(&up.token.addr().to_string()),
        "the token fetch went around the proxy: {targets:?}"
    );
    mirror.shutdown().await;
}
