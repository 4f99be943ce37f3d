//! Which item revisions use which files, and the end of a file's life.
//!
//! [`FileUsage`] is the item write hook: for every revision a write
//! creates (or a publish makes live) it checks the files the item's file
//! fields reference, records one `file_usage` row per (file, revision,
//! field) and makes the files permanent, in the write's transaction. When a
//! revision goes (its item or stage deleted), its rows go with it and the
//! database trigger releases a file whose last row went (migration
//! `0004_files.sql`). Released files are deleted after the commit by
//! [`purge_released`]: object first, then row, so a crash in between leaves
//! a released row the next pass finishes, never a row served without its
//! object. [`cleanup`] is the cron step: it releases temporary files older
//! than `files.temporary_max_age_secs` and purges.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{COLUMNS, FileError, FileRecord, FileStatus, Scheme};
use crate::db::{DbError, timed};
use crate::item::field::FieldKind;
use crate::item::write::Origin;
use crate::item::{Change, ChangeKind, Effects, Failures, FieldDef, ItemError, WriteHook, store};
use crate::state::AppState;
use crate::user::Account;
use crate::user::access::AuthMethod;

/// The file write hook (installed by the kernel, `kernel::WRITE_HOOKS`).
pub struct FileUsage;

/// The files an item's fields reference: (field name, file id).
pub fn file_refs(defs: &[FieldDef], fields: &Value) -> Vec<(String, Uuid)> {
    let mut out = Vec::new();
    for def in defs.iter().filter(|d| d.kind == FieldKind::File) {
        let values = match fields.get(&def.name) {
            Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
            Some(v) => vec![v],
            None => continue,
        };
        for v in values {
            if let Some(id) = v
                .get("file_id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            {
                out.push((def.name.clone(), id));
            }
        }
    }
    out
}

impl WriteHook for FileUsage {
    fn name(&self) -> &'static str {
        "file usage"
    }

    fn in_transaction<'a>(
        &'a self,
        state: &'a AppState,
        tx: &'a mut PgConnection,
        change: &'a Change,
        effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), ItemError>> {
        Box::pin(async move {
            match change.kind {
                ChangeKind::Deleted => {
                    // The revisions' rows went with the item; the trigger
                    // released what nothing else uses.
                    let st = state.clone();
                    effects.after_commit("file purge", async move {
                        purge_logged(&st).await;
                    });
                    Ok(())
                }
                ChangeKind::Created | ChangeKind::Updated => record(state, tx, change).await,
            }
        })
    }
}

