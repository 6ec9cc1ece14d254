//! Upstreams behind a SOCKS5 egress proxy (`[fetch] proxy = "socks5h://..."` or `socks5://`):
//! with `socks5h` the proxy gets the upstream's name and resolves it; with `socks5` regcache
//! resolves it and sends the address; credentials in the URL go as SOCKS5's user and password,
//! and a refusal is named. The upstream URL uses `localhost` on a port where nothing listens,
//! routed by the test proxy to the fake upstream, so a pull that works went through the proxy
//! (and `localhost` resolves without any DNS query). Loopback only.

use crate::support::daemon::{DaemonBuilder, Upstream};
use crate::support::fake::{bytes_of, Fake};
use crate::support::listeners::free_port;
use crate::support::socks_proxy::SocksProxy;

#[tokio::test]
async fn socks5h_sends_the_name_with_credentials() {
    let up = Fake::start().await;
    let (_, manifest, layers) = up.add_image("library/app", "1", &[bytes_of(80_000, 51)]);
    let proxy = SocksProxy::start().await;
    proxy.require("robot", "p@ss");
    let port = free_port();
    proxy.route(&format!("localhost:{port}"), up.addr);
    let url = format!("http://localhost:{port}");
    let via = |creds: &str| format!("socks5h://{creds}{}", proxy.addr);

    let d = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &url).default_upstream())
        .egress_proxy(&via("robot:p%40ss@"))
        .start()
        .await;
    assert_eq!(d.pull("library/app", "1", &layers).await, manifest);
    assert!(
        proxy.targets().iter().all(|t| *t == format!("localhost:{port}")),
        "{:?}",
        proxy.targets()
    );

    let refused = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &url).default_upstream())
        .egress_proxy(&via("robot:wrong@"))
        .start()
        .await;
    let r = refused.get("/v2/library/app/manifests/1").await;
    assert!(r.status == 502 || r.status == 503, "{}", r.status);
    let body = String::from_utf8_lossy(&r.bytes()).into_owned();
    assert!(body.contains("user and password refused"), "{body}");
}

#[tokio::test]
async fn socks5_resolves_here_and_sends_the_address() {
    let up = Fake::start().await;
    let (_, manifest, layers) = up.add_image("library/app", "1", &[bytes_of(30_000, 52)]);
    let proxy = SocksProxy::start().await;
    let port = free_port();
    proxy.route(&format!("127.0.0.1:{port}"), up.addr);
    proxy.route(&format!("[::1]:{port}"), up.addr);
    let d = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &format!("http://localhost:{port}")).default_upstream())
        .egress_proxy(&format!("socks5://{}", proxy.addr))
        .start()
        .await;
    assert_eq!(d.pull("library/app", "1", &layers).await, manifest);
    let targets = proxy.targets();
    assert!(!targets.is_empty());
    assert!(
        targets.iter().all(|t| !t.starts_with("localhost")),
        "the name went to the proxy: {targets:?}"
    );
}
