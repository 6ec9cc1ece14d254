//! Docker Engine against a hosted namespace, the way a team uses it: a private `dockerd` pulls
//! the runnable `library/busybox` through regcache (its `registry-mirrors` entry), then `docker
//! login 127.0.0.1:PORT` as the writer, `docker tag` and `docker push
//! 127.0.0.1:PORT/local/team/busybox:v1`, `docker rmi` of every name, `docker pull` back and
//! `docker run --network none`. Docker treats 127.0.0.0/8 as an insecure registry by default
//! (plain HTTP after a failed HTTPS attempt), so dockerd needs no `insecure-registries` entry.
//!
//! Checked: the anonymous mirror pull works on a site with users (its 401s offer the token flow
//! alone; with Basic offered beside it dockerd failed every anonymous request and fell back to
//! Docker Hub), a wrong password does not log in, the push tries HTTPS and then plain HTTP on
//! regcache's address and nothing else, the same image pushed to another repository has its
//! layers mounted (`mount=`/`from=`), a push to an uncreated `local2` repository shows the
//! `regcache repo create` hint, a logged-out push is refused, the anonymous pull back gets the
//! image ID (config digest) that was pushed and the manifest digest `docker push` printed
//! (dockerd rebuilds the manifest and recompresses layers it pulled from elsewhere, so that
//! digest is its own, not the kit's), and the container prints the image's greeting. No network
//! leads out of the namespaces, so only regcache can have served the pulls.
//!
//! Runs in private network, mount and PID namespaces like the mirror test (`e2e/docker.rs`).
//! Needs root, `docker-registry`, `skopeo`, `dockerd` and a `docker` client, `busybox-static` and
//! util-linux/iproute2; without them the test prints a loud notice and passes, unless `CI` is set.

use std::time::{Duration, Instant};

use crate::support::docker_upstream::{expected_image_id, Upstream};
use crate::support::dockerd::{self, Dockerd};
use crate::support::{e2e, netns, runnable_image};
use e2e::Clock;

/// The test's name, which the namespaced re-run selects.
const TEST: &str = "hosted::docker::docker_pushes_to_a_hosted_repository";
/// Prefix of the dockerd directory (and so of its cgroup parent): this test's own.
const DOCKERD_DIR: &str = "regcache-e2e-docker-push-";

