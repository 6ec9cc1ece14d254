//! Tiered caches: node-local regcaches whose upstreams are a cluster tier (another regcache),
//! with `send_ns = true`, so the registry a client meant survives the hop: a ghcr.io image pulled
//! through a node by its path prefix is ghcr.io content at the cluster tier (fetched from the
//! ghcr.io upstream, never from Docker Hub's), a Docker Hub short name stays Docker Hub's, and a
//! second node pulling the same image costs the real upstreams nothing: the cluster tier has it;
//! and a node whose cluster tier is down reaches the registry named as its fallback.

use crate::support::daemon::{Daemon, DaemonBuilder, Upstream};
use crate::support::fake::{bytes_of, Fake};

/// A node tier whose docker.io (default) and ghcr.io both go through `cluster`.
async fn node(cluster: &Daemon) -> Daemon {
    let url = format!("http://{}", cluster.addr);
    DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &url).default_upstream().send_ns())
        .with_upstream(Upstream::new("ghcr.io", &url).send_ns())
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_a_client_meant_survives_the_hop() {
    let hub = Fake::start().await;
    let ghcr = Fake::start().await;
    // The same repository name on both registries, with different content.
    let (_, hub_manifest, hub_layers) = hub.add_image("org/app", "v1", &[bytes_of(40_000, 1)]);
    let (_, ghcr_manifest, ghcr_layers) = ghcr.add_image("org/app", "v1", &[bytes_of(40_000, 2)]);
    let (_, _, alpine) = hub.add_image("library/alpine", "3", &[bytes_of(10_000, 3)]);
    let cluster = DaemonBuilder::new()
        .upstream(&hub)
        .with_upstream(Upstream::new("ghcr.io", &ghcr))
        .start()
        .await;
    let first = node(&cluster).await;

    // CRI-O/podman style path prefix, and containerd's ns=, both reach ghcr.io's content.
    assert_eq!(
        first.pull("ghcr.io/org/app", "v1", &ghcr_layers).await,
        ghcr_manifest
    );
    let by_ns = first.get("/v2/org/app/manifests/v1?ns=ghcr.io").await;
    assert_eq!(by_ns.bytes(), ghcr_manifest);
    // Docker's registry-mirrors style (no registry named): Docker Hub's, short names included.
    assert_eq!(first.pull("org/app", "v1", &hub_layers).await, hub_manifest);
    first.pull("alpine", "3", &alpine).await;
    for l in &ghcr_layers {
        assert_eq!((ghcr.count("GET", l), hub.count("GET", l)), (1, 0), "{l}");
    }
    assert_eq!(hub.count("GET", &hub_layers[0]), 1);

    // Another node: everything is at the cluster tier already.
    hub.clear_log();
    ghcr.clear_log();
    let second = node(&cluster).await;
    assert_eq!(
        second.pull("ghcr.io/org/app", "v1", &ghcr_layers).await,
        ghcr_manifest
    );
    assert_eq!(second.pull("org/app", "v1", &hub_layers).await, hub_manifest);
    let blob_gets = |f: &Fake| {
        f.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
            .count()
    };
    assert_eq!(
        (blob_gets(&hub), blob_gets(&ghcr)),
        (0, 0),
        "no blob fetched again from a real upstream"
    );
}

/// A node tier whose cluster tier is down goes straight to the registry named as its fallback,
/// without `?ns=` (the registry is no mirror), and keeps what it fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_falls_back_to_the_registry_while_the_cluster_tier_is_down() {
    let hub = Fake::start().await;
    let (_, manifest, layers) = hub.add_image("library/alpine", "3", &[bytes_of(10_000, 4)]);
    let cluster_down = format!("http://127.0.0.1:{}", crate::support::listeners::free_port());
    let node = DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", &cluster_down)
                .default_upstream()
                .send_ns()
                .fallback(&[hub.url()]),
        )
        .start()
        .await;
    assert_eq!(node.pull("alpine", "3", &layers).await, manifest);
    let requests = hub.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| r.query.as_deref().is_none_or(|q| !q.contains("ns="))),
        "{requests:?}"
    );
}
