//! Serving file content: `GET /file/{id}` (any file, with access control;
//! the only way to a private one) and `GET /files/{a}/{b}/{name}` (public
//! files by their storage key, the URL nginx serves from disk in
//! production; the kernel answers it in development).
//!
//! Both send the stored type with `nosniff`, a strong `ETag` (the content's
//! SHA-256, so `If-None-Match` gives 304), `Last-Modified`, single byte
//! ranges (206, or 416 outside the file), and `Content-Disposition` with
//! the sanitised name (RFC 6266): `inline` only for types that cannot run
//! script, `attachment` for everything else.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use uuid::Uuid;

use super::{FileError, FileRecord, FileStatus, Scheme, StorageError, StorageKey, sniff};
use crate::error::{AppError, ErrorBody, error_response};
use crate::item::routes::{can_read_revisions, can_view_as};
use crate::stage::StageId;
use crate::state::AppState;
use crate::user::Account;

/// How long browsers and proxies keep a public file: its URL names one
/// upload's content, which never changes.
const PUBLIC_CACHE: &str = "public, max-age=31536000, immutable";
/// Private files: the browser may keep them but must ask again.
const PRIVATE_CACHE: &str = "private, no-cache";

/// Whether `account` may fetch `file`: the owner, file administrators,
/// anyone for a public file, and for a private one whoever may see an item
/// revision that uses it (a live published item: `access content`; an
/// unpublished or stage revision: those who may see that).
pub async fn may_view(
    state: &AppState,
    account: &Account,
    file: &FileRecord,
) -> Result<bool, FileError> {
    if file.status() == FileStatus::Released {
        return Ok(false);
    }
    if super::administers(account) || file.is_owned_by(account) || file.scheme() == Scheme::Public {
        return Ok(true);
    }
    let uses: Vec<(Option<Uuid>, i16, String, bool, String, i16)> = sqlx::query_as(
        "SELECT i.author, i.status, i.stage_id, i.revision_id = u.revision_id, r.stage_id, r.status
         FROM file_usage u
         JOIN item i ON i.id = u.item_id
         JOIN item_revision r ON r.id = u.revision_id
         WHERE u.file_id = $1",
    )
    .bind(file.id)
    .fetch_all(&state.db)
    .await?;
    Ok(uses.into_iter().any(
        |(author, item_status, item_stage, current, rev_stage, rev_status)| {
            if current && item_stage == crate::cache::LIVE {
                // The revision live shows (also one a publish brought in).
                can_view_as(account, item_status == 1, author)
            } else if rev_stage != crate::cache::LIVE {
                StageId::parse(&rev_stage).is_ok_and(|stage| {
                    crate::stage::may_work_in(account, &stage)
                        && can_view_as(account, rev_status == 1, author)
                })
            } else {
                // An earlier live revision: for those who read revisions.
                can_read_revisions(account, author)
            }
        },
    ))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct FileIdPath {
    /// The file's id.
    id: String,
}

/// A file's content, for those who may see it.
#[utoipa::path(get, path = "/file/{id}", tag = "file", params(FileIdPath),
    responses(
        (status = 200, description = "The content", content_type = "application/octet-stream"),
        (status = 206, description = "The requested byte range"),
        (status = 304, description = "Not modified (`If-None-Match`, `If-Modified-Since`)"),
        (status = 307, description = "A private S3 file: a presigned URL, valid for `files.s3_presign_secs`"),
        (status = 404, description = "No such file, or not visible to you", body = ErrorBody),
        (status = 416, description = "The range lies outside the file", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn file_by_id(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| AppError::NotFound(format!("file {id}")))?;
    let file = super::find(&state.db, id)
        .await?
        .ok_or(FileError::NotFound(id))?;
    if !may_view(&state, &account, &file).await? {
        // Not revealing that the file exists.
        return Err(FileError::NotFound(id).into());
    }
    if file.scheme() == Scheme::Private
        && let Some(ttl) = state.files.settings().presign()
    {
        let key = file.key().map_err(FileError::from)?;
        if let Some(url) = state
            .files
            .storage(Scheme::Private)
            .signed_url(&key, ttl)
            .await
            .map_err(FileError::from)?
        {
            return Ok((
                StatusCode::TEMPORARY_REDIRECT,
                [
                    (header::LOCATION, url),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
            )
                .into_response());
        }
    }
    Ok(respond(&state, &file, &headers).await?)
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct PublicPath {
    /// First shard directory.
    a: String,
    /// Second shard directory.
    b: String,
    /// `<id>.<ext>`.
    name: String,
}

/// A public file by its storage key (what nginx serves from disk).
#[utoipa::path(get, path = "/files/{a}/{b}/{name}", tag = "file", params(PublicPath),
    responses(
        (status = 200, description = "The content", content_type = "application/octet-stream"),
        (status = 206, description = "The requested byte range"),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such public file", body = ErrorBody),
        (status = 416, description = "The range lies outside the file", body = ErrorBody),
    ),
    security(()))]
pub(crate) async fn public_file(
    State(state): State<AppState>,
    Path((a, b, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let missing = || AppError::NotFound("file".into());
    let key = StorageKey::parse(&format!("{a}/{b}/{name}")).map_err(|_| missing())?;
    let file = super::find_by_uri(&state.db, &format!("public://{key}"))
        .await?
        .filter(|f| f.status() != FileStatus::Released)
        .ok_or_else(missing)?;
    Ok(respond(&state, &file, &headers).await?)
}

/// The response for `file` given the request's conditional and range
/// headers.
async fn respond(
    state: &AppState,
    file: &FileRecord,
    req: &HeaderMap,
) -> Result<Response, FileError> {
    let size = u64::try_from(file.filesize).unwrap_or(0);
    let etag = file.etag();
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, value(&etag));
    headers.insert(header::LAST_MODIFIED, value(&http_date(file.created)));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(match file.scheme() {
            Scheme::Public => PUBLIC_CACHE,
            Scheme::Private => PRIVATE_CACHE,
        }),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if not_modified(req, &etag, file.created) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let mime = if file.filemime == "text/plain" {
        "text/plain; charset=utf-8".to_owned()
    } else {
        file.filemime.clone()
    };
    headers.insert(header::CONTENT_TYPE, value(&mime));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_DISPOSITION,
        value(&content_disposition(&file.filename, &file.filemime)),
    );
    if file.filemime != "application/pdf" {
        // Even opened directly, the document may run nothing.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; sandbox"),
        );
    }
    let range = match req.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if if_range_holds(req, &etag) => parse_range(r, size),
        _ => None,
    };
    let (status, range) = match range {
        None => (StatusCode::OK, None),
        Some(Ok(r)) => {
            headers.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {}-{}/{size}", r.start, r.end - 1)),
            );
            (StatusCode::PARTIAL_CONTENT, Some(r))
        }
        Some(Err(())) => {
            let mut resp = error_response(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                &format!("the file is {size} bytes long"),
                serde_json::Value::Null,
            );
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
            return Ok(resp);
        }
    };
    let len = range.as_ref().map_or(size, |r| r.end - r.start);
    headers.insert(header::CONTENT_LENGTH, value(&len.to_string()));
    let key = file.key()?;
    let body = match state.files.storage(file.scheme()).get(&key, range).await {
        Ok(b) => b,
        Err(StorageError::NotFound(_)) => {
            // A row whose object is gone: never a 200 with nothing behind it.
            tracing::error!(file = %file.id, key = %key, "file row without its object");
            return Err(FileError::NotFound(file.id));
        }
        Err(e) => return Err(e.into()),
    };
    Ok((status, headers, Body::from_stream(body)).into_response())
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// `If-None-Match` (which wins when present), else `If-Modified-Since`.
fn not_modified(req: &HeaderMap, etag: &str, modified: DateTime<Utc>) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return inm
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag);
    }
    req.get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        .is_some_and(|since| modified.timestamp() <= since.timestamp())
}

