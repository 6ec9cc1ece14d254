//! Keeping production pulling when upstreams fail: remembered 404s, the circuit breaker, a
//! black-holed upstream, offline mode, and tag lists and referrers that work from the cache.

use std::time::{Duration, Instant};

use crate::support::daemon::DaemonBuilder;
use crate::support::fake::{bytes_of, Fake, Fault};
use crate::support::listeners::BlackHole;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[tokio::test]
async fn missing_tags_are_remembered_briefly() {
    let up = Fake::start().await;
    up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    for _ in 0..5 {
        let r = d.get("/v2/library/app/manifests/nope").await;
        assert_eq!(r.status, 404);
        assert_eq!(r.error_code(), "MANIFEST_UNKNOWN");
    }
    assert_eq!(
        up.count("GET", "/manifests/nope"),
        1,
        "a crash-looping pod costs one upstream request"
    );
    let off = DaemonBuilder::new()
        .upstream(&up)
        .negative_ttl("0s")
        .start()
        .await;
    for _ in 0..3 {
        assert_eq!(off.get("/v2/library/app/manifests/nope").await.status, 404);
    }
    assert_eq!(up.count("GET", "/manifests/nope"), 4);
}

#[tokio::test]
async fn breaker_fails_fast_then_recovers() {
    let up = Fake::start().await;
    let (_, bytes, _) = up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new()
        .upstream(&up)
        .breaker(2, "50ms")
        .start()
        .await;
    up.set_fault(Some(Fault::Down(503)));
    for _ in 0..2 {
        assert_eq!(d.get("/v2/library/app/manifests/1").await.status, 502);
    }
    assert_eq!(
        d.metric("regcache_upstream_down", &[("upstream", "docker.io")])
            .await,
        1.0
    );
    let before = up.count("GET", "/manifests/");
    for _ in 0..5 {
        let r = d.get("/v2/library/app/manifests/1").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.error_code(), "UNAVAILABLE");
    }
    assert_eq!(
        up.count("GET", "/manifests/"),
        before,
        "no upstream request while marked down"
    );
    // The upstream comes back; the background probe notices.
    up.set_fault(None);
    for _ in 0..200 {
        if d.metric("regcache_upstream_down", &[("upstream", "docker.io")])
            .await
            == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(base_requests(&up) >= 1, "probed with GET /v2/");
    assert_eq!(d.get("/v2/library/app/manifests/1").await.bytes(), bytes);
}

/// Requests for the registry's own endpoint, `GET /v2/`.
fn base_requests(up: &Fake) -> usize {
    up.requests()
        .iter()
        .filter(|l| l.method == "GET" && l.path == "/v2/")
        .count()
}

#[tokio::test]
async fn one_failing_repository_does_not_take_the_upstream_down() {
    let up = Fake::start().await;
    let (_, bytes, _) = up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).breaker(2, "1h").start().await;
    // Every repository request fails with 503, but /v2/ answers: one repository's trouble.
    up.set_fault(Some(Fault::Status(503)));
    for _ in 0..10 {
        assert_eq!(d.get("/v2/library/broken/manifests/1").await.status, 502);
    }
    assert_eq!(
        d.metric("regcache_upstream_down", &[("upstream", "docker.io")])
            .await,
        0.0,
        "a flood for one repository leaves the upstream up"
    );
    assert!(base_requests(&up) >= 1, "the upstream's own endpoint was asked");
    up.set_fault(None);
    assert_eq!(d.get("/v2/library/app/manifests/1").await.bytes(), bytes);
}

