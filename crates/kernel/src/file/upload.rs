//! `POST /file/upload`: one file per `multipart/form-data` request, streamed
//! into storage as it arrives.
//!
//! The first bytes of the file part are read and sniffed before anything is
//! stored: a type outside `files.allowed_types`, or a declared type or
//! extension that contradicts the content, is refused there. The rest
//! streams through a meter (byte count against `files.max_upload_bytes`,
//! SHA-256, and for inline types a scan for markup) into the backend, which
//! stores the object whole or not at all. Only when the object is stored and
//! the body has ended cleanly (no second file) is the `file_managed` row
//! written, as `temporary`. Any failure deletes what was stored: no object,
//! no row.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, stream};
use multer::{Constraints, Multipart, SizeLimit};
use uuid::Uuid;

use super::sniff::{self, MarkupScanner, Sniffed};
use super::storage::{ByteStream, StorageError, StorageKey};
use super::{COLUMNS, FileError, FileInfo, FileRecord, Scheme, name};
use crate::db::timed;
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;
use crate::user::{Account, permission};

/// Room for the parts around the file (CSRF token, scheme, boundaries).
const ENVELOPE: u64 = 64 * 1024;
/// Largest text part.
const TEXT_PART_MAX: u64 = 4 * 1024;

/// The form `POST /file/upload` takes.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The session's CSRF token (session requests; or the `X-CSRF-Token` header). Must be the first part.
    csrf_token: Option<String>,
    /// `public` or `private`; before the file part. Default `files.default_scheme`.
    scheme: Option<Scheme>,
    /// The file: one per request, the last part.
    #[schema(format = Binary, value_type = String)]
    file: Vec<u8>,
}

/// What the meter saw of the file part while it streamed.
struct Meter {
    limit: u64,
    bytes: u64,
    /// ring's SHA-256 (BoringSSL's SHA-NI assembly): the hash is the
    /// costliest step of an upload, and ring runs it about twice as fast
    /// as the pure-Rust `sha2` on this kind of CPU (`bench/30-files.sh`).
    hash: ring::digest::Context,
    scanner: Option<MarkupScanner>,
    exceeded: bool,
    body_error: Option<multer::Error>,
}

impl Meter {
    fn pass(&mut self, chunk: Result<Bytes, multer::Error>) -> std::io::Result<Bytes> {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let io = std::io::Error::other(e.to_string());
                self.body_error = Some(e);
                return Err(io);
            }
        };
        self.bytes += chunk.len() as u64;
        if self.bytes > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("upload limit crossed"));
        }
        self.hash.update(&chunk);
        if let Some(s) = &mut self.scanner {
            s.feed(&chunk);
        }
        Ok(chunk)
    }

    /// Why the stream failed, as the client's error.
    fn failure(&mut self) -> Option<FileError> {
        if self.exceeded {
            return Some(FileError::TooLarge { limit: self.limit });
        }
        self.body_error.take().map(|e| body_error(e, self.limit))
    }
}

fn body_error(e: multer::Error, limit: u64) -> FileError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            FileError::TooLarge { limit }
        }
        e => FileError::BadUpload(format!("the multipart body is malformed or cut off: {e}")),
    }
}

