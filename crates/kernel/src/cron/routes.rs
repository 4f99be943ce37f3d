//! `POST /cron` (the HTTP trigger), `/admin/cron` (the last passes) and
//! its "Run cron now" form.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{CronError, Pass, RunOutcome, RunRecord, StepOutcome, Trigger};
use crate::error::{AppError, ErrorBody};
use crate::page::admin;
use crate::state::AppState;
use crate::user::{Account, permission};

/// The header a scheduler sends `cron.key` in.
pub const KEY_HEADER: &str = "x-cron-key";

/// Passes shown on the admin page.
const SHOWN: u32 = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(trigger))
        .routes(routes!(cron_page))
        .routes(routes!(run_from_page))
}

/// What `POST /cron` did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CronResponse {
    /// `ran`, or `busy` when another server holds the lock.
    pub status: &'static str,
    /// The pass, when one ran here.
    pub run: Option<RunRecord>,
    /// The server (`host:pid`) holding the lock, when busy.
    pub holder: Option<String>,
}

impl From<Pass> for CronResponse {
    fn from(pass: Pass) -> Self {
        match pass {
            Pass::Ran(run) => Self {
                status: "ran",
                run: Some(run),
                holder: None,
            },
            Pass::Busy { holder } => Self {
                status: "busy",
                run: None,
                holder: Some(holder),
            },
        }
    }
}

/// Whether the request may trigger cron: with the scheduler key, or as an
/// account with `administer site`. The key is compared by digest in
/// constant time and never logged.
fn authorize(state: &AppState, headers: &HeaderMap, account: &Account) -> Result<(), AppError> {
    if let Some(sent) = headers.get(KEY_HEADER) {
        let Some(key) = &state.config.cron.key else {
            return Err(CronError::KeyDisabled.into());
        };
        let sent = Sha256::digest(sent.as_bytes());
        let expected = Sha256::digest(key.as_bytes());
        if bool::from(sent.ct_eq(&expected)) {
            return Ok(());
        }
        return Err(CronError::BadKey.into());
    }
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    account.require(permission::ADMINISTER_SITE)
}

/// One pass, in a task of its own: it runs to the end even if the client
/// goes away.
async fn pass(state: &AppState) -> Result<Pass, AppError> {
    let s = state.clone();
    let pass = state
        .tasks
        .finish("cron", async move { super::run(&s, Trigger::Http).await })
        .await
        .map_err(CronError::from)??;
    Ok(pass)
}

/// Run one cron pass here, unless another server is running one.
///
/// Schedulers send `cron.key` in `X-Cron-Key`; administrators may call it
/// with their session or token. A busy answer is a success: the pass is
/// being done elsewhere.
#[utoipa::path(post, path = "/cron", tag = "cron",
    responses(
        (status = 200, description = "The pass that ran, or `busy` with the server holding the lock", body = CronResponse),
        (status = 401, description = "No key and not signed in", body = ErrorBody),
        (status = 403, description = "Wrong key, a key while none is configured, lacks `administer site`, or a session request without its CSRF token", body = ErrorBody),
        (status = 503, description = "The lock cannot be asked for (Redis down), or shutting down", body = ErrorBody),
    ),
    security(("cron_key" = []), ("bearer" = []), ("session" = [])))]
pub(crate) async fn trigger(
    State(state): State<AppState>,
    headers: HeaderMap,
    account: Account,
) -> Result<Json<CronResponse>, AppError> {
    authorize(&state, &headers, &account)?;
    Ok(Json(pass(&state).await?.into()))
}

/// What the last "Run cron now" did, shown once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Ran,
    Busy,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CronQuery {
    /// What the last action did (set by the page's own redirect).
    #[param(inline)]
    notice: Option<Notice>,
}

#[derive(Serialize)]
struct Row {
    started: String,
    started_iso: String,
    duration: String,
    holder: String,
    trigger: &'static str,
    outcome: &'static str,
    steps: Vec<StepRow>,
}

#[derive(Serialize)]
struct StepRow {
    name: String,
    outcome: &'static str,
    /// The outcome as a CSS class suffix.
    css: &'static str,
    detail: String,
    millis: u64,
}

fn step_label(o: StepOutcome) -> &'static str {
    match o {
        StepOutcome::Ok => "ok",
        StepOutcome::Failed => "failed",
        StepOutcome::TimedOut => "timed out",
        StepOutcome::Cancelled => "cancelled",
        StepOutcome::Skipped => "skipped",
    }
}

fn row(r: RunRecord) -> Row {
    let duration = match r.finished {
        Some(f) => {
            let ms = (f - r.started).num_milliseconds();
            if ms < 1000 {
                format!("{ms} ms")
            } else {
                format!("{:.1} s", ms as f64 / 1000.0)
            }
        }
        None => "—".into(),
    };
    Row {
        started: r.started.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        started_iso: r.started.to_rfc3339(),
        duration,
        holder: r.holder,
        trigger: match r.trigger {
            Trigger::Cli => "cli",
            Trigger::Http => "http",
        },
        outcome: r.outcome.as_str(),
        steps: r
            .steps
            .into_iter()
            .map(|s| StepRow {
                name: s.name,
                outcome: step_label(s.outcome),
                css: match s.outcome {
                    StepOutcome::TimedOut => "timed",
                    other => step_label(other),
                },
                detail: s.detail,
                millis: s.millis,
            })
            .collect(),
    }
}

/// The cron page: the last passes, their steps and failures.
#[utoipa::path(get, path = "/admin/cron", tag = "admin", params(CronQuery),
    responses(
        (status = 200, description = "The cron page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer site`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn cron_page(
    State(state): State<AppState>,
    account: Account,
    Query(q): Query<CronQuery>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SITE)) {
        return Ok(r);
    }
    let runs = super::recent(&state.db, SHOWN)
        .await
        .map_err(CronError::from)?;
    let failures = runs
        .iter()
        .filter(|r| matches!(r.outcome, RunOutcome::Failed | RunOutcome::Abandoned))
        .count();
    let notice = q.notice.map(|n| match n {
        Notice::Ran => "Cron ran.",
        Notice::Busy => "Another server is running cron now.",
    });
    let html = admin::render(
        &state,
        &account,
        "/admin/cron",
        "Cron",
        "admin/cron.html",
        minijinja::context! {
            runs => runs.into_iter().map(row).collect::<Vec<_>>(),
            failures => failures,
            notice => notice,
        },
    )
    .await?;
    Ok(html.into_response())
}

/// Run cron now, from the cron page (a form post); back to the page.
#[utoipa::path(post, path = "/admin/cron/run", tag = "admin",
    responses(
        (status = 303, description = "Back to the cron page with a notice; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer site`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 503, description = "The lock cannot be asked for (Redis down), or shutting down", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn run_from_page(
    State(state): State<AppState>,
    account: Account,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_SITE)) {
        return Ok(r);
    }
    let notice = match pass(&state).await? {
        Pass::Ran(_) => "ran",
        Pass::Busy { .. } => "busy",
    };
    Ok(Redirect::to(&format!("/admin/cron?notice={notice}")).into_response())
}
