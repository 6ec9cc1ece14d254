//! An upstream's fallbacks (`[[upstreams]] fallback`): when the upstream fails as a service
//! (connection refused, 5xx, 429) a pull of content not cached yet is answered by a fallback,
//! digest-checked as always; a "not found" from the upstream is its answer; a cached tag is
//! never revalidated against a fallback (the cached copy is served); and when the fallbacks
//! fail too the client gets the upstream's error, not a remembered "unknown"; a fallback with
//! credentials sends them and makes the upstream private. Loopback only.

use crate::support::daemon::{Daemon, DaemonBuilder, Upstream};
use crate::support::fake::{bytes_of, Auth, Fake, Fault};
use crate::support::listeners::free_port;

const FALLBACKS: &str = "regcache_upstream_fallbacks_total";

/// An upstream URL where nothing listens.
fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

async fn mirror(primary: &str, fallback: &Fake) -> Daemon {
    DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", primary)
                .default_upstream()
                .fallback(&[closed_port_url(), fallback.url()]),
        )
        .start()
        .await
}

async fn served(d: &Daemon, result: &str) -> f64 {
    d.metric(FALLBACKS, &[("upstream", "docker.io"), ("result", result)])
        .await
}

#[tokio::test]
async fn content_the_upstream_cannot_serve_comes_from_a_fallback() {
    let fb = Fake::start().await;
    let layer = bytes_of(200_000, 31);
    let (digest, manifest, layers) = fb.add_image("library/app", "1", std::slice::from_ref(&layer));
    // The first fallback is down too: the second answers.
    let d = mirror(&closed_port_url(), &fb).await;

    let got = d.pull("library/app", "1", &layers).await;
    assert_eq!(got, manifest);
    let r = d.get(&format!("/v2/library/app/manifests/{digest}")).await;
    assert_eq!(r.status, 200);
    assert!(served(&d, "served").await >= 2.0);
    // The blob is cached: a second pull asks nobody.
    fb.clear_log();
    d.pull("library/app", "1", &layers).await;
    assert_eq!(fb.count("GET", "/blobs/"), 0);
}

#[tokio::test]
async fn a_fallback_serving_other_bytes_is_refused_like_any_upstream() {
    let fb = Fake::start().await;
    let layer = bytes_of(50_000, 32);
    let (_, _, layers) = fb.add_image("library/app", "1", std::slice::from_ref(&layer));
    let d = mirror(&closed_port_url(), &fb).await;
    d.pull("library/app", "1", &[]).await;
    fb.set_fault(Some(Fault::Corrupt));
    let r = d.get(&format!("/v2/library/app/blobs/{}", layers[0])).await;
    assert!(
        r.body.is_err() || r.status != 200,
        "corrupt bytes served as complete"
    );
    assert!(
        fb.count("GET", &layers[0]) >= 1,
        "the fallback was never asked for the blob"
    );
    d.cache().wait_idle().await;
    assert_eq!(
        d.cache().blob_size(&layers[0].parse().unwrap()),
        None,
        "corrupt bytes kept"
    );
}

#[tokio::test]
async fn not_found_upstream_is_the_answer() {
    let up = Fake::start().await;
    let fb = Fake::start().await;
    fb.add_image("library/only-elsewhere", "1", &[bytes_of(1_000, 33)]);
    let d = mirror(&up.url(), &fb).await;
    let r = d.get("/v2/library/only-elsewhere/manifests/1").await;
    assert_eq!(r.status, 404);
    assert!(fb.requests().is_empty(), "a fallback was asked after a 404");
}

#[tokio::test]
async fn a_cached_tag_is_served_not_revalidated_against_a_fallback() {
    let up = Fake::start().await;
    let fb = Fake::start().await;
    let (upstream_digest, upstream_manifest, _) = up.add_image("library/app", "1", &[bytes_of(3_000, 34)]);
    // The fallback lags: its "1" is older content.
    let (lagging, _, _) = fb.add_image("library/app", "1", &[bytes_of(3_000, 35)]);
    assert_ne!(upstream_digest, lagging);
    fb.add_image("library/app", "2", &[bytes_of(3_000, 36)]);
    let d = DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", &up)
                .default_upstream()
                .fallback(&[fb.url()]),
        )
        .tag_ttl("0s")
        .start()
        .await;
    assert_eq!(
        d.get("/v2/library/app/manifests/1").await.bytes(),
        upstream_manifest
    );

    up.set_fault(Some(Fault::Status(503)));
    let r = d.get("/v2/library/app/manifests/1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), upstream_manifest, "the cached tag, not the fallback's");
    assert_eq!(fb.count("HEAD", "/manifests/1"), 0);
    assert_eq!(fb.count("GET", "/manifests/1"), 0);
    // A tag regcache never saw comes from the fallback.
    assert_eq!(d.get("/v2/library/app/manifests/2").await.status, 200);
    assert_eq!(served(&d, "served").await, 1.0);
}