/// Upload one file; it is temporary until an item references it.
#[utoipa::path(post, path = "/file/upload", tag = "file",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored, temporary", body = FileInfo,
            headers(("Location" = String, description = "The file's metadata URL"))),
        (status = 400, description = "Not one well-formed file part, an empty file, or a file name that is a path or holds control or bidirectional characters", body = ErrorBody),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `upload files`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 413, description = "Larger than `files.max_upload_bytes`", body = ErrorBody),
        (status = 415, description = "A type not allowed, a declared type or extension the content contradicts, or markup inside an inline type", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    account: Account,
    req: Request,
) -> Result<Response, AppError> {
    account.require(permission::UPLOAD_FILES)?;
    let settings = state.files.settings();
    let limit = settings.max_upload_bytes;
    let whole_limit = limit.saturating_add(ENVELOPE);
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|n| n > whole_limit) {
        return Err(FileError::TooLarge { limit }.into());
    }
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            FileError::BadUpload("the body must be multipart/form-data with a boundary".into())
        })?;
    let constraints = Constraints::new().size_limit(
        SizeLimit::new()
            .whole_stream(whole_limit)
            .per_field(TEXT_PART_MAX)
            .for_field("file", limit.saturating_add(1)),
    );
    let mut multipart =
        Multipart::with_constraints(req.into_body().into_data_stream(), boundary, constraints);
    let owner = account.user.as_ref().map(|u| u.id);
    let mut scheme = Scheme::parse(&settings.default_scheme).unwrap_or(Scheme::Public);
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| body_error(e, limit))?
            .ok_or_else(|| FileError::BadUpload("no `file` part".into()))?;
        match field.name() {
            Some("csrf_token") => {
                // Checked by the CSRF rule before the handler runs.
                field.bytes().await.map_err(|e| body_error(e, limit))?;
            }
            Some("scheme") => {
                let text = field.text().await.map_err(|e| body_error(e, limit))?;
                scheme = Scheme::parse(text.trim()).ok_or_else(|| {
                    FileError::BadUpload(format!(
                        "scheme must be `public` or `private`, not `{}`",
                        text.chars().take(32).collect::<String>()
                    ))
                })?;
            }
            Some("file") => {
                let info = store(&state, field, Some(&mut multipart), scheme, owner, limit).await?;
                let location = format!("/api/files/{}", info.id);
                metrics::counter!("trovato_file_uploads_total", "outcome" => "stored").increment(1);
                return Ok((
                    StatusCode::CREATED,
                    [(header::LOCATION, location)],
                    Json(info),
                )
                    .into_response());
            }
            other => {
                return Err(FileError::BadUpload(format!(
                    "unknown part `{}`; expected `file`, and optionally `scheme` and `csrf_token` before it",
                    other.unwrap_or("").chars().take(64).collect::<String>()
                ))
                .into());
            }
        }
    }
}

/// Stores one file part of a page's form (the item form's file fields) as
/// `POST /file/upload` stores its file: sniffed, checked, streamed and
/// recorded as temporary, in the default scheme, owned by `owner`. The
/// form's other parts may follow it. The caller bounds the whole body.
pub async fn store_form_part(
    state: &AppState,
    field: multer::Field<'static>,
    owner: Option<Uuid>,
) -> Result<FileInfo, FileError> {
    let settings = state.files.settings();
    let scheme = Scheme::parse(&settings.default_scheme).unwrap_or(Scheme::Public);
    store(state, field, None, scheme, owner, settings.max_upload_bytes).await
}