/// An upstream that accepts connections and never answers fails an uncached pull at its header
/// deadline, counted from the connection: not after the body's read timeout, and not after
/// `connect_timeout` on top when the connect took no time (tokio's paused clock passes the time).
#[tokio::test(start_paused = true)]
async fn black_holed_upstream_fails_an_uncached_pull_at_the_header_deadline() {
    let hole = BlackHole::start().await;
    let d = DaemonBuilder::new()
        .upstream(&hole)
        .header_timeout("3s")
        .connect_timeout("10s")
        .read_timeout("60s")
        .start()
        .await;
    let started = tokio::time::Instant::now();
    let r = d.get("/v2/library/app/manifests/latest").await;
    let waited = started.elapsed();
    assert_eq!(r.status, 503, "the upstream did not answer in time");
    assert_eq!(r.error_code(), "UNAVAILABLE");
    let body = String::from_utf8_lossy(&r.bytes()).into_owned();
    assert!(
        body.contains("did not answer in time"),
        "the error says why: {body}"
    );
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "answered after {waited:?}"
    );
}

/// A token service that accepts and never answers is the upstream not answering: 503 at the
/// header deadline, not a malformed-token 502 after the whole connect + header budget.
#[tokio::test(start_paused = true)]
async fn a_silent_token_service_fails_at_the_header_deadline() {
    let up = Fake::start().await;
    up.set_auth(crate::support::fake::Auth::Bearer { expires_in: None });
    up.delay_tokens(Duration::from_secs(3600));
    up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new()
        .upstream(&up)
        .header_timeout("3s")
        .connect_timeout("10s")
        .start()
        .await;
    let started = tokio::time::Instant::now();
    let r = d.get("/v2/library/app/manifests/1").await;
    let waited = started.elapsed();
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "UNAVAILABLE"));
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "answered after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_upstream_does_not_stall_cached_tags() {
    let up = Fake::start().await;
    let (digest, bytes, layers) = up.add_image("library/app", "latest", &[bytes_of(20_000, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(d.pull("library/app", "latest", &layers).await, bytes);
    let dir = d.stop().await;
    let hole = BlackHole::start().await;
    let d = DaemonBuilder::new()
        .upstream(&hole)
        .in_dir(dir)
        .tag_ttl("0s")
        .revalidate_timeout("300ms")
        .read_timeout("60s")
        .breaker(1, "1h")
        .start()
        .await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let r = d.get("/v2/library/app/manifests/latest").await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(r.status, 200);
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(r.bytes(), bytes);
    }
    assert_eq!(
        d.get(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .bytes(),
        bytes_of(20_000, 1)
    );
    eprintln!("black-holed upstream: slowest cached tag pull {slowest:?}");
    // Bounded by the revalidation deadline, nowhere near the 60 s read timeout.
    assert!(slowest < Duration::from_secs(10), "{slowest:?}");
    assert_eq!(
        hole.accepted(),
        1,
        "after one timeout the upstream is marked down: no more connections"
    );
    assert_eq!(
        d.metric(
            "regcache_requests_total",
            &[
                ("kind", "manifest"),
                ("result", "stale"),
                ("upstream", "docker.io")
            ]
        )
        .await,
        20.0
    );
}

#[tokio::test]
async fn offline_mode_serves_the_cache_and_makes_no_connection() {
    let up = Fake::start().await;
    let (digest, bytes, layers) = up.add_image("library/app", "latest", &[bytes_of(5000, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    d.pull("library/app", "latest", &layers).await;
    assert_eq!(d.get("/v2/library/app/tags/list").await.status, 200);
    let dir = d.stop().await;
    let hole = BlackHole::start().await;
    let d = DaemonBuilder::new()
        .offline()
        .upstream(&hole)
        .in_dir(dir)
        .tag_ttl("0s")
        .start()
        .await;
    let r = d.get("/v2/library/app/manifests/latest").await;
    assert_eq!(r.bytes(), bytes, "the tag as last seen");
    assert_eq!(d.head("/v2/library/app/manifests/latest").await.status, 200);
    assert_eq!(
        d.get(&format!("/v2/library/app/manifests/{digest}"))
            .await
            .bytes(),
        bytes
    );
    assert_eq!(
        d.get(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .bytes(),
        bytes_of(5000, 1)
    );
    let tags = d.get("/v2/library/app/tags/list").await;
    assert_eq!(tags.status, 200);
    assert!(String::from_utf8_lossy(&tags.bytes()).contains("latest"));
    for path in [
        "/v2/library/app/manifests/other",
        "/v2/library/other/manifests/latest",
    ] {
        let r = d.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(String::from_utf8_lossy(&r.bytes()).contains("offline"), "{path}");
    }
    let r = d
        .get(&format!("/v2/library/app/blobs/sha256:{}", "1".repeat(64)))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "BLOB_UNKNOWN");
    assert_eq!(hole.accepted(), 0, "offline means no upstream connection at all");
}

#[tokio::test]
async fn tag_lists_are_kept_for_outages() {
    let up = Fake::start().await;
    for t in ["v1", "v2", "v3"] {
        up.add_manifest(
            "org/app",
            Some(t),
            "application/vnd.oci.image.manifest.v1+json",
            format!("{{\"t\":\"{t}\"}}"),
        );
    }
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(d.get("/v2/org/app/tags/list").await.status, 200);
    up.set_fault(Some(Fault::Status(500)));
    let r = d.get("/v2/org/app/tags/list?n=2&ns=docker.io").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["v1", "v2"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/org/app/tags/list?n=2&last=v2&ns=docker.io>; rel=\"next\"")
    );
    let r = d.get("/v2/org/app/tags/list?n=2&last=v2").await;
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["v3"]));
    assert!(r.header("link").is_none());
    assert_eq!(d.get("/v2/org/never-listed/tags/list").await.status, 502);
}

fn referrers_index(entries: &[(&str, &str)]) -> String {
    let list: Vec<String> = entries
        .iter()
        .map(|(digest, t)| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":10,"artifactType":"{t}"}}"#)
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{}]}}"#,
        list.join(",")
    )
}

