//! Where upstream credentials come from: a password file, a Docker config.json, a docker
//! credential helper whose secret rotates (re-read on a 401 and after `credential_lifetime`), and
//! what happens when a helper fails. The last test runs the real binary with trace logging and
//! checks that no secret reaches its log, its metrics or `check-config`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::binary::Binary;
use crate::support::daemon::{pass_time, DaemonBuilder, Upstream};
use crate::support::fake::{self, bytes_of, Auth, Fake};
use base64::Engine as _;

const ECR_HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `docker-credential-<name>` in `dir`: logs what it was asked for to `dir/asked`, counts its
/// runs in `dir/runs`, and answers `AWS` with the secret in `dir/secret`.
fn helper(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("docker-credential-{name}"));
    let d = dir.display();
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
[ "$1" = get ] || exit 2
host=$(cat)
printf '%s\n' "$host" >> "{d}/asked"
echo run >> "{d}/runs"
if [ -f "{d}/fail" ]; then echo "no AWS session" >&2; exit 1; fi
if [ ! -f "{d}/secret" ]; then echo "credentials not found in native keychain"; exit 1; fi
printf '{{"ServerURL":"%s","Username":"AWS","Secret":"%s"}}' "$host" "$(cat "{d}/secret")"
"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The ECR-like registry as the default upstream; public, so anonymous test clients are served.
fn ecr_upstream(up: &Fake) -> Upstream {
    Upstream::new(ECR_HOST, up).default_upstream().public()
}

#[tokio::test]
async fn password_file_and_docker_config_auths() {
    let up = Fake::start().await;
    up.set_auth(Auth::Basic {
        user: "robot".into(),
        pass: "from-a-file".into(),
    });
    let (_, bytes, _) = up.add_image("team/app", "1", &[bytes_of(10, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let d = DaemonBuilder::new()
        .with_upstream(ecr_upstream(&up).password_file("robot", &file))
        .start()
        .await;
    assert_eq!(d.get("/v2/team/app/manifests/1").await.bytes(), bytes);

    // config.json, filed under the registry's name.
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"https://{ECR_HOST}":{{"auth":"{}"}}}}}}"#,
            b64("robot:from-a-file")
        ),
    )
    .unwrap();
    let d = DaemonBuilder::new()
        .with_upstream(ecr_upstream(&up).docker_config(&config))
        .start()
        .await;
    assert_eq!(d.get("/v2/team/app/manifests/1").await.bytes(), bytes);
}

#[tokio::test]
async fn helper_secrets_are_refreshed_on_401_and_after_their_lifetime() {
    let up = Fake::start().await;
    up.set_auth(Auth::Basic {
        user: "AWS".into(),
        pass: "secret-one".into(),
    });
    up.add_image("team/app", "1", &[bytes_of(10, 1)]);
    up.add_image("team/app", "2", &[bytes_of(10, 2)]);
    let dir = tempfile::tempdir().unwrap();
    let program = helper(dir.path(), "ecr-test");
    std::fs::write(dir.path().join("secret"), "secret-one").unwrap();
    let d = DaemonBuilder::new()
        .with_upstream(
            ecr_upstream(&up)
                .credential_helper(&program)
                .credential_lifetime("2s"),
        )
        .start()
        .await;
    assert_eq!(d.get("/v2/team/app/manifests/1").await.status, 200);
    assert_eq!(d.get("/v2/team/app/manifests/2").await.status, 200);
    assert_eq!(runs(dir.path()), 1, "the helper's answer is reused");
    let asked = std::fs::read_to_string(dir.path().join("asked")).unwrap();
    assert_eq!(
        asked,
        format!("{ECR_HOST}\n"),
        "the registry host goes to the helper's stdin"
    );

    // The registry rotates the secret: its 401 makes regcache ask the helper again.
    up.set_auth(Auth::Basic {
        user: "AWS".into(),
        pass: "secret-two".into(),
    });
    std::fs::write(dir.path().join("secret"), "secret-two").unwrap();
    let digest = fake::sha256(b"not cached");
    let r = d.get(&format!("/v2/team/app/manifests/{digest}")).await;
    assert_eq!(r.status, 404, "reached the upstream with the new secret");
    assert_eq!(runs(dir.path()), 2);

    // After credential_lifetime the helper runs again before any request.
    pass_time(Duration::from_millis(2_100)).await;
    up.clear_log();
    let r = d
        .head(&format!("/v2/team/app/manifests/{}", fake::sha256(b"x")))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(runs(dir.path()), 3);
    assert!(up.requests().iter().all(|l| l.authorization.is_some()));
    let ok = d
        .metric(
            "regcache_upstream_credential_resolutions_total",
            &[("upstream", ECR_HOST), ("result", "ok")],
        )
        .await;
    assert_eq!(ok, 3.0);

    // A helper that breaks later keeps the last good secret in use.
    std::fs::write(dir.path().join("fail"), "").unwrap();
    pass_time(Duration::from_millis(2_100)).await;
    assert_eq!(
        d.head(&format!("/v2/team/app/manifests/{}", fake::sha256(b"y")))
            .await
            .status,
        404
    );
    assert_eq!(runs(dir.path()), 4);
}

