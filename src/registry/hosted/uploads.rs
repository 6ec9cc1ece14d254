//! Blob uploads to a hosted repository, as the distribution spec defines them: a monolithic
//! `POST ?digest=` (or `POST` then `PUT ?digest=`), chunks in order (`PATCH` with the bytes that
//! follow what the upload holds; one that does not start there is refused, 416), status (`GET`)
//! and cancel (`DELETE`), and cross-repository mounts. An upload streams into a staged file in
//! the cache's `tmp/` while it is hashed (sha256; a sha512 digest is checked by reading the file
//! once more), and on its last request the digest is checked and the blob adopted into the store,
//! pinned, and linked to the repository: one copy of a layer whatever pushed or pulled it.
//! Uploads live in memory: one left alone for `UPLOAD_EXPIRY` is dropped (its file with it), and
//! a restart drops them all (`tmp/` is cleared).

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::super::{Client, Registry, RegistryError, Repo};
use super::{PushError, PushKind};
use crate::cache::{Incoming, Key};
use crate::oci::{Algorithm, Digest, RepoName};
use crate::registry::prefetch::set_pins;

/// An upload nobody touched for this long is dropped.
const UPLOAD_EXPIRY: Duration = Duration::from_secs(60 * 60);
/// The most uploads in progress at once.
const MAX_UPLOADS: usize = 1024;

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
}

/// A blob the repository now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub digest: Digest,
    pub size: u64,
}

struct Session {
    namespace: String,
    repo: RepoName,
    /// Taken out while a request writes to it.
    incoming: Option<Incoming>,
    size: u64,
    touched: Instant,
}

#[derive(Default)]
pub(in crate::registry) struct Uploads {
    sessions: Mutex<HashMap<String, Session>>,
}

fn unknown(id: &str) -> RegistryError {
    RegistryError::Push(PushError::new(
        PushKind::BlobUploadUnknown,
        format!("no upload {id} in progress here"),
    ))
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // `ring` is already the TLS provider; its system random is the one to trust for ids.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Uploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the session's file out for a write; the session stays, marked busy.
    fn take(&self, id: &str, repo: &Repo) -> Result<(Incoming, u64), RegistryError> {
        let mut sessions = self.lock();
        let s = sessions.get_mut(id).ok_or_else(|| unknown(id))?;
        if s.namespace != repo.namespace() || s.repo != repo.name {
            return Err(unknown(id));
        }
        let incoming = s.incoming.take().ok_or_else(|| {
            RegistryError::Push(PushError::new(
                PushKind::BlobUploadInvalid,
                format!("upload {id} is busy with another request"),
            ))
        })?;
        s.touched = Instant::now();
        Ok((incoming, s.size))
    }

    fn put_back(&self, id: &str, incoming: Incoming) {
        if let Some(s) = self.lock().get_mut(id) {
            s.size = incoming.size();
            s.touched = Instant::now();
            s.incoming = Some(incoming);
        }
    }
}

/// Appends `body` to `incoming`, off the async threads.
async fn append(
    mut incoming: Incoming,
    body: Option<Box<dyn Read + Send>>,
) -> Result<Incoming, RegistryError> {
    let Some(mut body) = body else {
        return Ok(incoming);
    };
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => return Ok(incoming),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(RegistryError::Push(PushError::new(
                        PushKind::BlobUploadInvalid,
                        format!("the upload's body broke off: {e}"),
                    )))
                }
            };
            io::Write::write_all(&mut incoming, &buf[..n])?;
        }
    })
    .await
    .map_err(|e| RegistryError::Internal(e.to_string()))?
}

impl Registry {
    /// Starts an upload; with `digest`, the body is the whole blob and the upload ends here.
    pub async fn upload_start(
        &self,
        client: &Client,
        repo: &Repo,
        digest: Option<Digest>,
        body: Option<Box<dyn Read + Send>>,
    ) -> Result<Result<Uploaded, UploadStatus>, RegistryError> {
        self.authorize_write(client, repo)?;
        self.repository_may_grow(repo).await?;
        let cache = self.mirror.cache().clone();
        let incoming = tokio::task::spawn_blocking(move || cache.incoming(Algorithm::Sha256))
            .await
            .map_err(|e| RegistryError::Internal(e.to_string()))??;
        if let Some(digest) = digest {
            let incoming = append(incoming, body).await?;
            return self.complete(repo, incoming, &digest).await.map(Ok);
        }
        let id = new_id();
        let mut sessions = self.hosted.uploads.lock();
        sessions.retain(|_, s| s.touched.elapsed() < UPLOAD_EXPIRY);
        if sessions.len() >= MAX_UPLOADS {
            return Err(RegistryError::Push(PushError::new(
                PushKind::BlobUploadInvalid,
                format!("{MAX_UPLOADS} uploads are in progress; finish or cancel some first"),
            )));
        }
        sessions.insert(
            id.clone(),
            Session {
                namespace: repo.namespace().to_string(),
                repo: repo.name.clone(),
                incoming: Some(incoming),
                size: 0,
                touched: Instant::now(),
            },
        );
        Ok(Err(UploadStatus { id, size: 0 }))
    }

