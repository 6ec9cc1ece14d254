//! The admin status page as an operator sees it: rendered by a real headless browser (Debian's
//! `chromium`). regcache runs in-process in front of the local CNCF distribution registry (the
//! kit's upstream side), skopeo pulls `library/alpine:latest` through it so the page has
//! something to list, then chromium loads `http://<admin address>/` twice: `--dump-dom` must
//! show the pulled image's `repository:tag` and short digest in the rendered table, and
//! `--screenshot` must write a real 1280×1600 PNG with visible content (checked by decoding it).
//! The screenshot is kept at `<target dir>/test-artifacts/status-page.png` for a human to look at.
//!
//! Chromium phones home on its own (component updates, safe browsing, variations), so it gets
//! every flag that stops background networking and a throwaway profile, and the whole test runs
//! in private network, mount and PID namespaces (`support/netns.rs`) whose only interface is
//! loopback: nothing it tries can leave the machine, and no chromium process outlives the test.
//!
//! Needs root (for the namespaces), `docker-registry`, `skopeo` and `chromium`, and
//! util-linux/iproute2. Without them the test prints a loud notice and passes, except when `CI`
//! is set, where it fails.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::registry::Upstream;
use crate::support::{e2e, netns, tools};
use e2e::Clock;

/// The test's name, which the namespaced re-run selects.
const TEST: &str = "status_page::chromium_renders_the_status_page";
/// The browser (Debian's `chromium` package).
const CHROMIUM_BIN: &str = "chromium";
/// The screenshot's size, in CSS pixels (chromium's headless scale factor is 1).
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 1600;

fn requirements_present() -> bool {
    let mut missing = e2e::missing_tools();
    if tools::find(CHROMIUM_BIN).is_none() {
        missing.push(CHROMIUM_BIN.to_string());
    }
    missing.extend(netns::missing());
    let install = "apt-get install -y docker-registry skopeo chromium util-linux iproute2";
    netns::requirements_met(TEST, &missing, install)
}

/// `<target dir>/test-artifacts/status-page.png`: `CARGO_TARGET_TMPDIR` is `<target dir>/tmp`,
/// wherever `CARGO_TARGET_DIR` put it, so the artifact sits at the same place on every run.
fn artifact_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .unwrap_or(tmp)
        .join("test-artifacts")
        .join("status-page.png")
}

/// Runs headless chromium on `url` with `mode` (`--dump-dom`, `--screenshot=…`) and a fresh
/// profile in `scratch`; its stdout.
async fn chromium(scratch: &Path, url: &str, mode: &str) -> String {
    let profile = tempfile::tempdir_in(scratch).expect("chromium profile dir");
    let mut command = tokio::process::Command::new(CHROMIUM_BIN);
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args([
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-default-apps",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .args([
            "--disable-breakpad",
            "--disable-domain-reliability",
            "--metrics-recording-only",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(mode)
        .arg(url)
        // Chromium also writes under HOME and the XDG directories: keep those private too.
        .env("HOME", profile.path())
        .env("XDG_CONFIG_HOME", profile.path().join("config"))
        .env("XDG_CACHE_HOME", profile.path().join("cache"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let what = format!("chromium {mode} {url}");
    let (stdout, _) = e2e::run(command, &what, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stdout
}

/// Checks that `png` is a PNG of `WIDTH`×`HEIGHT` whose pixels are not all alike: it decodes the
/// image data and counts distinct byte values (a blank page has four: white and the row filter
/// types; a single letter brings fifty, text and table borders bring many anti-aliased greys).
fn check_png(png: &[u8]) -> usize {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    assert!(png.starts_with(SIGNATURE), "not a PNG file");
    let mut at = SIGNATURE.len();
    let mut header = None;
    let mut data = Vec::new();
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let body = png.get(at + 8..at + 8 + len).expect("PNG chunk within the file");
        match kind {
            b"IHDR" => header = Some(body.to_vec()),
            b"IDAT" => data.extend_from_slice(body),
            _ => {}
        }
        at += 12 + len;
    }
    let header = header.expect("PNG IHDR chunk");
    let width = u32::from_be_bytes(header[0..4].try_into().unwrap());
    let height = u32::from_be_bytes(header[4..8].try_into().unwrap());
    assert_eq!((width, height), (WIDTH, HEIGHT), "screenshot size");
    let mut pixels = Vec::new();
    flate2::read::ZlibDecoder::new(&data[..])
        .read_to_end(&mut pixels)
        .expect("PNG image data inflates");
    let mut seen = [false; 256];
    for b in &pixels {
        seen[*b as usize] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    assert!(
        distinct >= 16,
        "the screenshot looks blank: {distinct} distinct byte values in its pixels"
    );
    distinct
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_status_page() {
    netns::namespaced_test(TEST, namespaced_body(), requirements_present).await;
}

/// The test proper, inside the namespaces.
async fn namespaced_body() {
    let clock = Clock::new("e2e-status-page");
    let upstream = Upstream::start(&clock).await;
    let work = tempfile::Builder::new()
        .prefix("regcache-e2e-status-page-")
        .tempdir()
        .expect("work dir");
    let running = e2e::start_mirror(&upstream.registry.url(), &work.path().join("cache"), "5m").await;
    let image = upstream
        .public()
        .find(|i| i.repo == "library/alpine")
        .expect("library/alpine is a test image");
    let src = format!("docker://{}/{}", running.local_addr(), image.reference());
    let dst = format!("dir:{}", work.path().join("pulled").display());
    let args = ["--src-tls-verify=false", "--src-no-creds"];
    upstream
        .skopeo
        .copy(&src, &dst, &args, None)
        .await
        .unwrap_or_else(|e| panic!("pull through regcache: {e}"));
    clock.mark(&format!("pulled {} through regcache", image.reference()));

    let url = format!("http://{}/", running.admin_addr());
    let started = Instant::now();
    let dom = chromium(work.path(), &url, "--dump-dom").await;
    clock.mark(&format!(
        "chromium --dump-dom {url}: {} bytes in {:.2}s",
        dom.len(),
        started.elapsed().as_secs_f64()
    ));
    assert!(dom.contains("<title>regcache status</title>"), "{dom}");
    // The listing names the image with its upstream, e.g. docker.io/library/alpine:latest.
    let row = format!("/{}</td>", image.reference());
    assert!(dom.contains(&row), "the rendered page lacks {row}:\n{dom}");
    let hex = image.digest.strip_prefix("sha256:").expect("sha256 digest");
    assert!(
        dom.contains(&hex[..12]),
        "the rendered page lacks the short digest:\n{dom}"
    );

    let artifact = artifact_path();
    std::fs::create_dir_all(artifact.parent().expect("artifact dir")).expect("create artifact dir");
    let _ = std::fs::remove_file(&artifact);
    let started = Instant::now();
    let shot = format!("--screenshot={}", artifact.display());
    chromium(work.path(), &url, &shot).await;
    let png = std::fs::read(&artifact).unwrap_or_else(|e| panic!("{}: {e}", artifact.display()));
    let distinct = check_png(&png);
    // A blank page of this size compresses to about 9 KB; this page's text makes it over 50 KB.
    assert!(png.len() > 20_000, "screenshot of only {} bytes", png.len());
    clock.mark(&format!(
        "chromium --screenshot in {:.2}s: {} bytes, {WIDTH}x{HEIGHT}, {distinct} distinct byte values",
        started.elapsed().as_secs_f64(),
        png.len()
    ));
    eprintln!("status page screenshot: {}", artifact.display());
    tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .expect("regcache stopped in time");
}
