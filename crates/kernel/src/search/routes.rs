//! `GET /search` (the page), `GET /api/search` (JSON), the configuration
//! API (`/api/search/config`, `/api/search/reindex`) and the settings page
//! `/admin/search`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::config::{self, ConfigOutcome, ConfigUpdate, FieldWeight, TypeConfig};
use super::{RawQuery, SearchError, SearchRequest, SearchResults, Weight};
use crate::batch::BatchStatus;
use crate::error::{AppError, ErrorBody};
use crate::http::JsonBody;
use crate::item::routes::TypePath;
use crate::page::admin;
use crate::stage::SelectedStage;
use crate::stage::routes::StageParams;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search_api))
        .routes(routes!(search_page))
        .routes(routes!(get_config))
        .routes(routes!(put_config))
        .routes(routes!(start_reindex))
        .routes(routes!(settings_page))
        .routes(routes!(save_from_page))
        .routes(routes!(reindex_from_page))
}

/// The notice a stage preview shows: search is live only.
const LIVE_ONLY: &str = "Search shows live content: changes made in this stage appear in results once the stage is published.";

/// Search live, published items. Web-search syntax: words (all
/// required), `"quoted phrases"`, `or` between alternatives, `-word` to
/// exclude. Ranked by the configured weights (the title first); snippets
/// are HTML with the matches in `<mark>`.
#[utoipa::path(get, path = "/api/search", tag = "search", params(RawQuery, StageParams),
    responses(
        (status = 200, description = "One page of results", body = SearchResults),
        (status = 400, description = "No query, a query too long, or a bad page or page size", body = ErrorBody),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`", body = ErrorBody),
        (status = 404, description = "No such item type or stage", body = ErrorBody),
        (status = 422, description = "A malformed stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn search_api(
    State(state): State<AppState>,
    account: Account,
    _stage: SelectedStage,
    query: Result<Query<RawQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResults>, AppError> {
    let Query(raw) = query?;
    account.require(permission::ACCESS_CONTENT)?;
    let req = SearchRequest::parse(&raw, state.search.settings())?;
    Ok(Json(super::query::search(&state, &req).await?))
}

/// The search page: a form, and the results of `q` with snippets and
/// pages. In a stage preview it searches live and says so.
#[utoipa::path(get, path = "/search", tag = "page", params(RawQuery, StageParams),
    responses(
        (status = 200, description = "The search page", body = String, content_type = "text/html"),
        (status = 400, description = "A query too long, or a bad page or page size", body = ErrorBody),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`", body = ErrorBody),
        (status = 404, description = "No such item type or stage", body = ErrorBody),
        (status = 422, description = "A malformed stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn search_page(
    State(state): State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    query: Result<Query<RawQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(raw) = query?;
    account.require(permission::ACCESS_CONTENT)?;
    let asked = raw.q.as_deref().is_some_and(|q| !q.trim().is_empty());
    let results = match SearchRequest::parse(&raw, state.search.settings()) {
        Ok(req) => Some(super::query::search(&state, &req).await?),
        Err(SearchError::QueryRequired) => None,
        Err(e) => return Err(e.into()),
    };
    let pages = results
        .as_ref()
        .map_or(0, |r| r.total.div_ceil(u64::from(r.per_page.max(1))));
    let types = crate::item::store::list_types(&state.db).await?;
    let html = state.templates.render(
        "search.html",
        minijinja::context! {
            q => raw.q.as_deref().unwrap_or(""),
            asked => asked,
            item_type => raw.item_type.as_deref().unwrap_or(""),
            types => types.iter().map(|t| minijinja::context! { name => t.type_name.clone(), label => t.label.clone() }).collect::<Vec<_>>(),
            results => results.map(|r| minijinja::Value::from_serialize(&r)),
            pages => pages,
            notice => (!stage.is_live()).then_some(LIVE_ONLY),
            user => account.user.as_ref().map(|u| u.name.clone()),
        },
    )?;
    Ok(Html(html).into_response())
}

/// Every item type's search configuration, and the languages available.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchConfig {
    /// Text search configurations of the database.
    pub languages: Vec<String>,
    pub types: Vec<TypeConfig>,
}

