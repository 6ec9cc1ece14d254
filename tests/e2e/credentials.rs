//! End-to-end tests of upstream credentials against the real distribution
//! registry behind the Docker-Hub-like token server. `myorg/private` can only
//! be pulled by a known user; regcache pulls it as `reader:reader-secret` with
//! credentials from each source (static password, Docker config.json, docker
//! credential helper), refuses cleanly without them, and — running as the real
//! binary with trace logging — never writes the secret to its log. An upstream with
//! credentials is private: clients pull through regcache as an htpasswd user
//! (`skopeo --src-creds`); anonymous clients are refused.
//!
//! Needs `docker-registry` and `skopeo` on PATH (see `registry.rs`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;

use crate::support::binary::Binary;
use crate::support::e2e::pushed::Pushed;
use crate::support::e2e::{self, tools_present, HttpClient};

/// The name regcache gives the test registry (its default upstream).
const HOST: &str = "registry.e2e.test";
const USER: &str = "reader";
const SECRET: &str = "reader-secret";
/// The regcache user clients pull as (`[auth] htpasswd_file`).
const CLIENT: &str = "dev";
const CLIENT_SECRET: &str = "dev-client-secret";

/// The real upstream with only `myorg/private` pushed.
struct Private(Pushed);

impl std::ops::Deref for Private {
    type Target = Pushed;

    fn deref(&self) -> &Pushed {
        &self.0
    }
}

impl Private {
    async fn start() -> Private {
        Private(Pushed::start("regcache-e2e-creds-", "myorg/private").await)
    }

    /// `[auth]` with the client user, and the registry as the default upstream with `auth`.
    fn upstream(&self, auth: &str) -> String {
        let htpasswd = self.work.path().join("htpasswd");
        let hash = bcrypt::hash(CLIENT_SECRET, 4).expect("bcrypt");
        std::fs::write(&htpasswd, format!("{CLIENT}:{hash}\n")).expect("write htpasswd");
        format!(
            "[auth]\nhtpasswd_file = \"{}\"\n[[upstreams]]\nhost = \"{HOST}\"\nurl = \"{}\"\ndefault = true\n{auth}",
            htpasswd.display(),
            self.registry.url()
        )
    }

