//! podman (Debian's `podman`) as a pulling client with its own `registries.conf` (through
//! `CONTAINERS_REGISTRIES_CONF`), `containers.conf`, `storage.conf`, trust policy and auth file,
//! and its own storage (`--root`, `--runroot`, the `vfs` driver), temp and network-config
//! directories, all in one tempdir that goes with the [`Podman`] value. It
//! runs as root without systemd (`--cgroup-manager cgroupfs`, `--events-backend file`). The one
//! thing shared is the containers/image blob-info cache, which podman 4.3 run as root keeps in
//! `/var/lib/containers/cache` whatever the flags (skopeo uses it too): it remembers digests
//! only, and never spares a download into an empty store.
//!
//! Pulls run with `--log-level debug`, because only that log says which endpoint served a pull:
//! podman tries each `[[registry.mirror]]` in turn and then, silently, the registry's own
//! `location` ([`sources_tried`] reads the attempts back).

use std::path::PathBuf;
use std::time::Duration;

/// The podman binary.
pub const PODMAN_BIN: &str = "podman";

/// A `registries.conf` for the image names under `prefix`: pulled from `location`, with
/// `mirror` tried first (for regcache the CRI-O / podman convention `127.0.0.1:PORT/<prefix>`).
/// Both are plain HTTP on loopback (`insecure`); short names resolve nowhere.
pub fn registries_conf(prefix: &str, location: &str, mirror: &str) -> String {
    format!(
        r#"unqualified-search-registries = []

[[registry]]
prefix = "{prefix}"
location = "{location}"
insecure = true

[[registry.mirror]]
location = "{mirror}"
insecure = true
"#
    )
}

/// The sources a pull tried, in order, from its debug log: `host:port/name:tag` or
/// `host:port/name@digest` (the mirror's location with the name appended, then the registry's).
pub fn sources_tried(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| {
            line.split_once("Trying to access \\\"")
                .or(line.split_once("Trying to access \""))
        })
        .filter_map(|(_, rest)| rest.split(['"', '\\']).next())
        .map(str::to_string)
        .collect()
}

/// podman with private configuration and storage; everything is deleted on drop.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// Writes the private configuration, `registries_conf` included.
    pub fn new(registries_conf: &str) -> std::io::Result<Podman> {
        let dir = tempfile::Builder::new()
            .prefix("regcache-e2e-podman-")
            .tempdir()?;
        let path = dir.path();
        for sub in ["root", "runroot", "tmp", "networks"] {
            std::fs::create_dir(path.join(sub))?;
        }
        std::fs::write(path.join("registries.conf"), registries_conf)?;
        // Empty: the machine's containers.conf (if any) must not take part.
        std::fs::write(path.join("containers.conf"), "")?;
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            path.join("root").display(),
            path.join("runroot").display()
        );
        std::fs::write(path.join("storage.conf"), storage)?;
        std::fs::write(
            path.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )?;
        std::fs::write(path.join("auth.json"), r#"{"auths":{}}"#)?;
        Ok(Podman { dir })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `podman <global flags> <args>`, ready to run.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(PODMAN_BIN);
        command
            .arg("--root")
            .arg(self.file("root"))
            .arg("--runroot")
            .arg(self.file("runroot"))
            .args(["--storage-driver", "vfs"])
            .arg("--tmpdir")
            .arg(self.file("tmp"))
            .arg("--network-config-dir")
            .arg(self.file("networks"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args)
            .env("CONTAINERS_REGISTRIES_CONF", self.file("registries.conf"))
            .env("CONTAINERS_CONF", self.file("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.file("storage.conf"))
            .env("REGISTRY_AUTH_FILE", self.file("auth.json"))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// `podman <args>`: stdout on success; the status and both streams otherwise.
    pub async fn run(&self, args: &[&str]) -> Result<String, String> {
        let what = format!("podman {}", args.join(" "));
        super::run(self.command(args), &what, Duration::from_secs(120))
            .await
            .map(|(stdout, _)| stdout)
    }

    /// `podman pull <reference>` with the debug log: `Ok(log)` when it pulled, `Err(message and
    /// log)` when it did not. Either way [`sources_tried`] reads the attempts from the text.
    pub async fn pull(&self, reference: &str) -> Result<String, String> {
        self.pull_with(&[], reference).await
    }

    /// `podman pull <options> <reference>` (`--arch arm64`, …), as [`Podman::pull`].
    pub async fn pull_with(&self, options: &[&str], reference: &str) -> Result<String, String> {
        let policy = self.file("policy.json");
        let policy = policy.to_string_lossy();
        let mut args = vec!["--log-level", "debug", "pull", "--signature-policy", &policy];
        args.extend_from_slice(options);
        args.push(reference);
        super::run(
            self.command(&args),
            &format!("podman pull {reference}"),
            Duration::from_secs(120),
        )
        .await
        .map(|(_, stderr)| stderr)
    }

    /// The manifest digest podman recorded for the local image `reference` (`.Digest`).
    pub async fn digest(&self, reference: &str) -> Result<String, String> {
        let args = ["image", "inspect", "--format", "{{.Digest}}", reference];
        self.run(&args).await.map(|out| out.trim().to_string())
    }

    /// Removes every local image.
    pub async fn remove_all(&self) -> Result<(), String> {
        self.run(&["rmi", "--all", "--force"]).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sources_tried() {
        let log = concat!(
            "time=\"t\" level=debug msg=\"Trying to access \\\"127.0.0.1:1/docker.io/library/a:latest\\\"\"\n",
            "time=\"t\" level=debug msg=\"Trying to access \\\"127.0.0.1:2/library/a:latest\\\"\"\n",
            "level=debug msg=\"something else\"\n",
        );
        assert_eq!(
            sources_tried(log),
            [
                "127.0.0.1:1/docker.io/library/a:latest",
                "127.0.0.1:2/library/a:latest"
            ]
        );
    }
}
