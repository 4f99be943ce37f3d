//! The category pages: `/admin/structure/categories` (every category,
//! create one) and `/admin/structure/categories/{id}` (its terms as a tree
//! by parent and weight: add, rename, move, reweight, delete). Every action
//! is this module's own function; a refusal shows the page again with the
//! reason.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Category, CategoryError, Term, TermInput};
use crate::error::{AppError, ErrorBody, HttpError};
use crate::page::admin;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(categories_page, create_from_page))
        .routes(routes!(category_page))
        .routes(routes!(create_term_from_page))
        .routes(routes!(update_term_from_page))
        .routes(routes!(delete_term_from_page))
}

/// What the last action did, shown once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Created,
    TermAdded,
    TermSaved,
    TermDeleted,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Notice::Created => "The category was created; add its terms below.",
            Notice::TermAdded => "The term was added.",
            Notice::TermSaved => "The term was saved.",
            Notice::TermDeleted => "The term was deleted.",
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

/// The reason a 4xx refusal gives, as the page shows it; a 5xx is the
/// request's error.
fn refusal(e: CategoryError) -> Result<(StatusCode, String), AppError> {
    let (status, _) = e.status_code();
    if !status.is_client_error() {
        return Err(e.into());
    }
    let text = match &e {
        CategoryError::Invalid(f) => f
            .iter()
            .map(|(k, m)| format!("{k}: {}", m.join("; ")))
            .collect::<Vec<_>>()
            .join(". "),
        other => other.to_string(),
    };
    let mut c = text.chars();
    let text = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => text,
    };
    Ok((status, text))
}

fn form_map(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn render_categories(
    state: &AppState,
    account: &Account,
    notice: Option<&str>,
    error: Option<String>,
    form: &BTreeMap<String, String>,
) -> Result<Html<String>, AppError> {
    let categories = super::list(&state.db).await?;
    admin::render(
        state,
        account,
        "/admin/structure/categories",
        "Categories",
        "admin/categories.html",
        minijinja::context! {
            categories => categories,
            notice => notice,
            error => error,
            form => form,
        },
    )
    .await
}

/// Every category, and a form to create one.
#[utoipa::path(get, path = "/admin/structure/categories", tag = "page", params(PageQuery),
    responses(
        (status = 200, description = "The categories page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer categories`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn categories_page(
    State(state): State<AppState>,
    account: Account,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CATEGORIES)) {
        return Ok(r);
    }
    let Query(q) = query?;
    Ok(render_categories(
        &state,
        &account,
        q.notice.map(Notice::text),
        None,
        &BTreeMap::new(),
    )
    .await?
    .into_response())
}

/// The new category form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct NewCategoryForm {
    id: String,
    label: String,
    description: Option<String>,
    csrf_token: String,
}

/// Create a category from the categories page (a form post).
#[utoipa::path(post, path = "/admin/structure/categories", tag = "page",
    request_body(content = NewCategoryForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "To the new category's page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer categories`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 409, description = "The category exists: the form again, with the reason", body = String, content_type = "text/html"),
        (status = 422, description = "A bad id or label: the form again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn create_from_page(
    State(state): State<AppState>,
    account: Account,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CATEGORIES)) {
        return Ok(r);
    }
    let form = form_map(&body);
    let get = |k: &str| form.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let c = Category {
        id: get("id"),
        label: get("label"),
        description: get("description"),
    };
    let outcome = if crate::text::is_machine_name(&c.id, 32) {
        if c.label.is_empty() {
            Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                "The label must not be blank.".to_owned(),
            ))
        } else {
            match super::create(&state.db, &c).await {
                Ok(c) => Ok(c),
                Err(e) => Err(refusal(e)?),
            }
        }
    } else {
        Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "The id must be 1-32 of a-z, 0-9 and _, starting with a letter.".to_owned(),
        ))
    };
    match outcome {
        Ok(c) => Ok(Redirect::to(&format!(
            "/admin/structure/categories/{}?notice=created",
            c.id
        ))
        .into_response()),
        Err((status, message)) => {
            let page = render_categories(&state, &account, None, Some(message), &form).await?;
            Ok((status, page).into_response())
        }
    }
}

