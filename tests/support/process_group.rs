//! Stopping a server a test started in a process group of its own (SeaweedFS, nginx), with
//! everything it started.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Stops a child started in a process group of its own, with everything it started: SIGTERM to
/// the group, SIGKILL after 5 s, then reaps it.
pub fn stop(child: &mut Child) {
    let group = format!("-{}", child.id());
    let signal = |name: &str| {
        let _ = Command::new("kill")
            .args([name, "--", &group])
            .stderr(Stdio::null())
            .status();
    };
    signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal("-KILL");
    let _ = child.wait();
}
