//! The stage pages: the switcher's form (`POST /admin/stage/select`, the
//! session's working stage), `/admin/stages` (every stage, create one),
//! `/admin/stages/{id}` (what the stage changes, each edit as a diff of
//! title and fields against live) and publishing it after a confirmation.
//! Every action is the stage module's own function.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{StageError, StageId};
use crate::db::timed;
use crate::error::{AppError, ErrorBody};
use crate::item::display::{self, ShownValue};
use crate::item::{self, Item};
use crate::page::admin;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(select_from_page))
        .routes(routes!(stages_page, create_from_page))
        .routes(routes!(stage_page))
        .routes(routes!(publish_from_page))
}

/// What the last action did, shown once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Created,
    Published,
    NotConfirmed,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Notice::Created => "The stage was created.",
            Notice::Published => "The stage was published: its changes are live.",
            Notice::NotConfirmed => "Nothing was published: tick the confirmation first.",
        }
    }

    fn param(self) -> &'static str {
        match self {
            Notice::Created => "created",
            Notice::Published => "published",
            Notice::NotConfirmed => "not_confirmed",
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

/// The switcher's form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SelectForm {
    pub stage: String,
    /// The admin page to return to (a local path).
    #[serde(default)]
    pub destination: String,
    #[serde(default)]
    pub csrf_token: String,
}

/// A local admin path to return to, else `/admin`.
fn back_to(destination: &str) -> String {
    if destination.starts_with("/admin") && !destination.contains("//") {
        destination.to_owned()
    } else {
        "/admin".to_owned()
    }
}

/// Select the session's working stage from the switcher (a form post);
/// back to the page it was on.
#[utoipa::path(post, path = "/admin/stage/select", tag = "page",
    request_body(content = SelectForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the page, whose switcher names the stage; anonymous: to the login form"),
        (status = 400, description = "Not a browser session, or a malformed form", body = ErrorBody),
        (status = 403, description = "May not work in stages, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 422, description = "A bad stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn select_from_page(
    State(state): State<AppState>,
    account: Account,
    form: Result<Form<SelectForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, None) {
        return Ok(r);
    }
    let Form(form) = form?;
    let Some((token, _)) = &account.session else {
        return Err(StageError::SessionOnly.into());
    };
    let id = StageId::parse(form.stage.trim())?;
    super::require_access(&account, &id)?;
    if !id.is_live() && !super::exists(&state.db, &id).await? {
        return Err(StageError::NotFound(id.to_string()).into());
    }
    super::select_for_session(&state, token, &id).await?;
    // Back to the page as it was: its switcher now names the stage.
    Ok(Redirect::to(&back_to(&form.destination)).into_response())
}

#[derive(Serialize)]
struct StageRow {
    id: String,
    label: String,
    created: String,
    changes: i64,
}

async fn render_stages(
    state: &AppState,
    account: &Account,
    notice: Option<&str>,
    error: Option<String>,
    form: (&str, &str),
) -> Result<axum::response::Html<String>, AppError> {
    let stages = super::list(&state.db).await?;
    let counts: Vec<(String, i64)> = timed(
        "stage.change_counts",
        sqlx::query_as(
            "SELECT s.id,
                    (SELECT count(*) FROM stage_association a WHERE a.stage_id = s.id)
                  + (SELECT count(*) FROM item i WHERE i.stage_id = s.id)
             FROM stage s",
        )
        .fetch_all(&state.db),
    )
    .await
    .map_err(StageError::from)?;
    let rows: Vec<StageRow> = stages
        .into_iter()
        .filter(|s| s.id != crate::cache::LIVE)
        .map(|s| StageRow {
            changes: counts
                .iter()
                .find(|(id, _)| *id == s.id)
                .map_or(0, |(_, n)| *n),
            created: display::readable_time(s.created),
            id: s.id,
            label: s.label,
        })
        .collect();
    admin::render(
        state,
        account,
        "/admin/stages",
        "Stages",
        "admin/stages.html",
        minijinja::context! {
            stages => rows,
            notice => notice,
            error => error,
            new_id => form.0,
            new_label => form.1,
        },
    )
    .await
}

/// Every stage with how many items it changes, and a form to create one.
#[utoipa::path(get, path = "/admin/stages", tag = "page", params(PageQuery),
    responses(
        (status = 200, description = "The stages page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer stages`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn stages_page(
    State(state): State<AppState>,
    account: Account,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_STAGES)) {
        return Ok(r);
    }
    let Query(q) = query?;
    let notice = q.notice.map(Notice::text);
    Ok(render_stages(&state, &account, notice, None, ("", ""))
        .await?
        .into_response())
}

/// The create form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewStageForm {
    pub id: String,
    pub label: String,
    #[serde(default)]
    pub csrf_token: String,
}