/// What is indexed of each item type.
#[utoipa::path(get, path = "/api/search/config", tag = "search",
    responses(
        (status = 200, description = "The configuration", body = SearchConfig),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer search`", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn get_config(
    State(state): State<AppState>,
    account: Account,
) -> Result<Json<SearchConfig>, AppError> {
    account.require(permission::ADMINISTER_SEARCH)?;
    Ok(Json(SearchConfig {
        languages: config::languages(&state.db).await?,
        types: config::load_all(&state.db).await?,
    }))
}

/// Set the fields an administrator indexes for a type (replacing the
/// previous ones; plugins' fields stay) and its language. A change starts
/// a reindex of the type (`reindex` in the answer; follow it at
/// `/batch/{id}/status`).
#[utoipa::path(put, path = "/api/search/config/{type}", tag = "search", params(TypePath),
    request_body = ConfigUpdate,
    responses(
        (status = 200, description = "The configuration, and the reindex it started", body = ConfigOutcome),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer search`", body = ErrorBody),
        (status = 404, description = "No such item type", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "An unknown, unindexable, repeated or plugin-declared field, or an unknown language", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn put_config(
    State(state): State<AppState>,
    account: Account,
    Path(item_type): Path<String>,
    body: Result<JsonBody<ConfigUpdate>, AppError>,
) -> Result<Json<ConfigOutcome>, AppError> {
    account.require(permission::ADMINISTER_SEARCH)?;
    let JsonBody(change) = body?;
    let owner = account.user.as_ref().map(|u| u.id);
    Ok(Json(
        config::update(&state, owner, &item_type, change).await?,
    ))
}

/// What `POST /api/search/reindex` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReindexRequest {
    /// Only this type (default: every item).
    #[serde(rename = "type", default)]
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub item_type: Option<String>,
}

/// Recompute the index entries of a type's items (or of every item) as a
/// batch.
#[utoipa::path(post, path = "/api/search/reindex", tag = "search", request_body = ReindexRequest,
    responses(
        (status = 202, description = "Started; poll its status", body = BatchStatus),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer search`", body = ErrorBody),
        (status = 404, description = "No such item type", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn start_reindex(
    State(state): State<AppState>,
    account: Account,
    body: Result<JsonBody<ReindexRequest>, AppError>,
) -> Result<(StatusCode, Json<BatchStatus>), AppError> {
    account.require(permission::ADMINISTER_SEARCH)?;
    let JsonBody(req) = body?;
    let owner = account.user.as_ref().map(|u| u.id);
    let batch = config::reindex(&state, owner, req.item_type.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(batch)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsQuery {
    /// What the last action did (set by the page's own redirects).
    #[param(inline)]
    notice: Option<Notice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Reindexing,
    Unchanged,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Notice::Reindexing => "Saved. The type is being reindexed.",
            Notice::Unchanged => "Nothing changed.",
        }
    }
}

/// The search settings: per item type, the indexed fields and weights,
/// the language, "reindex now", and the last reindex's progress.
#[utoipa::path(get, path = "/admin/search", tag = "admin", params(SettingsQuery),
    responses(
        (status = 200, description = "The search settings page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer search`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn settings_page(
    State(state): State<AppState>,
    account: Account,
    Query(q): Query<SettingsQuery>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SEARCH)) {
        return Ok(r);
    }
    let mut types = Vec::new();
    for t in config::load_all(&state.db).await? {
        let last = config::last_reindex(&state.db, &t.item_type).await?;
        let weights: HashMap<&str, (&str, &str)> = t
            .fields
            .iter()
            .map(|f| (f.field.as_str(), (f.weight.as_str(), f.source.as_str())))
            .collect();
        let fields: Vec<minijinja::Value> = t
            .indexable
            .iter()
            .map(|c| {
                let (weight, source) = weights.get(c.name.as_str()).copied().unwrap_or(("", ""));
                minijinja::context! {
                    name => c.name.clone(),
                    label => c.label.clone(),
                    weight => weight,
                    plugin => (source != config::ADMIN && !source.is_empty()).then_some(source),
                }
            })
            .collect();
        types.push(minijinja::context! {
            name => t.item_type.clone(),
            label => t.label.clone(),
            language => t.language.clone(),
            fields => fields,
            reindex => last.map(crate::batch::routes::shown).map(|s| minijinja::Value::from_serialize(&s)),
        });
    }
    let html = admin::render(
        &state,
        &account,
        "/admin/search",
        "Search",
        "admin/search.html",
        minijinja::context! {
            types => types,
            languages => config::languages(&state.db).await?,
            weights => Weight::ALL.iter().map(|w| w.as_str()).collect::<Vec<_>>(),
            engine => state.search.backend().name(),
            notice => q.notice.map(Notice::text),
        },
    )
    .await?;
    Ok(html.into_response())
}

