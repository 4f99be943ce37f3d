//! Categories: vocabularies (`category`) and their terms (`category_tag`,
//! optionally nested under a parent in the same category).
//!
//! Term reads are cached (`term:{id}`, `term_list:{category}`); every term
//! write invalidates both tags after its transaction committed.
//!
//! A term that current item values reference (live rows, unpublished stage
//! revisions; see `item::references`) is not deleted, nor a category holding
//! one: the delete is refused with 409 and the list of uses, so no item is
//! left unsaveable and no stage unpublishable.

pub mod admin;
pub mod page;
pub mod routes;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::cache::{CacheKey, CacheTag, Loaded};
use crate::db::{DbError, timed};
use crate::item::field::RefTarget;
use crate::item::references::{self, ItemReference};
use crate::item::{Failures, ItemError};
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum CategoryError {
    #[error("category `{0}` not found")]
    NotFound(String),
    #[error("term {0} not found")]
    TermNotFound(Uuid),
    #[error("category `{0}` already exists")]
    Exists(String),
    #[error("a term with this name already exists under the same parent")]
    TermExists,
    #[error("term {0} has child terms; delete or move them first")]
    HasChildren(Uuid),
    #[error("term {id} is referenced by {}; remove those references first", references::items_phrase(.uses))]
    TermInUse { id: Uuid, uses: Vec<ItemReference> },
    #[error("terms of category `{id}` are referenced by {}; remove those references first", references::items_phrase(.uses))]
    InUse {
        id: String,
        uses: Vec<ItemReference>,
    },
    #[error("invalid values")]
    Invalid(Failures),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cached term could not be decoded: {0}")]
    Decode(#[from] serde_json::Error),
}

impl crate::error::HttpError for CategoryError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            CategoryError::NotFound(_) => (S::NOT_FOUND, "category_not_found"),
            CategoryError::TermNotFound(_) => (S::NOT_FOUND, "term_not_found"),
            CategoryError::Exists(_) => (S::CONFLICT, "category_exists"),
            CategoryError::TermExists => (S::CONFLICT, "term_exists"),
            CategoryError::HasChildren(_) => (S::CONFLICT, "term_has_children"),
            CategoryError::TermInUse { .. } => (S::CONFLICT, "term_in_use"),
            CategoryError::InUse { .. } => (S::CONFLICT, "category_in_use"),
            CategoryError::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "validation_failed"),
            CategoryError::Db(e) => e.status_code(),
            CategoryError::Decode(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn error_details(&self) -> serde_json::Value {
        match self {
            CategoryError::Invalid(f) => crate::item::field::failures_json(f),
            CategoryError::TermInUse { uses, .. } | CategoryError::InUse { uses, .. } => {
                references::uses_json(uses)
            }
            _ => serde_json::Value::Null,
        }
    }
}

impl From<sqlx::Error> for CategoryError {
    fn from(e: sqlx::Error) -> Self {
        CategoryError::Db(e.into())
    }
}

/// Looking up term uses failed: only the database can fail there.
fn item_error(e: ItemError) -> CategoryError {
    match e {
        ItemError::Db(d) => CategoryError::Db(d),
        other => CategoryError::Db(DbError::Unavailable(other.to_string())),
    }
}

fn invalid(field: &str, msg: &str) -> CategoryError {
    let mut f = Failures::new();
    f.insert(field.to_owned(), vec![msg.to_owned()]);
    CategoryError::Invalid(f)
}

