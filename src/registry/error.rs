//! What can go wrong when the registry layer answers, and the one place where upstream and fill
//! failures are classified. Every policy question ("is the content gone?", "may a kept copy be
//! served?", "did we even ask?") and the HTTP layer's status mapping read the same `Fault`, so a
//! new upstream failure is classified once, here, and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::cache::FillError;
use crate::upstream::UpstreamError;

/// What a request was about, so a "not found" gets the right OCI code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Manifest,
    Blob,
    Repository,
}

/// An upstream or fill failure, classified for clients and for the pull-through policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The upstream answered that the content does not exist.
    Gone,
    /// Not asked: this upstream is offline (only cached content is served).
    Offline,
    /// The upstream rate-limits us; ask again after this long.
    RateLimited(Duration),
    /// The upstream refused our credentials.
    Denied,
    /// The upstream cannot be reached, is marked down, or the download was given up.
    Unavailable,
    /// The upstream did not answer in time.
    Timeout,
    /// The upstream stopped sending a body midway.
    Stalled,
    /// The upstream answered something unusable (another status, a bad token, corrupt bytes).
    BadGateway,
    /// Our own trouble (cache I/O).
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name cannot be resolved to any namespace (a `host:port` first segment that is no
    /// configured upstream): as a repository name it breaks the grammar.
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("{0}")]
    NameUnknown(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("blob unknown: {0}")]
    BlobUnknown(String),
    #[error("access denied: {0}")]
    Denied(String),
    /// Refused to an anonymous client: credentials may change the answer.
    #[error("authentication required: {0}")]
    Unauthenticated(String),
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
    Shared(Arc<RegistryError>),
    /// A refused push to a hosted namespace.
    #[error(transparent)]
    Push(#[from] super::hosted::PushError),
}

impl From<std::io::Error> for RegistryError {
    fn from(e: std::io::Error) -> Self {
        RegistryError::Internal(format!("cache I/O: {e}"))
    }
}

/// The classification the HTTP layer maps to a status and an OCI error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NameInvalid,
    NameUnknown,
    ManifestUnknown,
    BlobUnknown,
    Denied,
    Unauthenticated,
    BadUpstreamManifest,
    Internal,
    Upstream(Subject, Fault),
    Push(super::hosted::PushKind),
}

impl RegistryError {
    pub(crate) fn upstream(subject: Subject) -> impl FnOnce(UpstreamError) -> RegistryError {
        move |source| RegistryError::Upstream { subject, source }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::NameInvalid(_) => ErrorKind::NameInvalid,
            RegistryError::NameUnknown(_) => ErrorKind::NameUnknown,
            RegistryError::ManifestUnknown(_) => ErrorKind::ManifestUnknown,
            RegistryError::BlobUnknown(_) => ErrorKind::BlobUnknown,
            RegistryError::Denied(_) => ErrorKind::Denied,
            RegistryError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            RegistryError::BadUpstreamManifest(_) => ErrorKind::BadUpstreamManifest,
            RegistryError::Internal(_) => ErrorKind::Internal,
            RegistryError::Upstream { subject, source } => ErrorKind::Upstream(*subject, classify(source)),
            RegistryError::Fill { subject, source } => ErrorKind::Upstream(*subject, classify_fill(source)),
            RegistryError::Shared(inner) => inner.kind(),
            RegistryError::Push(e) => ErrorKind::Push(e.kind),
        }
    }

    /// The upstream failure behind this error, if it is one.
    fn upstream_error(&self) -> Option<&UpstreamError> {
        match self {
            RegistryError::Upstream { source, .. } => Some(source),
            RegistryError::Fill { source, .. } => match source.as_ref() {
                FillError::Origin(e) => e.downcast_ref::<UpstreamError>(),
                _ => None,
            },
            RegistryError::Shared(inner) => inner.upstream_error(),
            _ => None,
        }
    }

    fn fault(&self) -> Option<Fault> {
        match self.kind() {
            ErrorKind::Upstream(_, f) => Some(f),
            _ => None,
        }
    }

    /// The upstream said the content does not exist (as opposed to failing).
    pub(crate) fn is_gone(&self) -> bool {
        self.fault() == Some(Fault::Gone)
    }

    /// We did not ask the upstream: offline, marked down, or a rate limit in force.
    pub(crate) fn not_attempted(&self) -> bool {
        self.upstream_error().is_some_and(UpstreamError::is_not_attempted)
    }

    /// The upstream did not answer at all (timeout, connection error), as opposed to answering
    /// with an error.
    pub(crate) fn unanswered(&self) -> bool {
        matches!(
            self.upstream_error(),
            Some(UpstreamError::Timeout { .. } | UpstreamError::Connect { .. })
        )
    }

    /// A kept copy may stand in: the upstream failed or was not asked, rather than answering
    /// that the repository does not exist or refusing access.
    pub(crate) fn kept_copy_allowed(&self) -> bool {
        self.upstream_error().is_some_and(|u| {
            !matches!(
                u,
                UpstreamError::Denied { .. }
                    | UpstreamError::Status {
                        status: StatusCode::NOT_FOUND,
                        ..
                    }
            )
        })
    }

    /// The upstream lacks the endpoint asked for (404 or 405 for an API it does not have).
    pub(crate) fn endpoint_missing(&self) -> bool {
        matches!(
            self.upstream_error(),
            Some(UpstreamError::Status { status, .. })
                if *status == StatusCode::NOT_FOUND || *status == StatusCode::METHOD_NOT_ALLOWED
        )
    }
}

/// The one classification of upstream failures.
fn classify(e: &UpstreamError) -> Fault {
    match e {
        UpstreamError::Status {
            status, retry_after, ..
        } => match *status {
            StatusCode::NOT_FOUND => Fault::Gone,
            StatusCode::TOO_MANY_REQUESTS => {
                Fault::RateLimited(retry_after.unwrap_or(Duration::from_secs(60)))
            }
            _ => Fault::BadGateway,
        },
        UpstreamError::RateLimited { retry_after, .. } => Fault::RateLimited(*retry_after),
        UpstreamError::Protocol { .. } | UpstreamError::Token { .. } | UpstreamError::Credentials { .. } => {
            Fault::BadGateway
        }
        UpstreamError::Denied { .. } => Fault::Denied,
        UpstreamError::Connect { .. } | UpstreamError::Down { .. } => Fault::Unavailable,
        UpstreamError::Offline { .. } => Fault::Offline,
        UpstreamError::Timeout { .. } => Fault::Timeout,
    }
}

fn classify_fill(e: &FillError) -> Fault {
    match e {
        FillError::Origin(origin) => origin
            .downcast_ref::<UpstreamError>()
            .map_or(Fault::BadGateway, classify),
        FillError::DigestMismatch { .. } | FillError::SizeMismatch { .. } | FillError::Body(_) => {
            Fault::BadGateway
        }
        FillError::Stalled(_) => Fault::Stalled,
        FillError::Io(_) => Fault::Internal,
        FillError::Abandoned => Fault::Unavailable,
    }
}
