//! The item type pages: `/admin/structure/types` (every type, create one)
//! and `/admin/structure/types/{type}` (its label and title settings and
//! its fields: add, change label, kind, required and number of values,
//! remove, reorder by weight). Saving is [`super::create_type`] /
//! [`super::update_type`]: existing items follow the new definitions or
//! the change is refused, as through the API.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::field::RefTarget;
use super::{Failures, FieldDef, FieldKind, ItemError, ItemType};
use crate::error::{AppError, ErrorBody};
use crate::page::admin;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(types_page, create_type_from_page))
        .routes(routes!(type_page, update_type_from_page))
        .routes(routes!(delete_type_from_page))
}

/// The kinds a field may have, as the form's select lists them.
const KINDS: &[(&str, &str)] = &[
    ("text", "Text"),
    ("integer", "Integer"),
    ("boolean", "Yes/no"),
    ("date", "Date"),
    ("file", "File"),
    ("ref_item", "Reference to an item"),
    ("ref_user", "Reference to a user"),
    ("ref_term", "Reference to a term"),
];

fn kind_key(kind: &FieldKind) -> &'static str {
    match kind {
        FieldKind::Text { .. } => "text",
        FieldKind::Integer { .. } => "integer",
        FieldKind::Boolean => "boolean",
        FieldKind::Date => "date",
        FieldKind::File => "file",
        FieldKind::Reference {
            target: RefTarget::Item,
        } => "ref_item",
        FieldKind::Reference {
            target: RefTarget::User,
        } => "ref_user",
        FieldKind::Reference {
            target: RefTarget::Term,
        } => "ref_term",
    }
}

/// The kind `key` names; `old` keeps its limits when the kind stays.
fn kind_of(key: &str, old: Option<&FieldKind>) -> Option<FieldKind> {
    if let Some(o) = old
        && kind_key(o) == key
    {
        return Some(o.clone());
    }
    Some(match key {
        "text" => FieldKind::Text { max_length: None },
        "integer" => FieldKind::Integer {
            min: None,
            max: None,
        },
        "boolean" => FieldKind::Boolean,
        "date" => FieldKind::Date,
        "file" => FieldKind::File,
        "ref_item" => FieldKind::Reference {
            target: RefTarget::Item,
        },
        "ref_user" => FieldKind::Reference {
            target: RefTarget::User,
        },
        "ref_term" => FieldKind::Reference {
            target: RefTarget::Term,
        },
        _ => return None,
    })
}

/// What the last action did, shown once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Created,
    Saved,
    Deleted,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Notice::Created => "The item type was created; add its fields below.",
            Notice::Saved => "The item type was saved.",
            Notice::Deleted => "The item type was deleted.",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// What the last action did (set by the pages' own redirects).
    #[param(inline)]
    notice: Option<Notice>,
}

#[derive(Serialize)]
struct TypeRow {
    name: String,
    label: String,
    description: String,
    fields: usize,
    plugin: String,
}

/// A form's fields by name (urlencoded, names chosen by the page).
fn form_map(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn render_types(
    state: &AppState,
    account: &Account,
    notice: Option<&str>,
    error: Option<String>,
    form: &BTreeMap<String, String>,
) -> Result<Html<String>, AppError> {
    let rows: Vec<TypeRow> = super::store::list_types(&state.db)
        .await?
        .into_iter()
        .map(|t| TypeRow {
            fields: t.fields.len(),
            name: t.type_name,
            label: t.label,
            description: t.description,
            plugin: t.plugin,
        })
        .collect();
    admin::render(
        state,
        account,
        "/admin/structure/types",
        "Item types",
        "admin/types.html",
        minijinja::context! {
            types => rows,
            notice => notice,
            error => error,
            form => form,
        },
    )
    .await
}

/// Every item type, and a form to create one.
#[utoipa::path(get, path = "/admin/structure/types", tag = "page", params(PageQuery),
    responses(
        (status = 200, description = "The item types page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer content types`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn types_page(
    State(state): State<AppState>,
    account: Account,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CONTENT_TYPES)) {
        return Ok(r);
    }
    let Query(q) = query?;
    Ok(render_types(
        &state,
        &account,
        q.notice.map(Notice::text),
        None,
        &BTreeMap::new(),
    )
    .await?
    .into_response())
}

/// The create form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct NewTypeForm {
    /// Machine name.
    #[serde(rename = "type")]
    type_name: String,
    label: String,
    description: Option<String>,
    csrf_token: String,
}

