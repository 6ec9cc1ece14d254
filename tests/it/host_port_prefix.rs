//! Pulls the way a CRI-O/podman mirror of a registry on a non-default port sends them: the
//! registry's `host:port` as the first path segment (`/v2/127.0.0.1:PORT/library/app/...`). Here
//! the upstream is configured under its own `127.0.0.1:PORT`, beside a default upstream that must
//! never see these requests. Manifests and blobs by tag and digest, tag lists (whose `Link` keeps
//! the prefix) and referrers go through the prefix; a `host:port` that is no configured upstream
//! is an invalid name, answered without any upstream request.

use crate::support::daemon::{Daemon, DaemonBuilder, Upstream};
use crate::support::fake::{bytes_of, Fake};
use crate::support::listeners::BlackHole;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A default upstream (`hub`) and `reg`, configured under its own `127.0.0.1:PORT`.
async fn two_upstreams() -> (Fake, Fake, Daemon) {
    let hub = Fake::start().await;
    let reg = Fake::start().await;
    let d = DaemonBuilder::new()
        .upstream(&hub)
        .with_upstream(Upstream::new(&reg.addr.to_string(), &reg))
        .start()
        .await;
    (hub, reg, d)
}

/// Every path `reg` was asked for names `repo` at the upstream, without the prefix.
fn only_repo(reg: &Fake, repo: &str) {
    for l in reg.requests() {
        assert!(
            l.path.starts_with(&format!("/v2/{repo}/")) || l.path == "/v2/",
            "upstream saw {}",
            l.path
        );
    }
}

#[tokio::test]
async fn manifests_and_blobs_by_tag_and_digest_through_the_prefix() {
    let (hub, reg, d) = two_upstreams().await;
    let layers = [bytes_of(70_000, 1), bytes_of(3_000, 2)];
    let (digest, bytes, blobs) = reg.add_image("library/app", "v1", &layers);
    let prefix = format!("/v2/{}/library/app", reg.addr);
    for reference in ["v1", digest.as_str()] {
        let path = format!("{prefix}/manifests/{reference}");
        let r = d.get(&path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.bytes(), bytes, "{path}: exact upstream bytes");
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        let r = d.head(&path).await;
        assert_eq!(r.status, 200, "HEAD {path}");
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    }
    for (blob, layer) in blobs.iter().zip(&layers) {
        let r = d.get(&format!("{prefix}/blobs/{blob}")).await;
        assert_eq!(r.status, 200, "{blob}");
        assert_eq!(r.bytes(), *layer, "{blob}");
        assert_eq!(r.header("docker-content-digest"), Some(blob.as_str()));
    }
    only_repo(&reg, "library/app");
    assert!(hub.requests().is_empty(), "the default upstream was never asked");
    // Cached under the prefixed upstream: a second pull by digest needs no upstream.
    reg.clear_log();
    let r = d.get(&format!("{prefix}/blobs/{}", blobs[0])).await;
    assert_eq!(r.bytes(), layers[0]);
    assert_eq!(reg.count("GET", "blobs/"), 0, "served from the cache");
}

#[tokio::test]
async fn tag_lists_and_referrers_through_the_prefix() {
    let (hub, reg, d) = two_upstreams().await;
    let (subject, _, _) = reg.add_image("library/app", "v1", &[bytes_of(10, 1)]);
    reg.set_tags("library/app", &["v3", "v1", "v2"]);
    let sig = format!("sha256:{}", "a".repeat(64));
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sig}","size":10,"artifactType":"application/vnd.dev.cosign.signature"}}]}}"#
    );
    reg.add_referrers("library/app", &subject, index.clone());
    let prefix = format!("/v2/{}/library/app", reg.addr);

    let r = d.get(&format!("{prefix}/tags/list?n=2")).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["v1", "v2"]));
    let link = r.header("link").expect("a next page").to_string();
    assert_eq!(
        link,
        format!("<{prefix}/tags/list?n=2&last=v2>; rel=\"next\""),
        "the link keeps the client's prefix"
    );
    let next = link.trim_start_matches('<').split_once('>').unwrap().0;
    let v: serde_json::Value = serde_json::from_slice(&d.get(next).await.bytes()).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["v3"]));

    let r = d.get(&format!("{prefix}/referrers/{subject}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.bytes(), index.as_bytes());

    only_repo(&reg, "library/app");
    assert!(hub.requests().is_empty(), "the default upstream was never asked");
}

#[tokio::test]
async fn an_unconfigured_host_port_prefix_is_an_invalid_name() {
    let (hub, reg, d) = two_upstreams().await;
    reg.add_image("library/app", "v1", &[bytes_of(10, 1)]);
    // A live listener nobody configured: it must never see a connection.
    let stranger = BlackHole::start().await;
    let digest = format!("sha256:{}", "a".repeat(64));
    let paths = [
        format!("/v2/{}/library/app/manifests/v1", stranger.addr),
        format!("/v2/{}/library/app/blobs/{digest}", stranger.addr),
        format!("/v2/{}/library/app/tags/list", stranger.addr),
        format!("/v2/{}/library/app/referrers/{digest}", stranger.addr),
        format!("/v2/localhost:{}/library/app/manifests/v1", reg.addr.port()),
        format!("/v2/[::1]:{}/library/app/manifests/v1", reg.addr.port()),
        // The configured host, but with `ns=` too: the name would be resolved twice.
        format!("/v2/{}/library/app/manifests/v1?ns=docker.io", reg.addr),
        format!("/v2/{}/manifests/v1", reg.addr),
        format!("/v2/{}:99999/library/app/manifests/v1", reg.addr.ip()),
    ];
    for path in &paths {
        let r = d.get(path).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.error_code(), "NAME_INVALID", "{path}");
    }
    assert_eq!(stranger.accepted(), 0, "no connection to the named host");
    assert!(reg.requests().is_empty(), "upstream saw {:?}", reg.requests());
    assert!(hub.requests().is_empty(), "upstream saw {:?}", hub.requests());
    // `ns=` naming no upstream is still an unknown name, as before.
    let via_ns = d.get("/v2/library/app/manifests/v1?ns=quay.io").await;
    assert_eq!(via_ns.status, 404);
    assert_eq!(via_ns.error_code(), "NAME_UNKNOWN");
}
