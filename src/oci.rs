//! Pure value types of the OCI Distribution protocol: digests, repository names, registry hosts,
//! references and media types. Nothing here does I/O; every type is parsed from untrusted text
//! with `FromStr` and, once built, is known to match the distribution-spec grammar.

mod descriptors;
mod digest;
mod host;
mod media;
mod name;
mod reference;

pub use descriptors::{references, References};
pub use digest::{short_digest, Algorithm, Digest, DigestError, Hasher};
pub use host::{HostPort, HostPortError};
pub use media::{accepts, MediaType, MANIFEST_ACCEPT};
pub use name::{NameError, RepoName};
pub use reference::{Reference, ReferenceError, Tag};
