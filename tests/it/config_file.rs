//! The configuration surface: the documented example file parses, `check-config` reports every
//! problem and exits 64, and the binary's help is there for a newcomer.

use std::process::Command;

fn regcache() -> Command {
    Command::new(env!("CARGO_BIN_EXE_regcache"))
}

#[test]
fn documented_example_parses_and_matches_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/regcache.toml")).unwrap();
    let c = regcache::config::Config::from_toml_str(&text).expect("etc/regcache.toml is valid");
    let d = regcache::config::Config::default();
    assert_eq!(c.listen, d.listen);
    assert_eq!(c.admin_listen, d.admin_listen);
    assert_eq!(c.shutdown_grace, d.shutdown_grace);
    assert_eq!(c.log.format, d.log.format);
    assert_eq!(c.log.level, d.log.level);
    assert_eq!(c.cache.tag_ttl, d.cache.tag_ttl);
    assert_eq!(c.cache.revalidate_timeout, d.cache.revalidate_timeout);
    assert_eq!(c.cache.negative_ttl, d.cache.negative_ttl);
    assert_eq!(c.fetch.breaker_threshold, d.fetch.breaker_threshold);
    assert_eq!(c.fetch.breaker_probe_interval, d.fetch.breaker_probe_interval);
    assert!(!c.upstreams.iter().any(|u| u.offline));
    assert!(!c.upstreams.iter().any(|u| u.private));
    assert_eq!(c.auth.anonymous, d.auth.anonymous);
    assert!(c.auth.users.is_empty() && c.auth.rules.is_empty());
    assert_eq!(c.cache.max_size, d.cache.max_size);
    assert_eq!(c.cache.high_watermark, d.cache.high_watermark);
    assert_eq!(c.cache.low_watermark, d.cache.low_watermark);
    assert_eq!(c.fetch.read_timeout, d.fetch.read_timeout);
    assert_eq!(c.fetch.connect_timeout, d.fetch.connect_timeout);
    assert_eq!(c.fetch.max_manifest_size, d.fetch.max_manifest_size);
    assert_eq!(c.fetch.finish_abandoned, d.fetch.finish_abandoned);
    assert_eq!(c.upstreams.len(), d.upstreams.len());
    assert_eq!(c.default_upstream().host, "docker.io");
}

#[test]
fn check_config_accepts_the_example() {
    let out = regcache()
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/etc/regcache.toml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok"));
}

#[test]
fn check_config_lists_every_problem_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
listen = "nowhere"
[cache]
tag_ttl = "soon"
[[upstreams]]
host = "ghcr.io"
url = "ftp://ghcr.io"
password = "hunter2-secret"
"#,
    )
    .unwrap();
    let out = regcache()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 4, "{err}");
    for needle in ["listen", "tag_ttl", "url", "without username"] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
    assert!(!err.contains("hunter2"), "a secret reached the output: {err}");
    std::fs::write(&path, "[cache]\nsize = 1\n").unwrap();
    let out = regcache()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}

#[test]
fn every_storage_key_is_documented() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/regcache.toml")).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let keys = regcache::config::table_keys("storage");
    assert!(keys.contains(&"bucket"), "{keys:?}");
    for key in keys {
        assert!(
            example.lines().any(|l| l.starts_with(&format!("# {key} = "))),
            "etc/regcache.toml does not show [storage] {key}"
        );
        assert!(
            readme.contains(&format!("{key}`")),
            "README does not name [storage] {key}"
        );
    }
    // The commented example is a valid configuration once uncommented (the secret file aside).
    let start = example.find("# [storage]").expect("a [storage] example");
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter(|l| l.starts_with("# [") || l.contains(" = "))
        .filter(|l| !l.contains("access_key"))
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    let config = regcache::config::Config::from_toml_str(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert!(
        matches!(config.storage, regcache::config::StorageConfig::S3(_)),
        "{block}"
    );
}

