//! Manifest pushes and deletes in a hosted repository, and its existence. A manifest `PUT` is
//! checked before anything is kept: it must parse as JSON of a manifest, agree with its
//! `Content-Type` when both name a media type, stay within `MAX_MANIFEST`, hash to the digest it
//! was pushed under (by digest), and name only blobs and child manifests the repository holds.
//! Then it is adopted (pinned) and linked, its tag recorded (unless `immutable_tags` forbids
//! moving it), and a manifest with a `subject` joins its subject's referrers list. A delete by
//! tag drops the tag; by digest it drops the manifest from the repository with every tag naming
//! it; a blob delete unlinks the blob. Content stays in the store for `gc` to judge.

use std::io::Write;

use bytes::Bytes;

use super::super::{Client, Registry, RegistryError, Repo};
use super::{hosted_ns, PushError, PushKind};
use crate::cache::{StoredManifest, TagRecord};
use crate::oci::{references, Algorithm, Digest, MediaType, Reference, Tag};
use crate::registry::bundle::{add_referrer, ManifestHead};
use crate::registry::mirror::referrers_doc;
use crate::registry::prefetch::set_pins;

/// The largest manifest accepted (distribution's default too).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// The record that says a repository exists.
const REPOSITORY_DOC: &str = "repository";

fn push_error(kind: PushKind, message: String) -> RegistryError {
    RegistryError::Push(PushError::new(kind, message))
}

/// A hosted repository created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepoReport {
    pub namespace: String,
    pub repository: String,
}

/// What a manifest push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    pub digest: Digest,
    /// The manifest's `subject`, when it has one (answered as `OCI-Subject`).
    pub subject: Option<Digest>,
}

impl Registry {
    /// Refuses a push to a repository that does not exist when the namespace does not create
    /// repositories on push; records a new repository otherwise.
    pub(super) async fn repository_may_grow(&self, repo: &Repo) -> Result<(), RegistryError> {
        let ns = hosted_ns(repo)?;
        let cache = self.mirror.cache();
        if cache.doc(&ns.prefix, &repo.name, REPOSITORY_DOC).await?.is_some() {
            return Ok(());
        }
        if !ns.create_on_push {
            return Err(push_error(
                PushKind::NameUnknown,
                format!(
                    "repository {}/{} does not exist; create it first: regcache repo create {}/{}",
                    ns.prefix, repo.name, ns.prefix, repo.name
                ),
            ));
        }
        self.create_repository(repo).await
    }

    /// Creates the hosted repository a client would name `name` (`local/team/app`).
    pub async fn create_hosted_repository(&self, name: &str) -> Result<RepoReport, RegistryError> {
        let parsed: crate::oci::RepoName = name
            .parse()
            .map_err(|e| RegistryError::NameInvalid(format!("{name:?}: {e}")))?;
        let repo = self.locate(None, &parsed, None)?;
        if !repo.is_hosted() {
            return Err(RegistryError::NameUnknown(format!(
                "{name} is not in a hosted namespace ([[hosted]] prefix)"
            )));
        }
        self.create_repository(&repo).await?;
        Ok(RepoReport {
            namespace: repo.namespace().to_string(),
            repository: repo.name.to_string(),
        })
    }

    /// Records that a hosted repository exists (`regcache repo create`, or a first push).
    pub async fn create_repository(&self, repo: &Repo) -> Result<(), RegistryError> {
        let ns = hosted_ns(repo)?;
        let cache = self.mirror.cache();
        cache
            .put_doc(&ns.prefix, &repo.name, REPOSITORY_DOC, b"{}")
            .await?;
        let key = cache.doc_key(&ns.prefix, &repo.name, REPOSITORY_DOC)?;
        set_pins(cache, vec![key], true).await?;
        Ok(())
    }