fn requirements_present() -> bool {
    let mut missing: Vec<String> = e2e::missing_tools();
    missing.extend(netns::missing());
    missing.extend(dockerd::missing());
    if runnable_image::static_busybox().is_none() {
        missing.push(format!("a static {} (busybox-static)", runnable_image::BUSYBOX));
    }
    let install = "apt-get install -y docker-registry skopeo docker.io busybox-static";
    netns::requirements_met(TEST, &missing, install)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pushes_to_a_hosted_repository() {
    let limits = (Duration::from_secs(150), Duration::from_secs(200));
    dockerd::namespaced_test(TEST, DOCKERD_DIR, limits, namespaced_body(), requirements_present).await;
}

async fn namespaced_body() {
    let clock = Clock::new("e2e-hosted-docker");
    let upstream = Upstream::start(&clock).await;
    let work = tempfile::Builder::new()
        .prefix("regcache-e2e-hosted-docker-")
        .tempdir()
        .expect("work dir");
    let running = super::start(&super::site_config(work.path(), &upstream.registry.url(), 0)).await;
    let addr = running.local_addr();
    let home = tempfile::Builder::new()
        .prefix(DOCKERD_DIR)
        .tempdir()
        .expect("dockerd dir");
    let daemon = Dockerd::start(home.path(), addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let busybox = upstream.image(runnable_image::REPO);
    let mirrored = "busybox:latest";
    daemon.docker_ok(&["pull", mirrored]).await;
    clock.mark(&format!(
        "regcache on {addr}; dockerd up and pulled {mirrored} through it"
    ));

    let (user, password) = super::WRITER;
    let host = addr.to_string();
    // `GET /v2/` challenges anonymous clients, so a login really checks the password.
    let wrong = daemon
        .docker(&["login", "--username", user, "--password", "wrong", &host])
        .await
        .expect_err("a wrong password must not log in");
    assert!(wrong.contains("unauthorized"), "{wrong}");
    let login = daemon
        .docker_ok(&["login", "--username", user, "--password", password, &host])
        .await;
    assert!(login.contains("Login Succeeded"), "{login}");
    let target = format!("{addr}/local/team/busybox:v1");
    daemon.docker_ok(&["tag", mirrored, &target]).await;
    let offset = daemon.log_offset();
    let started = Instant::now();
    let pushed = daemon.docker_ok(&["push", &target]).await;
    let took = started.elapsed().as_secs_f64();
    let digest = pushed_digest(&pushed);
    assert_endpoints(
        &daemon.log_since(offset),
        &format!("{addr}/local/team/busybox"),
        &host,
    );
    clock.mark(&format!(
        "docker login; docker push {target} in {took:.2}s: {digest}"
    ));

    // The same image under another repository: dockerd mounts the blobs it just pushed.
    let mounted = format!("{addr}/local/other/busybox:v1");
    daemon.docker_ok(&["tag", mirrored, &mounted]).await;
    let output = daemon.docker_ok(&["push", &mounted]).await;
    assert_eq!(
        pushed_digest(&output),
        digest,
        "the same manifest under local/other"
    );
    let layers = output.matches("Mounted from local/team/busybox").count();
    assert_eq!(layers, 2, "both layers mounted:\n{output}");
    clock.mark(&format!("docker push {mounted}: {layers} layers mounted"));

    // A namespace with create_on_push = false tells Docker users what to run.
    let uncreated = format!("{addr}/local2/busybox:v1");
    daemon.docker_ok(&["tag", mirrored, &uncreated]).await;
    let refused = daemon
        .docker(&["push", &uncreated])
        .await
        .expect_err("a push to a repository never created must be refused");
    assert!(
        refused.contains("regcache repo create local2/busybox"),
        "{refused}"
    );
    clock.mark(&format!(
        "a push to the uncreated local2/busybox: {}",
        refused.lines().last().unwrap_or_default()
    ));

    // Logged out, the push is refused and the pull back below is anonymous (everyone reads).
    daemon.docker_ok(&["logout", &host]).await;
    let again = format!("{addr}/local/team/busybox:v2");
    daemon.docker_ok(&["tag", mirrored, &again]).await;
    let refused = daemon
        .docker(&["push", &again])
        .await
        .expect_err("an anonymous push must be refused");
    let rule = "does not let anonymous clients push to local/team/busybox";
    assert!(
        refused.contains("unauthorized: ") && refused.contains(rule),
        "{refused}"
    );
    clock.mark(&format!(
        "docker logout; an anonymous push: {}",
        refused.lines().last().unwrap_or_default()
    ));

    daemon
        .docker_ok(&["rmi", &target, &mounted, &again, &uncreated, mirrored])
        .await;
    let left = daemon.docker_ok(&["images", "--all", "--quiet"]).await;
    assert_eq!(left.trim(), "", "images left after docker rmi");
    let started = Instant::now();
    daemon.docker_ok(&["pull", &target]).await;
    let took = started.elapsed().as_secs_f64();
    let format = "{{.Id}} {{json .RepoDigests}}";
    let inspect = daemon
        .docker_ok(&["image", "inspect", "--format", format, &target])
        .await;
    let (id, digests) = inspect.trim().split_once(' ').expect("inspect output");
    assert_eq!(
        id,
        expected_image_id(busybox),
        "image ID of the pulled-back image"
    );
    let digests: Vec<String> = serde_json::from_str(digests).expect("RepoDigests json");
    let want = format!("{addr}/local/team/busybox@{digest}");
    assert_eq!(digests, [want], "RepoDigests of the pulled-back image");
    clock.mark(&format!(
        "docker rmi; docker pull {target} in {took:.2}s: same ID and digest"
    ));

    let run = ["run", "--rm", "--network", "none", &target];
    let output = daemon.docker_ok(&run).await;
    assert_eq!(output, runnable_image::GREETING, "output of the default command");
    clock.mark("docker run --network none of the pulled-back image");

    let left = daemon.shutdown();
    assert!(left.is_empty(), "dockerd left mounts behind: {left:?}");
    tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .expect("regcache stopped in time");
}

/// The manifest digest in `docker push`'s last line, `v1: digest: sha256:... size: N`.
fn pushed_digest(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split_once(" digest: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .filter(|d| d.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in docker push's output:\n{output}"))
        .to_string()
}

/// dockerd tried to push `repo` to `host` over HTTPS, then (127.0.0.0/8 being an insecure
/// registry by default) over plain HTTP, and nowhere else.
fn assert_endpoints(log: &str, repo: &str, host: &str) {
    let tried: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(&format!("Trying to push {repo} to ")))
        .map(|(_, rest)| rest.split(' ').next().unwrap_or_default())
        .collect();
    let want = [format!("https://{host}"), format!("http://{host}")];
    assert_eq!(tried, want, "the endpoints dockerd tried for the push");
}
