//! The OpenAPI 3 description of every JSON endpoint, generated from the
//! handlers' annotations and served at `/api/openapi.json`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Trovato Kernel", description = "Content management kernel API."),
    paths(
        crate::observe::routes::health_check,
        crate::observe::routes::liveness,
        crate::observe::routes::metrics_text,
        crate::user::routes::login,
        crate::user::routes::logout,
        crate::user::routes::me,
        crate::user::roles::list_roles,
        crate::user::roles::create_role,
        crate::user::roles::get_role,
        crate::user::roles::update_role,
        crate::user::roles::delete_role,
        crate::user::roles::set_roles,
        crate::plugin::routes::list,
        openapi_json,
        crate::item::routes::list_types,
        crate::item::routes::create_type,
        crate::item::routes::get_type,
        crate::item::routes::update_type,
        crate::item::routes::delete_type,
        crate::item::routes::list_items,
        crate::item::routes::create_item,
        crate::item::routes::get_item,
        crate::item::routes::update_item,
        crate::item::routes::delete_item,
        crate::item::routes::item_revisions,
        crate::stage::routes::list_stages,
        crate::stage::routes::create_stage,
        crate::stage::routes::publish_stage,
        crate::stage::routes::current_stage,
        crate::stage::routes::select_stage,
        crate::category::routes::list_categories,
        crate::category::routes::create_category,
        crate::category::routes::get_category,
        crate::category::routes::update_category,
        crate::category::routes::delete_category,
        crate::category::routes::list_terms,
        crate::category::routes::create_term,
        crate::category::routes::get_term,
        crate::category::routes::update_term,
        crate::category::routes::delete_term,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "observe", description = "Health and metrics"),
        (name = "user", description = "Login, logout and the current account"),
        (name = "plugin", description = "WebAssembly plugins"),
        (name = "meta", description = "This document"),
        (name = "item", description = "Item types, items and revisions"),
        (name = "stage", description = "Stages and publishing"),
        (name = "category", description = "Categories and terms"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("trovato_session"))),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(openapi_json))
}

/// This OpenAPI document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json"))
)]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