/// Create a stage from the stages page (a form post). A bad id, a blank
/// label or an existing id shows the form again with the error.
#[utoipa::path(post, path = "/admin/stages", tag = "page",
    request_body(content = NewStageForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "To the new stage's page; anonymous: to the login form"),
        (status = 400, description = "A malformed form", body = ErrorBody),
        (status = 403, description = "Lacks `administer stages`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 409, description = "The stage exists: the form again, with the error", body = String, content_type = "text/html"),
        (status = 422, description = "A bad id or a blank label: the form again, with the error", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn create_from_page(
    State(state): State<AppState>,
    account: Account,
    form: Result<Form<NewStageForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_STAGES)) {
        return Ok(r);
    }
    let Form(form) = form?;
    let outcome = match StageId::parse(form.id.trim()) {
        Ok(id) if id.is_live() => Err((
            StatusCode::CONFLICT,
            "The live stage exists already.".to_owned(),
        )),
        Err(e) => Err((StatusCode::UNPROCESSABLE_ENTITY, sentence(&e.to_string()))),
        Ok(_) if form.label.trim().is_empty() => Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "The label must not be blank.".to_owned(),
        )),
        Ok(id) => match super::create(&state.db, &id, form.label.trim()).await {
            Ok(_) => Ok(id),
            Err(StageError::Exists(_)) => Err((
                StatusCode::CONFLICT,
                format!("A stage with the id `{id}` exists already."),
            )),
            Err(e) => return Err(e.into()),
        },
    };
    match outcome {
        Ok(id) => Ok(Redirect::to(&format!("/admin/stages/{id}?notice=created")).into_response()),
        Err((status, message)) => {
            let page = render_stages(
                &state,
                &account,
                None,
                Some(message),
                (form.id.as_str(), form.label.as_str()),
            )
            .await?;
            Ok((status, page).into_response())
        }
    }
}

/// The kernel's messages start in lower case; the pages show sentences.
fn sentence(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

/// One field (or the title, status, flags) whose value differs.
#[derive(Serialize)]
struct Diff {
    label: String,
    live: Vec<ShownValue>,
    stage: Vec<ShownValue>,
}

/// One item the stage changes.
#[derive(Serialize)]
struct ChangeRow {
    id: Uuid,
    title: String,
    live_title: Option<String>,
    type_label: String,
    created: bool,
    diffs: Vec<Diff>,
}

fn texts(values: &[&str]) -> Vec<ShownValue> {
    values
        .iter()
        .map(|t| ShownValue {
            text: (*t).to_owned(),
            href: None,
            image: None,
        })
        .collect()
}

fn flag(on: bool) -> &'static str {
    if on { "yes" } else { "no" }
}

fn status_text(item: &Item) -> &'static str {
    if item.is_published() {
        "published"
    } else {
        "unpublished"
    }
}

/// The diff of `staged` against `live` (`None`: created in the stage).
fn diff(
    t: &item::ItemType,
    live: Option<&Item>,
    staged: &Item,
    names: &display::Names,
) -> Vec<Diff> {
    let mut out = Vec::new();
    let pairs: [(&str, Option<String>, String); 4] = [
        (
            t.title_label.as_str(),
            live.map(|l| l.title.clone()),
            staged.title.clone(),
        ),
        (
            "Status",
            live.map(|l| status_text(l).to_owned()),
            status_text(staged).to_owned(),
        ),
        (
            "Promoted",
            live.map(|l| flag(l.promote).to_owned()),
            flag(staged.promote).to_owned(),
        ),
        (
            "Sticky",
            live.map(|l| flag(l.sticky).to_owned()),
            flag(staged.sticky).to_owned(),
        ),
    ];
    for (label, before, after) in pairs {
        if before.as_deref() != Some(after.as_str()) && (live.is_some() || !after.is_empty()) {
            out.push(Diff {
                label: label.to_owned(),
                live: before.map(|b| texts(&[b.as_str()])).unwrap_or_default(),
                stage: texts(&[after.as_str()]),
            });
        }
    }
    let empty = serde_json::Value::Null;
    for def in &t.fields {
        let before: Vec<ShownValue> = display::values_of(def, live.map_or(&empty, |l| &l.fields))
            .into_iter()
            .map(|v| display::show_value(def, v, names))
            .collect();
        let after: Vec<ShownValue> = display::values_of(def, &staged.fields)
            .into_iter()
            .map(|v| display::show_value(def, v, names))
            .collect();
        if before != after {
            out.push(Diff {
                label: def.label.clone(),
                live: before,
                stage: after,
            });
        }
    }
    out
}

