//! The one place where errors become client responses: OCI error JSON
//! (`{"errors":[{"code","message"}]}`) with the status the distribution spec gives each code.
//! Client mistakes are 4xx, never 5xx; upstream trouble is 502/503/504, or 429 with
//! `Retry-After` when the upstream rate-limits.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::cache::FillError;
use crate::upstream::UpstreamError;

pub type ServeBody = BoxBody<Bytes, io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> ServeBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> ServeBody {
    full(Bytes::new())
}

/// What a request was about, so upstream 404s get the right OCI code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Manifest,
    Blob,
    Repository,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid repository name {0}")]
    NameInvalid(String),
    #[error("invalid digest {0}")]
    DigestInvalid(String),
    #[error("invalid tag: {0}")]
    TagInvalid(String),
    #[error("{0}")]
    NameUnknown(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("blob unknown: {0}")]
    BlobUnknown(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("requested range is not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("invalid pagination: {0}")]
    PaginationInvalid(String),
    #[error("{source}")]
    Upstream {
        subject: Subject,
        #[source]
        source: UpstreamError,
    },
    #[error("{source}")]
    Fill {
        subject: Subject,
        source: Arc<FillError>,
    },
    #[error("upstream sent an invalid manifest: {0}")]
    BadUpstreamManifest(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The outcome of an upstream request shared by several clients.
    #[error("{0}")]
    Shared(Arc<ServeError>),
}

impl From<io::Error> for ServeError {
    fn from(e: io::Error) -> Self {
        ServeError::Internal(format!("cache I/O: {e}"))
    }
}

impl ServeError {
    pub fn upstream(subject: Subject) -> impl FnOnce(UpstreamError) -> ServeError {
        move |source| ServeError::Upstream { subject, source }
    }

    fn not_found_code(subject: Subject) -> &'static str {
        match subject {
            Subject::Manifest => "MANIFEST_UNKNOWN",
            Subject::Blob => "BLOB_UNKNOWN",
            Subject::Repository => "NAME_UNKNOWN",
        }
    }

    /// The HTTP status and OCI error code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ServeError::NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            ServeError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            ServeError::TagInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            ServeError::NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            ServeError::ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            ServeError::BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            ServeError::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            ServeError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ServeError::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID"),
            ServeError::PaginationInvalid(_) => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
            ServeError::Upstream { subject, source } => upstream_status(*subject, source),
            ServeError::Fill { subject, source } => match source.as_ref() {
                FillError::Origin(e) => match e.downcast_ref::<UpstreamError>() {
                    Some(u) => upstream_status(*subject, u),
                    None => (StatusCode::BAD_GATEWAY, "UNKNOWN"),
                },
                FillError::DigestMismatch { .. } | FillError::SizeMismatch { .. } | FillError::Body(_) => {
                    (StatusCode::BAD_GATEWAY, "UNKNOWN")
                }
                FillError::Stalled(_) => (StatusCode::GATEWAY_TIMEOUT, "UNKNOWN"),
                FillError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
                FillError::Abandoned => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            },
            ServeError::BadUpstreamManifest(_) => (StatusCode::BAD_GATEWAY, "MANIFEST_INVALID"),
            ServeError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            ServeError::Shared(inner) => inner.status_and_code(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    pub fn into_response(self) -> Response<ServeBody> {
        let (status, code) = self.status_and_code();
        let message = self.to_string();
        if status.is_server_error() {
            tracing::warn!(%status, code, %message, "request failed");
        } else {
            tracing::debug!(%status, code, %message, "request refused");
        }
        let body = serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
        let bytes = Bytes::from(body.to_string());
        let mut resp = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, bytes.len());
        if let Some(after) = self.retry_after() {
            resp = resp.header(RETRY_AFTER, after.as_secs().max(1));
        }
        if let ServeError::RangeNotSatisfiable { size } = self {
            resp = resp.header(http::header::CONTENT_RANGE, format!("bytes */{size}"));
        }
        resp.body(full(bytes)).unwrap_or_else(|_| Response::new(empty()))
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        let u = match self {
            ServeError::Upstream { source, .. } => source,
            ServeError::Fill { source, .. } => match source.as_ref() {
                FillError::Origin(e) => e.downcast_ref::<UpstreamError>()?,
                _ => return None,
            },
            ServeError::Shared(inner) => return inner.retry_after(),
            _ => return None,
        };
        match u {
            UpstreamError::Status {
                status, retry_after, ..
            } if *status == StatusCode::TOO_MANY_REQUESTS => {
                Some(retry_after.unwrap_or(std::time::Duration::from_secs(60)))
            }
            UpstreamError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

fn upstream_status(subject: Subject, e: &UpstreamError) -> (StatusCode, &'static str) {
    match e {
        UpstreamError::Status { status, .. } if *status == StatusCode::NOT_FOUND => {
            (StatusCode::NOT_FOUND, ServeError::not_found_code(subject))
        }
        UpstreamError::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
            (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS")
        }
        UpstreamError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
        UpstreamError::Status { status, .. } if status.is_client_error() => {
            (StatusCode::BAD_GATEWAY, "UNKNOWN")
        }
        UpstreamError::Status { .. } | UpstreamError::Protocol { .. } => (StatusCode::BAD_GATEWAY, "UNKNOWN"),
        UpstreamError::Denied { .. } => (StatusCode::FORBIDDEN, "DENIED"),
        UpstreamError::Token { .. } | UpstreamError::Credentials { .. } => {
            (StatusCode::BAD_GATEWAY, "UNKNOWN")
        }
        UpstreamError::Connect { .. } | UpstreamError::Down { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
        }
        UpstreamError::Offline { .. } => (StatusCode::NOT_FOUND, ServeError::not_found_code(subject)),
        UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE"),
    }
}