/// One term in the tree, with its depth.
#[derive(Serialize)]
struct TreeRow {
    term: Term,
    depth: usize,
}

/// The terms as a tree: each under its parent, siblings by weight and name.
fn tree(terms: Vec<Term>) -> Vec<TreeRow> {
    let mut children: BTreeMap<Option<Uuid>, Vec<Term>> = BTreeMap::new();
    let ids: Vec<Uuid> = terms.iter().map(|t| t.id).collect();
    for t in terms {
        // A parent outside the list (none should be) shows the term at the top.
        let parent = t.parent.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(t);
    }
    let mut out = Vec::new();
    let mut stack: Vec<(Term, usize)> = children
        .remove(&None)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .map(|t| (t, 0))
        .collect();
    while let Some((t, depth)) = stack.pop() {
        if let Some(kids) = children.remove(&Some(t.id)) {
            stack.extend(kids.into_iter().rev().map(|k| (k, depth + 1)));
        }
        out.push(TreeRow { term: t, depth });
    }
    out
}

async fn render_category(
    state: &AppState,
    account: &Account,
    c: &Category,
    notice: Option<&str>,
    error: Option<String>,
) -> Result<Html<String>, AppError> {
    let rows = tree(super::terms(state, &c.id).await?);
    admin::render(
        state,
        account,
        "/admin/structure/categories",
        &format!("Category: {}", c.label),
        "admin/category.html",
        minijinja::context! {
            category => c,
            rows => rows,
            notice => notice,
            error => error,
        },
    )
    .await
}

/// A category id in a path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct CategoryPath {
    /// The category's id.
    id: String,
}

/// A category's terms as a tree, to change.
#[utoipa::path(get, path = "/admin/structure/categories/{id}", tag = "page",
    params(CategoryPath, PageQuery),
    responses(
        (status = 200, description = "The category's page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer categories`", body = ErrorBody),
        (status = 404, description = "No such category", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn category_page(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CATEGORIES)) {
        return Ok(r);
    }
    let Query(q) = query?;
    let c = super::get(&state.db, &id).await?;
    Ok(
        render_category(&state, &account, &c, q.notice.map(Notice::text), None)
            .await?
            .into_response(),
    )
}

/// A term's form: `name`, `parent` (a term id, empty for none), `weight`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TermForm {
    name: String,
    parent: Option<String>,
    weight: Option<String>,
    csrf_token: String,
}

/// The term the form describes, or why it cannot be one.
fn term_input(form: &BTreeMap<String, String>) -> Result<TermInput, String> {
    let parent = match form.get("parent").map(|p| p.trim()) {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<Uuid>()
                .map_err(|_| "The parent must be a term of this category.".to_owned())?,
        ),
    };
    let weight = match form.get("weight").map(|w| w.trim()) {
        None | Some("") => 0,
        Some(w) => w
            .parse::<i32>()
            .map_err(|_| format!("The weight must be a whole number, not “{w}”."))?,
    };
    Ok(TermInput {
        name: form
            .get("name")
            .map(|n| n.trim().to_owned())
            .unwrap_or_default(),
        description: form.get("description").cloned().unwrap_or_default(),
        parent,
        weight,
    })
}

/// Add a term to the category (a form post).
#[utoipa::path(post, path = "/admin/structure/categories/{id}/terms", tag = "page",
    params(CategoryPath),
    request_body(content = TermForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Added: back to the category's page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer categories`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such category", body = ErrorBody),
        (status = 409, description = "A term of that name under that parent exists: the page again, with the reason", body = String, content_type = "text/html"),
        (status = 422, description = "A blank name, a bad parent or weight: the page again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn create_term_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CATEGORIES)) {
        return Ok(r);
    }
    let c = super::get(&state.db, &id).await?;
    let outcome = match term_input(&form_map(&body)) {
        Err(m) => Err((StatusCode::UNPROCESSABLE_ENTITY, m)),
        Ok(input) => match super::create_term(&state, &c.id, &input).await {
            Ok(_) => Ok(()),
            Err(e) => Err(refusal(e)?),
        },
    };
    match outcome {
        Ok(()) => Ok(Redirect::to(&format!(
            "/admin/structure/categories/{}?notice=term_added",
            c.id
        ))
        .into_response()),
        Err((status, message)) => {
            let page = render_category(&state, &account, &c, None, Some(message)).await?;
            Ok((status, page).into_response())
        }
    }
}

