//! The `[files]` section: where files are stored, what may be uploaded,
//! and how long an unused upload is kept. It imports nothing of the
//! subsystem, so the configuration that holds it depends on no file code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Where the bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Two directories on the local disk: public files under the web root
    /// nginx serves, private ones outside it.
    Local,
    /// Any S3-compatible store: one bucket, keys under `public/` and
    /// `private/`.
    S3,
}

/// The `[files]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Files")]
pub struct FileSettings {
    /// Storage backend: `local` or `s3`.
    #[arg(
        id = "files.backend",
        long = "files-backend",
        env = "TROVATO_FILES_BACKEND",
        value_enum
    )]
    pub backend: Backend,
    /// Directory of public files (local backend), the one nginx serves at `files.public_url`; unset: `<server.data_dir>/files/public`.
    #[arg(
        id = "files.public_dir",
        long = "files-public-dir",
        env = "TROVATO_FILES_PUBLIC_DIR",
        value_name = "DIR"
    )]
    pub public_dir: Option<PathBuf>,
    /// Directory of private files (local backend), never under a web root; unset: `<server.data_dir>/files/private`.
    #[arg(
        id = "files.private_dir",
        long = "files-private-dir",
        env = "TROVATO_FILES_PRIVATE_DIR",
        value_name = "DIR"
    )]
    pub private_dir: Option<PathBuf>,
    /// URL prefix public files are served under (nginx location, bucket or CDN address); a file's URL is this plus its storage key.
    #[arg(
        id = "files.public_url",
        long = "files-public-url",
        env = "TROVATO_FILES_PUBLIC_URL",
        value_name = "URL"
    )]
    pub public_url: String,
    /// Largest upload in bytes (independent of `server.max_body_bytes`); a larger one gets 413 and nothing is stored.
    #[arg(
        id = "files.max_upload_bytes",
        long = "files-max-upload-bytes",
        env = "TROVATO_FILES_MAX_UPLOAD_BYTES",
        value_name = "BYTES"
    )]
    pub max_upload_bytes: u64,
    /// Types that may be uploaded, as sniffed from the content (comma-separated MIME types).
    #[arg(
        id = "files.allowed_types",
        long = "files-allowed-types",
        env = "TROVATO_FILES_ALLOWED_TYPES",
        value_name = "TYPES",
        value_delimiter = ','
    )]
    pub allowed_types: Vec<String>,
    /// Scheme of an upload that does not ask for one: `public` or `private`.
    #[arg(
        id = "files.default_scheme",
        long = "files-default-scheme",
        env = "TROVATO_FILES_DEFAULT_SCHEME",
        value_name = "SCHEME"
    )]
    pub default_scheme: String,
    /// Seconds a temporary (unreferenced) upload is kept, from its last change.
    #[arg(
        id = "files.temporary_max_age_secs",
        long = "files-temporary-max-age",
        env = "TROVATO_FILES_TEMPORARY_MAX_AGE",
        value_name = "SECS"
    )]
    pub temporary_max_age_secs: u64,
    /// Most files one cleanup pass removes.
    #[arg(
        id = "files.cleanup_batch",
        long = "files-cleanup-batch",
        env = "TROVATO_FILES_CLEANUP_BATCH",
        value_name = "N"
    )]
    pub cleanup_batch: u32,
    /// S3 endpoint URL (for a store other than AWS, e.g. `http://127.0.0.1:8333`); unset: AWS.
    #[arg(
        id = "files.s3_endpoint",
        long = "files-s3-endpoint",
        env = "TROVATO_FILES_S3_ENDPOINT",
        value_name = "URL"
    )]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(
        id = "files.s3_region",
        long = "files-s3-region",
        env = "TROVATO_FILES_S3_REGION",
        value_name = "REGION"
    )]
    pub s3_region: String,
    /// S3 bucket (required with the s3 backend).
    #[arg(
        id = "files.s3_bucket",
        long = "files-s3-bucket",
        env = "TROVATO_FILES_S3_BUCKET",
        value_name = "BUCKET"
    )]
    pub s3_bucket: Option<String>,
    /// S3 access key id; unset: the environment's AWS credentials.
    #[arg(
        id = "files.s3_access_key_id",
        long = "files-s3-access-key-id",
        env = "TROVATO_FILES_S3_ACCESS_KEY_ID",
        value_name = "ID"
    )]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (prefer the environment variable to the flag).
    #[arg(
        id = "files.s3_secret_access_key",
        long = "files-s3-secret-access-key",
        env = "TROVATO_FILES_S3_SECRET_ACCESS_KEY",
        value_name = "SECRET"
    )]
    pub s3_secret_access_key: Option<String>,
    /// Address buckets by path (`endpoint/bucket/key`), as most S3-compatible stores need; false: virtual-hosted style.
    #[arg(
        id = "files.s3_path_style",
        long = "files-s3-path-style",
        env = "TROVATO_FILES_S3_PATH_STYLE",
        value_name = "BOOL",
        action = clap::ArgAction::Set
    )]
    pub s3_path_style: bool,
    /// Seconds a presigned URL for a private S3 file is valid; 0: private files stream through the kernel instead.
    #[arg(
        id = "files.s3_presign_secs",
        long = "files-s3-presign",
        env = "TROVATO_FILES_S3_PRESIGN",
        value_name = "SECS"
    )]
    pub s3_presign_secs: u64,
}