/// The failures of a refused definition, as sentences.
fn failure_text(f: &Failures) -> String {
    f.iter()
        .map(|(k, m)| format!("{k}: {}", m.join("; ")))
        .collect::<Vec<_>>()
        .join(". ")
}

/// Create an item type from the types page (a form post); on to its page
/// to add fields. A bad name or label shows the form again with the error.
#[utoipa::path(post, path = "/admin/structure/types", tag = "page",
    request_body(content = NewTypeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "To the new type's page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer content types`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 409, description = "The type exists: the form again, with the error", body = String, content_type = "text/html"),
        (status = 422, description = "A bad name or a blank label: the form again, with the error", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn create_type_from_page(
    State(state): State<AppState>,
    account: Account,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CONTENT_TYPES)) {
        return Ok(r);
    }
    let form = form_map(&body);
    let field = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let t = ItemType {
        type_name: field("type"),
        label: field("label"),
        description: field("description"),
        has_title: true,
        title_label: "Title".to_owned(),
        plugin: "kernel".to_owned(),
        fields: vec![],
    };
    let (status, message) = match super::create_type(&state.db, &t).await {
        Ok(created) => {
            crate::search::config::apply_plugins(&state).await;
            return Ok(Redirect::to(&format!(
                "/admin/structure/types/{}?notice=created",
                created.type_name
            ))
            .into_response());
        }
        Err(ItemError::Invalid(f)) => (StatusCode::UNPROCESSABLE_ENTITY, failure_text(&f)),
        Err(ItemError::TypeExists(name)) => (
            StatusCode::CONFLICT,
            format!("An item type named `{name}` exists already."),
        ),
        Err(e) => return Err(e.into()),
    };
    let page = render_types(&state, &account, None, Some(message), &form).await?;
    Ok((status, page).into_response())
}

/// One field row of the type form.
#[derive(Debug, Clone, Serialize)]
struct FieldRow {
    name: String,
    label: String,
    kind: &'static str,
    required: bool,
    cardinality: u32,
    weight: i64,
    errors: Vec<String>,
}

fn rows_of(defs: &[FieldDef]) -> Vec<FieldRow> {
    defs.iter()
        .enumerate()
        .map(|(i, d)| FieldRow {
            name: d.name.clone(),
            label: d.label.clone(),
            kind: kind_key(&d.kind),
            required: d.required,
            cardinality: d.cardinality,
            weight: i as i64,
            errors: vec![],
        })
        .collect()
}

struct TypeForm<'a> {
    t: &'a ItemType,
    rows: Vec<FieldRow>,
    new: BTreeMap<String, String>,
    notice: Option<&'a str>,
    error: Option<String>,
}

async fn render_type(
    state: &AppState,
    account: &Account,
    f: TypeForm<'_>,
) -> Result<Html<String>, AppError> {
    admin::render(
        state,
        account,
        "/admin/structure/types",
        &format!("Item type: {}", f.t.label),
        "admin/type.html",
        minijinja::context! {
            t => minijinja::Value::from_serialize(f.t),
            rows => f.rows,
            new => f.new,
            kinds => KINDS,
            notice => f.notice,
            error => f.error,
        },
    )
    .await
}

/// An item type with its fields, to change.
#[utoipa::path(get, path = "/admin/structure/types/{type}", tag = "page",
    params(super::routes::TypePath, PageQuery),
    responses(
        (status = 200, description = "The item type's page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer content types`", body = ErrorBody),
        (status = 404, description = "No such type", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn type_page(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CONTENT_TYPES)) {
        return Ok(r);
    }
    let Query(q) = query?;
    let t = super::get_type(&state.db, &name).await?;
    let page = TypeForm {
        rows: rows_of(&t.fields),
        t: &t,
        new: BTreeMap::new(),
        notice: q.notice.map(Notice::text),
        error: None,
    };
    Ok(render_type(&state, &account, page).await?.into_response())
}

/// The type form's fields: `label`, `description`, `title_label`,
/// `has_title`; per field row `i`: `f.{i}.name`, `.label`, `.kind`,
/// `.required`, `.cardinality`, `.weight`, `.remove`; a new field:
/// `new.name`, `new.label`, `new.kind`, `new.required`, `new.cardinality`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TypeFormFields {
    label: String,
    description: Option<String>,
    title_label: Option<String>,
    has_title: Option<String>,
    csrf_token: String,
}

