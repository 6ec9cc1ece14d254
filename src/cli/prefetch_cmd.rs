//! `regcache prefetch IMAGE... [-f FILE] [--from-manifests FILE]` and `regcache unpin IMAGE...`. With a daemon running
//! (it holds the cache directory's lock) they ask it through `POST /admin/prefetch` (whose
//! answer streams progress events) and `POST /admin/unpin`; with none, they take the lock and
//! do the same work in this process with the registry layer built from the same config, fetching
//! from the configured upstreams. Progress is a rewritten line on a terminal, plain lines
//! otherwise, JSON lines with `--json`; a summary table closes (`prefetch_show.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use super::cache_cmd::{admin_request, ask, blocking, owner, registry_here, ControlError, Owner, Via};
use super::manifest_images;
use crate::admin_api::{self, PrefetchEvent, PrefetchOptions, UnpinReport};
use crate::config::Config;
use crate::registry::PrefetchRef;

/// The references of an images file: one a line, `#` starts a comment, blank lines are skipped.
pub fn read_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads a file (`-` is standard input), naming it in an error.
fn read_text(path: &Path) -> std::io::Result<String> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    text.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Reads an images file (`-` is standard input).
pub fn read_list_file(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(read_list(&read_text(path)?))
}

fn unreachable(addr: SocketAddr) -> impl Fn(String) -> ControlError {
    move |reason| ControlError::Unreachable { addr, reason }
}

/// Prefetches `options.images`, handing every event to `on_event` as it comes; returns every
/// event and who did the work.
pub async fn prefetch(
    config: &Config,
    options: &PrefetchOptions,
    mut on_event: impl FnMut(&PrefetchEvent),
) -> Result<(Vec<PrefetchEvent>, Via), ControlError> {
    let mut events = Vec::new();
    match owner(config)? {
        Owner::Us(lock) => {
            let platforms = options
                .parsed_platforms()
                .map_err(|e| ControlError::Upstreams(format!("--platform: {e}")))?;
            let (registry, cache) = registry_here(config).await?;
            let (tx, mut rx) = mpsc::channel(64);
            let work = async {
                registry.prefetch(options, &platforms, &tx).await;
                drop(tx);
            };
            let show = async {
                while let Some(e) = rx.recv().await {
                    on_event(&e);
                    events.push(e);
                }
            };
            tokio::join!(work, show);
            blocking(move || Ok(cache.save_recency()?)).await?;
            drop(lock);
            Ok((events, Via::Directory))
        }
        Owner::Daemon(addr) => {
            let bad = unreachable(addr);
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let body = serde_json::to_vec(options).map_err(|e| bad(e.to_string()))?;
            let req = admin_request(config, addr, Method::POST, admin_api::PREFETCH)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| bad(e.to_string()))?;
            let resp = client.request(req).await.map_err(|e| bad(e.to_string()))?;
            let status = resp.status();
            let mut body = resp.into_body();
            if !status.is_success() {
                let text = body.collect().await.map_err(|e| bad(e.to_string()))?.to_bytes();
                return Err(ControlError::Refused {
                    addr,
                    status,
                    body: String::from_utf8_lossy(&text).trim().to_string(),
                });
            }
            let mut pending: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| bad(format!("the progress stream broke off: {e}")))?;
                let Some(data) = frame.data_ref() else { continue };
                pending.extend_from_slice(data);
                while let Some(at) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=at).collect();
                    let event: PrefetchEvent = serde_json::from_slice(&line)
                        .map_err(|e| bad(format!("unexpected progress line: {e}")))?;
                    on_event(&event);
                    events.push(event);
                }
            }
            if !matches!(events.last(), Some(PrefetchEvent::Summary { .. })) {
                return Err(bad("the progress stream ended before its summary".into()));
            }
            Ok((events, Via::Daemon(addr)))
        }
    }
}

/// Removes the pins of `image`'s manifests, blobs and records.
/// The images a `regcache prefetch` names: on its command line, then in `file` (`-`: standard
/// input), then in the `manifests` (what each held is said on standard error); an error when
/// there are none.
pub fn images_to_fetch(
    mut images: Vec<String>,
    file: Option<&Path>,
    manifests: &[PathBuf],
) -> std::io::Result<Vec<String>> {
    if let Some(f) = file {
        images.extend(read_list_file(f)?);
    }
    for m in manifests {
        let (found, files) = manifest_images::scan_path(m, read_text)?;
        eprintln!(
            "{}: {} images{}{}",
            m.display(),
            found.images.len(),
            match (m.is_dir(), files) {
                (true, n) => format!(" in {n} files"),
                (false, _) => String::new(),
            },
            match found.templated {
                0 => String::new(),
                n => format!(" ({n} unrendered template values skipped)"),
            }
        );
        for image in found.images {
            if !images.contains(&image) {
                images.push(image);
            }
        }
    }
    if images.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no images to prefetch: name them, or give -f FILE or --from-manifests FILE",
        ));
    }
    Ok(images)
}

/// Runs a prefetch with its progress shown on standard output (`json`: JSON lines) and, unless
/// `json`, the summary table; true when every image was fetched.
pub async fn run_prefetch(
    config: &Config,
    options: &PrefetchOptions,
    json: bool,
) -> Result<bool, ControlError> {
    let style = Style::detect(json);
    let mut progress = Progress::new(std::io::stdout(), style);
    let (events, via) = prefetch(config, options, |e| progress.show(e)).await?;
    if style != Style::Json {
        print!("{}", render_summary(&events, via));
    }
    Ok(all_done(&events))
}

pub async fn unpin(config: &Config, image: &str) -> Result<(UnpinReport, Via), ControlError> {
    let parsed: PrefetchRef = image.parse()?;
    match owner(config)? {
        Owner::Us(lock) => {
            let (registry, cache) = registry_here(config).await?;
            let report = registry.unpin(&parsed).await?;
            blocking(move || Ok(cache.save_recency()?)).await?;
            drop(lock);
            Ok((report, Via::Directory))
        }
        Owner::Daemon(addr) => {
            let report = ask(config, addr, Method::POST, &admin_api::unpin_path(image)).await?;
            Ok((report, Via::Daemon(addr)))
        }
    }
}

pub use super::prefetch_show::{all_done, render_summary, render_unpin, Progress, Style};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_lists_skip_comments_and_blank_lines() {
        let text = "# air-gap set\nalpine:3.20\n\n  ghcr.io/org/app:v1  # the app\n#gone:1\n";
        assert_eq!(read_list(text), vec!["alpine:3.20", "ghcr.io/org/app:v1"]);
    }
}
