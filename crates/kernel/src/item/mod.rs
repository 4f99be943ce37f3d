//! Items: item types with their field definitions, items, revisions, and
//! the cached reads and invalidating writes around them.
//!
//! Every write of an item goes through [`write::apply`] (the JSON API, the
//! HTML pages and stage publishing alike; [`create`], [`update`] and
//! [`delete`] are one-write transactions around it), and its effects run
//! after the transaction committed: invalidation of `item:{id}`,
//! `item_list:{type}`, `item_list:all` for live changes and `stage:{id}` for
//! changes only a stage sees, then the item taps. Reads ([`load`], [`list`])
//! go through the cache with stage-scoped keys.

pub mod admin;
pub mod display;
pub mod field;
pub mod list;
pub mod references;
pub mod routes;
pub mod schema;
pub mod store;
pub mod structure;
pub mod taps;
pub mod write;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::{CacheKey, CacheTag, Loaded};
use crate::db::DbError;
use crate::stage::id::StageId;
use crate::state::AppState;
use crate::tasks::TaskError;

pub use field::{Failures, FieldDef, FieldKind, FieldValues};
pub use list::{ListSpec, SortKey, SortOrder};
pub use references::{ItemReference, references_to_user};
pub use schema::TypeConflicts;
pub use write::{Change, ChangeKind, Effects, Write, WriteHook};

#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    #[error("item {0} not found")]
    NotFound(Uuid),
    #[error("item type `{0}` not found")]
    TypeNotFound(String),
    #[error("item type `{0}` already exists")]
    TypeExists(String),
    /// The type still has items.
    #[error("item type `{0}` still has items")]
    TypeInUse(String),
    /// New field definitions refuse values existing items hold.
    #[error("{}", .0.message())]
    TypeConflict(TypeConflicts),
    /// Current values of other items reference the item.
    #[error("item {id} is referenced by {}; remove those references first", references::items_phrase(.uses))]
    InUse { id: Uuid, uses: Vec<ItemReference> },
    /// Invalid item or type values; the details list every failing field.
    #[error("invalid values")]
    Invalid(Failures),
    /// The change is not possible in the selected stage.
    #[error("{0}")]
    StageConflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cached item could not be decoded: {0}")]
    Decode(#[from] serde_json::Error),
    /// The task committing the write could not run (shutdown) or panicked.
    #[error(transparent)]
    Task(#[from] TaskError),
}

impl crate::error::HttpError for ItemError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            ItemError::NotFound(_) => (S::NOT_FOUND, "item_not_found"),
            ItemError::TypeNotFound(_) => (S::NOT_FOUND, "item_type_not_found"),
            ItemError::TypeExists(_) => (S::CONFLICT, "item_type_exists"),
            ItemError::TypeInUse(_) => (S::CONFLICT, "item_type_in_use"),
            ItemError::TypeConflict(_) => (S::CONFLICT, "item_type_conflict"),
            ItemError::InUse { .. } => (S::CONFLICT, "item_in_use"),
            ItemError::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "validation_failed"),
            ItemError::StageConflict(_) => (S::CONFLICT, "stage_conflict"),
            ItemError::Db(e) => e.status_code(),
            ItemError::Decode(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
            ItemError::Task(TaskError::ShuttingDown(_)) => {
                (S::SERVICE_UNAVAILABLE, "shutting_down")
            }
            ItemError::Task(TaskError::Panicked(_)) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn error_details(&self) -> serde_json::Value {
        match self {
            ItemError::Invalid(f) => field::failures_json(f),
            ItemError::TypeConflict(c) => c.details(),
            ItemError::InUse { uses, .. } => references::uses_json(uses),
            _ => serde_json::Value::Null,
        }
    }
}

impl From<sqlx::Error> for ItemError {
    fn from(e: sqlx::Error) -> Self {
        ItemError::Db(e.into())
    }
}

impl ItemError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut f = Failures::new();
        f.insert(field.to_owned(), vec![message.into()]);
        ItemError::Invalid(f)
    }
}

/// Published or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    Published,
    Unpublished,
}

impl ItemStatus {
    pub fn to_db(self) -> i16 {
        match self {
            ItemStatus::Published => 1,
            ItemStatus::Unpublished => 0,
        }
    }