/// Reads the definition the form asks for. Returns it, the rows as the
/// form shows them again, and what the form itself got wrong.
fn read_type(
    current: &ItemType,
    form: &BTreeMap<String, String>,
) -> (ItemType, Vec<FieldRow>, Vec<String>) {
    let get = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let mut problems = Vec::new();
    let mut rows: Vec<(i64, usize, FieldRow, Option<FieldDef>)> = Vec::new();
    let mut i = 0usize;
    while let Some(name) = form.get(&format!("f.{i}.name")) {
        let old = current.fields.iter().find(|d| &d.name == name);
        let key = get(&format!("f.{i}.kind"));
        let weight = get(&format!("f.{i}.weight"))
            .parse::<i64>()
            .unwrap_or(i as i64);
        let cardinality = get(&format!("f.{i}.cardinality")).parse::<u32>();
        let row = FieldRow {
            name: name.clone(),
            label: get(&format!("f.{i}.label")),
            kind: KINDS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("text", |(k, _)| *k),
            required: form.contains_key(&format!("f.{i}.required")),
            cardinality: *cardinality.as_ref().unwrap_or(&1),
            weight,
            errors: vec![],
        };
        let removed = form.contains_key(&format!("f.{i}.remove"));
        let def = match (kind_of(&key, old.map(|o| &o.kind)), cardinality) {
            (Some(kind), Ok(cardinality)) => Some(FieldDef {
                name: name.clone(),
                label: row.label.clone(),
                kind,
                required: row.required,
                cardinality,
            }),
            (None, _) => {
                problems.push(format!("{name}: choose a kind"));
                None
            }
            (_, Err(_)) => {
                problems.push(format!(
                    "{name}: the number of values must be 0 (any) or more"
                ));
                None
            }
        };
        if !removed {
            rows.push((weight, i, row, def));
        }
        i += 1;
    }
    let new_label = get("new.label");
    if !new_label.is_empty() {
        let mut name = get("new.name");
        if name.is_empty() {
            name = machine_name(&new_label);
        }
        if !name.starts_with("field_") {
            name = format!("field_{name}");
        }
        let key = get("new.kind");
        let cardinality = get("new.cardinality").parse::<u32>();
        let row = FieldRow {
            name: name.clone(),
            label: new_label.clone(),
            kind: KINDS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or("text", |(k, _)| *k),
            required: form.contains_key("new.required"),
            cardinality: *cardinality.as_ref().unwrap_or(&1),
            weight: i64::MAX,
            errors: vec![],
        };
        let def = match (kind_of(&key, None), cardinality) {
            (Some(kind), Ok(cardinality)) => Some(FieldDef {
                name,
                label: new_label,
                kind,
                required: row.required,
                cardinality,
            }),
            (None, _) => {
                problems.push("the new field: choose a kind".to_owned());
                None
            }
            (_, Err(_)) => {
                problems
                    .push("the new field: the number of values must be 0 (any) or more".to_owned());
                None
            }
        };
        rows.push((i64::MAX, usize::MAX, row, def));
    }
    rows.sort_by_key(|(w, i, _, _)| (*w, *i));
    let fields: Vec<FieldDef> = rows.iter().filter_map(|(_, _, _, d)| d.clone()).collect();
    let shown: Vec<FieldRow> = rows
        .into_iter()
        .enumerate()
        .map(|(n, (_, _, mut r, _))| {
            r.weight = n as i64;
            r
        })
        .collect();
    let title_label = get("title_label");
    let t = ItemType {
        type_name: current.type_name.clone(),
        label: get("label"),
        description: get("description"),
        has_title: form.contains_key("has_title"),
        title_label: if title_label.is_empty() {
            "Title".to_owned()
        } else {
            title_label
        },
        plugin: current.plugin.clone(),
        fields,
    };
    (t, shown, problems)
}

/// `Release date` → `release_date`.
fn machine_name(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').chars().take(58).collect()
}

