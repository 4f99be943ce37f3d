//! `/admin/files`: every file with its status, size, owner and uses, and
//! deleting an unused one.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{COLUMNS, FileError, FileRecord};
use crate::error::{AppError, ErrorBody};
use crate::page::admin;
use crate::state::AppState;
use crate::user::{Account, permission};

const PAGE_SIZE: i64 = 50;
const MAX_PAGE: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    Temporary,
    Permanent,
}

/// What happened on the last action, shown once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Deleted,
    InUse,
    Missing,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Notice::Deleted => "The file was deleted.",
            Notice::InUse => "The file is used by an item revision and was not deleted.",
            Notice::Missing => "That file no longer exists.",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilesQuery {
    /// Only files with this status.
    #[param(inline)]
    status: Option<StatusFilter>,
    /// Page number, from 1.
    #[param(minimum = 1, maximum = 1000000)]
    page: Option<u32>,
    /// What the last action did (set by the page's own redirects).
    #[param(inline)]
    notice: Option<Notice>,
}

#[derive(Serialize)]
struct Row {
    id: Uuid,
    filename: String,
    filemime: String,
    size: String,
    status: &'static str,
    scheme: &'static str,
    url: String,
    owner: Option<String>,
    created: String,
    created_iso: String,
    uses: Vec<Use>,
}

#[derive(Serialize, sqlx::FromRow)]
struct Use {
    file_id: Uuid,
    item_id: Uuid,
    title: String,
    field: String,
    stage: String,
}

#[derive(sqlx::FromRow)]
struct Listed {
    #[sqlx(flatten)]
    file: FileRecord,
    owner_name: Option<String>,
}

/// Bytes as people read them.
fn human_size(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn shown(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The files page.
#[utoipa::path(get, path = "/admin/files", tag = "admin", params(FilesQuery),
    responses(
        (status = 200, description = "The files page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad filter", body = ErrorBody),
        (status = 403, description = "Lacks `administer files`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn files_page(
    State(state): State<AppState>,
    account: Account,
    Query(q): Query<FilesQuery>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_FILES)) {
        return Ok(r);
    }
    let page = i64::from(q.page.unwrap_or(1));
    if !(1..=MAX_PAGE).contains(&page) {
        return Err(AppError::bad_request(
            "bad_page",
            format!("page must be between 1 and {MAX_PAGE}"),
        ));
    }
    let status = q.status.map(|s| match s {
        StatusFilter::Temporary => 0i16,
        StatusFilter::Permanent => 1,
    });
    let cols: String = COLUMNS
        .split(", ")
        .map(|c| format!("f.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols}, u.name AS owner_name FROM file_managed f
         LEFT JOIN users u ON u.id = f.owner_id
         WHERE f.status < 2 AND ($1::int2 IS NULL OR f.status = $1)
         ORDER BY f.created DESC, f.id DESC LIMIT $2 OFFSET $3"
    );
    let mut listed: Vec<Listed> = sqlx::query_as(&sql)
        .bind(status)
        .bind(PAGE_SIZE + 1)
        .bind((page - 1) * PAGE_SIZE)
        .fetch_all(&state.db)
        .await
        .map_err(FileError::from)?;
    let more = listed.len() as i64 > PAGE_SIZE;
    listed.truncate(PAGE_SIZE as usize);
    let ids: Vec<Uuid> = listed.iter().map(|l| l.file.id).collect();
    let uses: Vec<Use> = sqlx::query_as(
        "SELECT DISTINCT u.file_id, u.item_id, i.title, u.field, r.stage_id AS stage
         FROM file_usage u
         JOIN item i ON i.id = u.item_id
         JOIN item_revision r ON r.id = u.revision_id
         WHERE u.file_id = ANY($1)
         ORDER BY i.title, u.field, stage",
    )
    .bind(&ids)
    .fetch_all(&state.db)
    .await
    .map_err(FileError::from)?;
    let mut by_file: BTreeMap<Uuid, Vec<Use>> = BTreeMap::new();
    for u in uses {
        by_file.entry(u.file_id).or_default().push(u);
    }
    let rows: Vec<Row> = listed
        .into_iter()
        .map(|l| {
            let f = l.file;
            Row {
                id: f.id,
                url: state.files.url_of(&f),
                filename: f.filename.clone(),
                filemime: f.filemime.clone(),
                size: human_size(f.filesize),
                status: match f.status() {
                    super::FileStatus::Temporary => "temporary",
                    super::FileStatus::Permanent => "permanent",
                    super::FileStatus::Released => "released",
                },
                scheme: f.scheme().as_str(),
                owner: l.owner_name,
                created: shown(f.created),
                created_iso: f.created.to_rfc3339(),
                uses: by_file.remove(&f.id).unwrap_or_default(),
            }
        })
        .collect();
    let html = admin::render(
        &state,
        &account,
        "/admin/files",
        "Files",
        "admin/files.html",
        minijinja::context! {
            files => rows,
            status => q.status,
            page => page,
            prev_page => (page > 1).then_some(page - 1),
            next_page => more.then_some(page + 1),
            notice => q.notice.map(Notice::text),
        },
    )
    .await?;
    Ok(html.into_response())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct AdminFileId {
    /// The file's id.
    id: String,
}

/// Delete an unused file from the files page (a form post); back to the
/// page with a notice.
#[utoipa::path(post, path = "/admin/files/{id}/delete", tag = "admin", params(AdminFileId),
    responses(
        (status = 303, description = "Back to the files page, with a notice of what happened; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer files`, or a missing or wrong CSRF token", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_FILES)) {
        return Ok(r);
    }
    let notice = match id.parse::<Uuid>() {
        Err(_) => Notice::Missing,
        Ok(id) => match super::usage::release(&state, id).await {
            Ok(()) => Notice::Deleted,
            Err(FileError::InUse(_)) => Notice::InUse,
            Err(FileError::NotFound(_)) => Notice::Missing,
            Err(e) => return Err(e.into()),
        },
    };
    let notice = serde_json::to_value(notice)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(Redirect::to(&format!("/admin/files?notice={notice}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(64 * 1024 * 1024), "64.0 MiB");
    }
}
