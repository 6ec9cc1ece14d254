//! `regcache export -o FILE IMAGE...|--all|--pinned` and `regcache import PATH`. With a daemon
//! running (it holds the cache directory's lock) they stream the bundle through `GET
//! /admin/export` and `POST /admin/import`; with none, they take the lock and do the same work in
//! this process. An export is written to a temp file beside FILE and renamed when complete, so
//! FILE is never a cut-short archive. An import reads a tar archive (an OCI layout archive such as
//! an export, `skopeo copy … oci-archive:`, or a `docker save`), standard input (`-`), or a
//! directory (an OCI layout, or an unpacked `docker save`), which is streamed as a tar.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use super::cache_cmd::{
    admin_request, answer_body, blocking, owner, registry_here, ControlError, Owner, Via,
};

use super::render::human_bytes;
use crate::admin_api::{self, ExportOptions, ExportReport, ImportOptions, ImportReport};
use crate::cache::store_mark::{self, Found};
use crate::config::Config;
use crate::streams::{pipe, PipeBody, PipeReader};

/// Writes a bundle of `options` to `out` (`-`: standard output).
pub async fn export(
    config: &Config,
    options: &ExportOptions,
    out: &Path,
) -> Result<(ExportReport, Via), ControlError> {
    let to_stdout = out == Path::new("-");
    let mut target = match to_stdout {
        true => None,
        false => {
            let dir = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            // As `File::create` would: the umask decides the bundle's mode.
            let temp = tempfile::Builder::new()
                .prefix(".regcache-export-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .tempfile_in(dir)?;
            Some(temp)
        }
    };
    let (report, via) = match owner(config)? {
        Owner::Us(lock) => {
            let (registry, _cache) = registry_here(config).await?;
            let plan = registry.export_plan(options).await?;
            let file = match &target {
                Some(t) => Some(t.as_file().try_clone()?),
                None => None,
            };
            let report = blocking(move || {
                let report = match file {
                    Some(f) => plan.write(io::BufWriter::with_capacity(1 << 20, f))?,
                    None => plan.write(io::BufWriter::new(io::stdout().lock()))?,
                };
                Ok(report)
            })
            .await?;
            drop(lock);
            (report, Via::Directory)
        }
        Owner::Daemon(addr) => {
            let report = download(config, addr, options, target.as_mut().map(|t| t.as_file_mut())).await?;
            (report, Via::Daemon(addr))
        }
    };
    if let Some(t) = target {
        t.as_file().sync_all()?;
        t.persist(out).map_err(|e| ControlError::Io(e.error))?;
    }
    Ok((report, via))
}

/// Streams the daemon's export into `file` (None: standard output).
async fn download(
    config: &Config,
    addr: std::net::SocketAddr,
    options: &ExportOptions,
    mut file: Option<&mut File>,
) -> Result<ExportReport, ControlError> {
    let bad = |reason: String| ControlError::Unreachable { addr, reason };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let req = admin_request(config, addr, Method::GET, &admin_api::export_path(options))
        .body(Empty::new())
        .map_err(|e| bad(e.to_string()))?;
    let resp = client.request(req).await.map_err(|e| bad(e.to_string()))?;
    let status = resp.status();
    let report: ExportReport = resp
        .headers()
        .get(admin_api::EXPORT_HEADER)
        .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())
        .unwrap_or_default();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body.collect().await.map_err(|e| bad(e.to_string()))?.to_bytes();
        return Err(ControlError::Refused {
            addr,
            status,
            body: String::from_utf8_lossy(&text).trim().to_string(),
        });
    }
    let mut stdout = io::stdout().lock();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad(format!("the export broke off: {e}")))?;
        if let Some(data) = frame.data_ref() {
            match file.as_mut() {
                Some(f) => f.write_all(data)?,
                None => stdout.write_all(data)?,
            }
        }
    }
    stdout.flush()?;
    Ok(report)
}

