//! The administration shell: `/admin`, and the layout and navigation every
//! admin page renders inside ([`render`]): the sections, the account, the
//! stage switcher (for those who may work in stages) and the notice of the
//! last action. A subsystem with an admin page adds its [`Section`] to
//! [`SECTIONS`]; the navigation shows each account the sections its
//! permissions open.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::state::AppState;
use crate::user::{Account, permission};

/// One admin page in the navigation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Section {
    pub path: &'static str,
    pub label: &'static str,
    pub description: &'static str,
    /// Who sees it: an account holding any of these.
    pub any_of: &'static [&'static str],
}

/// Every admin section, in navigation order.
pub const SECTIONS: &[Section] = &[
    Section {
        path: "/admin/content",
        label: "Content",
        description: "every item, filtered and sorted; create, edit, publish, unpublish and delete",
        any_of: &[
            permission::CREATE_CONTENT,
            permission::EDIT_OWN_CONTENT,
            permission::EDIT_ANY_CONTENT,
        ],
    },
    Section {
        path: "/admin/stages",
        label: "Stages",
        description: "the stages, what each changes against live, and publishing one",
        any_of: &[permission::ADMINISTER_STAGES],
    },
    Section {
        path: "/admin/structure/types",
        label: "Types",
        description: "item types and their fields: add, change, remove and reorder fields",
        any_of: &[permission::ADMINISTER_CONTENT_TYPES],
    },
    Section {
        path: "/admin/structure/categories",
        label: "Categories",
        description: "categories and their terms, as trees by parent and weight",
        any_of: &[permission::ADMINISTER_CATEGORIES],
    },
    Section {
        path: "/admin/people",
        label: "People",
        description: "users: find, create, block, unblock and give them roles",
        any_of: &[permission::ADMINISTER_USERS],
    },
    Section {
        path: "/admin/roles",
        label: "Roles",
        description: "what each role may do, as a grid of permissions; new roles",
        any_of: &[permission::ADMINISTER_PERMISSIONS],
    },
    Section {
        path: "/admin/plugins",
        label: "Plugins",
        description: "installed plugins, their state, taps and load errors; enable or disable one",
        any_of: &[permission::ADMINISTER_PLUGINS],
    },
    Section {
        path: "/admin/files",
        label: "Files",
        description: "uploaded files, their status and where they are used; delete unused ones",
        any_of: &[permission::ADMINISTER_FILES],
    },
    Section {
        path: "/admin/cron",
        label: "Cron",
        description: "the last cron passes, each step's outcome and failures; run cron now",
        any_of: &[permission::ADMINISTER_SITE],
    },
    Section {
        path: "/admin/queues",
        label: "Queues",
        description: "each queue's ready, in-flight and dead items; retry dead ones",
        any_of: &[permission::ADMINISTER_SITE],
    },
    Section {
        path: "/admin/batch",
        label: "Batches",
        description: "start a batch operation and follow its progress",
        any_of: &[permission::ADMINISTER_SITE],
    },
    Section {
        path: "/admin/search",
        label: "Search",
        description: "what is indexed of each item type, at which weight and in which language; reindex",
        any_of: &[permission::ADMINISTER_SEARCH],
    },
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(index))
}

/// The sections `account` may open.
pub fn sections_for(account: &Account) -> Vec<Section> {
    SECTIONS
        .iter()
        .filter(|s| s.any_of.iter().any(|p| account.has(p)))
        .copied()
        .collect()
}

/// Admin pages are for signed-in accounts: anonymous visitors are sent to
/// the login form, others need `perm`. Returns the refusal, if any.
pub fn refusal(account: &Account, perm: Option<&str>) -> Option<Response> {
    if !account.is_authenticated() {
        return Some(Redirect::to("/user/login").into_response());
    }
    perm.and_then(|p| account.require(p).err())
        .map(IntoResponse::into_response)
}

/// [`refusal`] for a page any of `perms` opens.
pub fn refusal_any(account: &Account, perms: &[&str]) -> Option<Response> {
    if !account.is_authenticated() {
        return Some(Redirect::to("/user/login").into_response());
    }
    if perms.iter().any(|p| account.has(p)) {
        return None;
    }
    let first = perms
        .first()
        .copied()
        .unwrap_or(permission::ADMINISTER_SITE);
    account
        .require(first)
        .err()
        .map(IntoResponse::into_response)
}

/// What the stage switcher shows: the working stage and those to choose.
#[derive(Debug, Serialize)]
struct Switcher {
    current: String,
    stages: Vec<(String, String)>,
}

async fn switcher(state: &AppState, account: &Account) -> Result<Option<Switcher>, AppError> {
    if !account.has(permission::EDIT_ANY_CONTENT) && !account.has(permission::ADMINISTER_STAGES) {
        return Ok(None);
    }
    let current = crate::stage::working_stage(state, account).await;
    let stages = crate::stage::list(&state.db)
        .await?
        .into_iter()
        .map(|s| (s.id, s.label))
        .collect();
    Ok(Some(Switcher {
        current: current.to_string(),
        stages,
    }))
}

/// Renders `template` (which extends `admin/layout.html`) with `ctx`, plus
/// what the layout needs: the title, the navigation with `current`
/// highlighted, the account's name, the stage switcher and the session's
/// CSRF token for forms.
pub async fn render(
    state: &AppState,
    account: &Account,
    current: &str,
    title: &str,
    template: &str,
    ctx: minijinja::Value,
) -> Result<Html<String>, AppError> {
    let csrf = account
        .session
        .as_ref()
        .map(|(_, s)| s.csrf_token.clone())
        .unwrap_or_default();
    let switcher = switcher(state, account).await?;
    let html = state.templates.render(
        template,
        minijinja::context! {
            title => title,
            current => current,
            switcher => switcher,
            sections => sections_for(account),
            user => account.user.as_ref().map(|u| u.name.clone()),
            csrf_token => csrf,
            ..ctx
        },
    )?;
    Ok(Html(html))
}

/// The administration overview: the sections this account may open.
#[utoipa::path(get, path = "/admin", tag = "admin",
    responses(
        (status = 200, description = "The overview page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn index(
    State(state): State<AppState>,
    account: Account,
) -> Result<Response, AppError> {
    if let Some(r) = refusal(&account, None) {
        return Ok(r);
    }
    Ok(render(
        &state,
        &account,
        "/admin",
        "Administration",
        "admin/index.html",
        minijinja::context! {},
    )
    .await?
    .into_response())
}
