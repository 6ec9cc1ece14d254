//! regcache's own bucket client (`bucket::open`) behind an egress proxy, beside SeaweedFS in the
//! same loopback-only namespace.

use crate::support::egress_proxies::Proxy;
use crate::support::seaweedfs::{self, SeaweedFs};

/// regcache's own bucket client behind `[fetch] proxy` (tinyproxy, with credentials), asked by
/// `check-config --probe`: the bucket answers through the proxy, whose log has the requests to
/// the store's port.
pub(super) async fn through_the_egress_proxy(weed: &SeaweedFs, bucket: &str) {
    let proxy = Proxy::tinyproxy("regcache", "proxy-secret")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("a temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, seaweedfs::SECRET_KEY).expect("write the secret");
    let text = format!(
        "builtin_upstreams = false\n[cache]\ndir = \"{}\"\n\
         [fetch]\nproxy = \"http://regcache:proxy-secret@{}\"\n\
         [storage]\nkind = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{}\"\nregion = \"{}\"\n\
         access_key_id = \"{}\"\nsecret_access_key_file = \"{}\"\n\
         [[upstreams]]\nhost = \"docker.io\"\noffline = true\n",
        dir.path().join("cache").display(),
        proxy.addr,
        weed.endpoint(),
        seaweedfs::REGION,
        seaweedfs::ACCESS_KEY,
        secret.display()
    );
    let config = regcache::config::Config::from_toml_str(&text).expect("config");
    let (report, ok) = regcache::cli::probe_cmd::probe_all(&config).await.expect("probe");
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!(
            "shared store s3 bucket {bucket} at {}: ok in",
            weed.endpoint()
        )),
        "{report}"
    );
    let store = weed.endpoint().trim_start_matches("http://").to_string();
    assert!(
        proxy.requests_to(&store) >= 1,
        "the bucket was asked around the proxy"
    );
}
