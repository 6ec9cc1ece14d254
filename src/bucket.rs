//! `[storage] kind = "s3"`: a bucket of an S3-compatible store (AWS S3, MinIO, SeaweedFS, Ceph
//! RGW) as the cache's shared level (`cache/shared.rs`), through the `object_store` crate.
//!
//! - Blobs stream both ways: a GET is handed on as it arrives; an upload reads the verified
//!   file in 8 MiB parts, two in flight (bounded memory for any size), as a multipart upload,
//!   which the store makes visible only when it completes: a replica killed mid-upload leaves
//!   an incomplete upload (invisible; a lifecycle rule aborts it), never a partial object.
//!   Before uploading, a HEAD skips content the bucket already holds.
//! - Manifests are written create-only (`If-None-Match: *`): the first writer's bytes stay.
//!   Two replicas racing on one blob both upload the same verified bytes under its digest, so
//!   whichever completes last changes nothing.
//! - Small objects (manifests, records) get 30 s per request; streamed bodies are bounded by the
//!   fill's own read timeout, and an upload by a deadline that grows with its size.
//! - The egress proxy that `[fetch] proxy` (or the environment) names for the store's endpoint
//!   is used, with `no_proxy` as its exclusions, as for upstream connections.

use std::fmt;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore,
    ObjectStoreExt as _, PutMode, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

use crate::cache::origin::{Fetched, OriginError};
use crate::cache::shared::{Listed, Pending, Shared, SmallObject};
use crate::config::{EgressConfig, S3Config};

/// Each part of a multipart upload (S3 wants at least 5 MiB for all but the last).
const PART: u64 = 8 << 20;
/// Parts uploading at once, besides the one being read.
const PARTS_IN_FLIGHT: usize = 2;
/// The time a small object's request may take.
const SMALL_TIMEOUT: Duration = Duration::from_secs(30);
/// An upload may take this long, plus a second per MB.
const UPLOAD_BASE: Duration = Duration::from_secs(60);

pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    name: String,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bucket({}/{})", self.name, self.prefix)
    }
}

/// The bucket of `config`, its client built (nothing is sent until it is used), through the
/// egress proxy when `egress` names one for the store's endpoint.
pub fn open(config: &S3Config, egress: &EgressConfig) -> Result<Arc<Bucket>, object_store::Error> {
    // reqwest builds its rustls client with the process's default provider: ring, the one
    // compiled in (an error means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(Duration::from_secs(5));
    if let Some(proxy) = config.proxy(egress) {
        options = options
            .with_proxy_url(proxy.url())
            .with_proxy_excludes(egress.no_proxy.entries().join(","));
    }
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_virtual_hosted_style_request(!config.path_style)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        // The bodies are not hashed into the signature: every blob and manifest is verified by
        // its digest when it is read back, and a second SHA-256 pass over each upload would
        // cost about half a CPU-second per GB (TLS to the store protects the bytes in transit).
        .with_unsigned_payload(true)
        // A store in trouble must not hold a pull for minutes (the default retries for up to
        // three): two retries within ten seconds, then the miss goes to the upstream.
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
        })
        .with_client_options(options);
    if let Some(endpoint) = &config.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some((id, secret)) = &config.credentials {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret.expose());
    }
    let store: Arc<AmazonS3> = Arc::new(builder.build()?);
    Ok(Bucket::on(store, &config.bucket, &config.prefix))
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> OriginError {
    Box::new(e)
}

async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, OriginError>>,
) -> Result<T, OriginError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from the bucket within {limit:?}").into()))
}

impl Bucket {
    /// Any object store as the bucket (tests use `object_store::memory::InMemory`).
    pub fn on(store: Arc<dyn ObjectStore>, name: &str, prefix: &str) -> Arc<Bucket> {
        Arc::new(Bucket {
            store,
            prefix: prefix.to_string(),
            name: name.to_string(),
        })
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }
}

/// Uploads `size` bytes of `file` to `path` as a multipart upload; aborted on any failure.
async fn upload(
    store: Arc<dyn ObjectStore>,
    path: Path,
    file: std::fs::File,
    size: u64,
) -> Result<(), OriginError> {
    let file = Arc::new(file);
    let mut writer =
        WriteMultipart::new_with_chunk_size(store.put_multipart(&path).await.map_err(boxed)?, PART as usize);
    let mut offset = 0;
    let sent: Result<(), OriginError> = async {
        while offset < size {
            let len = PART.min(size - offset);
            let f = file.clone();
            let part = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; len as usize];
                f.read_exact_at(&mut buf, offset).map(|()| Bytes::from(buf))
            })
            .await
            .map_err(boxed)?
            .map_err(boxed)?;
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(boxed)?;
            writer.put(part);
            offset += len;
        }
        Ok(())
    }
    .await;
    match sent {
        Ok(()) => writer.finish().await.map(drop).map_err(boxed),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    }
}

