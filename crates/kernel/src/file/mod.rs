//! Files (spec §11): uploads streamed into storage with their type sniffed
//! from the content, exact usage by item revisions, public files served by
//! nginx (or the kernel in development) and private ones through the
//! kernel with access control.
//!
//! - [`storage`]: the [`FileStorage`] trait and keys; [`local`] and [`s3`]
//!   backends.
//! - [`upload`]: `POST /file/upload`; [`name`] and [`sniff`] decide the
//!   stored name and type.
//! - [`usage`]: the item write hook that records which revisions use which
//!   files and makes them permanent; releasing and purging unused files;
//!   the temporary-file cleanup cron runs.
//! - [`serve`]: `GET /file/{id}` and `/files/{key}` with ranges and
//!   conditional requests; [`routes`]: the metadata API.
//!
//! A file row is `temporary` (0) from upload until an item revision uses
//! it, then `permanent` (1); when its last use goes (or a temporary one
//! expires) it is `released` (2) in the same transaction, never served
//! again, and its object and row are deleted after the commit ([`usage::purge_released`]).

pub mod admin;
pub mod local;
pub mod name;
pub mod routes;
pub mod s3;
pub mod serve;
pub mod settings;
pub mod sniff;
pub mod storage;
pub mod upload;
pub mod usage;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db::{DbError, timed};
use crate::observe::health::{ProbeName, Probes};
use crate::tasks::TaskError;
use crate::user::Account;
use crate::user::permission;

pub use settings::FileSettings;
pub use storage::{ByteStream, FileStorage, StorageError, StorageKey};

pub const STORAGE_PROBE: ProbeName = ProbeName::new("storage");

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("file {0} not found")]
    NotFound(Uuid),
    #[error("file {0} is used by an item revision")]
    InUse(Uuid),
    /// The multipart body is not one well-formed file upload.
    #[error("{0}")]
    BadUpload(String),
    #[error(transparent)]
    BadName(#[from] name::NameError),
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than the upload limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("files of type `{mime}` may not be uploaded")]
    TypeNotAllowed { mime: &'static str },
    #[error(transparent)]
    Claim(#[from] sniff::ClaimError),
    /// Content of an inline type that also holds active markup.
    #[error("the content is `{mime}` but also holds markup (`{marker}`)")]
    Polyglot {
        mime: &'static str,
        marker: &'static str,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
    /// The task finishing a deletion could not run (shutdown) or panicked.
    #[error(transparent)]
    Task(#[from] TaskError),
}

impl From<sqlx::Error> for FileError {
    fn from(e: sqlx::Error) -> Self {
        FileError::Db(e.into())
    }
}

impl crate::error::HttpError for FileError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            FileError::NotFound(_) => (S::NOT_FOUND, "file_not_found"),
            FileError::InUse(_) => (S::CONFLICT, "file_in_use"),
            FileError::BadUpload(_) => (S::BAD_REQUEST, "bad_upload"),
            FileError::BadName(_) => (S::BAD_REQUEST, "invalid_filename"),
            FileError::Empty => (S::BAD_REQUEST, "empty_file"),
            FileError::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "file_too_large"),
            FileError::TypeNotAllowed { .. } => {
                (S::UNSUPPORTED_MEDIA_TYPE, "file_type_not_allowed")
            }
            FileError::Claim(_) => (S::UNSUPPORTED_MEDIA_TYPE, "file_type_mismatch"),
            FileError::Polyglot { .. } => (S::UNSUPPORTED_MEDIA_TYPE, "file_type_mismatch"),
            FileError::Storage(StorageError::NotFound(_)) => (S::NOT_FOUND, "file_not_found"),
            FileError::Storage(_) => (S::SERVICE_UNAVAILABLE, "storage_unavailable"),
            FileError::Db(e) => e.status_code(),
            FileError::Task(TaskError::ShuttingDown(_)) => {
                (S::SERVICE_UNAVAILABLE, "shutting_down")
            }
            FileError::Task(TaskError::Panicked(_)) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Where a file is stored and who may fetch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Served to anyone, by nginx from disk (or the store's public URL).
    Public,
    /// Served only through the kernel, to those who may see it.
    Private,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Public => "public",
            Scheme::Private => "private",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Scheme::Public),
            "private" => Some(Scheme::Private),
            _ => None,
        }
    }
}

/// A file's place in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Uploaded; removed after `files.temporary_max_age_secs` unless an
    /// item uses it.
    Temporary,
    /// Used by at least one item revision.
    Permanent,
    /// No longer used; being deleted (never served).
    Released,
}

impl FileStatus {
    pub fn from_db(v: i16) -> Self {
        match v {
            0 => FileStatus::Temporary,
            1 => FileStatus::Permanent,
            _ => FileStatus::Released,
        }
    }
}

/// A `file_managed` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRecord {
    pub id: Uuid,
    pub owner_id: Option<Uuid>,
    pub filename: String,
    pub uri: String,
    pub filemime: String,
    pub filesize: i64,
    pub status: i16,
    pub sha256: Vec<u8>,
    pub scheme: String,
    pub created: DateTime<Utc>,
    pub changed: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str =
    "id, owner_id, filename, uri, filemime, filesize, status, sha256, scheme, created, changed";

