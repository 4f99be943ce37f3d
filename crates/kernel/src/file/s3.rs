//! The S3 backend: any S3-compatible store, through `object_store`.
//!
//! One bucket holds both schemes, under `public/` and `private/`. A write
//! of up to [`SINGLE_PUT_MAX`] bytes is one `PUT`; a larger one is a
//! multipart upload fed as the stream arrives (a few parts in flight at
//! most), completed at the end or aborted if anything fails, so no
//! orphaned parts are left behind. The object exists only once complete.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};

use super::settings::FileSettings;
use super::storage::{ByteStream, FileStorage, StorageError, StorageKey};

/// Objects up to this size are sent in one request.
const SINGLE_PUT_MAX: usize = 8 * 1024 * 1024;
/// Size of each multipart part.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once: bounds the memory one upload holds.
const PARTS_IN_FLIGHT: usize = 2;

/// The client for the configured bucket, shared by both schemes.
pub fn client(settings: &FileSettings) -> Result<Arc<AmazonS3>, StorageError> {
    let bucket = settings
        .s3_bucket
        .as_deref()
        .ok_or_else(|| StorageError::Backend("files.s3_bucket is not set".into()))?;
    let plain_http = settings
        .s3_endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    // Client options replace each other: set them in one place.
    let options = ClientOptions::new()
        .with_allow_http(plain_http)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(300));
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&settings.s3_region)
        .with_virtual_hosted_style_request(!settings.s3_path_style)
        .with_client_options(options);
    if let Some(endpoint) = &settings.s3_endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let (Some(id), Some(secret)) = (&settings.s3_access_key_id, &settings.s3_secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    builder.build().map(Arc::new).map_err(backend)
}

fn backend(e: object_store::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// One scheme's part of the bucket.
pub struct S3Storage {
    store: Arc<AmazonS3>,
    prefix: &'static str,
}

impl S3Storage {
    pub fn new(store: Arc<AmazonS3>, prefix: &'static str) -> Self {
        Self { store, prefix }
    }

    fn path(&self, key: &StorageKey) -> Result<Path, StorageError> {
        Path::parse(format!("{}/{}", self.prefix, key.as_str()))
            .map_err(|_| StorageError::InvalidKey(key.to_string()))
    }

    async fn put_inner(&self, key: &StorageKey, mut body: ByteStream) -> Result<u64, StorageError> {
        let path = self.path(key)?;
        let mut first = BytesMut::new();
        let mut written = 0u64;
        // Gather the first part; a small object never starts a multipart.
        while first.len() <= SINGLE_PUT_MAX {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(StorageError::Source)?;
                    written += chunk.len() as u64;
                    first.extend_from_slice(&chunk);
                }
                None => {
                    self.store
                        .put(&path, PutPayload::from(first.freeze()))
                        .await
                        .map_err(backend)?;
                    return Ok(written);
                }
            }
        }
        let upload = self.store.put_multipart(&path).await.map_err(backend)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        writer.put(first.freeze());
        let streamed = async {
            while let Some(chunk) = body.next().await {
                let chunk: Bytes = chunk.map_err(StorageError::Source)?;
                written += chunk.len() as u64;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(backend)?;
                writer.put(chunk);
            }
            Ok::<_, StorageError>(())
        }
        .await;
        match streamed {
            Ok(()) => {
                writer.finish().await.map_err(backend)?;
                Ok(written)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key = %key, error = %abort, "could not abort a multipart upload");
                }
                Err(e)
            }
        }
    }
}

impl FileStorage for S3Storage {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn put<'a>(
        &'a self,
        key: &'a StorageKey,
        body: ByteStream,
    ) -> BoxFuture<'a, Result<u64, StorageError>> {
        Box::pin(self.put_inner(key, body))
    }

    fn get<'a>(
        &'a self,
        key: &'a StorageKey,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<ByteStream, StorageError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let options = GetOptions {
                range: range.map(GetRange::Bounded),
                ..Default::default()
            };
            let result = self
                .store
                .get_opts(&path, options)
                .await
                .map_err(|e| match e {
                    object_store::Error::NotFound { .. } => StorageError::NotFound(key.to_string()),
                    e => backend(e),
                })?;
            Ok(result.into_stream().map_err(std::io::Error::other).boxed())
        })
    }

    fn delete<'a>(&'a self, key: &'a StorageKey) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(backend(e)),
            }
        })
    }

    fn exists<'a>(&'a self, key: &'a StorageKey) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            match self.store.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(backend(e)),
            }
        })
    }

    fn signed_url<'a>(
        &'a self,
        key: &'a StorageKey,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let url = self
                .store
                .signed_url(axum::http::Method::GET, &path, ttl)
                .await
                .map_err(backend)?;
            Ok(Some(url.to_string()))
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            // A signed request the store must answer: a missing object is
            // the expected answer, a refused signature or no answer is not.
            let path = Path::from_iter([self.prefix, ".probe"]);
            match self.store.head(&path).await {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(backend(e)),
            }
        })
    }
}