/// Imports the bundle at `source` (a tar file, `-` for standard input, or a directory).
pub async fn import(
    config: &Config,
    source: &Path,
    options: &ImportOptions,
) -> Result<(ImportReport, Via), ControlError> {
    if source != Path::new("-") && !source.exists() {
        return Err(ControlError::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no such file or directory", source.display()),
        )));
    }
    // An offline site's first import makes its cache directory.
    let dir = &config.cache.dir;
    if matches!(store_mark::examine(dir)?, Found::Missing | Found::Empty) {
        store_mark::claim(dir)?;
    }
    match owner(config)? {
        Owner::Us(lock) => {
            let (registry, cache) = registry_here(config).await?;
            let rx = stream_source(source);
            let report = registry.import(Box::new(PipeReader::new(rx)), options).await?;
            blocking(move || Ok(cache.save_recency()?)).await?;
            drop(lock);
            Ok((report, Via::Directory))
        }
        Owner::Daemon(addr) => {
            let bad = |reason: String| ControlError::Unreachable { addr, reason };
            let client = Client::builder(TokioExecutor::new()).build_http::<PipeBody>();
            let req = admin_request(config, addr, Method::POST, &admin_api::import_path(options))
                .header(http::header::CONTENT_TYPE, "application/x-tar")
                .body(PipeBody(stream_source(source)))
                .map_err(|e| bad(e.to_string()))?;
            let resp = client.request(req).await.map_err(|e| bad(e.to_string()))?;
            let body = answer_body(addr, resp).await?;
            let report = serde_json::from_slice(&body).map_err(|e| bad(format!("unexpected answer: {e}")))?;
            Ok((report, Via::Daemon(addr)))
        }
    }
}

/// The bundle at `source` as a stream of tar bytes, produced on a blocking thread.
fn stream_source(source: &Path) -> mpsc::Receiver<io::Result<bytes::Bytes>> {
    let (mut writer, rx) = pipe();
    let source = source.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let sent = if source == Path::new("-") {
            io::copy(&mut io::stdin().lock(), &mut writer).map(drop)
        } else if source.is_dir() {
            let mut tar = tar::Builder::new(&mut writer);
            tar.follow_symlinks(false);
            tar.append_dir_all(".", &source).and_then(|()| tar.finish())
        } else {
            File::open(&source)
                .and_then(|mut f| io::copy(&mut f, &mut writer))
                .map(drop)
        };
        match sent {
            Ok(()) => drop(writer),
            Err(e) => writer.fail(io::Error::new(e.kind(), format!("{}: {e}", source.display()))),
        }
    });
    rx
}

fn source_line(via: Via) -> String {
    match via {
        Via::Directory => "on the directory (no daemon running)".to_string(),
        Via::Daemon(a) => format!("by the running daemon at {a}"),
    }
}

fn image_lines(images: &[admin_api::BundleImage]) -> String {
    let mut out = String::new();
    for i in images {
        let platforms = match i.platforms.is_empty() {
            true => String::new(),
            false => format!("  {}", i.platforms.join(",")),
        };
        out.push_str(&format!(
            "  {}  {}{platforms}\n",
            i.name,
            crate::oci::short_digest(&i.digest)
        ));
    }
    out
}

pub fn render_export(r: &ExportReport, out: &Path, via: Via) -> String {
    let mut text = format!(
        "wrote {}: {} images, {} manifests, {} blobs, {}\nsource: {}\n",
        out.display(),
        r.images.len(),
        r.manifests,
        r.blobs,
        human_bytes(r.bytes),
        source_line(via),
    );
    if r.children_left_out > 0 {
        text.push_str(&format!(
            "  {} platforms of multi-platform images left out (never pulled into this cache)\n",
            r.children_left_out
        ));
    }
    text.push_str(&image_lines(&r.images));
    text
}

pub fn render_import(r: &ImportReport, source: &Path, via: Via) -> String {
    let mut out = format!(
        "imported {}: {} images; {} blobs and manifests added, {}; {} already cached{}\nsource: {}\n",
        source.display(),
        r.images.len(),
        r.added,
        human_bytes(r.added_bytes),
        r.present,
        if r.pinned { "; pinned" } else { "" },
        source_line(via),
    );
    if r.absent_children > 0 {
        out.push_str(&format!(
            "  {} platforms of multi-platform images are not in the bundle (not cached where it was made)\n",
            r.absent_children
        ));
    }
    out.push_str(&image_lines(&r.images));
    out
}
