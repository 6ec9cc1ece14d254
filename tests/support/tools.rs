//! External tools some tests drive (systemd-analyze, docker-registry, skopeo, containerd): finding
//! them on PATH, and the convention for a test whose tool is missing: a notice nobody can miss,
//! then the test passes without checking anything, except under CI (`CI` set), where it fails.

use std::path::PathBuf;

/// The path of `program` in a PATH directory, if it is there.
pub fn find(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Reports that `test` lacks `missing` (tools, or root): prints the notice straight to stderr, so
/// the test harness's output capture cannot swallow it, and panics when `CI` is set. The caller
/// returns (skips) afterwards.
pub fn missing(test: &str, missing: &[String], install: &str) {
    let under_ci = std::env::var_os("CI").is_some();
    let outcome = if under_ci {
        "FAILING (CI is set)"
    } else {
        "SKIPPED"
    };
    let notice = format!(
        "\n{bar}\n!! {test}: {outcome}: missing {missing:?}.\n!! {install}\n{bar}\n",
        bar = "!".repeat(78)
    );
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(notice.as_bytes());
    if under_ci {
        panic!("{test}: {missing:?} missing and CI is set");
    }
}
