//! The local-disk backend: one root directory per scheme.
//!
//! A write streams into a temporary file in the root's `.incoming`
//! directory (same filesystem), is fsynced, renamed into place and the
//! directory entry fsynced: a crash leaves either the whole object or a
//! stray temporary file (never a partial object under its key). Keys are
//! checked by [`StorageKey::parse`], so a joined path never leaves the root.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::storage::{ByteStream, FileStorage, StorageError, StorageKey};

/// Bytes gathered before each write to disk: few, large writes.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Bytes per chunk when reading back.
const READ_CHUNK: usize = 256 * 1024;
const INCOMING: &str = ".incoming";

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// A backend rooted at `root`, created if missing.
    pub async fn open(root: &Path) -> Result<Self, StorageError> {
        tokio::fs::create_dir_all(root.join(INCOMING)).await?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key` lives on disk.
    pub fn path_of(&self, key: &StorageKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    async fn put_inner(&self, key: &StorageKey, mut body: ByteStream) -> Result<u64, StorageError> {
        let final_path = self.path_of(key);
        let tmp = self
            .root
            .join(INCOMING)
            .join(Uuid::new_v4().simple().to_string());
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut buf = BytesMut::with_capacity(WRITE_BUFFER);
            let mut written = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StorageError::Source)?;
                written += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
                if buf.len() >= WRITE_BUFFER {
                    file.write_all(&buf).await?;
                    buf.clear();
                }
            }
            file.write_all(&buf).await?;
            file.sync_all().await?;
            drop(file);
            let dir = final_path
                .parent()
                .ok_or_else(|| StorageError::InvalidKey(key.to_string()))?;
            tokio::fs::create_dir_all(dir).await?;
            tokio::fs::rename(&tmp, &final_path).await?;
            tokio::fs::File::open(dir).await?.sync_all().await?;
            Ok::<_, StorageError>(written)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

fn not_found(key: &StorageKey, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound(key.to_string())
    } else {
        StorageError::Io(e)
    }
}

impl FileStorage for LocalStorage {
    fn kind(&self) -> &'static str {
        "local"
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
            let mut file = tokio::fs::File::open(self.path_of(key))
                .await
                .map_err(|e| not_found(key, e))?;
            let stream: ByteStream = match range {
                None => ReaderStream::with_capacity(file, READ_CHUNK).boxed(),
                Some(r) => {
                    file.seek(SeekFrom::Start(r.start)).await?;
                    let len = r.end.saturating_sub(r.start);
                    ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed()
                }
            };
            Ok(stream)
        })
    }

    fn delete<'a>(&'a self, key: &'a StorageKey) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path_of(key)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn exists<'a>(&'a self, key: &'a StorageKey) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move { Ok(tokio::fs::try_exists(self.path_of(key)).await?) })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            // Writable, not only present: a write into the incoming area.
            let probe = self
                .root
                .join(INCOMING)
                .join(format!("probe-{}", Uuid::new_v4().simple()));
            tokio::fs::write(&probe, b"ok").await?;
            tokio::fs::remove_file(&probe).await?;
            Ok(())
        })
    }
}