    /// Links a blob another repository of the namespace holds (`from`), if the client may read
    /// it there; None when it cannot be mounted (the client then uploads it).
    pub async fn upload_mount(
        &self,
        client: &Client,
        repo: &Repo,
        digest: &Digest,
        from: Option<&Repo>,
    ) -> Result<Option<Uploaded>, RegistryError> {
        self.authorize_write(client, repo)?;
        self.repository_may_grow(repo).await?;
        let cache = self.mirror.cache();
        let source = match from {
            Some(from) if from.is_hosted() && from.namespace() == repo.namespace() => from,
            // Without `from` only what the repository already holds is "mounted".
            _ => repo,
        };
        if self
            .authorize(client, source, super::super::Content::Blob(digest))
            .is_err()
        {
            return Ok(None);
        }
        if !cache.is_linked(source.namespace(), &source.name, digest).await? {
            return Ok(None);
        }
        let Some(size) = cache.blob_size(digest) else {
            return Ok(None);
        };
        self.within_quota(repo, digest, size).await?;
        self.link_pinned(repo, std::slice::from_ref(digest)).await?;
        Ok(Some(Uploaded {
            digest: digest.clone(),
            size,
        }))
    }

    /// Appends a chunk that must start at `start` (when the client says where it starts).
    pub async fn upload_patch(
        &self,
        client: &Client,
        repo: &Repo,
        id: &str,
        start: Option<u64>,
        body: Box<dyn Read + Send>,
    ) -> Result<UploadStatus, RegistryError> {
        self.authorize_write(client, repo)?;
        let uploads = &self.hosted.uploads;
        let (incoming, size) = uploads.take(id, repo)?;
        if start.is_some_and(|s| s != size) {
            uploads.put_back(id, incoming);
            return Err(RegistryError::Push(PushError::new(
                PushKind::RangeInvalid,
                format!("upload {id} holds {size} bytes: the next chunk starts there"),
            )));
        }
        match append(incoming, Some(body)).await {
            Ok(incoming) => {
                let size = incoming.size();
                uploads.put_back(id, incoming);
                Ok(UploadStatus {
                    id: id.to_string(),
                    size,
                })
            }
            Err(e) => {
                // What arrived is unknown: the upload cannot go on.
                uploads.lock().remove(id);
                Err(e)
            }
        }
    }

    /// Ends an upload with its last bytes (if any) and the digest they must make.
    pub async fn upload_finish(
        &self,
        client: &Client,
        repo: &Repo,
        id: &str,
        digest: &Digest,
        body: Option<Box<dyn Read + Send>>,
    ) -> Result<Uploaded, RegistryError> {
        self.authorize_write(client, repo)?;
        let (incoming, _) = self.hosted.uploads.take(id, repo)?;
        self.hosted.uploads.lock().remove(id);
        let incoming = append(incoming, body).await?;
        self.complete(repo, incoming, digest).await
    }

    pub async fn upload_status(
        &self,
        client: &Client,
        repo: &Repo,
        id: &str,
    ) -> Result<UploadStatus, RegistryError> {
        self.authorize_write(client, repo)?;
        let sessions = self.hosted.uploads.lock();
        match sessions.get(id) {
            Some(s) if s.namespace == repo.namespace() && s.repo == repo.name => Ok(UploadStatus {
                id: id.to_string(),
                size: s.size,
            }),
            _ => Err(unknown(id)),
        }
    }

    pub async fn upload_cancel(&self, client: &Client, repo: &Repo, id: &str) -> Result<(), RegistryError> {
        self.upload_status(client, repo, id).await?;
        self.hosted.uploads.lock().remove(id);
        Ok(())
    }

    /// Checks the digest, adopts the blob (pinned) and links it to the repository.
    async fn complete(
        &self,
        repo: &Repo,
        incoming: Incoming,
        digest: &Digest,
    ) -> Result<Uploaded, RegistryError> {
        let cache = self.mirror.cache().clone();
        let algorithm = digest.algorithm();
        let (staged, actual) = tokio::task::spawn_blocking(move || {
            let staged = incoming.finish()?;
            let actual = staged.digest_as(algorithm)?;
            Ok::<_, io::Error>((staged, actual))
        })
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()))??;
        if actual != *digest {
            return Err(RegistryError::Push(PushError::new(
                PushKind::DigestInvalid,
                format!("the uploaded bytes hash to {actual}, not {digest}"),
            )));
        }
        let size = staged.size;
        self.within_quota(repo, digest, size).await?;
        let adopted = {
            let cache = cache.clone();
            let staged = crate::cache::StagedContent::renamed(staged, digest.clone());
            tokio::task::spawn_blocking(move || cache.adopt(vec![staged], Vec::new(), true))
                .await
                .map_err(|e| RegistryError::Internal(e.to_string()))?
        };
        adopted.map_err(|e| RegistryError::Internal(format!("cannot keep the blob: {e}")))?;
        self.link_pinned(repo, std::slice::from_ref(digest)).await?;
        tracing::info!(namespace = repo.namespace(), repo = %repo.name, %digest, size, "blob pushed");
        Ok(Uploaded {
            digest: digest.clone(),
            size,
        })
    }

    /// Links `digests` to the repository, pinned.
    pub(super) async fn link_pinned(&self, repo: &Repo, digests: &[Digest]) -> Result<(), RegistryError> {
        let cache = self.mirror.cache();
        for d in digests {
            cache.link(repo.namespace(), &repo.name, d).await?;
        }
        let keys: Vec<Key> = cache.record_keys(repo.namespace(), &repo.name, None, digests)?;
        set_pins(cache, keys, true).await?;
        Ok(())
    }
}
