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
fn help_names_the_commands() {
    let out = regcache().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("check-config"), "{help}");
    assert!(help.contains("cache"), "{help}");
    let out = regcache().args(["cache", "gc", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--to"));
}