/// A term id in a path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct TermPath {
    /// The term's id.
    id: String,
}

async fn term_of(state: &AppState, raw: &str) -> Result<(Term, Category), AppError> {
    let id: Uuid = raw
        .parse()
        .map_err(|_| AppError::NotFound(format!("term {raw}")))?;
    let t = super::term(state, id).await?;
    let c = super::get(&state.db, &t.category_id).await?;
    Ok((t, c))
}

/// Rename, move or reweight a term (a form post).
#[utoipa::path(post, path = "/admin/structure/terms/{id}", tag = "page",
    params(TermPath),
    request_body(content = TermForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Saved: back to the category's page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer categories`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such term", body = ErrorBody),
        (status = 409, description = "A term of that name under that parent exists: the page again, with the reason", body = String, content_type = "text/html"),
        (status = 422, description = "A blank name, a bad parent (its own descendant, another category's term) or weight: the page again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn update_term_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CATEGORIES)) {
        return Ok(r);
    }
    let (t, c) = term_of(&state, &raw).await?;
    let mut form = form_map(&body);
    // The form does not edit the description: it stays.
    form.entry("description".into())
        .or_insert_with(|| t.description.clone());
    let outcome = match term_input(&form) {
        Err(m) => Err((StatusCode::UNPROCESSABLE_ENTITY, m)),
        Ok(input) => match super::update_term(&state, t.id, &input).await {
            Ok(_) => Ok(()),
            Err(e) => Err(refusal(e)?),
        },
    };
    match outcome {
        Ok(()) => Ok(Redirect::to(&format!(
            "/admin/structure/categories/{}?notice=term_saved",
            c.id
        ))
        .into_response()),
        Err((status, message)) => {
            let page = render_category(&state, &account, &c, None, Some(message)).await?;
            Ok((status, page).into_response())
        }
    }
}

/// A form with nothing but the token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenOnly {
    csrf_token: String,
}

/// Delete a term (a form post); a term with children, or one items
/// reference, is not deleted and the page says why.
#[utoipa::path(post, path = "/admin/structure/terms/{id}/delete", tag = "page",
    params(TermPath),
    request_body(content = TokenOnly, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Deleted: back to the category's page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer categories`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such term", body = ErrorBody),
        (status = 409, description = "The term has children or items reference it: the page again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_term_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_CATEGORIES)) {
        return Ok(r);
    }
    let (t, c) = term_of(&state, &raw).await?;
    match super::delete_term(&state, t.id).await {
        Ok(()) => Ok(Redirect::to(&format!(
            "/admin/structure/categories/{}?notice=term_deleted",
            c.id
        ))
        .into_response()),
        Err(e) => {
            let (status, message) = refusal(e)?;
            let page = render_category(&state, &account, &c, None, Some(message)).await?;
            Ok((status, page).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(name: &str, parent: Option<Uuid>) -> Term {
        Term {
            id: Uuid::now_v7(),
            category_id: "c".into(),
            name: name.into(),
            description: String::new(),
            parent,
            weight: 0,
            changed: chrono::Utc::now(),
        }
    }

    #[test]
    fn terms_come_under_their_parents_in_order() {
        let fruit = term("Fruit", None);
        let apple = term("Apple", Some(fruit.id));
        let veg = term("Vegetables", None);
        let kale = term("Kale", Some(veg.id));
        let rows = tree(vec![
            fruit.clone(),
            veg.clone(),
            apple.clone(),
            kale.clone(),
        ]);
        let shown: Vec<(&str, usize)> = rows
            .iter()
            .map(|r| (r.term.name.as_str(), r.depth))
            .collect();
        assert_eq!(
            shown,
            [("Fruit", 0), ("Apple", 1), ("Vegetables", 0), ("Kale", 1)]
        );
    }
}
