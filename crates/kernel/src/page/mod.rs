//! Server-rendered HTML: the template environment ([`templates`]:
//! autoescaping, templates compiled into the binary), the front page, the
//! HTML error pages ([`errors`]), the `[site]` settings and the
//! administration shell ([`admin`]).

pub mod admin;
pub mod errors;
pub mod security;
pub mod settings;
pub mod templates;

pub use settings::SiteSettings;

use axum::response::Html;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::item::{self, ListSpec, SortKey, SortOrder};
use crate::stage::SelectedStage;
use crate::stage::routes::StageParams;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(front))
        .routes(routes!(asset))
        .merge(admin::router())
}

/// The front page's query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FrontQuery {
    /// 1-based page (default 1).
    #[param(minimum = 1, maximum = 1000000)]
    page: Option<u32>,
}

/// One item as the front page lists it.
#[derive(serde::Serialize)]
struct Teaser {
    id: uuid::Uuid,
    title: String,
    type_label: String,
    created: String,
    created_iso: String,
    promote: bool,
    sticky: bool,
}

/// The front page: promoted items first, then the newest, paged.
#[utoipa::path(get, path = "/", tag = "page", params(FrontQuery, StageParams),
    responses(
        (status = 200, description = "The front page", body = String, content_type = "text/html"),
        (status = 400, description = "A page that is not a number", body = crate::error::ErrorBody),
        (status = 403, description = "May not work in the stage", body = crate::error::ErrorBody),
        (status = 404, description = "No such stage", body = crate::error::ErrorBody),
        (status = 422, description = "Page 0, or a bad stage id", body = crate::error::ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
async fn front(
    axum::extract::State(state): axum::extract::State<AppState>,
    account: Account,
    SelectedStage(stage): SelectedStage,
    query: Result<axum::extract::Query<FrontQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, AppError> {
    let axum::extract::Query(q) = query?;
    let page = q.page.unwrap_or(1);
    if page == 0 || page > 1_000_000 {
        return Err(AppError::Validation {
            details: serde_json::json!({"fields": {"page": ["must be 1 to 1000000"]}}),
        });
    }
    let readable = account.has(permission::ACCESS_CONTENT);
    let per_page = state.config.site.front_page_items;
    let (teasers, pages) = if readable {
        let spec = ListSpec {
            item_type: None,
            sort: SortKey::Created,
            order: SortOrder::Desc,
            page,
            per_page,
            promoted_first: true,
        };
        let listed = item::list(&state, &stage, &spec).await?;
        let types: std::collections::BTreeMap<String, String> = item::store::list_types(&state.db)
            .await?
            .into_iter()
            .map(|t| (t.type_name, t.label))
            .collect();
        let teasers: Vec<Teaser> = listed
            .items
            .into_iter()
            .map(|i| Teaser {
                type_label: types.get(&i.item_type).cloned().unwrap_or(i.item_type),
                id: i.id,
                title: i.title,
                created: item::display::readable_time(i.created),
                created_iso: i.created.to_rfc3339(),
                promote: i.promote,
                sticky: i.sticky,
            })
            .collect();
        let pages = (listed.total + i64::from(per_page) - 1) / i64::from(per_page);
        (teasers, pages)
    } else {
        (vec![], 0)
    };
    let html = state.templates.render(
        "front.html",
        minijinja::context! {
            user => account.user.as_ref().map(|u| u.name.clone()),
            readable => readable,
            items => teasers,
            page => page,
            pages => pages,
        },
    )?;
    Ok(Html(html))
}

/// The pages' scripts, compiled into the binary (the CSP allows scripts
/// from the site only, never inline).
const ASSETS: &[(&str, &str)] = &[
    (
        "batch-progress.js",
        include_str!("../../assets/batch-progress.js"),
    ),
    (
        "reference-picker.js",
        include_str!("../../assets/reference-picker.js"),
    ),
    (
        "search-reindex.js",
        include_str!("../../assets/search-reindex.js"),
    ),
];

/// A page script by name.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct AssetPath {
    /// The script's file name, e.g. `batch-progress.js`.
    name: String,
}

/// A script the kernel's pages load.
#[utoipa::path(get, path = "/assets/{name}", tag = "page", params(AssetPath),
    responses(
        (status = 200, description = "The script", body = String, content_type = "text/javascript"),
        (status = 404, description = "No such asset", body = crate::error::ErrorBody),
    ),
    security(()))]
async fn asset(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<axum::response::Response, AppError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let (_, body) = ASSETS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| AppError::NotFound(format!("asset {name}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        *body,
    )
        .into_response())
}