    pub fn from_db(v: i16) -> Self {
        if v == 1 {
            ItemStatus::Published
        } else {
            ItemStatus::Unpublished
        }
    }
}

/// An item type.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemType {
    /// Machine name, `[a-z][a-z0-9_]{0,31}`.
    #[serde(rename = "type")]
    pub type_name: String,
    pub label: String,
    pub description: String,
    pub has_title: bool,
    pub title_label: String,
    /// The plugin that defines it, or `kernel`.
    pub plugin: String,
    pub fields: Vec<FieldDef>,
}

/// An item as seen from one stage.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Item {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub item_type: String,
    pub title: String,
    pub author: Option<Uuid>,
    pub status: ItemStatus,
    pub created: DateTime<Utc>,
    pub changed: DateTime<Utc>,
    pub promote: bool,
    pub sticky: bool,
    /// `{"field_x": {"value": ...}}`; multi-value fields hold arrays.
    #[schema(value_type = Object)]
    pub fields: Value,
    /// `live`, or the stage the item was created in (until published).
    pub stage_id: String,
    /// The revision shown.
    pub revision_id: Option<Uuid>,
}

impl Item {
    pub fn is_published(&self) -> bool {
        self.status == ItemStatus::Published
    }
}

/// One saved version of an item.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Revision {
    pub id: Uuid,
    pub item_id: Uuid,
    pub stage_id: String,
    pub title: String,
    pub status: ItemStatus,
    #[schema(value_type = Object)]
    pub fields: Value,
    pub author: Option<Uuid>,
    pub log: String,
    pub created: DateTime<Utc>,
}

/// A page of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemPage {
    pub items: Vec<Item>,
    pub total: i64,
    pub page: u32,
    pub per_page: u32,
}

impl ListSpec {
    fn cache_key(&self, stage: &StageId) -> Result<CacheKey, ItemError> {
        // `type:{name}` and `any` cannot collide, even for a type named
        // `all`.
        let scope = match self.item_type.as_deref() {
            Some(t) => format!("type:{t}"),
            None => "any".to_owned(),
        };
        let key = format!(
            "item_list:{}{}:{}:{}:{}:{}",
            if self.promoted_first { "front:" } else { "" },
            scope,
            sort_name(self.sort),
            if self.order == SortOrder::Asc {
                "asc"
            } else {
                "desc"
            },
            self.page,
            self.per_page
        );
        CacheKey::staged(stage.as_str(), &key).map_err(internal)
    }
}

fn sort_name(s: SortKey) -> &'static str {
    match s {
        SortKey::Created => "created",
        SortKey::Changed => "changed",
        SortKey::Title => "title",
    }
}

/// A new item.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    #[serde(rename = "type")]
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub item_type: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: Option<ItemStatus>,
    #[serde(default)]
    pub promote: bool,
    #[serde(default)]
    pub sticky: bool,
    /// Field values; a key given twice (at any depth) is refused.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: FieldValues,
}

/// Changes to an item; absent members keep their value. `fields` members
/// replace the named fields (null removes one); a key given twice (at any
/// depth) is refused.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    pub title: Option<String>,
    pub status: Option<ItemStatus>,
    pub promote: Option<bool>,
    pub sticky: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub fields: Option<FieldValues>,
    /// Revision log message.
    pub log: Option<String>,
}

fn internal(e: crate::cache::CacheError) -> ItemError {
    ItemError::Db(DbError::Unavailable(format!("cache key: {e}")))
}

/// The cache tags of a live change to an item of `item_type`.
pub fn live_tags(id: Uuid, item_type: &str) -> Vec<CacheTag> {
    let mut tags = vec![item_tag(id)];
    tags.extend(
        [format!("item_list:{item_type}"), "item_list:all".to_owned()]
            .into_iter()
            .filter_map(|t| CacheTag::new(t).ok()),
    );
    tags
}

/// The tags a change made in `stage` invalidates.
pub fn change_tags(stage: &StageId, id: Uuid, item_type: &str) -> Vec<CacheTag> {
    if stage.is_live() {
        live_tags(id, item_type)
    } else {
        CacheTag::stage(stage.as_str()).into_iter().collect()
    }
}

