//! The regcache binary run as operators run it, with trace logging in JSON and its stderr collected
//! line by line, for tests that read what it logged (and check that no secret is in it).

use std::io::BufRead as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `regcache serve`; killed by `stop`.
pub struct Binary {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Binary {
    /// `regcache serve --log-format json --config <config>` with `RUST_LOG=trace`, `path_dir`
    /// first on PATH (where a test puts its credential helpers) and the extra `env`.
    pub fn start(config: &Path, path_dir: &Path, env: &[(&str, &str)]) -> Binary {
        let path = format!(
            "{}:{}",
            path_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regcache"));
        cmd.args(["serve", "--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", "trace")
            .env("PATH", path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("regcache runs");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Binary { child, lines, reader }
    }

    /// The first logged value of `field` in a line whose message is `message` (waits up to 10 s
    /// for it), e.g. `field("regcache listening", "listen")`.
    pub async fn field(&self, message: &str, field: &str) -> String {
        for _ in 0..1000 {
            for line in self.lines.lock().unwrap().iter() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if v["message"] == message {
                    return v[field].as_str().unwrap_or_default().to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "regcache never logged {message:?}: {:?}",
            self.lines.lock().unwrap()
        );
    }

    /// Kills the process and returns everything it logged.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe closes with the process: the reader has every line once it ends.
        let _ = self.reader.join();
        self.lines.lock().unwrap().join("\n")
    }
}