/// Checks and records the files of the revision `change` left the item at.
async fn record(state: &AppState, tx: &mut PgConnection, change: &Change) -> Result<(), ItemError> {
    let item = &change.item;
    let Some(revision) = item.revision_id else {
        return Ok(());
    };
    let Some(t) = store::find_type(&mut *tx, &item.item_type).await? else {
        return Ok(());
    };
    let refs = file_refs(&t.fields, &item.fields);
    if refs.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = refs
        .iter()
        .map(|(_, id)| *id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // FOR SHARE: a concurrent release (the trigger) or cleanup waits for
    // this transaction, and this one waits for theirs.
    let sql =
        format!("SELECT {COLUMNS} FROM file_managed WHERE id = ANY($1) ORDER BY id FOR SHARE");
    let files: Vec<FileRecord> = timed(
        "file.lock_referenced",
        sqlx::query_as::<_, FileRecord>(&sql)
            .bind(&ids)
            .fetch_all(&mut *tx),
    )
    .await?;
    let mut account: Option<Option<Account>> = None;
    let mut failures = Failures::new();
    for (field, id) in &refs {
        let usable = match files.iter().find(|f| f.id == *id) {
            None => false,
            Some(f) if f.status() == FileStatus::Released => false,
            Some(f) => match change.origin {
                // Checked when the revision was written.
                Origin::Publish => true,
                Origin::Edit { by } => {
                    if account.is_none() {
                        account = Some(account_of(state, by).await?);
                    }
                    may_reference(state, account.as_ref().and_then(Option::as_ref), f).await?
                }
            },
        };
        if !usable {
            failures
                .entry(field.clone())
                .or_default()
                .push(format!("file {id} does not exist or may not be used here"));
        }
    }
    if !failures.is_empty() {
        return Err(ItemError::Invalid(failures));
    }
    let (files_col, fields_col): (Vec<Uuid>, Vec<String>) =
        refs.iter().map(|(f, id)| (*id, f.clone())).unzip();
    timed(
        "file.record_usage",
        sqlx::query(
            "INSERT INTO file_usage (file_id, revision_id, item_id, field)
             SELECT f, $2, $3, n FROM unnest($1::uuid[], $4::text[]) AS u(f, n)
             ON CONFLICT DO NOTHING",
        )
        .bind(&files_col)
        .bind(revision)
        .bind(item.id)
        .bind(&fields_col)
        .execute(&mut *tx),
    )
    .await?;
    timed(
        "file.make_permanent",
        sqlx::query(
            "UPDATE file_managed SET status = 1, changed = now() WHERE id = ANY($1) AND status = 0",
        )
        .bind(&ids)
        .execute(&mut *tx),
    )
    .await?;
    Ok(())
}

async fn account_of(state: &AppState, by: Option<Uuid>) -> Result<Option<Account>, ItemError> {
    let Some(uid) = by else {
        return Ok(None);
    };
    let user = crate::user::find_by_id(&state.db, uid)
        .await
        .map_err(user_error)?;
    match user {
        Some(user) => Account::for_user(state, user, None, AuthMethod::Token)
            .await
            .map(Some)
            .map_err(user_error),
        None => Ok(None),
    }
}

/// Looking up the editor failed: only the database can fail there.
fn user_error(e: crate::user::UserError) -> ItemError {
    match e {
        crate::user::UserError::Db(d) => ItemError::Db(d),
        other => ItemError::Db(DbError::Unavailable(other.to_string())),
    }
}

fn file_error(e: FileError) -> ItemError {
    match e {
        FileError::Db(d) => ItemError::Db(d),
        other => ItemError::Db(DbError::Unavailable(other.to_string())),
    }
}

/// Whether the editor may reference `file`: their own temporary upload, or
/// a permanent file they may see; file administrators any file.
async fn may_reference(
    state: &AppState,
    account: Option<&Account>,
    file: &FileRecord,
) -> Result<bool, ItemError> {
    let Some(account) = account else {
        return Ok(false);
    };
    if super::administers(account) || file.is_owned_by(account) {
        return Ok(true);
    }
    match file.status() {
        FileStatus::Permanent if file.scheme() == Scheme::Public => Ok(true),
        FileStatus::Permanent => super::serve::may_view(state, account, file)
            .await
            .map_err(file_error),
        FileStatus::Temporary | FileStatus::Released => Ok(false),
    }
}

/// One use of a file by an item revision.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FileUse {
    pub item_id: Uuid,
    pub revision_id: Uuid,
    pub field: String,
    /// The stage the revision was written in.
    pub stage: String,
    /// The item's current title.
    pub title: String,
}

/// What one cleanup pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CleanupReport {
    /// Temporary files that expired and were released.
    pub expired: u64,
    /// Released files whose object and row were deleted.
    pub purged: u64,
    /// Released files whose object could not be deleted (kept for the next pass).
    pub failed: u64,
}