/// Tags of a value cached for `stage`: the value's own tags, plus
/// `stage:{id}` outside live so publishing drops every preview value.
fn scoped_tags(stage: &StageId, mut tags: Vec<CacheTag>) -> Vec<CacheTag> {
    if !stage.is_live()
        && let Ok(t) = CacheTag::stage(stage.as_str())
    {
        tags.push(t);
    }
    tags
}

// ---------------------------------------------------------------- types

pub async fn create_type(db: &PgPool, t: &ItemType) -> Result<ItemType, ItemError> {
    check_type(t)?;
    store::insert_type(db, t).await?;
    Ok(t.clone())
}

/// Replaces a type's definition. Existing items follow in the same
/// transaction: values of removed fields are removed, and a change that
/// existing values cannot satisfy is refused (see [`schema`]).
pub async fn update_type(state: &AppState, t: &ItemType) -> Result<ItemType, ItemError> {
    check_type(t)?;
    schema::update_type(state, t).await
}

pub async fn delete_type(db: &PgPool, name: &str) -> Result<(), ItemError> {
    match store::delete_type(db, name).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ItemError::TypeNotFound(name.to_owned())),
        Err(e) if e.constraint() == Some("item_type_fkey") => {
            Err(ItemError::TypeInUse(name.to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn get_type(db: &PgPool, name: &str) -> Result<ItemType, ItemError> {
    store::find_type(db, name)
        .await?
        .ok_or_else(|| ItemError::TypeNotFound(name.to_owned()))
}

fn check_type(t: &ItemType) -> Result<(), ItemError> {
    let mut f = field::check_defs(&t.fields);
    let name_ok = crate::text::is_machine_name(&t.type_name, 32);
    if !name_ok {
        f.entry("type".into())
            .or_default()
            .push("must be 1-32 of a-z, 0-9, _ starting with a letter".into());
    }
    if t.label.trim().is_empty() {
        f.entry("label".into())
            .or_default()
            .push("must not be blank".into());
    }
    if f.is_empty() {
        Ok(())
    } else {
        Err(ItemError::Invalid(f))
    }
}

// ---------------------------------------------------------------- items

/// Validates an edit's title and fields against the type, including that
/// referenced items, users and terms exist; those found stay locked
/// `FOR KEY SHARE` until the transaction ends, so none can be deleted
/// before the edit commits (see [`references`]). `refused` are the
/// failures of the body itself ([`FieldValues::refusals`]), reported with
/// the others.
pub async fn validate_values(
    db: &mut sqlx::PgConnection,
    t: &ItemType,
    title: &str,
    fields: &Map<String, Value>,
    refused: Failures,
) -> Result<(), ItemError> {
    let (mut failures, refs) = field::validate(&t.fields, fields);
    for (name, messages) in refused {
        failures.entry(name).or_default().extend(messages);
    }
    finish_validation(db, t, title, failures, refs, true).await
}

/// [`validate_values`] for stored values a publish moves to live. Their
/// targets are not locked: the values were committed when they were
/// written, so a delete of a target already sees them as uses.
pub async fn validate_stored(
    db: &mut sqlx::PgConnection,
    t: &ItemType,
    title: &str,
    fields: &Map<String, Value>,
) -> Result<(), ItemError> {
    let (failures, refs) = field::validate(&t.fields, fields);
    finish_validation(db, t, title, failures, refs, false).await
}

async fn finish_validation(
    db: &mut sqlx::PgConnection,
    t: &ItemType,
    title: &str,
    mut failures: Failures,
    refs: field::References,
    lock_targets: bool,
) -> Result<(), ItemError> {
    if t.has_title {
        if title.trim().is_empty() {
            failures
                .entry("title".into())
                .or_default()
                .push(format!("{} must not be blank", t.title_label));
        } else if title.chars().count() > 255 {
            failures
                .entry("title".into())
                .or_default()
                .push("at most 255 characters".into());
        }
    }
    for (name, target, id) in store::missing_references(db, &refs, lock_targets).await? {
        failures
            .entry(name)
            .or_default()
            .push(format!("{target:?} {id} does not exist").to_lowercase());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ItemError::Invalid(failures))
    }
}

/// Creates an item in `stage`, with its first revision, in one transaction
/// (see [`write::Write::Create`]).
pub async fn create(
    state: &AppState,
    stage: &StageId,
    author: Option<Uuid>,
    new: NewItem,
) -> Result<Item, ItemError> {
    write::write_one(
        state,
        Write::Create {
            stage: stage.clone(),
            author,
            new,
        },
    )
    .await
}

/// Applies `patch` as seen from `stage` (see [`write::Write::Update`]).
pub async fn update(
    state: &AppState,
    stage: &StageId,
    id: Uuid,
    editor: Option<Uuid>,
    patch: ItemPatch,
) -> Result<Item, ItemError> {
    write::write_one(
        state,
        Write::Update {
            stage: stage.clone(),
            id,
            editor,
            patch,
        },
    )
    .await
}

/// Deletes an item (and its revisions). Inside a stage only items created
/// in that stage can be deleted; an item other items' current values
/// reference is not deleted ([`ItemError::InUse`]).
pub async fn delete(state: &AppState, stage: &StageId, id: Uuid) -> Result<Item, ItemError> {
    write::write_one(
        state,
        Write::Delete {
            stage: stage.clone(),
            id,
        },
    )
    .await
}

/// The item as seen from `stage`, through the cache.
pub async fn load(state: &AppState, stage: &StageId, id: Uuid) -> Result<Option<Item>, ItemError> {
    let key = CacheKey::staged(stage.as_str(), &format!("item:{id}")).map_err(internal)?;
    let db = state.db.clone();
    let st = stage.clone();
    let cached = state
        .cache
        .get_or_load(&key, || async move {
            let Some(item) = store::find(&db, st.as_str(), id).await? else {
                return Ok::<_, ItemError>(None);
            };
            let tags = scoped_tags(&st, vec![item_tag(id)]);
            Ok(Some(Loaded {
                bytes: Bytes::from(serde_json::to_vec(&item)?),
                tags,
            }))
        })
        .await?;
    match cached {
        Some(c) => Ok(Some(serde_json::from_slice(&c.bytes)?)),
        None => Ok(None),
    }
}

pub fn item_tag(id: Uuid) -> CacheTag {
    CacheTag::for_id("item", id)
}

/// The tag of what shows a type's definition (its labels): item pages.
pub fn type_tag(name: &str) -> Option<CacheTag> {
    CacheTag::new(format!("item_type:{name}")).ok()
}

/// A page of published items as seen from `stage`, through the cache;
/// tagged with the listing tags and `item:{id}` of every item shown.
pub async fn list(
    state: &AppState,
    stage: &StageId,
    spec: &ListSpec,
) -> Result<ItemPage, ItemError> {
    // Deep pages are rare and each would be its own cache entry; reading
    // them straight from the database keeps the number of listing keys an
    // anonymous visitor can create bounded.
    if spec.page > ListSpec::MAX_CACHED_PAGE {
        return store::list(&state.db, stage.as_str(), spec).await;
    }
    let key = spec.cache_key(stage)?;
    let db = state.db.clone();
    let st = stage.clone();
    let spec2 = spec.clone();
    let cached = state
        .cache
        .get_or_load(&key, || async move {
            let page = store::list(&db, st.as_str(), &spec2).await?;
            let mut tags = vec![CacheTag::new("item_list:all").map_err(internal)?];
            if let Some(t) = &spec2.item_type {
                tags.push(CacheTag::new(format!("item_list:{t}")).map_err(internal)?);
            }
            tags.extend(page.items.iter().map(|i| item_tag(i.id)));
            Ok::<_, ItemError>(Some(Loaded {
                bytes: Bytes::from(serde_json::to_vec(&page)?),
                tags: scoped_tags(&st, tags),
            }))
        })
        .await?;
    match cached {
        Some(c) => Ok(serde_json::from_slice(&c.bytes)?),
        None => Ok(ItemPage {
            items: vec![],
            total: 0,
            page: spec.page,
            per_page: spec.per_page,
        }),
    }
}

pub async fn revisions(db: &PgPool, id: Uuid) -> Result<Vec<Revision>, ItemError> {
    store::revisions(db, id).await
}