#[test]
fn every_upstream_key_is_documented() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/regcache.toml")).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for key in [
        "host",
        "url",
        "default",
        "username",
        "password",
        "password_file",
        "password_env",
        "docker_config",
        "credential_helper",
        "credential_lifetime",
        "max_connections",
        "ca_file",
        "client_cert_file",
        "client_key_file",
        "redirect_hosts",
        "send_ns",
    ] {
        let line = example
            .lines()
            .find(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = ")));
        assert!(line.is_some(), "etc/regcache.toml does not show {key}");
        assert!(
            readme.contains(&format!("{key}`")),
            "README.md does not mention {key}"
        );
        // The key is accepted (a bad value is reported as such, not as an unknown key).
        let toml = format!("[[upstreams]]\nhost = \"x.example\"\n{key} = \"0\"\n");
        if let Err(e) = regcache::config::Config::from_toml_str(&toml) {
            assert!(!e.to_string().contains("unknown field"), "{key}: {e}");
        }
    }
}

#[test]
fn check_config_names_credential_sources_not_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        r#"
[[upstreams]]
host = "registry.example"
username = "robot"
password = "hunter2-secret"
max_connections = 4
[[upstreams]]
host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
credential_helper = "ecr-login"
"#,
    )
    .unwrap();
    let out = regcache()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("registry.example https://registry.example auth: user \"robot\", max_connections 4"),
        "{text}"
    );
    assert!(text.contains("auth: credential helper \"ecr-login\""), "{text}");
    assert!(
        text.contains("docker.io https://registry-1.docker.io auth: anonymous"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

/// `check-config` run with only the given proxy variables in its environment.
fn check_with_env(config: &str, env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = regcache();
    for name in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    cmd.args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn check_config_says_where_upstream_connections_go() {
    let file =
        "[fetch]\nproxy = \"http://robot:hunter2@proxy.corp:3128\"\nno_proxy = [\".corp\", \"10.0.0.0/8\"]\n";
    let out = check_with_env(file, &[("HTTPS_PROXY", "http://ignored:1")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("upstream connections: https via http://robot@proxy.corp:3128 (password set), http via http://robot@proxy.corp:3128 (password set), no_proxy [.corp, 10.0.0.0/8] (fetch.proxy)"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    // Without `proxy`, the environment decides, as for dockerd and containerd.
    let out = check_with_env(
        "",
        &[("https_proxy", "proxy.env:8080"), ("NO_PROXY", "registry.lab")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("upstream connections: https via http://proxy.env:8080, http via direct, no_proxy [registry.lab, localhost, 127.0.0.0/8, ::1] (environment)"),
        "{text}"
    );
    let out = check_with_env("[fetch]\nproxy = \"none\"\n", &[("HTTPS_PROXY", "http://p:1")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("upstream connections: direct (fetch.proxy = \"none\")"),
        "{text}"
    );

    // A proxy regcache cannot use is one readable line, whichever place it came from.
    let out = check_with_env("", &[("HTTPS_PROXY", "socks4://s:1080")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "HTTPS_PROXY: socks4:// proxies are not supported, only http://, socks5:// and socks5h://"
        ),
        "{err}"
    );
}

#[test]
fn help_names_the_commands() {
    let out = regcache().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("check-config"), "{help}");
    assert!(help.contains("cache"), "{help}");
    let out = regcache().args(["cache", "gc", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--to"));
}

#[test]
fn check_config_reports_unknown_keys_with_every_other_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
listen = "0.0.0.0:5000"
[admin]
listen = "0.0.0.0:5000"
[cache]
size = "10GB"
dir = ""
[fetch]
max_manifest_size = 0
[[upstreams]]
host = "lab.example"
[[upstreams]]
host = "lab.example"
pasword = "hunter2-secret"
[[upstreams]]
host = "LAB.example"
"#,
    )
    .unwrap();
    let out = regcache()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "cache.size: unknown field",
        "upstreams[1].pasword: unknown field",
        "admin.listen: 0.0.0.0:5000 is the registry's own listen address",
        "cache.dir: an empty path",
        "fetch.max_manifest_size: 0",
        "upstreams[1].host: \"lab.example\" is already configured by upstreams[0]",
        "upstreams[2].host: \"LAB.example\" differs only in case",
    ] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
    assert_eq!(err.lines().count(), 7, "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn check_config_warns_about_a_public_admin_listener_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[admin]\nlisten = \"0.0.0.0:5001\"\n").unwrap();
    let out = regcache()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning: admin.listen 0.0.0.0:5001 is not a loopback address"),
        "{text}"
    );
}