#[tokio::test]
async fn helper_without_credentials_or_failing_is_a_clean_error() {
    let up = Fake::start().await;
    up.set_auth(Auth::Basic {
        user: "AWS".into(),
        pass: "whatever".into(),
    });
    up.add_image("team/app", "1", &[bytes_of(10, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let program = helper(dir.path(), "empty");
    let d = DaemonBuilder::new()
        .with_upstream(ecr_upstream(&up).credential_helper(&program))
        .start()
        .await;
    // "credentials not found": anonymous, refused upstream.
    let r = d.get("/v2/team/app/manifests/1").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "DENIED"));
    // A broken helper with nothing to fall back on: 502 with the helper's complaint.
    std::fs::write(dir.path().join("fail"), "").unwrap();
    let d = DaemonBuilder::new()
        .with_upstream(ecr_upstream(&up).credential_helper(&program))
        .start()
        .await;
    let r = d.get("/v2/team/app/manifests/1").await;
    assert_eq!(r.status, 502);
    let body = String::from_utf8(r.bytes().to_vec()).unwrap();
    assert!(body.contains("no AWS session"), "{body}");
}

async fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .expect("regcache answers");
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().collect().await.unwrap().to_bytes().to_vec(),
    )
}

/// The secrets of `secrets_never_reach_logs_metrics_or_check_config`.
const STATIC: &str = "static-secret-4c1d";
const HELPER: &str = "helper-secret-9e2f";
const ENV: &str = "env-secret-77ab";

/// The three upstreams' configuration file, and the directory with the credential helper
/// (put first on PATH): the hub's password is in the file, the ECR-like registry's secret comes
/// from a helper named in a Docker config.json, the lab's password from the environment.
fn leak_test_config(dir: &Path, hub: &Fake, ecr: &Fake, lab: &Fake) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    helper(&bin, "leaktest");
    std::fs::write(bin.join("secret"), HELPER).unwrap();
    let docker_config = dir.join("config.json");
    std::fs::write(
        &docker_config,
        format!(r#"{{"auths":{{}},"credHelpers":{{"{ECR_HOST}":"leaktest"}}}}"#),
    )
    .unwrap();
    let config = dir.join("regcache.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:0"
[cache]
dir = "{cache}"
[[upstreams]]
host = "docker.io"
url = "{hub}"
default = true
username = "hubuser"
password = "{STATIC}"
public = true
[[upstreams]]
host = "{ECR_HOST}"
url = "{ecr}"
docker_config = "{docker_config}"
public = true
[[upstreams]]
host = "lab.example:5000"
url = "{lab}"
username = "labuser"
password_env = "REGCACHE_TEST_LAB_PASSWORD"
public = true
"#,
            cache = dir.join("cache").display(),
            hub = hub.url(),
            ecr = ecr.url(),
            lab = lab.url(),
            docker_config = docker_config.display(),
        ),
    )
    .unwrap();
    (config, bin)
}

/// `regcache check-config` on `config`, which must pass; its stdout and stderr.
fn check_config(config: &Path, env: &[(&str, &str)]) -> String {
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_regcache"))
        .args(["check-config", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(check.status.success());
    String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_metrics_or_check_config() {
    // Static password, Bearer with a token service.
    let hub = Fake::start().await;
    hub.set_auth(Auth::Bearer {
        expires_in: Some(300),
    });
    hub.require_token_user("hubuser", STATIC);
    let (_, hub_manifest, hub_layers) = hub.add_image("org/private", "1", &[bytes_of(5000, 1)]);
    // ECR-like Basic, credentials from config.json's credHelpers, helper found on PATH.
    let ecr = Fake::start().await;
    ecr.set_auth(Auth::Basic {
        user: "AWS".into(),
        pass: HELPER.into(),
    });
    let (_, ecr_manifest, _) = ecr.add_image("team/app", "1", &[bytes_of(10, 2)]);
    // Password from the environment, rejected by the token service.
    let lab = Fake::start().await;
    lab.set_auth(Auth::Bearer { expires_in: None });
    lab.require_token_user("labuser", "the-right-one");
    lab.add_image("lab/app", "1", &[bytes_of(10, 3)]);

    let dir = tempfile::tempdir().unwrap();
    let (config, bin) = leak_test_config(dir.path(), &hub, &ecr, &lab);
    let env = [("REGCACHE_TEST_LAB_PASSWORD", ENV)];
    let regcache = Binary::start(&config, &bin, &env);
    let addr = regcache.field("regcache listening", "listen").await;
    let admin = regcache.field("regcache listening", "admin").await;

    assert_eq!(get(&addr, "/v2/org/private/manifests/1").await.1, hub_manifest);
    let blob = get(&addr, &format!("/v2/org/private/blobs/{}", hub_layers[0])).await;
    assert_eq!(blob.0, 200);
    let path = format!("/v2/team/app/manifests/1?ns={ECR_HOST}");
    assert_eq!(get(&addr, &path).await.1, ecr_manifest);
    let (status, body) = get(&addr, "/v2/lab/app/manifests/1?ns=lab.example:5000").await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let metrics = String::from_utf8(get(&admin, "/metrics").await.1).unwrap();
    assert!(metrics.contains("regcache_upstream_token_fetches_total"));
    let log = regcache.stop();
    assert!(log.contains("fetched upstream token"), "trace logging was on");

    let check = check_config(&config, &env);
    assert!(
        check.contains("credential helper") || check.contains("docker config"),
        "{check}"
    );
    let mut secrets = vec![
        STATIC.to_string(),
        HELPER.to_string(),
        ENV.to_string(),
        b64(&format!("hubuser:{STATIC}")),
        b64(&format!("AWS:{HELPER}")),
        b64(&format!("labuser:{ENV}")),
    ];
    // Every token handed out is a secret too.
    for fake in [&hub, &lab] {
        let issued = fake.token_log().len();
        secrets.extend((0..issued).map(|i| format!("tok-{}", 1000 + i)));
    }
    for (what, text) in [("log", &log), ("metrics", &metrics), ("check-config", &check)] {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{s} appears in the {what}");
        }
    }
}
