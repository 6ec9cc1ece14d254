//! What an operator sees when starting the binary: a second daemon on a cache directory another
//! one uses exits at once, non-zero, with one error line (not after a wait, whatever
//! `shutdown_grace` says), and log lines written to a pipe carry no terminal colour codes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, get, sigterm, spawn, wait_exit, write_config, Proc};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_carry_no_colour_codes() {
    let up = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let config = write_config(dir.path(), port, admin, &up.url(), "1s", "info");
    let child = Command::new(env!("CARGO_BIN_EXE_regcache"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Proc { child, port, admin };
    let mut answered = false;
    for _ in 0..200 {
        if get(p.port, "/v2/").await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "regcache did not start");
    sigterm(&p);
    assert!(wait_exit(&mut p).await.success());
    let mut text = Vec::new();
    std::io::Read::read_to_end(p.child.stderr.as_mut().unwrap(), &mut text).unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("regcache listening") && text.contains("request"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape codes in piped logs: {text:?}"
    );
}
