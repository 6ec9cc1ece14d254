//! The one hook where the registry asks whether a client may read (or push) something. Every read (a
//! cache hit as much as a miss) passes through `Registry::authorize` before any content or
//! upstream request is touched, so cached private content can never reach a client that may not
//! read it. `AllowAll` serves a mirror without client authentication; `auth::Auth` decides
//! by users, groups, access rules and private upstreams.

use crate::oci::{Digest, Reference};

/// Who is asking: a user or robot token the server verified, or a client certificate's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// The authenticated identity (user, robot token, certificate subject), if any.
    pub identity: Option<String>,
}

impl Client {
    pub fn anonymous() -> Client {
        Client::default()
    }
}

/// What a read is for.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    Manifest(&'a Reference),
    Blob(&'a Digest),
    Tags,
    Referrers(&'a Digest),
}

/// The repository a read is in: the upstream's client-facing host and the name there.
pub struct Place<'a> {
    pub upstream: &'a str,
    pub repo: &'a crate::oci::RepoName,
}

/// Decides reads. Implementations must be cheap: this runs on every request.
pub trait Access: Send + Sync + 'static {
    /// `Err(reason)` refuses the read: an anonymous client gets `UNAUTHORIZED` (with a challenge,
    /// so it can retry with credentials), an identified one `DENIED`.
    fn may_read(&self, client: &Client, place: &Place<'_>, content: Content<'_>) -> Result<(), String>;

    /// `Err(reason)` refuses a push (to a hosted namespace), answered like a refused read.
    fn may_write(&self, client: &Client, place: &Place<'_>) -> Result<(), String>;
}

/// Everyone may read everything (no client authentication configured).
pub struct AllowAll;

impl Access for AllowAll {
    fn may_read(&self, _: &Client, _: &Place<'_>, _: Content<'_>) -> Result<(), String> {
        Ok(())
    }

    /// Without client authentication there is no one to trust with a push.
    fn may_write(&self, _: &Client, place: &Place<'_>) -> Result<(), String> {
        Err(format!(
            "pushing to {}/{} needs client authentication: configure [auth] and an [[access]] rule with write",
            place.upstream, place.repo
        ))
    }
}