/// The types uploads may have unless configured otherwise: common images,
/// PDF and plain text. Active content (SVG, HTML) is not among them.
pub const DEFAULT_ALLOWED_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
];

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            public_dir: None,
            private_dir: None,
            public_url: "/files".into(),
            max_upload_bytes: 64 * 1024 * 1024,
            allowed_types: DEFAULT_ALLOWED_TYPES.iter().map(|s| (*s).into()).collect(),
            default_scheme: "public".into(),
            temporary_max_age_secs: 6 * 3600,
            cleanup_batch: 1000,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_bucket: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_path_style: true,
            s3_presign_secs: 0,
        }
    }
}

impl FileSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_upload_bytes == 0 {
            return Err(ConfigError::invalid::<Self>(
                "files.max_upload_bytes",
                "must be at least 1 byte",
            ));
        }
        if !matches!(self.default_scheme.as_str(), "public" | "private") {
            return Err(ConfigError::invalid::<Self>(
                "files.default_scheme",
                "must be `public` or `private`",
            ));
        }
        if self.allowed_types.is_empty() {
            return Err(ConfigError::invalid::<Self>(
                "files.allowed_types",
                "must list at least one type",
            ));
        }
        if let Some(t) = self
            .allowed_types
            .iter()
            .find(|t| !t.contains('/') || t.trim() != t.as_str())
        {
            return Err(ConfigError::invalid::<Self>(
                "files.allowed_types",
                format!("`{t}` is not a MIME type"),
            ));
        }
        if self.cleanup_batch == 0 {
            return Err(ConfigError::invalid::<Self>(
                "files.cleanup_batch",
                "must be at least 1",
            ));
        }
        if self.public_url.is_empty() {
            return Err(ConfigError::invalid::<Self>(
                "files.public_url",
                "must not be empty",
            ));
        }
        if let Some(endpoint) = &self.s3_endpoint {
            crate::config::check_url::<Self>("files.s3_endpoint", endpoint, &["http", "https"])?;
        }
        if self.backend == Backend::S3 && self.s3_bucket.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid::<Self>(
                "files.s3_bucket",
                "is required with `files.backend = \"s3\"`",
            ));
        }
        if self.s3_access_key_id.is_some() != self.s3_secret_access_key.is_some() {
            return Err(ConfigError::invalid::<Self>(
                "files.s3_secret_access_key",
                "set both the access key id and the secret, or neither",
            ));
        }
        Ok(())
    }

    /// The directory of public files, local backend.
    pub fn public_dir(&self, data_dir: &Path) -> PathBuf {
        self.public_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("files/public"))
    }

    /// The directory of private files, local backend.
    pub fn private_dir(&self, data_dir: &Path) -> PathBuf {
        self.private_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("files/private"))
    }

    /// How long an unreferenced upload is kept.
    pub fn temporary_max_age(&self) -> Duration {
        Duration::from_secs(self.temporary_max_age_secs)
    }

    /// Presigned URLs for private S3 files, when enabled.
    pub fn presign(&self) -> Option<Duration> {
        (self.s3_presign_secs > 0).then(|| Duration::from_secs(self.s3_presign_secs))
    }
}
