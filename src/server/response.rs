//! The one place where errors become client responses: OCI error JSON
//! (`{"errors":[{"code","message"}]}`) with the status the distribution spec gives each code.
//! Client mistakes are 4xx, never 5xx; upstream trouble is 502/503/504, or 429 with
//! `Retry-After` when the upstream rate-limits. What an upstream failure means was decided once,
//! in the registry layer (`Fault`); this maps it.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::registry::{ErrorKind, Fault, RegistryError, Subject};

/// The challenge of every 401: clients retry with the credentials they were given.
pub const CHALLENGE: &str = "Basic realm=\"regcache\"";

pub type ServeBody = BoxBody<Bytes, io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> ServeBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> ServeBody {
    full(Bytes::new())
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid repository name {0}")]
    NameInvalid(String),
    #[error("invalid digest {0}")]
    DigestInvalid(String),
    /// A manifest reference that is no tag by the spec's grammar (`.INVALID_MANIFEST_NAME`): no
    /// manifest can have it, so it is unknown, 404 `MANIFEST_UNKNOWN` as the spec answers a pull
    /// of what the registry does not have (`TAG_INVALID` is a push error).
    #[error("manifest unknown: {0}")]
    TagInvalid(String),
    /// The manifest exists in a form the client's `Accept` does not allow (distribution answers
    /// `MANIFEST_UNKNOWN`).
    #[error("manifest unknown: {0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("requested range is not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("invalid pagination: {0}")]
    PaginationInvalid(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// Missing or wrong credentials; answered with a challenge.
    #[error("authentication required: {0}")]
    Unauthorized(String),
    #[error("too many failed logins from this address; try again later")]
    TooManyLogins,
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn not_found_code(subject: Subject) -> &'static str {
    match subject {
        Subject::Manifest => "MANIFEST_UNKNOWN",
        Subject::Blob => "BLOB_UNKNOWN",
        Subject::Repository => "NAME_UNKNOWN",
    }
}

impl ServeError {
    /// The HTTP status and OCI error code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ServeError::NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            ServeError::DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            ServeError::TagInvalid(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            ServeError::NotAcceptable(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            ServeError::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            ServeError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ServeError::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID"),
            ServeError::PaginationInvalid(_) => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
            ServeError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            ServeError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            ServeError::TooManyLogins => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            ServeError::Registry(e) => registry_status(e.kind()),
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
        if status == StatusCode::UNAUTHORIZED {
            resp = resp.header(http::header::WWW_AUTHENTICATE, CHALLENGE);
        }
        if let ServeError::RangeNotSatisfiable { size } = self {
            resp = resp.header(http::header::CONTENT_RANGE, format!("bytes */{size}"));
        }
        resp.body(full(bytes)).unwrap_or_else(|_| Response::new(empty()))
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ServeError::TooManyLogins => Some(Duration::from_secs(60)),
            ServeError::Registry(e) => match e.kind() {
                ErrorKind::Upstream(_, Fault::RateLimited(after)) => Some(after),
                _ => None,
            },
            _ => None,
        }
    }
}

fn registry_status(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::NameInvalid => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
        ErrorKind::NameUnknown => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        ErrorKind::ManifestUnknown => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        ErrorKind::BlobUnknown => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        ErrorKind::Denied => (StatusCode::FORBIDDEN, "DENIED"),
        ErrorKind::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        ErrorKind::BadUpstreamManifest => (StatusCode::BAD_GATEWAY, "MANIFEST_INVALID"),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        ErrorKind::Push(kind) => kind.status_and_code(),
        ErrorKind::Upstream(subject, fault) => match fault {
            Fault::Gone | Fault::Offline => (StatusCode::NOT_FOUND, not_found_code(subject)),
            Fault::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            Fault::Denied => (StatusCode::FORBIDDEN, "DENIED"),
            Fault::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            // A registry that does not answer is unavailable: 503, which clients retry, with a
            // message that says it did not answer in time.
            Fault::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Fault::Stalled => (StatusCode::GATEWAY_TIMEOUT, "UNKNOWN"),
            Fault::BadGateway => (StatusCode::BAD_GATEWAY, "UNKNOWN"),
            Fault::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        },
    }
}