    /// A docker credential helper answering `reader`'s secret for `HOST`.
    fn helper(&self, name: &str) -> PathBuf {
        let dir = self.work.path().join("bin");
        std::fs::create_dir_all(&dir).expect("bin dir");
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 2\n\
                 [ \"$(cat)\" = {HOST} ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\n\
                 printf '{{\"ServerURL\":\"{HOST}\",\"Username\":\"{USER}\",\"Secret\":\"{SECRET}\"}}'\n"
            ),
        )
        .expect("write helper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod helper");
        path
    }

    fn docker_config(&self, name: &str, json: &str) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, json).expect("write config.json");
        path
    }

    /// skopeo copies `myorg/private` through the mirror at `mirror` as the
    /// regcache user; the copy must equal the pushed layout.
    async fn pull_through(&self, mirror: &str, what: &str) -> Result<(), String> {
        let creds = format!("--src-creds={CLIENT}:{CLIENT_SECRET}");
        self.copy(mirror, what, &creds).await
    }

    /// The same without credentials.
    async fn pull_anonymously(&self, mirror: &str, what: &str) -> Result<(), String> {
        self.copy(mirror, &format!("{what}-anonymous"), "--src-no-creds")
            .await
    }

    async fn copy(&self, mirror: &str, what: &str, creds: &str) -> Result<(), String> {
        let dst = self.work.path().join("out").join(what);
        std::fs::create_dir_all(dst.parent().expect("parent")).map_err(|e| e.to_string())?;
        let src = format!("docker://{mirror}/{}", self.image.reference());
        self.skopeo
            .copy(
                &src,
                &format!("dir:{}", dst.display()),
                &["--src-tls-verify=false", creds],
                None,
            )
            .await?;
        e2e::compare_dirs(&self.image.layout, &dst).map(|_| ())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_repository_with_credentials_from_every_source() {
    if !tools_present("private_repository_with_credentials_from_every_source") {
        return;
    }
    let body = async {
        let up = Private::start().await;
        let helper = up.helper("e2e");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
        // Filed under a URL with a path, as Docker writes Docker Hub's entry.
        let config = up.docker_config(
            "config.json",
            &format!(r#"{{"auths":{{"https://{HOST}/v1/":{{"auth":"{auth}"}}}}}}"#),
        );
        let sources = [
            (
                "static",
                format!("username = \"{USER}\"\npassword = \"{SECRET}\"\n"),
            ),
            (
                "config.json",
                format!("docker_config = \"{}\"\n", config.display()),
            ),
            (
                "helper",
                format!("credential_helper = \"{}\"\n", helper.display()),
            ),
        ];
        for (what, auth) in &sources {
            let before = up.token.requests().len();
            let (running, _cache) = e2e::start_mirror_with(&up.upstream(auth)).await;
            let addr = running.local_addr().to_string();
            let anonymous = up.pull_anonymously(&addr, what).await;
            assert!(
                anonymous.is_err(),
                "{what}: an anonymous client pulled a private upstream"
            );
            up.pull_through(&addr, what)
                .await
                .unwrap_or_else(|e| panic!("pull with credentials from {what}: {e}"));
            let asked = up.token.requests().split_off(before);
            assert!(!asked.is_empty(), "{what}: no token requests");
            for r in &asked {
                assert_eq!(r.user.as_deref(), Some(USER), "{what}: {r:?}");
                assert_eq!(r.account.as_deref(), Some(USER), "{what}: {r:?}");
                assert_eq!(r.status, 200, "{what}: {r:?}");
            }
            eprintln!(
                "    {what}: pulled {} with {} token requests",
                up.image.reference(),
                asked.len()
            );
            running.shutdown().await;
        }

        refused_without_credentials(&up).await;
    };
    tokio::time::timeout(Duration::from_secs(180), body)
        .await
        .expect("test timed out");
}

/// Without credentials, or with wrong ones: clean OCI errors, no 5xx.
async fn refused_without_credentials(up: &Private) {
    let client = HttpClient::new();
    let none = String::new();
    let wrong = format!("username = \"{USER}\"\npassword = \"not-{SECRET}\"\n");
    for (what, auth) in [("anonymous", &none), ("wrong password", &wrong)] {
        let (running, _cache) = e2e::start_mirror_with(&up.upstream(auth)).await;
        let url = format!(
            "http://{}/v2/{}/manifests/{}",
            running.local_addr(),
            up.image.repo,
            up.image.tag
        );
        let r = client.get(&url, Some(e2e::CONTAINERD_ACCEPT)).await.expect("GET");
        assert!(
            matches!(r.status.as_u16(), 401 | 403),
            "{what}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(e2e::is_oci_error_body(&r.body), "{what}: not an OCI error body");
        assert!(
            up.pull_through(&running.local_addr().to_string(), what)
                .await
                .is_err(),
            "{what}: the private image must not come through"
        );
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_log_of_a_credentialed_pull_holds_no_secret() {
    if !tools_present("trace_log_of_a_credentialed_pull_holds_no_secret") {
        return;
    }
    let body = async {
        let up = Private::start().await;
        let helper = up.helper("e2e-trace");
        let helper_dir = helper.parent().expect("helper dir").to_path_buf();
        // config.json names a helper for the registry; the helper is found on PATH.
        let docker_config = up.docker_config(
            "config-helpers.json",
            &format!(r#"{{"credHelpers":{{"{HOST}":"e2e-trace"}}}}"#),
        );
        let config = up.work.path().join("regcache.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nbuiltin_upstreams = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                 [cache]\ndir = \"{}\"\n{}",
                up.work.path().join("cache").display(),
                up.upstream(&format!("docker_config = \"{}\"\n", docker_config.display()))
            ),
        )
        .expect("write config");
        let regcache = Binary::start(&config, &helper_dir, &[]);
        let addr = regcache.field("regcache listening", "listen").await;
        let pulled = up.pull_through(&addr, "trace").await;
        let log = regcache.stop();
        pulled.expect("pull through the binary with a credential helper");
        assert!(
            log.contains("fetched upstream token"),
            "the token flow was not logged"
        );
        assert!(log.contains(r#""level":"TRACE""#), "no trace-level lines");
        assert!(
            log.lines()
                .any(|l| l.contains("/token?") && l.contains(r#""status":200"#)),
            "skopeo did not follow regcache's token flow"
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
        let client = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{CLIENT_SECRET}"));
        for secret in [SECRET, encoded.as_str(), CLIENT_SECRET, client.as_str()] {
            if let Some(line) = log.lines().find(|l| l.contains(secret)) {
                panic!("the secret reached the log: {line}");
            }
        }
        eprintln!("    {} log lines, no secret in them", log.lines().count());
    };
    tokio::time::timeout(Duration::from_secs(180), body)
        .await
        .expect("test timed out");
}