/// The cron step: releases temporary files unchanged for longer than
/// `files.temporary_max_age_secs` (at most `files.cleanup_batch`), then
/// purges released files (as many). A file an item save is making
/// permanent at the same time is locked by that save and skipped.
pub async fn cleanup(state: &AppState) -> Result<CleanupReport, FileError> {
    let settings = state.files.settings();
    let expired = timed(
        "file.expire_temporary",
        sqlx::query(
            "UPDATE file_managed SET status = 2, changed = now()
             WHERE id IN (
                 SELECT id FROM file_managed
                 WHERE status = 0 AND changed < now() - make_interval(secs => $1)
                 ORDER BY changed
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             AND status = 0",
        )
        .bind(settings.temporary_max_age_secs as f64)
        .bind(i64::from(settings.cleanup_batch))
        .execute(&state.db),
    )
    .await?
    .rows_affected();
    let (purged, failed) = purge_released(state, None, settings.cleanup_batch).await?;
    Ok(CleanupReport {
        expired,
        purged,
        failed,
    })
}

/// Deletes released files (those in `only`, or any), at most `limit`:
/// each object, then the rows whose object is gone. Rows another pass
/// holds are skipped. Returns (purged, failed).
pub async fn purge_released(
    state: &AppState,
    only: Option<&[Uuid]>,
    limit: u32,
) -> Result<(u64, u64), FileError> {
    let mut tx = state.db.begin().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM file_managed
         WHERE status = 2 AND ($1::uuid[] IS NULL OR id = ANY($1))
         ORDER BY changed LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let released: Vec<FileRecord> = timed(
        "file.claim_released",
        sqlx::query_as::<_, FileRecord>(&sql)
            .bind(only)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx),
    )
    .await?;
    let mut gone = Vec::with_capacity(released.len());
    let mut failed = 0u64;
    for file in &released {
        let deleted = match file.key() {
            Ok(key) => state.files.storage(file.scheme()).delete(&key).await,
            // Nothing the kernel could have stored there.
            Err(_) => Ok(()),
        };
        match deleted {
            Ok(()) => gone.push(file.id),
            Err(e) => {
                failed += 1;
                tracing::warn!(file = %file.id, error = %e, "could not delete a released file's object; the next pass retries");
            }
        }
    }
    timed(
        "file.delete_released",
        sqlx::query("DELETE FROM file_managed WHERE id = ANY($1) AND status = 2")
            .bind(&gone)
            .execute(&mut *tx),
    )
    .await?;
    tx.commit().await?;
    metrics::counter!("trovato_files_purged_total").increment(gone.len() as u64);
    Ok((gone.len() as u64, failed))
}

/// [`purge_released`] after a commit that may have released files.
pub async fn purge_logged(state: &AppState) {
    let limit = state.files.settings().cleanup_batch;
    if let Err(e) = purge_released(state, None, limit).await {
        tracing::warn!(error = %e, "purging released files failed; the next cleanup pass retries");
    }
}

/// The uses of `file`.
pub async fn uses_of(db: &sqlx::PgPool, file: Uuid) -> Result<Vec<FileUse>, FileError> {
    Ok(timed(
        "file.uses",
        sqlx::query_as::<_, FileUse>(
            "SELECT u.item_id, u.revision_id, u.field, r.stage_id AS stage, i.title
             FROM file_usage u
             JOIN item_revision r ON r.id = u.revision_id
             JOIN item i ON i.id = u.item_id
             WHERE u.file_id = $1
             ORDER BY u.revision_id DESC",
        )
        .bind(file)
        .fetch_all(db),
    )
    .await?)
}

/// Deletes an unused file: released in a transaction (refused while an
/// item revision uses it), then its object and row, as one task that runs
/// to the end even if the request is dropped.
pub async fn release(state: &AppState, id: Uuid) -> Result<(), FileError> {
    let mut tx = state.db.begin().await?;
    let status: Option<i16> =
        sqlx::query_scalar("SELECT status FROM file_managed WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if status.is_none_or(|s| FileStatus::from_db(s) == FileStatus::Released) {
        return Err(FileError::NotFound(id));
    }
    let used: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM file_usage WHERE file_id = $1)")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    if used {
        return Err(FileError::InUse(id));
    }
    sqlx::query("UPDATE file_managed SET status = 2, changed = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let st = state.clone();
    state
        .tasks
        .finish("file delete", async move {
            tx.commit().await?;
            purge_released(&st, Some(&[id]), 1).await?;
            Ok::<_, FileError>(())
        })
        .await?
}
