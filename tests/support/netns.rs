//! Runs one end-to-end test inside private Linux namespaces: the test binary re-executes itself
//! (only the named test) under `unshare --net --mount --pid --fork`, with the loopback interface
//! up, a private tmpfs on `/run` (and on `/var/run` where that is not a symlink to it) and a fresh
//! `/proc`. Everything the test starts (token server, registry, regcache, daemons and their
//! children) lives there and talks over that namespace's own loopback; no interface leads out,
//! so a client that falls back to a public registry cannot send a single packet, not even a DNS
//! query.
//!
//! Nothing outlives the run: the namespaced shell is PID 1 of its PID namespace (so it reaps
//! orphans), and when it exits the kernel kills every process left in that namespace, which also
//! ends the mount namespace and every mount made in it. `unshare --kill-child` kills that shell
//! when `unshare` dies, and `setpriv --pdeathsig` kills `unshare` when the test process dies, so
//! even a test process killed with SIGKILL leaves nothing behind.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Set (to `1`) in the environment of the re-executed test process.
pub const INSIDE_ENV: &str = "REGCACHE_E2E_IN_NAMESPACES";
/// The file the re-executed test writes when its body finished, so a run that matched no test
/// (or exited early) cannot pass.
pub const DONE_ENV: &str = "REGCACHE_E2E_DONE_FILE";

/// Tools the namespace setup runs (util-linux and iproute2).
pub const TOOLS: &[&str] = &["unshare", "setpriv", "ip", "mount"];

/// Runs inside the namespaces before the test binary: loopback up, private `/run`; the shell stays
/// PID 1 (no `exec`) so orphaned processes are reaped.
const SETUP: &str = r#"set -e
exec 2>&1
ip link set lo up
mount -t tmpfs -o mode=0755,size=256m regcache-e2e-run /run
if [ ! -L /var/run ]; then mount -t tmpfs -o mode=0755,size=256m regcache-e2e-var-run /var/run; fi
"$0" "$@"
"#;

/// What [`run_test_inside`] needs and this machine lacks: [`TOOLS`] not on PATH, and root.
pub fn missing() -> Vec<String> {
    let mut missing: Vec<String> = TOOLS
        .iter()
        .filter(|tool| crate::support::tools::find(tool).is_none())
        .map(|tool| tool.to_string())
        .collect();
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    });
    if !root {
        missing.push("root (uid 0)".to_string());
    }
    missing
}

/// True when `missing` is empty. Otherwise prints a loud notice naming what is missing and how
/// to install it (straight to stderr, so the test harness cannot swallow it) and returns false,
/// or panics when running under CI (env `CI` set).
pub fn requirements_met(test: &str, missing: &[String], install: &str) -> bool {
    if missing.is_empty() {
        return true;
    }
    let under_ci = std::env::var_os("CI").is_some();
    let outcome = if under_ci {
        "FAILING (CI is set)"
    } else {
        "SKIPPED"
    };
    let notice = format!(
        "\n{bar}\n!! {test}: {outcome}: missing {missing:?}.\n!! Install: {install}\n\
         !! and run as root (the test makes private namespaces).\n{bar}\n",
        bar = "!".repeat(78)
    );
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(notice.as_bytes());
    assert!(
        !under_ci,
        "{test}: requirements {missing:?} are missing and CI is set"
    );
    false
}

/// The inner half of a namespaced test: in the re-executed process (inside the namespaces) runs
/// `body` within `limit`, marks the run done and returns true; outside it returns false and the
/// caller goes on to re-execute the test there (`run_test_inside`).
pub async fn inside_runs<F: std::future::Future<Output = ()>>(limit: Duration, body: F) -> bool {
    if !inside() {
        return false;
    }
    assert_isolated();
    tokio::time::timeout(limit, body).await.expect("test timed out");
    mark_done();
    true
}

/// A namespaced test's whole entry: inside the namespaces runs `body` (within 4 minutes);
/// outside, when `present` finds what the test needs, re-executes the test `name` inside them
/// (within 5 minutes) and fails with its output if it failed there.
pub async fn namespaced_test<F: std::future::Future<Output = ()>>(
    name: &str,
    body: F,
    present: impl FnOnce() -> bool,
) {
    if inside_runs(Duration::from_secs(240), body).await || !present() {
        return;
    }
    run_test_inside(name, Duration::from_secs(300))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// True in the re-executed test process, inside the namespaces.
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some()
}

/// Re-runs test `name` of this test binary inside the namespaces, echoing its output line by
/// line (through `eprintln!`, so the test harness captures it like any test output). `Err` when
/// it failed, timed out, or did not finish its body.
pub async fn run_test_inside(name: &str, timeout: Duration) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current test binary: {e}"))?;
    let marker_dir = tempfile::Builder::new()
        .prefix("regcache-e2e-ns-")
        .tempdir()
        .map_err(|e| format!("marker dir: {e}"))?;
    let done = marker_dir.path().join("done");
    let mut command = tokio::process::Command::new("setpriv");
    command
        .args(["--pdeathsig", "KILL", "--"])
        .args(["unshare", "--net", "--mount", "--pid", "--fork"])
        .args(["--kill-child=SIGKILL", "--mount-proc", "--", "sh", "-c", SETUP])
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE_ENV, "1")
        .env(DONE_ENV, &done)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("spawn setpriv/unshare: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let run = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("  | {line}");
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, run).await {
        Ok(status) => status.map_err(|e| format!("wait for the namespaced test: {e}"))?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(format!("the namespaced test did not finish in {timeout:?}"));
        }
    };
    if !status.success() {
        return Err(format!(
            "the namespaced test failed ({status}); its output is above"
        ));
    }
    if !done.exists() {
        return Err(format!(
            "the namespaced run of {name} exited 0 but never finished the test body \
             (no test matched, or it returned early)"
        ));
    }
    Ok(())
}

/// Records, for [`run_test_inside`], that the test body finished.
pub fn mark_done() {
    if let Some(path) = std::env::var_os(DONE_ENV) {
        std::fs::write(PathBuf::from(path), b"done\n").expect("write the done marker");
    }
}

/// Network interfaces of this process's network namespace (from `/proc/net/dev`).
pub fn interfaces() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(|name| name.trim().to_string())
        .collect()
}

/// Panics unless this process is inside the namespaces: a network namespace whose only interface
/// is loopback, and a private `/run`.
pub fn assert_isolated() {
    assert!(inside(), "not started by run_test_inside");
    let interfaces = interfaces();
    assert_eq!(
        interfaces,
        vec!["lo".to_string()],
        "the namespaced test must see only the loopback interface"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/run") && l.contains("regcache-e2e-run")),
        "no private tmpfs on /run"
    );
}