#[tokio::test]
async fn when_every_fallback_fails_the_upstream_error_stands_and_nothing_is_remembered() {
    let up = Fake::start().await;
    let fb = Fake::start().await;
    let (_, manifest, _) = up.add_image("library/app", "1", &[bytes_of(3_000, 37)]);
    up.set_fault(Some(Fault::RateLimit {
        retry_after: "1".into(),
    }));
    let d = mirror(&up.url(), &fb).await;
    let r = d.get("/v2/library/app/manifests/1").await;
    assert_eq!(r.status, 429, "the upstream's answer, not the fallback's 404");
    assert_eq!(r.error_code(), "TOOMANYREQUESTS");
    assert_eq!(served(&d, "failed").await, 1.0);
    assert!(fb.count("GET", "/manifests/1") + fb.count("HEAD", "/manifests/1") >= 1);

    // The fallback's 404 was not remembered as "manifest unknown": once the upstream lets us
    // ask again, the pull works.
    up.set_fault(None);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = d.get("/v2/library/app/manifests/1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), manifest);
}

#[tokio::test]
async fn a_fallback_takes_its_own_credentials_and_makes_the_upstream_private() {
    let fb = Fake::start().await;
    fb.set_auth(Auth::Basic {
        user: "robot".into(),
        pass: "s3cret".into(),
    });
    let (_, manifest, _) = fb.add_image("library/app", "1", &[bytes_of(2_000, 38)]);
    let upstream = || {
        Upstream::new("docker.io", &closed_port_url())
            .default_upstream()
            .fallback_with_credentials(&fb.url(), "robot", "s3cret")
    };

    // Private by default: what the credentials fetch is not for anonymous clients.
    let private = DaemonBuilder::new().with_upstream(upstream()).start().await;
    let r = private.get("/v2/library/app/manifests/1").await;
    assert!(r.status == 401 || r.status == 403, "{}", r.status);
    assert!(
        fb.requests().is_empty(),
        "asked the fallback for a client that may not read"
    );

    // public = true: served, the fallback asked with its credentials.
    let public = DaemonBuilder::new()
        .with_upstream(upstream().public())
        .start()
        .await;
    let r = public.get("/v2/library/app/manifests/1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), manifest);
    let sent = fb
        .requests()
        .into_iter()
        .filter_map(|l| l.authorization)
        .collect::<Vec<_>>();
    assert!(
        sent.contains(&crate::support::fake::basic("robot", "s3cret")),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_reload_gives_a_fallback_new_credentials() {
    let fb = Fake::start().await;
    fb.set_auth(Auth::Basic {
        user: "robot".into(),
        pass: "new".into(),
    });
    let (_, manifest, _) = fb.add_image("library/app", "1", &[bytes_of(2_000, 39)]);
    let down = closed_port_url();
    let with_password = |password: &str| {
        Upstream::new("docker.io", &down)
            .default_upstream()
            .public()
            .fallback_with_credentials(&fb.url(), "robot", password)
    };
    let d = DaemonBuilder::new()
        .with_upstream(with_password("old"))
        .start()
        .await;
    let r = d.get("/v2/library/app/manifests/1").await;
    assert_eq!(
        r.status, 503,
        "the upstream's error, the fallback refusing the old password"
    );

    let text = format!(
        "builtin_upstreams = false\n[[upstreams]]\nhost = \"docker.io\"\nurl = \"{down}\"\ndefault = true\n\
         public = true\nfallback = [{{ url = \"{}\", username = \"robot\", password = \"new\" }}]\n",
        fb.url()
    );
    let config = regcache::config::Config::from_toml_str(&text).unwrap();
    let changes = d.running.as_ref().unwrap().reloader().apply(&config);
    // (This file leaves listen and [cache] out; the upstream itself must not be named.)
    assert!(
        !changes.iter().any(|c| c.contains("upstream")),
        "a fallback's password reloads live: {changes:?}"
    );
    let r = d.get("/v2/library/app/manifests/1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), manifest);
}