/// Maps constraint violations of category writes by name.
fn constraint(e: sqlx::Error) -> CategoryError {
    let e = DbError::from(e);
    match e.constraint() {
        Some("category_tag_name_key") => CategoryError::TermExists,
        Some("category_tag_name_not_blank") => invalid("name", "must not be blank"),
        Some("category_label_not_blank") => invalid("label", "must not be blank"),
        Some("category_id_valid") => {
            invalid("id", "must be 1-32 of a-z, 0-9, _ starting with a letter")
        }
        Some("category_tag_parent_fkey") => invalid("parent", "no such term"),
        _ => CategoryError::Db(e),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Category {
    pub id: String,
    pub label: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Term {
    pub id: Uuid,
    pub category_id: String,
    pub name: String,
    pub description: String,
    pub parent: Option<Uuid>,
    pub weight: i32,
    pub changed: DateTime<Utc>,
}

/// A new term, or the full new values of an existing one.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermInput {
    /// Not blank, at most 255 characters.
    #[schema(pattern = r"\S", max_length = 255)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A term of the same category.
    #[serde(default)]
    pub parent: Option<Uuid>,
    #[serde(default)]
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    pub weight: i32,
}

fn term_tags(id: Uuid, category: &str) -> Vec<CacheTag> {
    let mut tags = vec![CacheTag::for_id("term", id)];
    tags.extend(CacheTag::new(format!("term_list:{category}")).ok());
    tags
}

pub async fn create(db: impl PgExecutor<'_>, c: &Category) -> Result<Category, CategoryError> {
    let r = timed(
        "category.insert",
        sqlx::query("INSERT INTO category (id, label, description) VALUES ($1, $2, $3)")
            .bind(&c.id)
            .bind(&c.label)
            .bind(&c.description)
            .execute(db),
    )
    .await;
    match r {
        Ok(_) => Ok(c.clone()),
        Err(e) => match constraint(e) {
            CategoryError::Db(e) if e.constraint() == Some("category_pkey") => {
                Err(CategoryError::Exists(c.id.clone()))
            }
            other => Err(other),
        },
    }
}

pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Category>, CategoryError> {
    Ok(timed(
        "category.list",
        sqlx::query_as::<_, Category>("SELECT id, label, description FROM category ORDER BY id")
            .fetch_all(db),
    )
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, id: &str) -> Result<Category, CategoryError> {
    timed(
        "category.find",
        sqlx::query_as::<_, Category>("SELECT id, label, description FROM category WHERE id = $1")
            .bind(id)
            .fetch_optional(db),
    )
    .await?
    .ok_or_else(|| CategoryError::NotFound(id.to_owned()))
}

pub async fn update(db: impl PgExecutor<'_>, c: &Category) -> Result<Category, CategoryError> {
    let r = timed(
        "category.update",
        sqlx::query("UPDATE category SET label = $2, description = $3 WHERE id = $1")
            .bind(&c.id)
            .bind(&c.label)
            .bind(&c.description)
            .execute(db),
    )
    .await
    .map_err(constraint)?;
    if r.rows_affected() == 0 {
        return Err(CategoryError::NotFound(c.id.clone()));
    }
    Ok(c.clone())
}

/// Deletes a category and all its terms; refused while items reference
/// any of them.
pub async fn delete(state: &AppState, id: &str) -> Result<(), CategoryError> {
    let mut tx = state.db.begin().await?;
    // The category row first (no term can be added until this ends), then
    // its terms: saves referencing one have committed, later ones wait and
    // then find it gone.
    let found: Option<String> = timed(
        "category.lock",
        sqlx::query_scalar("SELECT id FROM category WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx),
    )
    .await?;
    if found.is_none() {
        return Err(CategoryError::NotFound(id.to_owned()));
    }
    let locked: Vec<Uuid> = timed(
        "category.lock_terms",
        sqlx::query_scalar(
            "SELECT id FROM category_tag WHERE category_id = $1 ORDER BY id FOR UPDATE",
        )
        .bind(id)
        .fetch_all(&mut *tx),
    )
    .await?;
    let uses = references::uses_of(&mut tx, RefTarget::Term, &locked, None)
        .await
        .map_err(item_error)?;
    if !uses.is_empty() {
        return Err(CategoryError::InUse {
            id: id.to_owned(),
            uses,
        });
    }
    // Children first is not needed: the whole category goes, and the
    // parent constraint is checked at the end of the statement.
    let terms: Vec<Uuid> = timed(
        "category.delete_terms",
        sqlx::query_scalar("DELETE FROM category_tag WHERE category_id = $1 RETURNING id")
            .bind(id)
            .fetch_all(&mut *tx),
    )
    .await?;
    let r = timed(
        "category.delete",
        sqlx::query("DELETE FROM category WHERE id = $1")
            .bind(id)
            .execute(&mut *tx),
    )
    .await?;
    if r.rows_affected() == 0 {
        return Err(CategoryError::NotFound(id.to_owned()));
    }
    tx.commit().await?;
    let mut tags: Vec<CacheTag> = CacheTag::new(format!("term_list:{id}"))
        .into_iter()
        .collect();
    tags.extend(terms.into_iter().map(|t| CacheTag::for_id("term", t)));
    state.cache.invalidate(&tags).await;
    Ok(())
}

const TERM_COLUMNS: &str = "id, category_id, name, description, parent, weight, changed";

async fn find_term(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Term>, CategoryError> {
    Ok(timed(
        "term.find",
        sqlx::query_as::<_, Term>(&format!(
            "SELECT {TERM_COLUMNS} FROM category_tag WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(db),
    )
    .await?)
}

fn check_term(input: &TermInput) -> Result<(), CategoryError> {
    let mut f = Failures::new();
    if input.name.trim().is_empty() {
        f.entry("name".into())
            .or_default()
            .push("must not be blank".into());
    } else if input.name.chars().count() > 255 {
        f.entry("name".into())
            .or_default()
            .push("at most 255 characters".into());
    }
    if f.is_empty() {
        Ok(())
    } else {
        Err(CategoryError::Invalid(f))
    }
}

/// Checks that `parent` is a term of `category` and, for an existing term
/// `id`, not the term itself or one of its descendants.
async fn check_parent(
    db: &mut sqlx::PgConnection,
    category: &str,
    parent: Option<Uuid>,
    id: Option<Uuid>,
) -> Result<(), CategoryError> {
    let Some(parent) = parent else { return Ok(()) };
    let p = find_term(&mut *db, parent)
        .await?
        .ok_or_else(|| invalid("parent", "no such term"))?;
    if p.category_id != category {
        return Err(invalid("parent", "belongs to another category"));
    }
    if let Some(id) = id {
        let cycle: bool = timed(
            "term.ancestors",
            sqlx::query_scalar(
                "WITH RECURSIVE up(id, parent) AS (
                     SELECT id, parent FROM category_tag WHERE id = $1
                     UNION SELECT t.id, t.parent FROM category_tag t JOIN up ON t.id = up.parent)
                 SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)",
            )
            .bind(parent)
            .bind(id)
            .fetch_one(&mut *db),
        )
        .await?;
        if cycle {
            return Err(invalid("parent", "would make the term its own ancestor"));
        }
    }
    Ok(())
}

pub async fn create_term(
    state: &AppState,
    category: &str,
    input: &TermInput,
) -> Result<Term, CategoryError> {
    check_term(input)?;
    let mut tx = state.db.begin().await?;
    get(&mut *tx, category).await?;
    check_parent(&mut tx, category, input.parent, None).await?;
    let term = timed(
        "term.insert",
        sqlx::query_as::<_, Term>(&format!(
            "INSERT INTO category_tag (id, category_id, name, description, parent, weight)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TERM_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(category)
        .bind(input.name.trim())
        .bind(&input.description)
        .bind(input.parent)
        .bind(input.weight)
        .fetch_one(&mut *tx),
    )
    .await
    .map_err(constraint)?;
    tx.commit().await?;
    state.cache.invalidate(&term_tags(term.id, category)).await;
    Ok(term)
}

pub async fn update_term(
    state: &AppState,
    id: Uuid,
    input: &TermInput,
) -> Result<Term, CategoryError> {
    check_term(input)?;
    let mut tx = state.db.begin().await?;
    let old = find_term(&mut *tx, id)
        .await?
        .ok_or(CategoryError::TermNotFound(id))?;
    check_parent(&mut tx, &old.category_id, input.parent, Some(id)).await?;
    let term = timed(
        "term.update",
        sqlx::query_as::<_, Term>(&format!(
            "UPDATE category_tag SET name = $2, description = $3, parent = $4, weight = $5,
                    changed = now()
             WHERE id = $1 RETURNING {TERM_COLUMNS}"
        ))
        .bind(id)
        .bind(input.name.trim())
        .bind(&input.description)
        .bind(input.parent)
        .bind(input.weight)
        .fetch_one(&mut *tx),
    )
    .await
    .map_err(constraint)?;
    tx.commit().await?;
    state
        .cache
        .invalidate(&term_tags(id, &term.category_id))
        .await;
    Ok(term)
}

/// Deletes a term without children that no item references.
pub async fn delete_term(state: &AppState, id: Uuid) -> Result<(), CategoryError> {
    let mut tx = state.db.begin().await?;
    // Locked first: saves that referenced the term have committed (they
    // hold it FOR KEY SHARE), later ones wait and then find it gone.
    let found: Option<Uuid> = timed(
        "term.lock",
        sqlx::query_scalar("SELECT id FROM category_tag WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx),
    )
    .await?;
    if found.is_none() {
        return Err(CategoryError::TermNotFound(id));
    }
    let uses = references::uses_of(&mut tx, RefTarget::Term, &[id], None)
        .await
        .map_err(item_error)?;
    if !uses.is_empty() {
        return Err(CategoryError::TermInUse { id, uses });
    }
    let r = timed(
        "term.delete",
        sqlx::query_scalar::<_, String>(
            "DELETE FROM category_tag WHERE id = $1 RETURNING category_id",
        )
        .bind(id)
        .fetch_optional(&mut *tx),
    )
    .await
    .map_err(|e| {
        let e = DbError::from(e);
        if e.constraint() == Some("category_tag_parent_fkey") {
            CategoryError::HasChildren(id)
        } else {
            CategoryError::Db(e)
        }
    })?;
    let category = r.ok_or(CategoryError::TermNotFound(id))?;
    tx.commit().await?;
    state.cache.invalidate(&term_tags(id, &category)).await;
    Ok(())
}

/// A term, through the cache (`term:{id}`).
pub async fn term(state: &AppState, id: Uuid) -> Result<Term, CategoryError> {
    let key = CacheKey::new(format!("term:{id}"))
        .map_err(|e| CategoryError::Db(DbError::Unavailable(e.to_string())))?;
    let db = state.db.clone();
    let cached = state
        .cache
        .get_or_load(&key, || async move {
            let Some(t) = find_term(&db, id).await? else {
                return Ok::<_, CategoryError>(None);
            };
            Ok(Some(Loaded {
                bytes: Bytes::from(serde_json::to_vec(&t)?),
                tags: vec![CacheTag::for_id("term", id)],
            }))
        })
        .await?
        .ok_or(CategoryError::TermNotFound(id))?;
    Ok(serde_json::from_slice(&cached.bytes)?)
}

/// The terms of a category by weight and name, through the cache
/// (`term_list:{category}`).
pub async fn terms(state: &AppState, category: &str) -> Result<Vec<Term>, CategoryError> {
    let key = CacheKey::new(format!("term_list:{category}"))
        .map_err(|_| CategoryError::NotFound(category.to_owned()))?;
    let db = state.db.clone();
    let cat = category.to_owned();
    let cached = state
        .cache
        .get_or_load(&key, || async move {
            get(&db, &cat).await?;
            let list = timed(
                "term.list",
                sqlx::query_as::<_, Term>(&format!(
                    "SELECT {TERM_COLUMNS} FROM category_tag WHERE category_id = $1
                     ORDER BY weight, lower(name), id"
                ))
                .bind(&cat)
                .fetch_all(&db),
            )
            .await?;
            let mut tags: Vec<CacheTag> = CacheTag::new(format!("term_list:{cat}"))
                .into_iter()
                .collect();
            tags.extend(list.iter().map(|t| CacheTag::for_id("term", t.id)));
            Ok::<_, CategoryError>(Some(Loaded {
                bytes: Bytes::from(serde_json::to_vec(&list)?),
                tags,
            }))
        })
        .await?
        .ok_or_else(|| CategoryError::NotFound(category.to_owned()))?;
    Ok(serde_json::from_slice(&cached.bytes)?)
}
