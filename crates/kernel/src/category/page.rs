//! A term's public page, `/term/{id}`: the term with its category and
//! description, and the published live items that reference it, newest
//! first, paged. The list is cached (`term_items:{id}:{page}`) under
//! `term:{id}` (a rename or delete), `item_list:all` (every live item
//! change, so a save that adds or removes the term shows at once) and the
//! listed items' own tags.

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::CategoryError;
use crate::cache::{CacheKey, CacheTag, Loaded};
use crate::db::DbError;
use crate::error::{AppError, ErrorBody};
use crate::item::references::{self, TermUse};
use crate::item::{self, ListSpec};
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(term_page))
}

/// Items listed per page.
pub const PER_PAGE: u32 = 20;

/// A term page's query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TermPageQuery {
    /// 1-based page (default 1).
    #[param(minimum = 1, maximum = 1000000)]
    page: Option<u32>,
}

/// A term id in the page's path (anything else names no term: 404).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct TermPagePath {
    /// The term's id.
    id: String,
}

/// One page of the items using a term, as cached.
#[derive(Debug, Serialize, Deserialize)]
struct Listing {
    items: Vec<TermUse>,
    total: i64,
}

#[derive(Serialize)]
struct Row {
    id: Uuid,
    title: String,
    type_label: String,
    created: String,
    created_iso: String,
}

fn cache_error(e: impl std::fmt::Display) -> CategoryError {
    CategoryError::Db(DbError::Unavailable(format!("cache key: {e}")))
}

/// Page `page` of the published live items referencing `term`, through
/// the cache for the first pages.
async fn listing(state: &AppState, term: Uuid, page: u32) -> Result<Listing, CategoryError> {
    let offset = i64::from(page - 1) * i64::from(PER_PAGE);
    let load = |db: sqlx::PgPool| async move {
        let (items, total) =
            references::live_items_with_term(&db, term, i64::from(PER_PAGE), offset)
                .await
                .map_err(|e| match e {
                    item::ItemError::Db(d) => CategoryError::Db(d),
                    other => CategoryError::Db(DbError::Unavailable(other.to_string())),
                })?;
        Ok::<_, CategoryError>(Listing { items, total })
    };
    // Deep pages are read straight from the database, as item listings are.
    if page > ListSpec::MAX_CACHED_PAGE {
        return load(state.db.clone()).await;
    }
    let key = CacheKey::new(format!("term_items:{term}:{page}")).map_err(cache_error)?;
    let db = state.db.clone();
    let cached = state
        .cache
        .get_or_load(&key, || async move {
            let listing = load(db).await?;
            let mut tags = vec![
                CacheTag::for_id("term", term),
                CacheTag::new("item_list:all").map_err(cache_error)?,
            ];
            tags.extend(listing.items.iter().map(|i| item::item_tag(i.id)));
            Ok::<_, CategoryError>(Some(Loaded {
                bytes: Bytes::from(serde_json::to_vec(&listing)?),
                tags,
            }))
        })
        .await?;
    match cached {
        Some(c) => Ok(serde_json::from_slice(&c.bytes)?),
        None => Ok(Listing {
            items: vec![],
            total: 0,
        }),
    }
}

/// A term's page: its name, category and description, and the published
/// live items that reference it, newest first.
#[utoipa::path(get, path = "/term/{id}", tag = "page", params(TermPagePath, TermPageQuery),
    responses(
        (status = 200, description = "The term page", body = String, content_type = "text/html"),
        (status = 400, description = "A page that is not a number", body = ErrorBody),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`", body = ErrorBody),
        (status = 404, description = "No such term", body = ErrorBody),
        (status = 422, description = "Page 0 or beyond 1000000", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn term_page(
    State(state): State<AppState>,
    account: Account,
    Path(raw): Path<String>,
    query: Result<Query<TermPageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    account.require(permission::ACCESS_CONTENT)?;
    let id: Uuid = raw
        .parse()
        .map_err(|_| AppError::NotFound(format!("term {raw}")))?;
    let Query(q) = query?;
    let page = q.page.unwrap_or(1);
    if page == 0 || page > 1_000_000 {
        return Err(AppError::Validation {
            details: serde_json::json!({"fields": {"page": ["must be 1 to 1000000"]}}),
        });
    }
    let term = super::term(&state, id).await?;
    let category = super::get(&state.db, &term.category_id).await?;
    let listed = listing(&state, id, page).await?;
    let types: std::collections::BTreeMap<String, String> = item::store::list_types(&state.db)
        .await?
        .into_iter()
        .map(|t| (t.type_name, t.label))
        .collect();
    let rows: Vec<Row> = listed
        .items
        .into_iter()
        .map(|i| Row {
            type_label: types.get(&i.item_type).cloned().unwrap_or(i.item_type),
            id: i.id,
            title: i.title,
            created: item::display::readable_time(i.created),
            created_iso: i.created.to_rfc3339(),
        })
        .collect();
    let pages = (listed.total + i64::from(PER_PAGE) - 1) / i64::from(PER_PAGE);
    let html = state.templates.render(
        "term.html",
        minijinja::context! {
            term => minijinja::Value::from_serialize(&term),
            category => category.label,
            items => rows,
            total => listed.total,
            page => page,
            pages => pages,
            user => account.user.as_ref().map(|u| u.name.clone()),
        },
    )?;
    Ok(Html(html).into_response())
}
