//! The batch API (`POST /api/batch`, `GET /batch/{id}/status`, cancel,
//! the operations), and the admin pages: `/admin/batch` (recent batches,
//! start one), `/admin/batch/{id}` (the progress bar) and `/admin/queues`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ops::OperationInfo;
use super::{BatchError, BatchStatus, NewBatch};
use crate::error::{AppError, ErrorBody};
use crate::http::JsonBody;
use crate::page::admin;
use crate::queue::Queue;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_batch))
        .routes(routes!(operations))
        .routes(routes!(batch_status))
        .routes(routes!(cancel_batch))
        .routes(routes!(batches_page))
        .routes(routes!(start_from_page))
        .routes(routes!(batch_page))
        .routes(routes!(cancel_from_page))
        .routes(routes!(queues_page))
        .routes(routes!(retry_dead_from_page))
}

/// Who may see a batch: who started it, and administrators
/// (`administer site`).
fn may_see(account: &Account, status: &BatchStatus) -> bool {
    account.has(permission::ADMINISTER_SITE)
        || account
            .user
            .as_ref()
            .is_some_and(|u| status.owner == Some(u.id))
}

/// The batch `raw` names if `account` may see it; otherwise 404.
async fn visible(state: &AppState, account: &Account, raw: &str) -> Result<BatchStatus, AppError> {
    let id: Uuid = raw
        .parse()
        .map_err(|_| BatchError::NotFound(raw.to_owned()))?;
    match super::status(state, id).await {
        Ok(s) if may_see(account, &s) => Ok(s),
        Ok(_) | Err(BatchError::NotFound(_)) => Err(BatchError::NotFound(raw.to_owned()).into()),
        Err(e) => Err(e.into()),
    }
}

/// Starts `new` as `account`, which must hold the operation's permission.
async fn start_as(
    state: &AppState,
    account: &Account,
    new: NewBatch,
) -> Result<BatchStatus, AppError> {
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    let op = super::ops::find(state, &new.operation)
        .await
        .ok_or_else(|| BatchError::UnknownOperation(new.operation.clone()))?;
    account.require(&op.info().permission)?;
    let owner = account.user.as_ref().map(|u| u.id);
    Ok(super::start(state, owner, new).await?)
}

