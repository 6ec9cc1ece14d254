//! What an operator sees when starting the binary: a second daemon on a cache directory another
//! one uses exits at once, non-zero, with one error line (not after a wait, whatever
//! `shutdown_grace` says).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, spawn, write_config};
use crate::support::fake::Fake;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_a_used_directory_exits_at_once() {
    let up = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _first = spawn(dir.path(), &up.url(), "30s").await;
    // Other ports, same cache directory: only the directory is in the way.
    let config = write_config(dir.path(), free_port(), free_port(), &up.url(), "30s", "info");
    let started = Instant::now();
    let mut second = Command::new(env!("CARGO_BIN_EXE_regcache"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = second.kill();
            panic!("the second daemon was still running after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    assert!(took < Duration::from_secs(2), "exited after {took:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("is in use by another regcache process"), "{err}");
}