/// Reads the file part's first bytes, checks them, streams the part into
/// storage, makes sure nothing follows it (with `sole`, the upload's
/// multipart body), and records the row.
async fn store(
    state: &AppState,
    mut field: multer::Field<'static>,
    sole: Option<&mut Multipart<'static>>,
    scheme: Scheme,
    owner: Option<Uuid>,
    limit: u64,
) -> Result<FileInfo, FileError> {
    let filename = name::sanitize(field.file_name())?;
    let declared = field.content_type().map(|m| m.essence_str().to_owned());
    let mut head = Vec::new();
    while head.len() < sniff::PREFIX {
        match field.chunk().await.map_err(|e| body_error(e, limit))? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => break,
        }
        if head.len() as u64 > limit {
            return Err(FileError::TooLarge { limit });
        }
    }
    if head.is_empty() {
        return Err(FileError::Empty);
    }
    let sniffed = sniff::sniff(&head[..head.len().min(sniff::PREFIX)]);
    let allowed = &state.files.settings().allowed_types;
    if !allowed.iter().any(|t| t == sniffed.mime) {
        return Err(FileError::TypeNotAllowed { mime: sniffed.mime });
    }
    let name_ext = name::extension(&filename);
    let kept_ext = sniff::check_claims(&sniffed, declared.as_deref(), name_ext.as_deref())?;
    let filename = match kept_ext {
        Some(_) => filename,
        None => name::with_extension(&filename, sniffed.ext),
    };

    let id = Uuid::now_v7();
    let key = StorageKey::generate(id, kept_ext.unwrap_or(sniffed.ext));
    let meter = Arc::new(Mutex::new(Meter {
        limit,
        bytes: 0,
        hash: ring::digest::Context::new(&ring::digest::SHA256),
        scanner: sniff::is_inline(sniffed.mime).then(MarkupScanner::default),
        exceeded: false,
        body_error: None,
    }));
    let body = metered(Bytes::from(head), field, meter.clone());
    let storage = state.files.storage(scheme);
    if let Err(e) = storage.put(&key, body).await {
        let failure = meter.lock().ok().and_then(|mut m| m.failure());
        return Err(match (e, failure) {
            (StorageError::Source(_), Some(f)) => f,
            (e, _) => e.into(),
        });
    }
    let (size, sha256, marker) = {
        let m = meter
            .lock()
            .map_err(|_| FileError::BadUpload("upload meter poisoned".into()))?;
        (
            m.bytes,
            m.hash.clone().finish().as_ref().to_vec(),
            m.scanner.as_ref().and_then(MarkupScanner::found),
        )
    };
    let checked = finish_checks(sole, &sniffed, marker, limit).await;
    let recorded = match checked {
        Ok(()) => {
            insert(
                state, id, owner, &filename, scheme, &key, &sniffed, size, &sha256,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match recorded {
        Ok(record) => Ok(state.files.info(&record)),
        Err(e) => {
            if let Err(del) = storage.delete(&key).await {
                tracing::warn!(key = %key, error = %del, "could not delete a refused upload's object");
            }
            Err(e)
        }
    }
}

/// The part's bytes: the head already read, then the rest, through the meter.
fn metered(head: Bytes, field: multer::Field<'static>, meter: Arc<Mutex<Meter>>) -> ByteStream {
    stream::once(async move { Ok::<_, multer::Error>(head) })
        .chain(field)
        .map(move |chunk| match meter.lock() {
            Ok(mut m) => m.pass(chunk),
            Err(_) => Err(std::io::Error::other("upload meter poisoned")),
        })
        .boxed()
}

/// After the file: no markup in an inline type, and (for the sole file of
/// an upload) nothing but the end of the body.
async fn finish_checks(
    sole: Option<&mut Multipart<'static>>,
    sniffed: &Sniffed,
    marker: Option<&'static str>,
    limit: u64,
) -> Result<(), FileError> {
    if let Some(marker) = marker {
        return Err(FileError::Polyglot {
            mime: sniffed.mime,
            marker,
        });
    }
    let Some(multipart) = sole else {
        return Ok(());
    };
    match multipart.next_field().await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(FileError::BadUpload(
            "one file per request: the `file` part must be the last part".into(),
        )),
        Err(e) => Err(body_error(e, limit)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert(
    state: &AppState,
    id: Uuid,
    owner: Option<Uuid>,
    filename: &str,
    scheme: Scheme,
    key: &StorageKey,
    sniffed: &Sniffed,
    size: u64,
    sha256: &[u8],
) -> Result<FileRecord, FileError> {
    let sql = format!(
        "INSERT INTO file_managed (id, owner_id, filename, uri, filemime, filesize, status, sha256, scheme)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8) RETURNING {COLUMNS}"
    );
    let size = i64::try_from(size).map_err(|_| FileError::TooLarge { limit: u64::MAX })?;
    Ok(timed(
        "file.insert",
        sqlx::query_as::<_, FileRecord>(&sql)
            .bind(id)
            .bind(owner)
            .bind(filename)
            .bind(format!("{}://{key}", scheme.as_str()))
            .bind(sniffed.mime)
            .bind(size)
            .bind(sha256)
            .bind(scheme.as_str())
            .fetch_one(&state.db),
    )
    .await?)
}