/// Start a batch: the operation's targets in chunks, each a job of the
/// `batch` queue. Needs the operation's permission.
#[utoipa::path(post, path = "/api/batch", tag = "batch", request_body = NewBatch,
    responses(
        (status = 202, description = "Started; poll its status", body = BatchStatus),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks the operation's permission", body = ErrorBody),
        (status = 422, description = "Unknown operation, bad parameters or too many targets", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn start_batch(
    State(state): State<AppState>,
    account: Account,
    JsonBody(new): JsonBody<NewBatch>,
) -> Result<Response, AppError> {
    let status = start_as(&state, &account, new).await?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

/// The batch operations, and who may start each.
#[utoipa::path(get, path = "/api/batch/operations", tag = "batch",
    responses(
        (status = 200, description = "Every operation", body = [OperationInfo]),
        (status = 401, description = "Anonymous", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn operations(
    State(state): State<AppState>,
    account: Account,
) -> Result<Json<Vec<OperationInfo>>, AppError> {
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    Ok(Json(
        super::ops::all(&state)
            .await
            .iter()
            .map(|o| o.info())
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct BatchId {
    /// The batch's id.
    id: String,
}

/// A batch's progress: state, counts, percent, message, times, time left
/// and the last errors. Only its starter and administrators see it.
#[utoipa::path(get, path = "/batch/{id}/status", tag = "batch", params(BatchId),
    responses(
        (status = 200, description = "The batch's progress", body = BatchStatus),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 404, description = "No such batch, or not yours", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn batch_status(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Json<BatchStatus>, AppError> {
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    Ok(Json(visible(&state, &account, &id).await?))
}

/// Cancel a batch: chunks not yet begun are skipped.
#[utoipa::path(post, path = "/api/batch/{id}/cancel", tag = "batch", params(BatchId),
    responses(
        (status = 200, description = "Cancelled", body = BatchStatus),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "A session request without its CSRF token", body = ErrorBody),
        (status = 404, description = "No such batch, or not yours", body = ErrorBody),
        (status = 409, description = "The batch has already ended", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn cancel_batch(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Json<BatchStatus>, AppError> {
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    let s = visible(&state, &account, &id).await?;
    Ok(Json(super::cancel(&state, s.id).await?))
}

/// A batch as the pages show it.
#[derive(Serialize)]
pub(crate) struct Shown {
    id: Uuid,
    operation: String,
    state: &'static str,
    total: u64,
    processed: u64,
    failed: u64,
    percent: String,
    message: String,
    created: String,
    eta: String,
    final_state: bool,
    errors: Vec<super::TargetFailure>,
}

pub(crate) fn shown(s: BatchStatus) -> Shown {
    Shown {
        id: s.id,
        operation: s.operation,
        state: s.state.as_str(),
        total: s.total,
        processed: s.processed,
        failed: s.failed,
        percent: format!("{:.0}", s.percent.floor()),
        message: s.message,
        created: s.created.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        eta: match s.eta_secs {
            Some(e) if !s.state.is_final() => format!("about {} s left", e.ceil() as u64),
            _ => String::new(),
        },
        final_state: s.state.is_final(),
        errors: s.errors,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Cancelled,
    Ended,
    Requeued,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Notice::Cancelled => "The batch was cancelled.",
            Notice::Ended => "The batch had already ended.",
            Notice::Requeued => "The dead items are queued again.",
        }
    }
}

/// Recent batches, and a form to start one.
#[utoipa::path(get, path = "/admin/batch", tag = "admin", params(PageQuery),
    responses(
        (status = 200, description = "The batches page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer site`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn batches_page(
    State(state): State<AppState>,
    account: Account,
    Query(q): Query<PageQuery>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SITE)) {
        return Ok(r);
    }
    let batches = super::recent(&state.db, None, 50).await?;
    let ops: Vec<OperationInfo> = super::ops::all(&state)
        .await
        .iter()
        .map(|o| o.info())
        .collect();
    let html = admin::render(
        &state,
        &account,
        "/admin/batch",
        "Batches",
        "admin/batches.html",
        minijinja::context! {
            batches => batches.into_iter().map(shown).collect::<Vec<_>>(),
            operations => ops,
            notice => q.notice.map(Notice::text),
        },
    )
    .await?;
    Ok(html.into_response())
}

/// The start form's fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StartForm {
    pub operation: String,
    /// The parameters as JSON (empty: `{}`).
    #[serde(default)]
    pub params: String,
    #[serde(default)]
    pub csrf_token: String,
}

/// Start a batch from the batches page (a form post); on to its page.
#[utoipa::path(post, path = "/admin/batch/start", tag = "admin",
    request_body(content = StartForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "To the new batch's page; anonymous: to the login form"),
        (status = 400, description = "The parameters are not JSON", body = ErrorBody),
        (status = 403, description = "Lacks the permission, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 422, description = "Unknown operation or bad parameters", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn start_from_page(
    State(state): State<AppState>,
    account: Account,
    axum::Form(form): axum::Form<StartForm>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SITE)) {
        return Ok(r);
    }
    let params = if form.params.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&form.params).map_err(|e| {
            AppError::bad_request(
                "invalid_params",
                format!("the parameters are not JSON: {e}"),
            )
        })?
    };
    let s = start_as(
        &state,
        &account,
        NewBatch {
            operation: form.operation,
            params,
        },
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/batch/{}", s.id)).into_response())
}

/// One batch's progress bar, updated while it runs.
#[utoipa::path(get, path = "/admin/batch/{id}", tag = "admin", params(BatchId, PageQuery),
    responses(
        (status = 200, description = "The batch's page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer site`", body = ErrorBody),
        (status = 404, description = "No such batch", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn batch_page(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SITE)) {
        return Ok(r);
    }
    let s = visible(&state, &account, &id).await?;
    let html = admin::render(
        &state,
        &account,
        "/admin/batch",
        "Batch",
        "admin/batch.html",
        minijinja::context! {
            batch => shown(s),
            notice => q.notice.map(Notice::text),
        },
    )
    .await?;
    Ok(html.into_response())
}

/// Cancel from the batch's page (a form post); back to it.
#[utoipa::path(post, path = "/admin/batch/{id}/cancel", tag = "admin", params(BatchId),
    responses(
        (status = 303, description = "Back to the batch's page with a notice; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer site`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such batch", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn cancel_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SITE)) {
        return Ok(r);
    }
    let s = visible(&state, &account, &id).await?;
    let notice = match super::cancel(&state, s.id).await {
        Ok(_) => "cancelled",
        Err(BatchError::Ended(_)) => "ended",
        Err(e) => return Err(e.into()),
    };
    Ok(Redirect::to(&format!("/admin/batch/{}?notice={notice}", s.id)).into_response())
}

/// Every queue's counts, with a button to retry its dead items.
#[utoipa::path(get, path = "/admin/queues", tag = "admin", params(PageQuery),
    responses(
        (status = 200, description = "The queues page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer site`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn queues_page(
    State(state): State<AppState>,
    account: Account,
    Query(q): Query<PageQuery>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SITE)) {
        return Ok(r);
    }
    let declared = crate::queue::worker::declared(&state).await;
    let mut names: std::collections::BTreeSet<String> = state
        .queues
        .names()
        .await
        .map_err(BatchError::from)?
        .into_iter()
        .collect();
    names.extend(declared.keys().cloned());
    let mut rows = Vec::new();
    for name in names {
        let s = state.queues.stats(&name).await.map_err(BatchError::from)?;
        let worker = declared
            .get(&name)
            .map(|q| format!("{:?}", q.worker))
            .unwrap_or_else(|| "undeclared".into());
        rows.push(minijinja::context! {
            name => name,
            ready => s.ready,
            delayed => s.delayed,
            in_flight => s.in_flight,
            dead => s.dead,
            oldest => format!("{:.0} s", s.oldest_ready_secs),
            worker => worker,
        });
    }
    let html = admin::render(
        &state,
        &account,
        "/admin/queues",
        "Queues",
        "admin/queues.html",
        minijinja::context! {
            queues => rows,
            notice => q.notice.map(Notice::text),
        },
    )
    .await?;
    Ok(html.into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct QueueName {
    /// The queue's name.
    #[param(pattern = "^[a-z][a-z0-9_.:-]{0,63}$")]
    name: String,
}

/// Retry a queue's dead items from the queues page (a form post).
#[utoipa::path(post, path = "/admin/queues/{name}/retry-dead", tag = "admin", params(QueueName),
    responses(
        (status = 303, description = "Back to the queues page with a notice; anonymous: to the login form"),
        (status = 400, description = "An invalid queue name", body = ErrorBody),
        (status = 403, description = "Lacks `administer site`, or a missing or wrong CSRF token", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn retry_dead_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SITE)) {
        return Ok(r);
    }
    state.queues.retry_dead(&name).await?;
    Ok(Redirect::to("/admin/queues?notice=requeued").into_response())
}