impl Shared for Bucket {
    fn get(&self, key: &str, range: Option<(u64, u64)>) -> Pending<Option<Fetched>> {
        let (store, path) = (self.store.clone(), self.path(key));
        Box::pin(async move {
            let options = GetOptions::default().with_range(range.map(|(s, e)| s..e));
            let got = match store.get_opts(&path, options).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(boxed(e)),
            };
            if let Some((start, end)) = range.filter(|r| got.range != (r.0..r.1)) {
                return Err(format!("the bucket answered {:?} for bytes {start}..{end}", got.range).into());
            }
            let size = got.range.end - got.range.start;
            let stream = got.into_stream().map_ok(Frame::data).map_err(boxed);
            Ok(Some(Fetched {
                size: Some(size),
                body: StreamBody::new(stream).boxed_unsync(),
            }))
        })
    }

    fn head(&self, key: &str) -> Pending<Option<u64>> {
        let (store, path) = (self.store.clone(), self.path(key));
        Box::pin(within(SMALL_TIMEOUT, async move {
            match store.head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(boxed(e)),
            }
        }))
    }

    fn get_small(&self, key: &str) -> Pending<Option<SmallObject>> {
        let (store, path) = (self.store.clone(), self.path(key));
        Box::pin(within(SMALL_TIMEOUT, async move {
            let got = match store.get_opts(&path, GetOptions::default()).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(boxed(e)),
            };
            let media_type = got.attributes.get(&Attribute::ContentType).map(|v| v.to_string());
            let bytes = got.bytes().await.map_err(boxed)?;
            Ok(Some((bytes, media_type)))
        }))
    }

    fn put_file(&self, key: &str, file: std::fs::File, size: u64) -> Pending<()> {
        let (store, path) = (self.store.clone(), self.path(key));
        let limit = UPLOAD_BASE + Duration::from_secs(size / 1_000_000);
        Box::pin(within(limit, async move {
            match store.head(&path).await {
                Ok(meta) if meta.size == size => return Ok(()),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(boxed(e)),
            }
            upload(store, path, file, size).await
        }))
    }

    fn put_small(
        &self,
        key: &str,
        bytes: Bytes,
        media_type: Option<String>,
        create_only: bool,
    ) -> Pending<()> {
        let (store, path) = (self.store.clone(), self.path(key));
        Box::pin(within(SMALL_TIMEOUT, async move {
            let mut attributes = Attributes::new();
            if let Some(t) = media_type {
                attributes.insert(Attribute::ContentType, AttributeValue::from(t));
            }
            let mode = if create_only {
                PutMode::Create
            } else {
                PutMode::Overwrite
            };
            let options = PutOptions {
                mode,
                attributes,
                ..PutOptions::default()
            };
            match store.put_opts(&path, PutPayload::from(bytes), options).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                // Some stores answer a lost create race with 412 rather than 409.
                Err(object_store::Error::Precondition { .. }) if create_only => Ok(()),
                Err(e) => Err(boxed(e)),
            }
        }))
    }

    fn list(&self, prefix: &str) -> Pending<Vec<Listed>> {
        let (store, path, strip) = (self.store.clone(), self.path(prefix), self.prefix.clone());
        Box::pin(async move {
            let listed: Vec<object_store::ObjectMeta> =
                store.list(Some(&path)).try_collect().await.map_err(boxed)?;
            Ok(listed
                .into_iter()
                .map(|m| Listed {
                    key: m
                        .location
                        .as_ref()
                        .strip_prefix(strip.as_str())
                        .unwrap_or(m.location.as_ref())
                        .to_string(),
                    size: m.size,
                    modified_ms: u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0),
                })
                .collect())
        })
    }

    fn delete(&self, key: &str) -> Pending<()> {
        let (store, path) = (self.store.clone(), self.path(key));
        Box::pin(within(SMALL_TIMEOUT, async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(boxed(e)),
            }
        }))
    }
}
