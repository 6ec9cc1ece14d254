//! Hostile requests (`hostile/cases.rs`, a table of raw HTTP/1 requests with the answers allowed
//! for each) sent over raw TCP sockets while a normal pull goes on through the same daemon: every
//! case gets a 4xx or a closed connection, never a 5xx and never silence, no case makes the daemon
//! connect where it should not, and the pull's bytes stay exact.
//!
//! In CI the table runs against an in-process daemon in front of the fake upstream. The same
//! table runs against any live daemon:
//!
//! ```sh
//! REGCACHE_HOSTILE_TARGET=127.0.0.1:5000 \
//! REGCACHE_HOSTILE_BLOB=library/alpine@sha256:<hex> \
//!   cargo test --test it hostile::live -- --ignored --nocapture
//! ```
//!
//! `REGCACHE_HOSTILE_BLOB` is optional: with it, the `Range` cases and those that reach the
//! default upstream run too, and that blob is pulled (and its digest checked) throughout.

mod cases;
mod wire;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::daemon::DaemonBuilder;
use crate::support::fake::{bytes_of, sha256, Fake};
use crate::support::listeners::BlackHole;
use cases::{Case, Needs, Target};
use wire::Outcome;

/// How long one case may go unanswered before it counts as a hang.
const CASE_LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_client_errors_while_a_pull_goes_on() {
    let up = Fake::start().await;
    let (_, _, layers) = up.add_image("library/alpine", "latest", &[bytes_of(4 << 20, 9)]);
    let blob = up.add_blob("hostile/blob", bytes_of(10_000, 3));
    let trap = BlackHole::start().await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let target = Target {
        addr: d.addr.to_string(),
        blob: Some(("hostile/blob".into(), blob)),
        trap: trap.addr.to_string(),
    };
    let pull = format!("/v2/library/alpine/blobs/{}", layers[0]);
    let (failures, pulls) = with_pulls(&target.addr, &pull, &layers[0], run_table(&target)).await;
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(pulls > 0, "the normal pull completed");
    assert_eq!(
        trap.accepted(),
        0,
        "no request made the daemon connect to an address it names"
    );
    for l in up.requests() {
        let p = l.path.to_ascii_lowercase();
        assert!(
            !p.contains("smuggled") && !p.contains("passwd"),
            "upstream saw {}",
            l.path
        );
    }
    assert_eq!(d.get("/v2/").await.status, 200, "the daemon still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "aims at the daemon named by REGCACHE_HOSTILE_TARGET (host:port)"]
async fn live() {
    let addr = std::env::var("REGCACHE_HOSTILE_TARGET").expect("REGCACHE_HOSTILE_TARGET=host:port");
    let blob = std::env::var("REGCACHE_HOSTILE_BLOB").ok().map(|b| {
        let (repo, digest) = b.split_once('@').expect("REGCACHE_HOSTILE_BLOB=<repo>@<digest>");
        (repo.to_string(), digest.to_string())
    });
    let target = Target {
        addr,
        blob: blob.clone(),
        trap: "169.254.169.254:80".into(),
    };
    let failures = match &blob {
        Some((repo, digest)) => {
            let pull = format!("/v2/{repo}/blobs/{digest}");
            let (failures, pulls) = with_pulls(&target.addr, &pull, digest, run_table(&target)).await;
            assert!(pulls > 0, "the normal pull completed");
            failures
        }
        None => run_table(&target).await,
    };
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs `table` while `path` is pulled over and over; every pull must hash to `digest`.
/// Returns the table's result and the number of pulls that completed.
async fn with_pulls<T>(addr: &str, path: &str, digest: &str, table: impl Future<Output = T>) -> (T, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let pulls = Arc::new(AtomicUsize::new(0));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
    let (digest, stop2, pulls2) = (digest.to_string(), stop.clone(), pulls.clone());
    let puller = tokio::spawn(async move {
        while !stop2.load(Ordering::SeqCst) || pulls2.load(Ordering::SeqCst) == 0 {
            let resp = client.get(uri.clone()).await.expect("the pull is answered");
            assert_eq!(resp.status(), 200, "the pull");
            let body = resp
                .into_body()
                .collect()
                .await
                .expect("the pull's body")
                .to_bytes();
            assert_eq!(sha256(&body), digest, "the pull's bytes");
            pulls2.fetch_add(1, Ordering::SeqCst);
        }
    });
    let out = table.await;
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(60), puller)
        .await
        .expect("the pull finishes")
        .expect("the pull succeeds");
    (out, pulls.load(Ordering::SeqCst))
}

/// Sends every case the target can take, one after another; returns one line per failure.
async fn run_table(target: &Target) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases::all(target) {
        if c.needs == Needs::Blob && target.blob.is_none() {
            continue;
        }
        let outcome = wire::exchange(&target.addr, c.head.clone(), c.body_len, CASE_LIMIT).await;
        // Shown with `--nocapture`: what each case got.
        println!("{:<45} {}", c.name, status_line(&outcome));
        if let Err(why) = judge(&c, &outcome) {
            failures.push(format!("{}: {why}", c.name));
        }
    }
    failures
}

fn judge(c: &Case, outcome: &Outcome) -> Result<(), String> {
    if !c.expect.split('|').any(|e| allowed(e, outcome)) {
        return Err(format!("expected {}, got {}", c.expect, summary(outcome)));
    }
    match (c.contains, outcome) {
        (Some(want), Outcome::Answered { text, .. }) if !text.contains(want) => {
            Err(format!("answer lacks {want}: {}", summary(outcome)))
        }
        _ => Ok(()),
    }
}

/// Whether one alternative of an `expect` (`404`, `4xx`, `closed`) matches.
fn allowed(expect: &str, outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Closed => expect == "closed",
        Outcome::Hung => false,
        Outcome::Answered { status, .. } => match expect.strip_suffix("xx") {
            Some(class) => class == (status / 100).to_string(),
            None => expect.parse() == Ok(*status),
        },
    }
}

fn status_line(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answered { text, .. } => text.lines().next().unwrap_or_default().to_string(),
        other => format!("{other:?}"),
    }
}

fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answered { text, .. } => text.chars().take(300).collect(),
        other => format!("{other:?}"),
    }
}
