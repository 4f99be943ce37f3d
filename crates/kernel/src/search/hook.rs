//! The search write hook (installed by the kernel, `kernel::WRITE_HOOKS`): plugins' extra
//! text for the written row, stored in `item.search_extra` where the
//! trigger reads it, and the engine's follow-up of the write.
//!
//! A plugin's `tap_item_update_index` gets the item and may answer
//! `{"search_text": [{"weight": "B", "text": "..."}]}`; any other answer
//! contributes nothing. (Called with `null`, the same tap declares the
//! plugin's fields: see [`super::config::sync_plugins`].)

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{SearchError, Weight};
use crate::db::{DbError, timed};
use crate::item::{Change, ChangeKind, Effects, Item, ItemError, WriteHook};
use crate::plugin::tap::Tap;
use crate::state::AppState;

/// Extra text one item may carry, in bytes, from all plugins together.
pub const MAX_EXTRA_BYTES: usize = 64 * 1024;

pub struct SearchIndex;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
struct ExtraText {
    weight: Weight,
    text: String,
}

#[derive(Deserialize)]
struct TapAnswer {
    #[serde(default)]
    search_text: Vec<ExtraText>,
}

impl WriteHook for SearchIndex {
    fn name(&self) -> &'static str {
        "search index"
    }

    fn in_transaction<'a>(
        &'a self,
        state: &'a AppState,
        tx: &'a mut PgConnection,
        change: &'a Change,
        effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), ItemError>> {
        Box::pin(async move {
            // A live item edited in another stage keeps its row (and its
            // index entry); only a write of the row itself is indexed.
            let row_written =
                change.stage.is_live() || change.item.stage_id == change.stage.as_str();
            if change.kind != ChangeKind::Deleted && row_written && has_implementors(state) {
                let extra = extra_text(state, &change.item).await;
                store_extra(tx, &[change.item.id], &[extra])
                    .await
                    .map_err(to_item_error)?;
            }
            if row_written && state.search.backend().fed_by_queue() {
                super::feed::on_write(state, tx, change, effects)
                    .await
                    .map_err(to_item_error)?;
            }
            Ok(())
        })
    }
}

fn to_item_error(e: SearchError) -> ItemError {
    match e {
        SearchError::Db(e) => ItemError::Db(e),
        other => ItemError::Db(DbError::Unavailable(other.to_string())),
    }
}

fn has_implementors(state: &AppState) -> bool {
    !state
        .plugins
        .implementors(Tap::ItemUpdateIndex.name())
        .is_empty()
}

/// What the plugins contribute for `item`, bounded by [`MAX_EXTRA_BYTES`].
/// A plugin that fails contributes nothing (it is logged).
async fn extra_text(state: &AppState, item: &Item) -> Value {
    let mut parts: Vec<ExtraText> = Vec::new();
    let mut bytes = 0usize;
    for outcome in state
        .plugins
        .invoke_all(Tap::ItemUpdateIndex.name(), item)
        .await
    {
        let answer = match outcome.result {
            Ok(Some(raw)) => serde_json::from_str::<TapAnswer>(raw.get()).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(plugin = %outcome.plugin, item = %item.id, error = %e, "tap_item_update_index failed; its text is not indexed");
                None
            }
        };
        for part in answer.map(|a| a.search_text).unwrap_or_default() {
            let text: String = part
                .text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            if bytes + text.len() > MAX_EXTRA_BYTES {
                tracing::warn!(plugin = %outcome.plugin, item = %item.id, "extra search text beyond {MAX_EXTRA_BYTES} bytes dropped");
                break;
            }
            bytes += text.len();
            parts.push(ExtraText {
                weight: part.weight,
                text,
            });
        }
    }
    serde_json::to_value(parts).unwrap_or(Value::Array(Vec::new()))
}

/// Stores each item's extra text (the trigger recomputes the vector of a
/// row whose text changed).
async fn store_extra(
    conn: &mut PgConnection,
    ids: &[Uuid],
    extra: &[Value],
) -> Result<(), SearchError> {
    timed(
        "search.extra",
        sqlx::query(
            "UPDATE item i SET search_extra = e.extra
             FROM unnest($1::uuid[], $2::jsonb[]) AS e(id, extra)
             WHERE i.id = e.id AND i.search_extra IS DISTINCT FROM e.extra",
        )
        .bind(ids)
        .bind(extra)
        .execute(&mut *conn),
    )
    .await?;
    Ok(())
}

/// Refreshes the extra text of every item of `ids` (a reindex chunk):
/// asks the plugins again, or clears what plugins no longer active had
/// given.
pub async fn refresh_extra_all(
    state: &AppState,
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<(), SearchError> {
    if !has_implementors(state) {
        timed(
            "search.extra",
            sqlx::query(
                "UPDATE item SET search_extra = '[]'
                 WHERE id = ANY($1) AND search_extra <> '[]'",
            )
            .bind(ids)
            .execute(&mut *conn),
        )
        .await?;
        return Ok(());
    }
    let items = crate::item::store::find_many(&mut *conn, ids)
        .await
        .map_err(to_search_error)?;
    let mut found = Vec::with_capacity(items.len());
    let mut extra = Vec::with_capacity(items.len());
    for item in &items {
        found.push(item.id);
        extra.push(extra_text(state, item).await);
    }
    store_extra(conn, &found, &extra).await
}

fn to_search_error(e: ItemError) -> SearchError {
    match e {
        ItemError::Db(e) => SearchError::Db(e),
        other => SearchError::Index(other.to_string()),
    }
}
