//! How `regcache prefetch` and `regcache unpin` show what they do: the progress of each image
//! (a rewritten line on a terminal, plain lines otherwise, JSON lines with `--json`), the summary
//! table, the unpin report.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use super::cache_cmd::Via;
use crate::admin_api::{PrefetchEvent, UnpinReport};
use crate::oci::short_digest;
use crate::units::short_size;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// One line per image, rewritten in place.
    Terminal,
    /// A plain line per event.
    Lines,
    /// Every event as a line of JSON.
    Json,
}

impl Style {
    pub fn detect(json: bool) -> Style {
        if json {
            Style::Json
        } else if std::io::stdout().is_terminal() {
            Style::Terminal
        } else {
            Style::Lines
        }
    }
}

/// Shows events as they come.
pub struct Progress<W: Write> {
    out: W,
    style: Style,
    image: String,
    blobs: u64,
    done: u64,
    bytes: u64,
    since: Instant,
}

impl<W: Write> Progress<W> {
    pub fn new(out: W, style: Style) -> Progress<W> {
        Progress {
            out,
            style,
            image: String::new(),
            blobs: 0,
            done: 0,
            bytes: 0,
            since: Instant::now(),
        }
    }

    fn line(&self) -> String {
        let secs = self.since.elapsed().as_secs_f64().max(0.001);
        format!(
            "pulling {}: {}/{} blobs, {}, {}/s",
            self.image,
            self.done,
            self.blobs,
            short_size(self.bytes),
            short_size((self.bytes as f64 / secs) as u64)
        )
    }