#[tokio::test]
async fn referrers_pass_through_filter_and_survive_outages() {
    let up = Fake::start().await;
    let (subject, _, _) = up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    let sig = format!("sha256:{}", "a".repeat(64));
    let sbom = format!("sha256:{}", "b".repeat(64));
    let index = referrers_index(&[
        (&sig, "application/vnd.dev.cosign.signature"),
        (&sbom, "application/spdx+json"),
    ]);
    up.add_referrers("library/app", &subject, index.clone());
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let r = d.get(&format!("/v2/library/app/referrers/{subject}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(INDEX));
    assert_eq!(r.bytes(), index.as_bytes());
    let r = d
        .get(&format!(
            "/v2/library/app/referrers/{subject}?artifactType=application/spdx%2Bjson"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sbom.as_str());
    up.set_fault(Some(Fault::Status(503)));
    let r = d.get(&format!("/v2/library/app/referrers/{subject}")).await;
    assert_eq!(r.status, 200, "kept for outages");
    assert_eq!(r.bytes(), index.as_bytes());
}

#[tokio::test]
async fn referrers_fall_back_to_the_tag_schema() {
    let up = Fake::start().await;
    let (subject, _, _) = up.add_image("library/app", "1", &[bytes_of(10, 1)]);
    let sig = format!("sha256:{}", "c".repeat(64));
    let index = referrers_index(&[(&sig, "application/vnd.dev.cosign.signature")]);
    let tag = subject.replace(':', "-");
    up.add_manifest("library/app", Some(&tag), INDEX, index.clone());
    let (other, _, _) = up.add_image("library/app", "2", &[bytes_of(10, 2)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let r = d.get(&format!("/v2/library/app/referrers/{subject}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.bytes(),
        index.as_bytes(),
        "the upstream has no referrers API: the sha256-<hex> tag"
    );
    let r = d.get(&format!("/v2/library/app/referrers/{other}")).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(
        v["manifests"],
        serde_json::json!([]),
        "no referrers: an empty index"
    );
    // Offline after that: still answered from the cache.
    let dir = d.stop().await;
    let d = DaemonBuilder::new()
        .offline()
        .upstream(&up)
        .in_dir(dir)
        .start()
        .await;
    up.clear_log();
    assert_eq!(
        d.get(&format!("/v2/library/app/referrers/{subject}"))
            .await
            .bytes(),
        index.as_bytes()
    );
    assert!(up.requests().is_empty());
}
