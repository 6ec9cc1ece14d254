//! The push API of hosted namespaces, as the distribution spec defines it: uploads (`POST`
//! `blobs/uploads/` with or without `digest=`, or with `mount=`/`from=`; `PATCH`, `PUT`, `GET`
//! and `DELETE` of `blobs/uploads/<id>`), manifest `PUT` and `DELETE`, blob `DELETE`. Bodies
//! stream to the registry layer through a bounded pipe (`streams.rs`), a manifest's is read whole
//! up to `MAX_MANIFEST`. The answer goes after the body has been read to its end, so a client
//! never finds the connection reset under an upload it sent. A write to a mirrored namespace never
//! gets here: it is refused (405) like every write to a mirror.

use std::io::Read;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::response::{empty, ServeBody, ServeError};
use super::route::{query_param, Endpoint, RepoRequest};
use super::State;
use crate::oci::Digest;
use crate::registry::{Client, PushError, PushKind, Repo, UploadStatus, Uploaded, MAX_MANIFEST};
use crate::streams::{pipe, pump, PipeReader};

fn push_error(kind: PushKind, message: impl Into<String>) -> ServeError {
    ServeError::Registry(PushError::new(kind, message).into())
}

fn unsupported(method: &Method) -> ServeError {
    push_error(
        PushKind::Unsupported,
        format!("{method} is not an operation of this endpoint"),
    )
}

/// A body as a blocking reader, and the task feeding it (awaited before answering).
fn reader(body: Incoming) -> (Box<dyn Read + Send>, tokio::task::JoinHandle<()>) {
    let (writer, rx) = pipe();
    let pumping = tokio::spawn(pump(body, writer.sender()));
    drop(writer);
    (Box::new(PipeReader::new(rx)), pumping)
}

fn digest_param(query: Option<&str>, key: &str) -> Result<Option<Digest>, ServeError> {
    match query_param(query, key) {
        None => Ok(None),
        Some(d) => d
            .parse()
            .map(Some)
            .map_err(|e| push_error(PushKind::DigestInvalid, format!("{key}={d:?}: {e}"))),
    }
}

fn blob_created(request: &RepoRequest, done: &Uploaded) -> Result<Response<ServeBody>, ServeError> {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(
            LOCATION,
            format!("/v2/{}/blobs/{}", request.client_name, done.digest),
        )
        .header("docker-content-digest", done.digest.to_string())
        .header(CONTENT_LENGTH, 0)
        .body(empty())
        .map_err(|e| ServeError::Internal(e.to_string()))
}

fn upload_answer(
    request: &RepoRequest,
    status: StatusCode,
    up: &UploadStatus,
) -> Result<Response<ServeBody>, ServeError> {
    // `Range` is inclusive; an empty upload is reported as `0-0`, as the reference registry does.
    let range = format!("0-{}", up.size.saturating_sub(1));
    Response::builder()
        .status(status)
        .header(
            LOCATION,
            format!("/v2/{}/blobs/uploads/{}", request.client_name, up.id),
        )
        .header(RANGE, range)
        .header("docker-upload-uuid", &up.id)
        .header(CONTENT_LENGTH, 0)
        .body(empty())
        .map_err(|e| ServeError::Internal(e.to_string()))
}

/// Where a chunk starts, from `Content-Range: <start>-<end>` (None: the client did not say).
fn chunk_start(req: &Request<()>) -> Result<Option<u64>, ServeError> {
    let Some(value) = req.headers().get(CONTENT_RANGE) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    let text = text.strip_prefix("bytes ").unwrap_or(text);
    let start = text.split_once('-').map_or(text, |(s, _)| s);
    start.parse().map(Some).map_err(|_| {
        push_error(
            PushKind::RangeInvalid,
            format!("Content-Range {text:?} is not <start>-<end>"),
        )
    })
}

