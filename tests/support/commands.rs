//! The operator commands (`regcache cache ...`, `prefetch`, `unpin`) run as a person runs them,
//! against a config file, to their end.

use std::path::Path;

/// One operator command, `regcache <args> --config <config>`, run to its end.
pub fn command(args: &[&str], config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_regcache"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// An operator's config file in the cache directory `dir`: the daemon's admin listener `admin`,
/// and `upstream_url` as docker.io (`offline` when asked), so a command finds the running daemon
/// (or works on the directory when none runs).
pub fn operator_config(dir: &Path, admin: &str, upstream_url: &str, offline: bool) -> std::path::PathBuf {
    let config = dir.join("regcache.toml");
    std::fs::write(
        &config,
        format!(
            "builtin_upstreams = false\n[admin]\nlisten = \"{admin}\"\n[cache]\ndir = \"{}\"\n\
             [[upstreams]]\nhost = \"docker.io\"\nurl = \"{upstream_url}\"\ndefault = true\noffline = {offline}\n",
            dir.display(),
        ),
    )
    .unwrap();
    config
}

/// What a command did, for a failed assertion's message: its exit status and both streams.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A command's standard output, after checking that it succeeded (everything it said otherwise).
pub fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's standard output, after checking that it succeeded (its stderr otherwise).
pub fn stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