/// Save an item type from its page (a form post): its label, title
/// settings and fields as the form lists them. Refused definitions, and
/// changes existing items' values would fail, show the form again with the
/// errors; nothing changes.
#[utoipa::path(post, path = "/admin/structure/types/{type}", tag = "page",
    params(super::routes::TypePath),
    request_body(content = TypeFormFields, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Saved: back to the type's page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer content types`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such type", body = ErrorBody),
        (status = 409, description = "Existing items hold values the new definitions refuse: the form again, with the error", body = String, content_type = "text/html"),
        (status = 422, description = "Invalid definitions: the form again, each error next to its field", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn update_type_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CONTENT_TYPES)) {
        return Ok(r);
    }
    let current = super::get_type(&state.db, &name).await?;
    let form = form_map(&body);
    let (t, mut rows, problems) = read_type(&current, &form);
    let new: BTreeMap<String, String> = form
        .iter()
        .filter(|(k, _)| k.starts_with("new."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (status, error) = if !problems.is_empty() {
        (StatusCode::UNPROCESSABLE_ENTITY, problems.join(". "))
    } else {
        match super::update_type(&state, &t).await {
            Ok(_) => {
                crate::search::config::apply_plugins(&state).await;
                return Ok(Redirect::to(&format!(
                    "/admin/structure/types/{}?notice=saved",
                    t.type_name
                ))
                .into_response());
            }
            Err(ItemError::Invalid(f)) => {
                let mut rest = Failures::new();
                for (k, m) in f {
                    match rows.iter_mut().find(|r| r.name == k) {
                        Some(r) => r.errors.extend(m),
                        None => {
                            rest.insert(k, m);
                        }
                    }
                }
                let mut message =
                    "The item type was not saved: correct the fields marked below.".to_owned();
                if !rest.is_empty() {
                    message = format!("The item type was not saved: {}.", failure_text(&rest));
                }
                (StatusCode::UNPROCESSABLE_ENTITY, message)
            }
            Err(ItemError::TypeConflict(c)) => (
                StatusCode::CONFLICT,
                format!("The item type was not saved: {}.", c.message()),
            ),
            Err(e) => return Err(e.into()),
        }
    };
    let page = TypeForm {
        t: &t,
        rows,
        new: if status == StatusCode::UNPROCESSABLE_ENTITY {
            new
        } else {
            BTreeMap::new()
        },
        notice: None,
        error: Some(error),
    };
    let html = render_type(&state, &account, page).await?;
    Ok((status, html).into_response())
}

/// The delete form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeleteTypeForm {
    csrf_token: String,
}

/// Delete an item type that has no items (a form post); to the types page.
#[utoipa::path(post, path = "/admin/structure/types/{type}/delete", tag = "page",
    params(super::routes::TypePath),
    request_body(content = DeleteTypeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Deleted: to the types page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer content types`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such type", body = ErrorBody),
        (status = 409, description = "The type still has items: its page again, with the error", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_type_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CONTENT_TYPES)) {
        return Ok(r);
    }
    match super::delete_type(&state.db, &name).await {
        Ok(()) => Ok(Redirect::to("/admin/structure/types?notice=deleted").into_response()),
        Err(ItemError::TypeInUse(_)) => {
            let t = super::get_type(&state.db, &name).await?;
            let page = TypeForm {
                rows: rows_of(&t.fields),
                t: &t,
                new: BTreeMap::new(),
                notice: None,
                error: Some(
                    "The item type was not deleted: it still has items. Delete them first.".into(),
                ),
            };
            let html = render_type(&state, &account, page).await?;
            Ok((StatusCode::CONFLICT, html).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> ItemType {
        ItemType {
            type_name: "article".into(),
            label: "Article".into(),
            description: String::new(),
            has_title: true,
            title_label: "Title".into(),
            plugin: "kernel".into(),
            fields: serde_json::from_value(serde_json::json!([
                {"name": "field_body", "label": "Body", "kind": "text", "max_length": 100},
                {"name": "field_n", "label": "N", "kind": "integer"},
            ]))
            .expect("defs"),
        }
    }

    fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_form_reorders_removes_and_adds_fields_keeping_limits() {
        let f = form(&[
            ("label", "Article"),
            ("has_title", "1"),
            ("f.0.name", "field_body"),
            ("f.0.label", "Text"),
            ("f.0.kind", "text"),
            ("f.0.cardinality", "1"),
            ("f.0.weight", "5"),
            ("f.1.name", "field_n"),
            ("f.1.label", "N"),
            ("f.1.kind", "integer"),
            ("f.1.cardinality", "1"),
            ("f.1.weight", "1"),
            ("f.1.remove", "1"),
            ("new.label", "Release date"),
            ("new.kind", "date"),
            ("new.cardinality", "1"),
        ]);
        let (t, rows, problems) = read_type(&current(), &f);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = t.fields.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["field_body", "field_release_date"]);
        assert_eq!(
            t.fields[0].kind,
            FieldKind::Text {
                max_length: Some(100)
            }
        );
        assert_eq!(t.fields[0].label, "Text");
        assert_eq!(rows.len(), 2);
    }
}