impl FileRecord {
    pub fn status(&self) -> FileStatus {
        FileStatus::from_db(self.status)
    }

    pub fn scheme(&self) -> Scheme {
        Scheme::parse(&self.scheme).unwrap_or(Scheme::Private)
    }

    /// The storage key from the `uri` (`public://ab/cd/<id>.png`).
    pub fn key(&self) -> Result<StorageKey, StorageError> {
        let rest = self
            .uri
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        StorageKey::parse(rest)
    }

    /// The strong entity tag: the content's SHA-256.
    pub fn etag(&self) -> String {
        let hex: String = self.sha256.iter().map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    }

    pub fn is_owned_by(&self, account: &Account) -> bool {
        account
            .user
            .as_ref()
            .is_some_and(|u| self.owner_id == Some(u.id))
    }
}

/// A file as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileInfo {
    pub id: Uuid,
    pub filename: String,
    pub filemime: String,
    pub filesize: i64,
    pub status: FileStatus,
    pub scheme: Scheme,
    /// Where it is served: the public URL, or `/file/{id}` for private files.
    pub url: String,
    pub owner: Option<Uuid>,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    pub created: DateTime<Utc>,
    pub changed: DateTime<Utc>,
}

/// The storage of both schemes, and the settings uploads follow.
#[derive(Clone)]
pub struct Files(Arc<FilesInner>);

struct FilesInner {
    public: Arc<dyn FileStorage>,
    private: Arc<dyn FileStorage>,
    settings: FileSettings,
}

impl Files {
    /// Opens the configured backend (creating local directories).
    pub async fn open(settings: &FileSettings, data_dir: &Path) -> Result<Self, StorageError> {
        let (public, private): (Arc<dyn FileStorage>, Arc<dyn FileStorage>) = match settings.backend
        {
            settings::Backend::Local => (
                Arc::new(local::LocalStorage::open(&settings.public_dir(data_dir)).await?),
                Arc::new(local::LocalStorage::open(&settings.private_dir(data_dir)).await?),
            ),
            settings::Backend::S3 => {
                let client = s3::client(settings)?;
                (
                    Arc::new(s3::S3Storage::new(client.clone(), "public")),
                    Arc::new(s3::S3Storage::new(client, "private")),
                )
            }
        };
        Ok(Self(Arc::new(FilesInner {
            public,
            private,
            settings: settings.clone(),
        })))
    }

    pub fn settings(&self) -> &FileSettings {
        &self.0.settings
    }

    pub fn storage(&self, scheme: Scheme) -> &dyn FileStorage {
        match scheme {
            Scheme::Public => &*self.0.public,
            Scheme::Private => &*self.0.private,
        }
    }

    /// Adds the storage probe to `/health`: both schemes' stores answer.
    pub fn add_probe(&self, probes: &mut Probes) {
        let files = self.clone();
        probes.add(STORAGE_PROBE, move || {
            let files = files.clone();
            Box::pin(async move {
                files.0.public.probe().await.map_err(|e| e.to_string())?;
                files.0.private.probe().await.map_err(|e| e.to_string())
            })
        });
    }

    /// Where `file` is served.
    pub fn url_of(&self, file: &FileRecord) -> String {
        match (file.scheme(), file.key()) {
            (Scheme::Public, Ok(key)) => {
                format!("{}/{key}", self.0.settings.public_url.trim_end_matches('/'))
            }
            _ => format!("/file/{}", file.id),
        }
    }

    pub fn info(&self, file: &FileRecord) -> FileInfo {
        FileInfo {
            id: file.id,
            filename: file.filename.clone(),
            filemime: file.filemime.clone(),
            filesize: file.filesize,
            status: file.status(),
            scheme: file.scheme(),
            url: self.url_of(file),
            owner: file.owner_id,
            sha256: file.etag().trim_matches('"').to_owned(),
            created: file.created,
            changed: file.changed,
        }
    }
}

/// The row of file `id`, released ones included.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<FileRecord>, FileError> {
    let sql = format!("SELECT {COLUMNS} FROM file_managed WHERE id = $1");
    Ok(timed(
        "file.find",
        sqlx::query_as::<_, FileRecord>(&sql)
            .bind(id)
            .fetch_optional(db),
    )
    .await?)
}

/// The row stored at `uri`.
pub async fn find_by_uri(
    db: impl PgExecutor<'_>,
    uri: &str,
) -> Result<Option<FileRecord>, FileError> {
    let sql = format!("SELECT {COLUMNS} FROM file_managed WHERE uri = $1");
    Ok(timed(
        "file.find_by_uri",
        sqlx::query_as::<_, FileRecord>(&sql)
            .bind(uri)
            .fetch_optional(db),
    )
    .await?)
}

/// Whether `account` administers files (sees and deletes any of them).
pub fn administers(account: &Account) -> bool {
    account.has(permission::ADMINISTER_FILES)
}
