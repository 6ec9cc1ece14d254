//! The end-to-end tier, in one test binary: regcache in front of a real upstream (the CNCF
//! distribution registry, Debian's `docker-registry`, behind a Docker-Hub-like token server),
//! pulled through by real clients (skopeo, containerd's `ctr`, a private Docker Engine with
//! `registry-mirrors`, podman with a `[[registry.mirror]]`) and a containerd-like verifying
//! client, and the admin status page rendered by headless chromium; pushes to hosted
//! repositories by skopeo and Docker Engine; the OCI push conformance suite run against that
//! registry directly (and against an in-process reference registry, for what distribution 2.8
//! lacks); the S3 client for the shared-store backend against a real SeaweedFS; and regcache
//! reaching the registry through a real egress proxy (tinyproxy), or as the fallback of an
//! upstream that is down. Needs `docker-registry`,
//! `skopeo`, `containerd`, `docker.io`, `podman`, `chromium`, `weed` and `tinyproxy` on
//! PATH (and root for containerd, dockerd and the namespaced tests); without them each test
//! prints a loud notice and passes, except when `CI` is set, where it fails. Loopback only.

/// Helpers from `tests/support/`; this binary declares the ones it uses (`tests/it` declares
/// its own), so no helper is compiled where nothing calls it.
#[path = "../support"]
mod support {
    pub mod big_image;
    pub mod binary;
    pub mod docker_upstream;
    pub mod dockerd;
    pub mod e2e;
    pub mod egress_proxies;
    pub mod netns;
    pub mod nginx;
    pub mod oci_push;
    pub mod process_group;
    pub mod push_spec;
    pub mod reference_registry;
    pub mod replica;
    pub mod runnable_image;
    pub mod seaweedfs;
    pub mod throttle;
    pub mod tools;
}

mod air_gap;
mod air_gap_clients;
mod containerd;
mod credentials;
mod docker;
mod egress_proxy;
mod fallback;
mod hosted;
mod podman;
mod push_spec;
mod registry;
mod s3_cluster;
mod s3_store;
mod status_page;
mod tls;
