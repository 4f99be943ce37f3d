//! Item HTTP surface: the JSON API under `/api/item-types` and
//! `/api/items`, and the HTML pages `/item/{id}` and `/items/{type}`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{
    FieldDef, Item, ItemError, ItemPage, ItemPatch, ItemType, ListSpec, NewItem, Revision, SortKey,
    SortOrder,
};
use crate::cache::{CacheKey, Loaded};
use crate::error::{AppError, ErrorBody};
use crate::http::JsonBody;
use crate::stage::routes::StageParams;
use crate::stage::{SelectedStage, StageId};
use crate::state::AppState;
use crate::user::{Account, permission, role};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_types, create_type))
        .routes(routes!(get_type, update_type, delete_type))
        .routes(routes!(list_items, create_item))
        .routes(routes!(get_item, update_item, delete_item))
        .routes(routes!(item_revisions))
        .routes(routes!(item_page))
        .routes(routes!(items_page))
}

/// Who defines a type created through the API: always the kernel (plugins
/// define theirs in their manifests).
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Definer {
    Kernel,
}

fn has_title_default() -> bool {
    true
}

fn title_label_default() -> String {
    "Title".to_owned()
}

/// A new item type.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItemType {
    /// Machine name.
    #[serde(rename = "type")]
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub type_name: String,
    #[schema(pattern = r"\S")]
    pub label: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "has_title_default")]
    #[schema(default = true)]
    pub has_title: bool,
    #[serde(default = "title_label_default")]
    #[schema(default = "Title")]
    pub title_label: String,
    /// Accepted for symmetry with [`ItemType`]; only `kernel`.
    #[serde(default)]
    pub plugin: Option<Definer>,
    /// Field definitions; names unique, integer `min` not above `max`.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
}

/// The new definition of an item type (the path names it).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemTypeUpdate {
    /// When given, the name in the path.
    #[serde(default, rename = "type")]
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub type_name: Option<String>,
    #[schema(pattern = r"\S")]
    pub label: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "has_title_default")]
    #[schema(default = true)]
    pub has_title: bool,
    #[serde(default = "title_label_default")]
    #[schema(default = "Title")]
    pub title_label: String,
    /// Ignored: who defines a type does not change.
    #[serde(default)]
    pub plugin: Option<String>,
    #[serde(default)]
    pub fields: Vec<FieldDef>,
}

/// A 404 for ids that are not UUIDs (they name nothing), as for unknown ones.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ItemIdPath {
    /// Item id.
    pub id: Uuid,
}

/// An item type's machine name in a path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TypePath {
    /// Machine name of the type.
    #[param(rename = "type", pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub type_name: String,
}

fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    raw.parse()
        .map_err(|_| AppError::NotFound(format!("item {raw}")))
}

fn is_author(account: &Account, item: &Item) -> bool {
    account
        .user
        .as_ref()
        .is_some_and(|u| item.author == Some(u.id))
}

/// Published items for whoever may access content; unpublished ones for
/// their author and those who may see unpublished content.
pub fn can_view(account: &Account, item: &Item) -> bool {
    can_view_as(account, item.is_published(), item.author)
}

/// [`can_view`] for an item (or revision) known by its state and author.
pub fn can_view_as(account: &Account, published: bool, author: Option<Uuid>) -> bool {
    let own = account.user.as_ref().is_some_and(|u| author == Some(u.id));
    account.has(permission::ACCESS_CONTENT)
        && (published || account.has(permission::VIEW_UNPUBLISHED_CONTENT) || own)
}

/// Whether `account` reads the revisions of an item by `author`: the
/// permission to edit it.
pub fn can_read_revisions(account: &Account, author: Option<Uuid>) -> bool {
    let own = account.user.as_ref().is_some_and(|u| author == Some(u.id));
    account.has(permission::EDIT_ANY_CONTENT) || (own && account.has(permission::EDIT_OWN_CONTENT))
}

fn require_own_or_any(
    account: &Account,
    item: &Item,
    own: &str,
    any: &str,
) -> Result<(), AppError> {
    if account.has(any) || (account.has(own) && is_author(account, item)) {
        Ok(())
    } else {
        account.require(any)
    }
}

// ---------------------------------------------------------------- types