    pub fn show(&mut self, event: &PrefetchEvent) {
        if self.style == Style::Json {
            if let Ok(line) = serde_json::to_string(event) {
                let _ = writeln!(self.out, "{line}");
            }
            let _ = self.out.flush();
            return;
        }
        let clear = if self.style == Style::Terminal {
            "\r\x1b[2K"
        } else {
            ""
        };
        let text = match event {
            PrefetchEvent::Started { image, .. } => {
                self.image.clone_from(image);
                (self.blobs, self.done, self.bytes) = (0, 0, 0);
                self.since = Instant::now();
                Some(self.line())
            }
            PrefetchEvent::Manifest { blobs, .. } => {
                self.blobs += blobs;
                (self.style == Style::Terminal).then(|| self.line())
            }
            PrefetchEvent::Blob { bytes, .. } => {
                self.done += 1;
                self.bytes += bytes;
                Some(self.line())
            }
            PrefetchEvent::Done {
                image, blobs, bytes, ..
            } => {
                let text = format!("{clear}done {image}: {blobs} blobs, {}\n", short_size(*bytes));
                let _ = self.out.write_all(text.as_bytes());
                None
            }
            PrefetchEvent::Failed { image, reason } => {
                let text = format!("{clear}failed {image}: {reason}\n");
                let _ = self.out.write_all(text.as_bytes());
                None
            }
            PrefetchEvent::Summary { .. } => None,
        };
        if let Some(text) = text {
            let text = match self.style {
                Style::Terminal => format!("{clear}{text}"),
                _ => format!("{text}\n"),
            };
            let _ = self.out.write_all(text.as_bytes());
        }
        let _ = self.out.flush();
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One row of the closing table.
struct Row {
    image: String,
    digest: String,
    platforms: String,
    blobs: String,
    bytes: String,
    outcome: String,
}

/// The closing table: image, digest, platforms fetched, blobs, bytes, outcome; and who did it.
pub fn render_summary(events: &[PrefetchEvent], via: Via) -> String {
    let mut rows = vec![Row {
        image: "IMAGE".into(),
        digest: "DIGEST".into(),
        platforms: "PLATFORMS".into(),
        blobs: "BLOBS".into(),
        bytes: "BYTES".into(),
        outcome: "OUTCOME".into(),
    }];
    for e in events {
        match e {
            PrefetchEvent::Done {
                image,
                digest,
                platforms,
                blobs,
                bytes,
                pinned,
                ..
            } => rows.push(Row {
                image: image.clone(),
                digest: short_digest(digest).to_string(),
                platforms: if platforms.is_empty() {
                    "-".into()
                } else {
                    platforms.join(",")
                },
                blobs: blobs.to_string(),
                bytes: short_size(*bytes),
                outcome: if *pinned { "ok, pinned" } else { "ok" }.into(),
            }),
            PrefetchEvent::Failed { image, reason } => rows.push(Row {
                image: image.clone(),
                digest: "-".into(),
                platforms: "-".into(),
                blobs: "-".into(),
                bytes: "-".into(),
                outcome: format!("failed: {reason}"),
            }),
            _ => {}
        }
    }
    let w = |f: fn(&Row) -> &String| rows.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let (wi, wd, wp, wb, wy) = (
        w(|r| &r.image),
        w(|r| &r.digest),
        w(|r| &r.platforms),
        w(|r| &r.blobs),
        w(|r| &r.bytes),
    );
    let mut out = String::new();
    for r in &rows {
        out.push_str(&format!(
            "{:<wi$}  {:<wd$}  {:<wp$}  {:>wb$}  {:>wy$}  {}\n",
            r.image, r.digest, r.platforms, r.blobs, r.bytes, r.outcome
        ));
    }
    let failed = events
        .iter()
        .filter(|e| matches!(e, PrefetchEvent::Failed { .. }))
        .count();
    let by = match via {
        Via::Directory => "in this process, on the directory (no daemon running)".to_string(),
        Via::Daemon(a) => format!("by the running daemon at {a}"),
    };
    out.push_str(&format!(
        "{} images, {failed} failed; done {by}\n",
        rows.len() - 1
    ));
    out
}

/// Whether every image succeeded.
pub fn all_done(events: &[PrefetchEvent]) -> bool {
    matches!(events.last(), Some(PrefetchEvent::Summary { failed: 0, .. }))
}

pub fn render_unpin(r: &UnpinReport, via: Via) -> String {
    let by = match via {
        Via::Directory => "on the directory (no daemon running)".to_string(),
        Via::Daemon(a) => format!("by the running daemon at {a}"),
    };
    format!(
        "unpinned {}/{} ({}): {} manifests, {} blobs and their records; done {by}\n",
        r.upstream, r.repository, r.digest, r.manifests, r.blobs
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_gets_one_rewritten_line_per_image() {
        let image = "alpine:3.20".to_string();
        let events = [
            PrefetchEvent::Started {
                image: image.clone(),
                upstream: "docker.io".into(),
                repository: "library/alpine".into(),
                reference: "3.20".into(),
            },
            PrefetchEvent::Manifest {
                image: image.clone(),
                digest: "sha256:x".into(),
                platform: None,
                blobs: 2,
                bytes: 3 << 20,
            },
            PrefetchEvent::Blob {
                image: image.clone(),
                digest: "sha256:y".into(),
                bytes: 2 << 20,
                cached: false,
            },
            PrefetchEvent::Done {
                image: image.clone(),
                digest: "sha256:x".into(),
                platforms: vec![],
                manifests: 1,
                blobs: 2,
                bytes: 3 << 20,
                pinned: false,
            },
        ];
        let mut p = Progress::new(Vec::new(), Style::Terminal);
        for e in &events {
            p.show(e);
        }
        let out = String::from_utf8(p.into_inner()).unwrap();
        assert!(
            out.contains("\r\x1b[2Kpulling alpine:3.20: 1/2 blobs, 2.0 MiB, "),
            "{out:?}"
        );
        assert!(
            out.ends_with("\r\x1b[2Kdone alpine:3.20: 2 blobs, 3.0 MiB\n"),
            "{out:?}"
        );
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");

        let mut p = Progress::new(Vec::new(), Style::Lines);
        for e in &events {
            p.show(e);
        }
        let out = String::from_utf8(p.into_inner()).unwrap();
        assert!(!out.contains('\r'), "{out:?}");
        assert!(
            out.contains("pulling alpine:3.20: 1/2 blobs, 2.0 MiB, "),
            "{out:?}"
        );
    }

    #[test]
    fn the_summary_lists_every_image() {
        let events = vec![
            PrefetchEvent::Done {
                image: "alpine:3.20".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                platforms: vec!["linux/amd64".into()],
                manifests: 2,
                blobs: 2,
                bytes: 3 << 20,
                pinned: true,
            },
            PrefetchEvent::Failed {
                image: "nope:1".into(),
                reason: "manifest unknown".into(),
            },
            PrefetchEvent::Summary {
                images: 2,
                failed: 1,
                blobs: 2,
                bytes: 3 << 20,
            },
        ];
        let text = render_summary(&events, Via::Directory);
        assert!(text.contains("sha256:aaaaaaaaaaaa  linux/amd64"), "{text}");
        assert!(text.contains("3.0 MiB  ok, pinned"), "{text}");
        assert!(text.contains("failed: manifest unknown"), "{text}");
        assert!(!all_done(&events));
    }
}