/// The settings form of one type: `language`, and `w.<field>` = `A`-`D`
/// or empty (not indexed) for each field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SettingsForm {
    pub language: String,
    #[serde(default)]
    pub csrf_token: String,
    /// `w.field_body` = `B`, ...
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub weights: HashMap<String, String>,
}

/// Save one type's search settings from the page; a change reindexes it.
#[utoipa::path(post, path = "/admin/search/{type}", tag = "admin", params(TypePath),
    request_body(content = SettingsForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the settings page; anonymous: to the login form"),
        (status = 400, description = "A weight that is not A-D", body = ErrorBody),
        (status = 403, description = "Lacks `administer search`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such item type", body = ErrorBody),
        (status = 422, description = "An unknown or plugin-declared field, or an unknown language", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn save_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(item_type): Path<String>,
    axum::Form(form): axum::Form<SettingsForm>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SEARCH)) {
        return Ok(r);
    }
    let mut fields = Vec::new();
    let mut names: Vec<&String> = form.weights.keys().collect();
    names.sort();
    for key in names {
        let Some(field) = key.strip_prefix("w.") else {
            continue;
        };
        let value = form.weights[key].trim();
        if value.is_empty() {
            continue;
        }
        let weight = Weight::parse(value).ok_or_else(|| {
            AppError::bad_request(
                "invalid_weight",
                format!("the weight of `{field}` must be A, B, C or D"),
            )
        })?;
        fields.push(FieldWeight {
            field: field.to_owned(),
            weight,
        });
    }
    let owner = account.user.as_ref().map(|u| u.id);
    let outcome = config::update(
        &state,
        owner,
        &item_type,
        ConfigUpdate {
            language: Some(form.language),
            fields,
        },
    )
    .await?;
    let notice = if outcome.reindex.is_some() {
        "reindexing"
    } else {
        "unchanged"
    };
    Ok(Redirect::to(&format!("/admin/search?notice={notice}#type-{item_type}")).into_response())
}

/// The reindex button's form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReindexForm {
    #[serde(default)]
    pub csrf_token: String,
}

/// "Reindex now" for one type, from the settings page.
#[utoipa::path(post, path = "/admin/search/{type}/reindex", tag = "admin", params(TypePath),
    request_body(content = ReindexForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the settings page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer search`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such item type", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn reindex_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(item_type): Path<String>,
    axum::Form(_form): axum::Form<ReindexForm>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SEARCH)) {
        return Ok(r);
    }
    let owner = account.user.as_ref().map(|u| u.id);
    config::reindex(&state, owner, Some(&item_type)).await?;
    Ok(Redirect::to(&format!("/admin/search?notice=reindexing#type-{item_type}")).into_response())
}