    /// Checks and keeps a pushed manifest under `reference`.
    pub async fn manifest_put(
        &self,
        client: &Client,
        repo: &Repo,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PushedManifest, RegistryError> {
        let ns = self.authorize_write(client, repo)?.clone();
        self.repository_may_grow(repo).await?;
        if bytes.len() > MAX_MANIFEST {
            return Err(push_error(
                PushKind::SizeInvalid,
                format!("a manifest is at most {MAX_MANIFEST} bytes"),
            ));
        }
        let head: ManifestHead = serde_json::from_slice(&bytes)
            .map_err(|e| push_error(PushKind::ManifestInvalid, format!("not a manifest: {e}")))?;
        let declared = head.media_type.clone().filter(|m| !m.is_empty());
        let sent = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            .filter(|c| !c.is_empty());
        let media_type = match (&declared, &sent) {
            (Some(d), Some(s)) if d != s => {
                return Err(push_error(
                    PushKind::ManifestInvalid,
                    format!("the manifest says it is {d}, the request says {s}"),
                ))
            }
            (Some(d), _) => d.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) if head.manifests.is_some() => MediaType::OCI_INDEX.to_string(),
            (None, None) => MediaType::OCI_MANIFEST.to_string(),
        };
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &bytes);
                if actual != *d {
                    return Err(push_error(
                        PushKind::DigestInvalid,
                        format!("the manifest's bytes hash to {actual}, not {d}"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &bytes),
        };
        self.references_held(repo, &bytes).await?;
        if let Reference::Tag(tag) = reference {
            self.tag_may_move(repo, tag, &digest, ns.immutable_tags).await?;
        }
        self.within_quota(repo, &digest, bytes.len() as u64).await?;
        self.keep_manifest(repo, &digest, &media_type, &bytes).await?;
        if let Reference::Tag(tag) = reference {
            self.record_tag(repo, tag, &digest, &media_type, bytes.len() as u64)
                .await?;
        }
        let subject = head.subject();
        if let Some(subject) = &subject {
            let artifact_type = head.artifact_type();
            let entry = serde_json::json!({
                "mediaType": media_type,
                "digest": digest.to_string(),
                "size": bytes.len(),
                "artifactType": artifact_type,
                "annotations": head.annotations,
            });
            let cache = self.mirror.cache();
            add_referrer(cache, repo.namespace(), &repo.name, subject, entry).await?;
            let key = cache.doc_key(repo.namespace(), &repo.name, &referrers_doc(subject))?;
            set_pins(cache, vec![key], true).await?;
        }
        tracing::info!(namespace = repo.namespace(), repo = %repo.name, %reference, %digest, "manifest pushed");
        Ok(PushedManifest { digest, subject })
    }

    /// Every blob and child manifest a manifest names must be in the repository.
    async fn references_held(&self, repo: &Repo, bytes: &[u8]) -> Result<(), RegistryError> {
        let cache = self.mirror.cache();
        let refs = references(bytes);
        for b in &refs.blobs {
            if !cache.is_linked(repo.namespace(), &repo.name, b).await? || cache.blob_size(b).is_none() {
                return Err(push_error(
                    PushKind::ManifestBlobUnknown,
                    format!(
                        "blob {b} is not in {}/{}: push it first",
                        repo.namespace(),
                        repo.name
                    ),
                ));
            }
        }
        for m in &refs.manifests {
            let held = cache.is_linked(repo.namespace(), &repo.name, m).await?
                && cache.contains(&crate::cache::Key::manifest(m));
            if !held {
                return Err(push_error(
                    PushKind::ManifestBlobUnknown,
                    format!(
                        "manifest {m} is not in {}/{}: push it first",
                        repo.namespace(),
                        repo.name
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn tag_may_move(
        &self,
        repo: &Repo,
        tag: &Tag,
        digest: &Digest,
        immutable: bool,
    ) -> Result<(), RegistryError> {
        if !immutable {
            return Ok(());
        }
        let current = self.mirror.cache().tag(repo.namespace(), &repo.name, tag).await?;
        match current.and_then(|r| r.digest()) {
            Some(d) if d != *digest => Err(push_error(
                PushKind::TagInvalid,
                format!(
                    "tag {tag} of {}/{} is immutable and names {d}; push under a new tag",
                    repo.namespace(),
                    repo.name
                ),
            )),
            _ => Ok(()),
        }
    }

    async fn keep_manifest(
        &self,
        repo: &Repo,
        digest: &Digest,
        media_type: &str,
        bytes: &Bytes,
    ) -> Result<(), RegistryError> {
        let cache = self.mirror.cache().clone();
        let m = StoredManifest {
            digest: digest.clone(),
            media_type: media_type.to_string(),
            bytes: bytes.clone(),
        };
        let algorithm = digest.algorithm();
        let adopted = tokio::task::spawn_blocking(move || {
            let mut incoming = cache.incoming(algorithm)?;
            incoming.write_all(&m.bytes)?;
            let staged = incoming.finish()?;
            cache
                .adopt(Vec::new(), vec![(m, staged)], true)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()))?;
        adopted.map_err(|e| RegistryError::Internal(format!("cannot keep the manifest: {e}")))?;
        self.link_pinned(repo, std::slice::from_ref(digest)).await
    }

    async fn record_tag(
        &self,
        repo: &Repo,
        tag: &Tag,
        digest: &Digest,
        media_type: &str,
        size: u64,
    ) -> Result<(), RegistryError> {
        let cache = self.mirror.cache();
        let rec = TagRecord {
            digest: digest.to_string(),
            media_type: media_type.to_string(),
            size,
        };
        if !cache.put_tag(repo.namespace(), &repo.name, tag, &rec).await? {
            return Err(RegistryError::Internal(format!(
                "the tag record of {tag} could not be written"
            )));
        }
        let keys = cache.record_keys(repo.namespace(), &repo.name, Some(tag), &[])?;
        set_pins(cache, keys, true).await?;
        Ok(())
    }

    /// Deletes a tag, or a manifest (with every tag naming it) from the repository.
    pub async fn manifest_delete(
        &self,
        client: &Client,
        repo: &Repo,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        self.authorize_write(client, repo)?;
        let cache = self.mirror.cache();
        let unknown =
            || RegistryError::ManifestUnknown(format!("{}/{}:{reference}", repo.namespace(), repo.name));
        match reference {
            Reference::Tag(tag) => {
                if cache.tag(repo.namespace(), &repo.name, tag).await?.is_none() {
                    return Err(unknown());
                }
                cache.purge_tags(repo.namespace(), &repo.name, Some(tag)).await?;
            }
            Reference::Digest(d) => {
                if !cache.unlink(repo.namespace(), &repo.name, d).await? {
                    return Err(unknown());
                }
                for name in cache.tag_names(repo.namespace(), &repo.name).await? {
                    let Ok(tag) = name.parse::<Tag>() else { continue };
                    let names_it = cache
                        .tag(repo.namespace(), &repo.name, &tag)
                        .await?
                        .and_then(|r| r.digest())
                        .is_some_and(|t| t == *d);
                    if names_it {
                        cache.purge_tags(repo.namespace(), &repo.name, Some(&tag)).await?;
                    }
                }
            }
        }
        tracing::info!(namespace = repo.namespace(), repo = %repo.name, %reference, "manifest deleted");
        Ok(())
    }

    /// Takes a blob out of the repository.
    pub async fn blob_delete(
        &self,
        client: &Client,
        repo: &Repo,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        self.authorize_write(client, repo)?;
        if !self
            .mirror
            .cache()
            .unlink(repo.namespace(), &repo.name, digest)
            .await?
        {
            return Err(RegistryError::BlobUnknown(format!(
                "{digest} in {}/{}",
                repo.namespace(),
                repo.name
            )));
        }
        Ok(())
    }
}