/// `If-Range`: a range applies only while the entity tag still matches.
fn if_range_holds(req: &HeaderMap, etag: &str) -> bool {
    match req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => v.trim() == etag,
    }
}

/// One byte range of a `size`-byte file: `None` to ignore the header (not
/// a single `bytes` range), `Err` when it lies outside the file.
pub fn parse_range(header: &str, size: u64) -> Option<Result<Range<u64>, ()>> {
    let spec = header.trim();
    let spec = spec
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("bytes="))
        .map(|_| &spec[6..])?;
    if spec.contains(',') {
        // Several ranges: the whole file is a valid answer.
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let n: u64 = last.parse().ok()?;
        return Some(if n == 0 {
            Err(())
        } else {
            Ok(size.saturating_sub(n)..size)
        });
    }
    let start: u64 = first.parse().ok()?;
    let end = if last.is_empty() {
        size
    } else {
        let last: u64 = last.parse().ok()?;
        if last < start {
            return None;
        }
        last.saturating_add(1).min(size)
    };
    Some(if start >= size {
        Err(())
    } else {
        Ok(start..end)
    })
}

/// `inline` or `attachment`, with the name as an ASCII fallback and in
/// full as RFC 5987 `filename*`.
pub fn content_disposition(filename: &str, mime: &str) -> String {
    let kind = if sniff::is_inline(mime) && !sniff::is_active(mime) {
        "inline"
    } else {
        "attachment"
    };
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = utf8_percent_encode(filename, NON_ALPHANUMERIC);
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok(0..10)));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok(90..100)));
        assert_eq!(parse_range("bytes=50-500", 100), Some(Ok(50..100)));
        assert_eq!(parse_range("bytes=-500", 100), Some(Ok(0..100)));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("bytes=9-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=x-1", 100), None);
    }

    #[test]
    fn disposition_is_inline_only_for_passive_types() {
        assert!(content_disposition("a.png", "image/png").starts_with("inline;"));
        assert!(content_disposition("a.svg", "image/svg+xml").starts_with("attachment;"));
        assert!(content_disposition("a.zip", "application/zip").starts_with("attachment;"));
        let d = content_disposition("résumé \"x\".pdf", "application/pdf");
        assert!(d.contains("filename=\"r_sum_ _x_.pdf\""), "{d}");
        assert!(
            d.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22%2Epdf"),
            "{d}"
        );
    }
}
