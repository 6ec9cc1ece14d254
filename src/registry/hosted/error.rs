//! What a push can be refused for, with the distribution spec's error code for each, so the HTTP
//! layer answers every refusal with the status and code clients expect.

use http::StatusCode;

/// The kind of a refused push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    DigestInvalid,
    ManifestInvalid,
    ManifestBlobUnknown,
    BlobUploadUnknown,
    BlobUploadInvalid,
    /// A chunk that does not start where the upload stands (416).
    RangeInvalid,
    SizeInvalid,
    /// A tag that may not be moved (`immutable_tags`).
    TagInvalid,
    /// No such repository, and the namespace does not create one on push.
    NameUnknown,
    /// Not a hosted namespace, or not an operation regcache offers.
    Unsupported,
    /// The namespace's `max_size` would be passed.
    QuotaExceeded,
}

impl PushKind {
    pub fn status_and_code(self) -> (StatusCode, &'static str) {
        match self {
            PushKind::DigestInvalid => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            PushKind::ManifestInvalid => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            PushKind::ManifestBlobUnknown => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            PushKind::BlobUploadUnknown => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            PushKind::BlobUploadInvalid => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            PushKind::RangeInvalid => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            PushKind::SizeInvalid => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            PushKind::TagInvalid => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
            PushKind::NameUnknown => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            PushKind::Unsupported => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            PushKind::QuotaExceeded => (StatusCode::FORBIDDEN, "DENIED"),
        }
    }
}

/// A refused push and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PushError {
    pub kind: PushKind,
    pub message: String,
}

impl PushError {
    pub fn new(kind: PushKind, message: impl Into<String>) -> PushError {
        PushError {
            kind,
            message: message.into(),
        }
    }
}