/// A write (or an upload's status) in a hosted repository.
pub(super) async fn handle(
    state: &State,
    req: &Request<()>,
    body: Option<Incoming>,
    client: &Client,
    repo: &Repo,
    request: &RepoRequest,
) -> Result<Response<ServeBody>, ServeError> {
    let (method, query) = (req.method(), req.uri().query());
    let registry = &state.registry;
    match (&request.endpoint, method) {
        (Endpoint::Upload(None), &Method::POST) => {
            if let Some(d) = digest_param(query, "mount")? {
                let from = match query_param(query, "from") {
                    Some(f) => Some(
                        registry.locate(
                            None,
                            &f.parse()
                                .map_err(|e| ServeError::NameInvalid(format!("from={f:?}: {e}")))?,
                            request.ns.as_deref(),
                        )?,
                    ),
                    None => None,
                };
                if let Some(done) = registry.upload_mount(client, repo, &d, from.as_ref()).await? {
                    return blob_created(request, &done);
                }
            }
            let digest = digest_param(query, "digest")?;
            let (body, pumping) = match (body, &digest) {
                (Some(b), Some(_)) => {
                    let (r, p) = reader(b);
                    (Some(r), Some(p))
                }
                _ => (None, None),
            };
            let started = registry.upload_start(client, repo, digest, body).await;
            if let Some(p) = pumping {
                let _ = p.await;
            }
            match started? {
                Ok(done) => blob_created(request, &done),
                Err(up) => upload_answer(request, StatusCode::ACCEPTED, &up),
            }
        }
        (Endpoint::Upload(Some(id)), &Method::PATCH) => {
            let start = chunk_start(req)?;
            let (r, pumping) = reader(body.ok_or_else(|| ServeError::Internal("no body".into()))?);
            let patched = registry.upload_patch(client, repo, id, start, r).await;
            let _ = pumping.await;
            upload_answer(request, StatusCode::ACCEPTED, &patched?)
        }
        (Endpoint::Upload(Some(id)), &Method::PUT) => {
            let digest = digest_param(query, "digest")?.ok_or_else(|| {
                push_error(PushKind::DigestInvalid, "digest= is required to finish an upload")
            })?;
            let (r, pumping) = match body {
                Some(b) => {
                    let (r, p) = reader(b);
                    (Some(r), Some(p))
                }
                None => (None, None),
            };
            let done = registry.upload_finish(client, repo, id, &digest, r).await;
            if let Some(p) = pumping {
                let _ = p.await;
            }
            blob_created(request, &done?)
        }
        (Endpoint::Upload(Some(id)), &Method::GET) => {
            let up = registry.upload_status(client, repo, id).await?;
            upload_answer(request, StatusCode::NO_CONTENT, &up)
        }
        (Endpoint::Upload(Some(id)), &Method::DELETE) => {
            registry.upload_cancel(client, repo, id).await?;
            no_content(StatusCode::NO_CONTENT)
        }
        (Endpoint::Manifest(reference), &Method::PUT) => {
            let bytes = manifest_body(body).await?;
            let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            let pushed = registry
                .manifest_put(client, repo, reference, content_type, bytes)
                .await?;
            let mut resp = Response::builder()
                .status(StatusCode::CREATED)
                .header(
                    LOCATION,
                    format!("/v2/{}/manifests/{}", request.client_name, pushed.digest),
                )
                .header("docker-content-digest", pushed.digest.to_string())
                .header(CONTENT_LENGTH, 0);
            if let Some(subject) = &pushed.subject {
                resp = resp.header("oci-subject", subject.to_string());
            }
            resp.body(empty())
                .map_err(|e| ServeError::Internal(e.to_string()))
        }
        (Endpoint::Manifest(reference), &Method::DELETE) => {
            registry.manifest_delete(client, repo, reference).await?;
            no_content(StatusCode::ACCEPTED)
        }
        (Endpoint::Blob(digest), &Method::DELETE) => {
            registry.blob_delete(client, repo, digest).await?;
            no_content(StatusCode::ACCEPTED)
        }
        _ => Err(unsupported(method)),
    }
}

fn no_content(status: StatusCode) -> Result<Response<ServeBody>, ServeError> {
    Response::builder()
        .status(status)
        .header(CONTENT_LENGTH, 0)
        .body(empty())
        .map_err(|e| ServeError::Internal(e.to_string()))
}

/// A manifest's bytes, at most `MAX_MANIFEST`.
async fn manifest_body(body: Option<Incoming>) -> Result<Bytes, ServeError> {
    let Some(body) = body else {
        return Err(push_error(
            PushKind::ManifestInvalid,
            "a manifest PUT needs a body",
        ));
    };
    match Limited::new(body, MAX_MANIFEST).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(push_error(
            PushKind::SizeInvalid,
            format!("a manifest is at most {MAX_MANIFEST} bytes"),
        )),
        Err(e) => Err(push_error(
            PushKind::ManifestInvalid,
            format!("the body broke off: {e}"),
        )),
    }
}

/// Whether a request is for the push side: a write, or an upload's status.
pub(super) fn is_push(method: &Method, endpoint: &Endpoint) -> bool {
    matches!(endpoint, Endpoint::Upload(_)) || !matches!(*method, Method::GET | Method::HEAD)
}
