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