/// What `stage` changes: items created in it, then live items it edits.
async fn changes(state: &AppState, stage: &StageId) -> Result<Vec<ChangeRow>, AppError> {
    let ids: Vec<(Uuid, bool)> = timed(
        "stage.changed_items",
        sqlx::query_as(
            "SELECT id, true FROM item WHERE stage_id = $1
             UNION ALL
             SELECT item_id, false FROM stage_association WHERE stage_id = $1
             ORDER BY 2 DESC, 1",
        )
        .bind(stage.as_str())
        .fetch_all(&state.db),
    )
    .await
    .map_err(StageError::from)?;
    let types: std::collections::BTreeMap<String, item::ItemType> =
        item::store::list_types(&state.db)
            .await?
            .into_iter()
            .map(|t| (t.type_name.clone(), t))
            .collect();
    let mut rows = Vec::new();
    for (id, created) in ids {
        let Some(staged) = item::store::find(&state.db, stage.as_str(), id).await? else {
            continue;
        };
        let live = if created {
            None
        } else {
            item::store::find(&state.db, crate::cache::LIVE, id).await?
        };
        let Some(t) = types.get(&staged.item_type) else {
            continue;
        };
        let mut all = vec![&staged.fields];
        if let Some(l) = &live {
            all.push(&l.fields);
        }
        let names = display::names(state, &t.fields, &all).await?;
        rows.push(ChangeRow {
            id,
            title: staged.title.clone(),
            live_title: live.as_ref().map(|l| l.title.clone()),
            type_label: t.label.clone(),
            created,
            diffs: diff(t, live.as_ref(), &staged, &names),
        });
    }
    Ok(rows)
}

async fn render_stage(
    state: &AppState,
    account: &Account,
    stage: &super::Stage,
    notice: Option<&str>,
    error: Option<String>,
) -> Result<axum::response::Html<String>, AppError> {
    let id = StageId::parse(&stage.id)?;
    let rows = changes(state, &id).await?;
    admin::render(
        state,
        account,
        "/admin/stages",
        &format!("Stage: {}", stage.label),
        "admin/stage.html",
        minijinja::context! {
            stage => minijinja::Value::from_serialize(stage),
            changes => rows,
            notice => notice,
            error => error,
        },
    )
    .await
}

async fn find_stage(state: &AppState, raw: &str) -> Result<super::Stage, AppError> {
    let id = StageId::parse(raw).map_err(|_| StageError::NotFound(raw.to_owned()))?;
    super::list(&state.db)
        .await?
        .into_iter()
        .find(|s| s.id == id.as_str() && !id.is_live())
        .ok_or_else(|| StageError::NotFound(raw.to_owned()).into())
}

/// What a stage changes against live, with the publish form.
#[utoipa::path(get, path = "/admin/stages/{id}", tag = "page",
    params(super::routes::StagePath, PageQuery),
    responses(
        (status = 200, description = "The stage's page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer stages`", body = ErrorBody),
        (status = 404, description = "No such stage (live has no page)", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn stage_page(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_STAGES)) {
        return Ok(r);
    }
    let Query(q) = query?;
    let stage = find_stage(&state, &id).await?;
    Ok(
        render_stage(&state, &account, &stage, q.notice.map(Notice::text), None)
            .await?
            .into_response(),
    )
}

/// The publish form: publishing needs the box ticked.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PublishForm {
    /// `yes` when the editor confirmed.
    #[serde(default)]
    pub confirm: String,
    #[serde(default)]
    pub csrf_token: String,
}

/// Publish the stage from its page (a form post with the confirmation
/// ticked); back to the page with a notice. An item that no longer
/// validates publishes nothing and is named on the page.
#[utoipa::path(post, path = "/admin/stages/{id}/publish", tag = "page",
    params(super::routes::StagePath),
    request_body(content = PublishForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the stage's page with a notice; anonymous: to the login form"),
        (status = 400, description = "A malformed form", body = ErrorBody),
        (status = 403, description = "Lacks `administer stages`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 422, description = "An item no longer validates: the page again, naming it; nothing was published", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn publish_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
    form: Result<Form<PublishForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_STAGES)) {
        return Ok(r);
    }
    let Form(form) = form?;
    let stage = find_stage(&state, &id).await?;
    if form.confirm != "yes" {
        return Ok(Redirect::to(&format!(
            "/admin/stages/{}?notice={}",
            stage.id,
            Notice::NotConfirmed.param()
        ))
        .into_response());
    }
    let sid = StageId::parse(&stage.id)?;
    match super::publish(&state, &sid).await {
        Ok(_) => Ok(Redirect::to(&format!(
            "/admin/stages/{}?notice={}",
            stage.id,
            Notice::Published.param()
        ))
        .into_response()),
        Err(StageError::ItemInvalid { item, failures }) => {
            let fields: Vec<String> = failures
                .iter()
                .map(|(f, m)| format!("{f}: {}", m.join("; ")))
                .collect();
            let message = format!(
                "Nothing was published: item {item} no longer validates ({}).",
                fields.join(", ")
            );
            let page = render_stage(&state, &account, &stage, None, Some(message)).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switcher_returns_only_to_admin_pages() {
        assert_eq!(back_to("/admin/content?type=a"), "/admin/content?type=a");
        assert_eq!(back_to("https://evil.example/admin"), "/admin");
        assert_eq!(back_to("/admin//evil.example"), "/admin");
        assert_eq!(back_to("/item/1"), "/admin");
    }
}
