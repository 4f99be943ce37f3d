//! The OpenAPI 3 description of the HTTP surface, served at
//! `/api/openapi.json`.
//!
//! Nothing here lists paths: each handler carries its `#[utoipa::path]`
//! annotation and each subsystem's `router()` registers it through
//! `utoipa_axum::routes!`, so the route and its entry are one declaration.
//! [`crate::app::api`] merges the subsystems into the router and this
//! document at once. This module holds the document's frame (info, tags,
//! security schemes) and the route serving it.

use axum::Extension;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The bearer-token security scheme (`trovato user token`).
pub const BEARER: &str = "bearer";
/// The session-cookie security scheme (`POST /user/login`).
pub const SESSION: &str = "session";
/// The scheduler key of `POST /cron` (`cron.key`).
pub const CRON_KEY: &str = "cron_key";

#[derive(OpenApi)]
#[openapi(
    info(title = "Trovato Kernel", description = "Content management kernel API. \
        Every error is JSON: `{\"error\": code, \"message\": text, \"details\": ...}`."),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "observe", description = "Health and metrics"),
        (name = "user", description = "Login, logout, the current account, roles"),
        (name = "plugin", description = "WebAssembly plugins"),
        (name = "meta", description = "This document"),
        (name = "page", description = "Server-rendered HTML pages"),
        (name = "item", description = "Item types, items and revisions"),
        (name = "stage", description = "Stages and publishing"),
        (name = "category", description = "Categories and terms"),
        (name = "cron", description = "Periodic work on one server at a time"),
        (name = "batch", description = "Operations over many targets in chunks, with live progress"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::user::session::COOKIE,
            ))),
        );
        components.add_security_scheme(
            CRON_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(
                crate::cron::routes::KEY_HEADER,
            ))),
        );
    }
}

/// Adds the responses that come from shared plumbing rather than from a
/// handler, so no operation forgets them: every operation with a request
/// body can answer 400 (malformed body), 413 (too large, `max_body_bytes`),
/// 415 (wrong content type) and 422 (not the schema's shape), the
/// rejections of `crate::http`; every
/// operation accepting a bearer token answers 401 to an invalid one (the
/// `Account` extractor).
pub fn add_shared_responses(doc: &mut utoipa::openapi::OpenApi) {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            let responses = &mut op.responses.responses;
            if op.request_body.is_some() {
                for (status, description) in [
                    ("400", "Malformed body: not JSON, or not a JSON object"),
                    ("413", "Body larger than `max_body_bytes`"),
                    ("415", "Body of another content type"),
                    (
                        "422",
                        "A body that is not the schema's shape (`invalid_body`)",
                    ),
                ] {
                    let entry = responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                    // A form route documents its own 422 (the form again,
                    // as HTML); the body rejections are JSON all the same.
                    if let RefOr::T(response) = entry {
                        response
                            .content
                            .entry("application/json".to_owned())
                            .or_insert_with(|| {
                                Content::new(Some(Ref::from_schema_name("ErrorBody")))
                            });
                    }
                }
            }
            let bearer = op.security.iter().flatten().any(|req| {
                serde_json::to_value(req)
                    .ok()
                    .is_some_and(|v| v.get(BEARER).is_some())
            });
            if bearer {
                responses
                    .entry("401".to_owned())
                    .or_insert_with(|| error("Invalid or expired bearer token").into());
            }
        }
    }
}

/// Narrows the `PermissionName` schema to the permissions this site
/// declares (the kernel's and its plugins'), the only ones a role may be
/// given: the document is built per site, after the plugins are loaded.
pub fn describe_permissions(
    doc: &mut utoipa::openapi::OpenApi,
    registry: &crate::user::permissions::Registry,
) {
    use utoipa::openapi::{RefOr, Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(schema))) = components.schemas.get_mut("PermissionName") {
        let names: Vec<serde_json::Value> = registry.all().map(|p| p.name.clone().into()).collect();
        schema.enum_values = Some(names);
    }
}

/// Every operation of `doc` as (path template, method, operation), by path
/// then method.
pub fn operations(
    doc: &utoipa::openapi::OpenApi,
) -> impl Iterator<Item = (&str, Method, &Operation)> {
    doc.paths.paths.iter().flat_map(|(path, item)| {
        [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::OPTIONS, &item.options),
            (Method::HEAD, &item.head),
            (Method::PATCH, &item.patch),
            (Method::TRACE, &item.trace),
        ]
        .into_iter()
        .filter_map(move |(m, op)| op.as_ref().map(|op| (path.as_str(), m, op)))
    })
}

/// The merged document, serialised once when the router is built.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        // Serialising a tree of strings and maps cannot fail.
        Self(Bytes::from(serde_json::to_vec(doc).unwrap_or_default()))
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This OpenAPI document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json",
        body = Object)),
    security(())
)]
async fn openapi_json(Extension(doc): Extension<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0).into_response()
}