/// Every item type.
#[utoipa::path(get, path = "/api/item-types", tag = "item",
    responses(
        (status = 200, description = "Item types", body = [ItemType]),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn list_types(
    State(state): State<AppState>,
    account: Account,
) -> Result<Json<Vec<ItemType>>, AppError> {
    account.require(permission::ACCESS_CONTENT)?;
    Ok(Json(super::store::list_types(&state.db).await?))
}

/// Create an item type with its field definitions.
#[utoipa::path(post, path = "/api/item-types", tag = "item", request_body = NewItemType,
    responses(
        (status = 201, description = "Created", body = ItemType),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer content types`", body = ErrorBody),
        (status = 409, description = "Type exists", body = ErrorBody),
        (status = 422, description = "Invalid name, label or field definitions", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn create_type(
    State(state): State<AppState>,
    account: Account,
    JsonBody(new): JsonBody<NewItemType>,
) -> Result<(StatusCode, Json<ItemType>), AppError> {
    account.require(permission::ADMINISTER_CONTENT_TYPES)?;
    let t = ItemType {
        type_name: new.type_name,
        label: new.label,
        description: new.description,
        has_title: new.has_title,
        title_label: new.title_label,
        plugin: "kernel".to_owned(),
        fields: new.fields,
    };
    let created = super::create_type(&state.db, &t).await?;
    crate::search::config::apply_plugins(&state).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One item type.
#[utoipa::path(get, path = "/api/item-types/{type}", tag = "item",
    params(TypePath),
    responses(
        (status = 200, description = "The type", body = ItemType),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`", body = ErrorBody),
        (status = 404, description = "No such type", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn get_type(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
) -> Result<Json<ItemType>, AppError> {
    account.require(permission::ACCESS_CONTENT)?;
    Ok(Json(super::get_type(&state.db, &name).await?))
}

/// Replace an item type's label, description, title settings and fields.
/// Existing items follow at once: a field no longer defined is removed
/// with its values (item rows and unpublished stage revisions); a new or
/// changed field (or a title now required) that an existing value would
/// fail is refused with 409, and nothing changes. Fields are known by
/// `name`: a new name is a new field, a new label only a new label.
#[utoipa::path(put, path = "/api/item-types/{type}", tag = "item", request_body = ItemTypeUpdate,
    params(TypePath),
    responses(
        (status = 200, description = "Updated", body = ItemType),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer content types`", body = ErrorBody),
        (status = 404, description = "No such type", body = ErrorBody),
        (status = 409, description = "`item_type_conflict`: existing items hold values the new definitions refuse (details: per field a message and the number of items)", body = ErrorBody),
        (status = 422, description = "Invalid definitions, or `type` differs from the path", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn update_type(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
    JsonBody(input): JsonBody<ItemTypeUpdate>,
) -> Result<Json<ItemType>, AppError> {
    account.require(permission::ADMINISTER_CONTENT_TYPES)?;
    if input.type_name.as_ref().is_some_and(|t| *t != name) {
        return Err(ItemError::invalid("type", "must be the type named in the path").into());
    }
    let current = super::get_type(&state.db, &name).await?;
    let t = ItemType {
        type_name: current.type_name,
        label: input.label,
        description: input.description,
        has_title: input.has_title,
        title_label: input.title_label,
        plugin: current.plugin,
        fields: input.fields,
    };
    let updated = super::update_type(&state, &t).await?;
    crate::search::config::type_changed(&state, &updated.type_name).await;
    Ok(Json(updated))
}

/// Delete an item type that has no items.
#[utoipa::path(delete, path = "/api/item-types/{type}", tag = "item",
    params(TypePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer content types`, or a session request without its CSRF token", body = ErrorBody),
        (status = 404, description = "No such type", body = ErrorBody),
        (status = 409, description = "The type still has items", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_type(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    account.require(permission::ADMINISTER_CONTENT_TYPES)?;
    super::delete_type(&state.db, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- items

/// Listing parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only items of this type.
    #[serde(rename = "type")]
    #[param(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub item_type: Option<String>,
    /// `created` (default), `changed` or `title`.
    #[param(inline)]
    pub sort: Option<SortKey>,
    /// `desc` (default) or `asc`.
    #[param(inline)]
    pub order: Option<SortOrder>,
    /// 1-based page (default 1).
    #[param(minimum = 1, maximum = 4294967295u32)]
    pub page: Option<u32>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

/// The query of an HTML listing: [`ListParams`] without `type` (the path
/// names it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemsPageParams {
    /// `created` (default), `changed` or `title`.
    #[param(inline)]
    pub sort: Option<SortKey>,
    /// `desc` (default) or `asc`.
    #[param(inline)]
    pub order: Option<SortOrder>,
    /// 1-based page (default 1).
    #[param(minimum = 1, maximum = 4294967295u32)]
    pub page: Option<u32>,
    /// Items per page, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

fn list_spec(p: ListParams) -> Result<ListSpec, AppError> {
    let mut failures = super::Failures::new();
    let page = p.page.unwrap_or(1);
    let per_page = p.per_page.unwrap_or(20);
    if page == 0 {
        failures
            .entry("page".into())
            .or_default()
            .push("must be at least 1".into());
    }
    if per_page == 0 || per_page > ListSpec::MAX_PER_PAGE {
        failures
            .entry("per_page".into())
            .or_default()
            .push(format!("must be 1 to {}", ListSpec::MAX_PER_PAGE));
    }
    if !failures.is_empty() {
        return Err(ItemError::Invalid(failures).into());
    }
    Ok(ListSpec {
        item_type: p.item_type,
        sort: p.sort.unwrap_or(SortKey::Created),
        order: p.order.unwrap_or(SortOrder::Desc),
        page,
        per_page,
        promoted_first: false,
    })
}

/// Published items, by type or all, sorted and paged (cached).
#[utoipa::path(get, path = "/api/items", tag = "item", params(ListParams, StageParams),
    responses(
        (status = 200, description = "A page of items", body = ItemPage),
        (status = 400, description = "Malformed query: unknown sort or order, a page that is not a number", body = ErrorBody),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content or stages", body = ErrorBody),
        (status = 403, description = "Lacks `access content`, or the permission to work in the stage", body = ErrorBody),
        (status = 404, description = "Unknown type or stage", body = ErrorBody),
        (status = 422, description = "Bad page, per_page or stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn list_items(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ItemPage>, AppError> {
    let Query(params) = params?;
    account.require(permission::ACCESS_CONTENT)?;
    let spec = list_spec(params)?;
    if let Some(t) = &spec.item_type {
        super::get_type(&state.db, t).await?;
    }
    Ok(Json(super::list(&state, &stage, &spec).await?))
}

/// Create an item (in the selected stage).
#[utoipa::path(post, path = "/api/items", tag = "item", request_body = NewItem,
    params(StageParams),
    responses(
        (status = 201, description = "Created", body = Item,
            headers(("Location" = String, description = "The item's URL"))),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `create content`, or the permission to work in the stage", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 422, description = "Unknown type, invalid title or fields (details list each: a key given twice, an unknown member of a value, a missing target, ...), or a bad stage id", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn create_item(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    JsonBody(new): JsonBody<NewItem>,
) -> Result<Response, AppError> {
    account.require(permission::CREATE_CONTENT)?;
    let author = account.user.as_ref().map(|u| u.id);
    let item = super::create(&state, &stage, author, new).await?;
    let location = format!("/api/items/{}", item.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(item),
    )
        .into_response())
}

/// The item as `stage` shows it to `account` (whose access to the stage
/// [`SelectedStage`] checked).
async fn visible_item(
    state: &AppState,
    account: &Account,
    stage: &StageId,
    raw_id: &str,
) -> Result<Item, AppError> {
    let id = parse_id(raw_id)?;
    let item = super::load(state, stage, id)
        .await?
        .ok_or(ItemError::NotFound(id))?;
    if !can_view(account, &item) {
        // Not revealing that an unpublished item exists.
        return Err(ItemError::NotFound(id).into());
    }
    Ok(item)
}

/// One item as seen from the selected stage (cached).
#[utoipa::path(get, path = "/api/items/{id}", tag = "item",
    params(ItemIdPath, StageParams),
    responses(
        (status = 200, description = "The item", body = Item),
        (status = 401, description = "Anonymous, and the stage is not live", body = ErrorBody),
        (status = 403, description = "May not work in the stage", body = ErrorBody),
        (status = 404, description = "No such item or stage, or not visible to you", body = ErrorBody),
        (status = 422, description = "Bad stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn get_item(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(id): Path<String>,
) -> Result<Json<Item>, AppError> {
    Ok(Json(visible_item(&state, &account, &stage, &id).await?))
}

/// Update an item; in a stage other than live this writes a stage revision
/// and leaves live untouched.
#[utoipa::path(put, path = "/api/items/{id}", tag = "item", request_body = ItemPatch,
    params(ItemIdPath, StageParams),
    responses(
        (status = 200, description = "Saved", body = Item),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks the edit permission", body = ErrorBody),
        (status = 404, description = "No such item or stage", body = ErrorBody),
        (status = 422, description = "Invalid title or fields (details list each: a key given twice, an unknown member of a value, a missing target, ...), or a bad stage id", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn update_item(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<ItemPatch>,
) -> Result<Json<Item>, AppError> {
    // Anonymous callers are refused before the item is looked up.
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    let item = visible_item(&state, &account, &stage, &id).await?;
    require_own_or_any(
        &account,
        &item,
        permission::EDIT_OWN_CONTENT,
        permission::EDIT_ANY_CONTENT,
    )?;
    let editor = account.user.as_ref().map(|u| u.id);
    Ok(Json(
        super::update(&state, &stage, item.id, editor, patch).await?,
    ))
}

/// Delete an item (inside a stage: only items created in it). Refused while
/// current values of other items (live rows, unpublished stage revisions)
/// reference it.
#[utoipa::path(delete, path = "/api/items/{id}", tag = "item",
    params(ItemIdPath, StageParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks the delete permission, or a session request without its CSRF token", body = ErrorBody),
        (status = 404, description = "No such item or stage", body = ErrorBody),
        (status = 409, description = "`stage_conflict`: a live item cannot be deleted inside a stage; `item_in_use`: other items reference it (details: `uses`, the first 50, and `total`)", body = ErrorBody),
        (status = 422, description = "Bad stage id", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_item(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    // Anonymous callers are refused before the item is looked up.
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    let item = visible_item(&state, &account, &stage, &id).await?;
    require_own_or_any(
        &account,
        &item,
        permission::DELETE_OWN_CONTENT,
        permission::DELETE_ANY_CONTENT,
    )?;
    super::delete(&state, &stage, item.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every revision of an item, newest first.
#[utoipa::path(get, path = "/api/items/{id}/revisions", tag = "item",
    params(ItemIdPath, StageParams),
    responses(
        (status = 200, description = "Revisions", body = [Revision]),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `edit any content` (and is not the author)", body = ErrorBody),
        (status = 404, description = "No such item or stage", body = ErrorBody),
        (status = 422, description = "Bad stage id", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn item_revisions(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(id): Path<String>,
) -> Result<Json<Vec<Revision>>, AppError> {
    // Anonymous callers are refused before the item is looked up.
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    let item = visible_item(&state, &account, &stage, &id).await?;
    require_own_or_any(
        &account,
        &item,
        permission::EDIT_OWN_CONTENT,
        permission::EDIT_ANY_CONTENT,
    )?;
    let mut revisions = super::revisions(&state.db, item.id).await?;
    // A revision written in a stage is shown only to those who may work in
    // it (its fields are that stage's unpublished content).
    revisions.retain(|r| {
        StageId::parse(&r.stage_id).is_ok_and(|s| crate::stage::may_work_in(&account, &s))
    });
    Ok(Json(revisions))
}

// ---------------------------------------------------------------- pages

fn html(bytes: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], bytes).into_response()
}

/// Whether anonymous visitors hold `access content`, from the per-process
/// permission cache (a change takes effect within its short TTL).
async fn anonymous_may_access(state: &AppState) -> Result<bool, AppError> {
    let perms = state
        .permissions
        .of(&state.db, &[role::ANONYMOUS.to_owned()])
        .await?;
    Ok(perms.contains(permission::ACCESS_CONTENT))
}

/// Renders the item page: field labels and values formatted by kind, the
/// author's name and the dates. Returns the page and the cache tags of what
/// it shows besides the item (referenced items, users and terms, and the
/// author).
async fn render_item(
    state: &AppState,
    item: &Item,
    account: Option<&Account>,
) -> Result<(String, Vec<crate::cache::CacheTag>), AppError> {
    let t = super::get_type(&state.db, &item.item_type).await?;
    let names = super::display::names(state, &t.fields, &[&item.fields]).await?;
    let fields = super::display::show(&t, &item.fields, &names);
    let author = match item.author {
        Some(id) => crate::user::find_by_id(&state.db, id)
            .await?
            .map(|u| u.name),
        None => None,
    };
    let may_edit = account.is_some_and(|a| {
        a.has(permission::EDIT_ANY_CONTENT)
            || (a.has(permission::EDIT_OWN_CONTENT) && is_author(a, item))
    });
    let html = state.templates.render(
        "item.html",
        minijinja::context! {
            item => minijinja::Value::from_serialize(item),
            type_label => t.label,
            fields => fields,
            author => author,
            created => super::display::readable_time(item.created),
            changed => super::display::readable_time(item.changed),
            created_iso => item.created.to_rfc3339(),
            edited => item.changed > item.created,
            user => account.and_then(|a| a.user.as_ref().map(|u| u.name.clone())),
            may_edit => may_edit,
        },
    )?;
    let mut tags = names.tags();
    tags.extend(item.author.map(crate::user::user_tag));
    Ok((html, tags))
}

/// The anonymous rendering of a published live item, cached as a page
/// (`page:{templates fingerprint}:item:{id}`, tagged `item:{id}`).
async fn cached_item_page(state: &AppState, id: Uuid) -> Result<Option<Bytes>, AppError> {
    let key = item_page_key(state, id)?;
    let st = state.clone();
    let cached = state
        .cache
        .get_or_load(&key, || async move {
            let Some(item) = super::load(&st, &StageId::live(), id).await? else {
                return Ok::<_, AppError>(None);
            };
            if !item.is_published() {
                return Ok(None);
            }
            let (html, mut tags) = render_item(&st, &item, None).await?;
            tags.push(super::item_tag(id));
            tags.extend(super::type_tag(&item.item_type));
            Ok(Some(Loaded {
                bytes: Bytes::from(html),
                tags,
            }))
        })
        .await?;
    Ok(cached.map(|c| c.bytes.clone()))
}

/// The cache key of an item's anonymous page under the running templates.
pub fn item_page_key(state: &AppState, id: Uuid) -> Result<CacheKey, AppError> {
    Ok(CacheKey::new(format!(
        "page:{}:item:{id}",
        state.templates.fingerprint()
    ))?)
}

/// The HTML page of an item. Anonymous visitors of live get the cached
/// page; signed-in visitors and stage previews get a fresh rendering.
#[utoipa::path(get, path = "/item/{id}", tag = "page",
    params(ItemIdPath, StageParams),
    responses(
        (status = 200, description = "The item page", body = String, content_type = "text/html"),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "May not work in the stage", body = ErrorBody),
        (status = 404, description = "No such item or stage, or not visible to you", body = ErrorBody),
        (status = 422, description = "Bad stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn item_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    SelectedStage(stage): SelectedStage,
    resolved: Option<Extension<Account>>,
    Path(raw_id): Path<String>,
) -> Result<Response, AppError> {
    let id = parse_id(&raw_id)?;
    if stage.is_live() && !crate::page::security::has_credentials(&headers) {
        if !anonymous_may_access(&state).await? {
            return Err(AppError::Unauthenticated);
        }
        return match cached_item_page(&state, id).await? {
            Some(bytes) => Ok(html(bytes)),
            None => Err(ItemError::NotFound(id).into()),
        };
    }
    // Resolved already when the request named a stage.
    let account = match resolved {
        Some(Extension(account)) => account,
        None => Account::resolve(&state, &headers).await?,
    };
    let item = visible_item(&state, &account, &stage, &raw_id).await?;
    let (html, _) = render_item(&state, &item, Some(&account)).await?;
    Ok(Html(html).into_response())
}

/// The HTML listing of published items of a type.
#[utoipa::path(get, path = "/items/{type}", tag = "page",
    params(TypePath, ItemsPageParams, StageParams),
    responses(
        (status = 200, description = "The listing page", body = String, content_type = "text/html"),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`, or may not work in the stage", body = ErrorBody),
        (status = 404, description = "No such type or stage", body = ErrorBody),
        (status = 422, description = "Bad page, per_page or stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn items_page(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    Path(type_name): Path<String>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(mut params) = params?;
    account.require(permission::ACCESS_CONTENT)?;
    let t = super::get_type(&state.db, &type_name).await?;
    params.item_type = Some(t.type_name.clone());
    let spec = list_spec(params)?;
    let page = super::list(&state, &stage, &spec).await?;
    let pages = (page.total + i64::from(spec.per_page) - 1) / i64::from(spec.per_page);
    let html = state.templates.render(
        "items.html",
        minijinja::context! {
            item_type => minijinja::Value::from_serialize(&t),
            page => minijinja::Value::from_serialize(&page),
            pages => pages,
            user => account.user.as_ref().map(|u| u.name.clone()),
        },
    )?;
    Ok(Html(html).into_response())
}
