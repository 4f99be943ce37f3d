//! SQL for item types, items and revisions. Each function takes an
//! executor so the caller owns the transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, types::Json};
use uuid::Uuid;

use super::field::{RefTarget, References};
use super::{
    FieldDef, Item, ItemError, ItemPage, ItemStatus, ItemType, ListSpec, Revision, SortKey,
    SortOrder,
};
use crate::db::{DbError, timed};

#[derive(sqlx::FromRow)]
struct TypeRow {
    #[sqlx(rename = "type")]
    type_name: String,
    label: String,
    description: String,
    has_title: bool,
    title_label: String,
    plugin: String,
    fields: Json<Vec<FieldDef>>,
}

impl From<TypeRow> for ItemType {
    fn from(r: TypeRow) -> Self {
        ItemType {
            type_name: r.type_name,
            label: r.label,
            description: r.description,
            has_title: r.has_title,
            title_label: r.title_label,
            plugin: r.plugin,
            fields: r.fields.0,
        }
    }
}

const TYPE_COLUMNS: &str = "type, label, description, has_title, title_label, plugin, fields";

pub async fn insert_type(db: impl PgExecutor<'_>, t: &ItemType) -> Result<(), ItemError> {
    let r = timed(
        "item_type.insert",
        sqlx::query(
            "INSERT INTO item_type (type, label, description, has_title, title_label, plugin, fields)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.type_name)
        .bind(&t.label)
        .bind(&t.description)
        .bind(t.has_title)
        .bind(&t.title_label)
        .bind(&t.plugin)
        .bind(Json(&t.fields))
        .execute(db),
    )
    .await
    .map_err(DbError::from);
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.constraint() == Some("item_type_pkey") => {
            Err(ItemError::TypeExists(t.type_name.clone()))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn update_type(db: impl PgExecutor<'_>, t: &ItemType) -> Result<bool, ItemError> {
    let r = timed(
        "item_type.update",
        sqlx::query(
            "UPDATE item_type SET label = $2, description = $3, has_title = $4,
                    title_label = $5, fields = $6
             WHERE type = $1",
        )
        .bind(&t.type_name)
        .bind(&t.label)
        .bind(&t.description)
        .bind(t.has_title)
        .bind(&t.title_label)
        .bind(Json(&t.fields))
        .execute(db),
    )
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn delete_type(db: impl PgExecutor<'_>, name: &str) -> Result<bool, DbError> {
    let r = timed(
        "item_type.delete",
        sqlx::query("DELETE FROM item_type WHERE type = $1")
            .bind(name)
            .execute(db),
    )
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn find_type(db: impl PgExecutor<'_>, name: &str) -> Result<Option<ItemType>, ItemError> {
    let row = timed(
        "item_type.find",
        sqlx::query_as::<_, TypeRow>(&format!(
            "SELECT {TYPE_COLUMNS} FROM item_type WHERE type = $1"
        ))
        .bind(name)
        .fetch_optional(db),
    )
    .await?;
    Ok(row.map(Into::into))
}

/// Like [`find_type`], holding the type row `FOR SHARE` until the
/// transaction ends: an item created under this definition commits before
/// a change of the type checks existing items (`item::schema`).
pub async fn find_type_for_share(
    db: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<ItemType>, ItemError> {
    let row = timed(
        "item_type.find_for_share",
        sqlx::query_as::<_, TypeRow>(&format!(
            "SELECT {TYPE_COLUMNS} FROM item_type WHERE type = $1 FOR SHARE"
        ))
        .bind(name)
        .fetch_optional(db),
    )
    .await?;
    Ok(row.map(Into::into))
}

pub async fn list_types(db: impl PgExecutor<'_>) -> Result<Vec<ItemType>, ItemError> {
    let rows = timed(
        "item_type.list",
        sqlx::query_as::<_, TypeRow>(&format!(
            "SELECT {TYPE_COLUMNS} FROM item_type ORDER BY type"
        ))
        .fetch_all(db),
    )
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    id: Uuid,
    #[sqlx(rename = "type")]
    item_type: String,
    title: String,
    author: Option<Uuid>,
    status: i16,
    created: DateTime<Utc>,
    changed: DateTime<Utc>,
    promote: bool,
    sticky: bool,
    fields: Value,
    stage_id: String,
    revision_id: Option<Uuid>,
}

impl From<ItemRow> for Item {
    fn from(r: ItemRow) -> Self {
        Item {
            id: r.id,
            item_type: r.item_type,
            title: r.title,
            author: r.author,
            status: ItemStatus::from_db(r.status),
            created: r.created,
            changed: r.changed,
            promote: r.promote,
            sticky: r.sticky,
            fields: r.fields,
            stage_id: r.stage_id,
            revision_id: r.revision_id,
        }
    }
}

/// The item as `$stage` sees it: live or created in the stage, with the
/// stage's revision laid over the live row where there is one.
const STAGED_SELECT: &str = "
    SELECT i.id, i.type, COALESCE(r.title, i.title) AS title, i.author,
           COALESCE(r.status, i.status) AS status, i.created,
           COALESCE(a.changed, i.changed) AS changed,
           COALESCE(r.promote, i.promote) AS promote, COALESCE(r.sticky, i.sticky) AS sticky,
           COALESCE(r.fields, i.fields) AS fields, i.stage_id,
           COALESCE(a.revision_id, i.revision_id) AS revision_id
    FROM item i
    LEFT JOIN stage_association a ON a.item_id = i.id AND a.stage_id = $1
    LEFT JOIN item_revision r ON r.id = a.revision_id
    WHERE i.stage_id IN ('live', $1)";

pub async fn find(
    db: impl PgExecutor<'_>,
    stage: &str,
    id: Uuid,
) -> Result<Option<Item>, ItemError> {
    let row = timed(
        "item.find",
        sqlx::query_as::<_, ItemRow>(&format!("{STAGED_SELECT} AND i.id = $2"))
            .bind(stage)
            .bind(id)
            .fetch_optional(db),
    )
    .await?;
    Ok(row.map(Into::into))
}

/// The rows of `ids` that exist, as stored (not as any stage sees them),
/// in id order.
pub async fn find_many(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<Item>, ItemError> {
    let rows = timed(
        "item.find_many",
        sqlx::query_as::<_, ItemRow>(
            "SELECT id, type, title, author, status, created, changed, promote, sticky,
                    fields, stage_id, revision_id
             FROM item WHERE id = ANY($1) ORDER BY id",
        )
        .bind(ids)
        .fetch_all(db),
    )
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Holds a share lock on the stage row for the rest of the transaction,
/// so a publish of that stage (which takes it `FOR UPDATE`) either sees
/// this write committed or waits for it, and never deletes a stage edit
/// it did not apply. Taken before any item row lock, in the same order as
/// publish, so the two cannot deadlock. Live needs no lock.
pub async fn hold_stage(db: impl PgExecutor<'_>, stage: &str) -> Result<(), DbError> {
    if stage == crate::cache::LIVE {
        return Ok(());
    }
    timed(
        "stage.share_lock",
        sqlx::query("SELECT 1 FROM stage WHERE id = $1 FOR SHARE")
            .bind(stage)
            .execute(db),
    )
    .await?;
    Ok(())
}

/// Like [`find`], locking the item row for the rest of the transaction
/// against other writes of it. `FOR NO KEY UPDATE`: saves of other items
/// that reference this one (and lock it `FOR KEY SHARE`) go on.
pub async fn find_for_update(
    db: impl PgExecutor<'_>,
    stage: &str,
    id: Uuid,
) -> Result<Option<Item>, ItemError> {
    let row = timed(
        "item.find_for_update",
        sqlx::query_as::<_, ItemRow>(&format!(
            "{STAGED_SELECT} AND i.id = $2 FOR NO KEY UPDATE OF i"
        ))
        .bind(stage)
        .bind(id)
        .fetch_optional(db),
    )
    .await?;
    Ok(row.map(Into::into))
}

/// Like [`find_for_update`], but `FOR UPDATE`: the item is about to be
/// deleted, so a save about to reference it waits for the delete (and then
/// finds it gone), and a save that referenced it first is committed before
/// the delete looks for uses.
pub async fn find_for_delete(
    db: impl PgExecutor<'_>,
    stage: &str,
    id: Uuid,
) -> Result<Option<Item>, ItemError> {
    let row = timed(
        "item.find_for_delete",
        sqlx::query_as::<_, ItemRow>(&format!("{STAGED_SELECT} AND i.id = $2 FOR UPDATE OF i"))
            .bind(stage)
            .bind(id)
            .fetch_optional(db),
    )
    .await?;
    Ok(row.map(Into::into))
}

pub async fn list(db: &sqlx::PgPool, stage: &str, spec: &ListSpec) -> Result<ItemPage, ItemError> {
    let column = match spec.sort {
        SortKey::Created => "created",
        SortKey::Changed => "changed",
        SortKey::Title => "lower(title)",
    };
    let dir = match spec.order {
        SortOrder::Asc => "ASC",
        SortOrder::Desc => "DESC",
    };
    let first = if spec.promoted_first {
        "promote DESC, sticky DESC, "
    } else {
        ""
    };
    // Column and direction come from the enums above, never from input.
    let base = format!(
        "WITH v AS ({STAGED_SELECT}) SELECT * FROM v WHERE status = 1 AND ($2::text IS NULL OR type = $2)"
    );
    let offset = i64::from(spec.page.saturating_sub(1)) * i64::from(spec.per_page);
    let rows = timed(
        "item.list",
        sqlx::query_as::<_, ItemRow>(&format!(
            "{base} ORDER BY {first}{column} {dir}, id {dir} LIMIT $3 OFFSET $4"
        ))
        .bind(stage)
        .bind(spec.item_type.as_deref())
        .bind(i64::from(spec.per_page))
        .bind(offset)
        .fetch_all(db),
    )
    .await?;
    let total: i64 = timed(
        "item.count",
        sqlx::query_scalar(&format!("SELECT count(*) FROM ({base}) c"))
            .bind(stage)
            .bind(spec.item_type.as_deref())
            .fetch_one(db),
    )
    .await?;
    Ok(ItemPage {
        items: rows.into_iter().map(Into::into).collect(),
        total,
        page: spec.page,
        per_page: spec.per_page,
    })
}

pub async fn insert_item(db: impl PgExecutor<'_>, item: &Item) -> Result<(), ItemError> {
    timed(
        "item.insert",
        sqlx::query(
            "INSERT INTO item (id, type, title, author, status, created, changed, promote,
                               sticky, fields, stage_id, revision_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(item.id)
        .bind(&item.item_type)
        .bind(&item.title)
        .bind(item.author)
        .bind(item.status.to_db())
        .bind(item.created)
        .bind(item.changed)
        .bind(item.promote)
        .bind(item.sticky)
        .bind(&item.fields)
        .bind(&item.stage_id)
        .bind(item.revision_id)
        .execute(db),
    )
    .await?;
    Ok(())
}

/// Writes `item`'s values into its row (title, status, flags, fields,
/// changed, current revision, stage).
pub async fn update_row(db: impl PgExecutor<'_>, item: &Item) -> Result<(), ItemError> {
    timed(
        "item.update",
        sqlx::query(
            "UPDATE item SET title = $2, status = $3, changed = $4, promote = $5, sticky = $6,
                    fields = $7, revision_id = $8, stage_id = $9
             WHERE id = $1",
        )
        .bind(item.id)
        .bind(&item.title)
        .bind(item.status.to_db())
        .bind(item.changed)
        .bind(item.promote)
        .bind(item.sticky)
        .bind(&item.fields)
        .bind(item.revision_id)
        .bind(&item.stage_id)
        .execute(db),
    )
    .await?;
    Ok(())
}

/// The values one revision holds.
#[derive(Debug, Clone)]
pub struct RevisionValues {
    pub item_id: Uuid,
    pub stage_id: String,
    pub title: String,
    pub status: ItemStatus,
    pub promote: bool,
    pub sticky: bool,
    pub fields: Value,
}

pub async fn find_revision(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<RevisionValues>, ItemError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        item_id: Uuid,
        stage_id: String,
        title: String,
        status: i16,
        promote: bool,
        sticky: bool,
        fields: Value,
    }
    let row = timed(
        "item_revision.find",
        sqlx::query_as::<_, Row>(
            "SELECT item_id, stage_id, title, status, promote, sticky, fields
             FROM item_revision WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(db),
    )
    .await?;
    Ok(row.map(|r| RevisionValues {
        item_id: r.item_id,
        stage_id: r.stage_id,
        title: r.title,
        status: ItemStatus::from_db(r.status),
        promote: r.promote,
        sticky: r.sticky,
        fields: r.fields,
    }))
}

/// Inserts the revision `item.revision_id` holding `item`'s values.
pub async fn insert_revision(
    db: impl PgExecutor<'_>,
    item: &Item,
    stage: &str,
    author: Option<Uuid>,
    log: &str,
) -> Result<(), ItemError> {
    let id = item.revision_id.unwrap_or_else(Uuid::now_v7);
    timed(
        "item_revision.insert",
        sqlx::query(
            "INSERT INTO item_revision (id, item_id, stage_id, title, status, promote, sticky,
                                        fields, author, log, created)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id)
        .bind(item.id)
        .bind(stage)
        .bind(&item.title)
        .bind(item.status.to_db())
        .bind(item.promote)
        .bind(item.sticky)
        .bind(&item.fields)
        .bind(author)
        .bind(log)
        .bind(item.changed)
        .execute(db),
    )
    .await?;
    Ok(())
}

/// Points `stage`'s view of live item `item` at `revision`.
pub async fn associate(
    db: impl PgExecutor<'_>,
    stage: &str,
    item: Uuid,
    revision: Uuid,
) -> Result<(), ItemError> {
    timed(
        "stage_association.upsert",
        sqlx::query(
            "INSERT INTO stage_association (stage_id, item_id, revision_id, changed)
             VALUES ($1, $2, $3, now())
             ON CONFLICT (stage_id, item_id)
             DO UPDATE SET revision_id = EXCLUDED.revision_id, changed = now()",
        )
        .bind(stage)
        .bind(item)
        .bind(revision)
        .execute(db),
    )
    .await?;
    Ok(())
}

pub async fn delete_item(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), ItemError> {
    timed(
        "item.delete",
        sqlx::query("DELETE FROM item WHERE id = $1")
            .bind(id)
            .execute(db),
    )
    .await?;
    Ok(())
}

pub async fn revisions(db: impl PgExecutor<'_>, id: Uuid) -> Result<Vec<Revision>, ItemError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        item_id: Uuid,
        stage_id: String,
        title: String,
        status: i16,
        fields: Value,
        author: Option<Uuid>,
        log: String,
        created: DateTime<Utc>,
    }
    let rows = timed(
        "item_revision.list",
        sqlx::query_as::<_, Row>(
            "SELECT id, item_id, stage_id, title, status, fields, author, log, created
             FROM item_revision WHERE item_id = $1 ORDER BY id DESC",
        )
        .bind(id)
        .fetch_all(db),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Revision {
            id: r.id,
            item_id: r.item_id,
            stage_id: r.stage_id,
            title: r.title,
            status: ItemStatus::from_db(r.status),
            fields: r.fields,
            author: r.author,
            log: r.log,
            created: r.created,
        })
        .collect())
}

/// The references among `refs` whose target does not exist. With `lock`,
/// the targets found stay locked `FOR KEY SHARE` until the transaction
/// ends, so a delete of one waits for it and then sees the reference (see
/// `item::references`).
pub async fn missing_references(
    db: &mut sqlx::PgConnection,
    refs: &References,
    lock: bool,
) -> Result<Vec<(String, RefTarget, Uuid)>, ItemError> {
    if refs.refs.is_empty() {
        return Ok(vec![]);
    }
    let mut missing = Vec::new();
    for (target, table, query) in [
        (RefTarget::Item, "item", "reference.items"),
        (RefTarget::User, "users", "reference.users"),
        (RefTarget::Term, "category_tag", "reference.terms"),
    ] {
        let ids: Vec<Uuid> = refs
            .refs
            .iter()
            .filter(|(_, t, _)| *t == target)
            .map(|(_, _, id)| *id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let lock = if lock { "FOR KEY SHARE" } else { "" };
        // `table` is one of the three constants above, `lock` one of two.
        let found: Vec<Uuid> = timed(
            query,
            sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE id = ANY($1) {lock}"))
                .bind(&ids)
                .fetch_all(&mut *db),
        )
        .await?;
        missing.extend(
            refs.refs
                .iter()
                .filter(|(_, t, id)| *t == target && !found.contains(id))
                .cloned(),
        );
    }
    Ok(missing)
}

/// The filters of the content administration listing.
#[derive(Debug, Clone)]
pub struct AdminFilter {
    pub item_type: Option<String>,
    pub status: Option<ItemStatus>,
    pub author: Option<Uuid>,
    /// Case-insensitive part of the title.
    pub title: Option<String>,
    /// Only items the stage changes (created in it or edited in it).
    pub changed_only: bool,
    pub sort: SortKey,
    pub order: SortOrder,
    pub page: u32,
    pub per_page: u32,
}

/// One row of the content administration listing.
#[derive(Debug, Clone)]
pub struct AdminRow {
    pub item: Item,
    /// The stage changes the item (created or edited in it).
    pub staged: bool,
}

/// Every item as `stage` sees it, published or not, filtered, sorted and
/// paged (never cached: editors see their changes at once); and the total.
pub async fn admin_list(
    db: impl PgExecutor<'_> + Copy,
    stage: &str,
    f: &AdminFilter,
) -> Result<(Vec<AdminRow>, i64), ItemError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        item: ItemRow,
        staged: bool,
    }
    let column = match f.sort {
        SortKey::Created => "created",
        SortKey::Changed => "changed",
        SortKey::Title => "lower(title)",
    };
    let dir = match f.order {
        SortOrder::Asc => "ASC",
        SortOrder::Desc => "DESC",
    };
    let pattern = f.title.as_ref().map(|t| {
        let escaped = t
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    // Column and direction come from the enums above, never from input.
    let base = format!(
        "WITH v AS (
             SELECT s.*, (s.stage_id <> 'live' OR EXISTS (
                 SELECT 1 FROM stage_association a WHERE a.item_id = s.id AND a.stage_id = $1
             )) AS staged
             FROM ({STAGED_SELECT}) s
         )
         SELECT * FROM v
         WHERE ($2::text IS NULL OR type = $2)
           AND ($3::int2 IS NULL OR status = $3)
           AND ($4::uuid IS NULL OR author = $4)
           AND ($5::text IS NULL OR title ILIKE $5 ESCAPE '\\')
           AND (NOT $6 OR staged)"
    );
    let offset = i64::from(f.page.saturating_sub(1)) * i64::from(f.per_page);
    let rows: Vec<Row> = timed(
        "item.admin_list",
        sqlx::query_as(&format!(
            "{base} ORDER BY {column} {dir}, id {dir} LIMIT $7 OFFSET $8"
        ))
        .bind(stage)
        .bind(f.item_type.as_deref())
        .bind(f.status.map(ItemStatus::to_db))
        .bind(f.author)
        .bind(pattern.as_deref())
        .bind(f.changed_only)
        .bind(i64::from(f.per_page))
        .bind(offset)
        .fetch_all(db),
    )
    .await?;
    let total: i64 = timed(
        "item.admin_count",
        sqlx::query_scalar(&format!("SELECT count(*) FROM ({base}) c"))
            .bind(stage)
            .bind(f.item_type.as_deref())
            .bind(f.status.map(ItemStatus::to_db))
            .bind(f.author)
            .bind(pattern.as_deref())
            .bind(f.changed_only)
            .fetch_one(db),
    )
    .await?;
    Ok((
        rows.into_iter()
            .map(|r| AdminRow {
                item: r.item.into(),
                staged: r.staged,
            })
            .collect(),
        total,
    ))
}
