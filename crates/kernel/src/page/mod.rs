//! Server-rendered HTML: the template environment (autoescaping, templates
//! compiled into the binary) and the front page.

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use minijinja::Environment;

use crate::error::AppError;
use crate::state::AppState;
use crate::user::Account;

/// Every template, embedded at build time: (name, source).
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("front.html", include_str!("../../templates/front.html")),
    ("item.html", include_str!("../../templates/item.html")),
    ("items.html", include_str!("../../templates/items.html")),
];

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("template {name}: {source}")]
    Template {
        name: String,
        source: minijinja::Error,
    },
}

impl From<PageError> for AppError {
    fn from(e: PageError) -> Self {
        AppError::Internal(e.to_string())
    }
}

/// The template environment. HTML templates autoescape (minijinja's default
/// for `.html` names).
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Result<Self, PageError> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|source| PageError::Template {
                    name: (*name).to_owned(),
                    source,
                })?;
        }
        Ok(Self { env })
    }

    pub fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String, PageError> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|source| PageError::Template {
                name: name.to_owned(),
                source,
            })
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(front))
}

async fn front(
    axum::extract::State(state): axum::extract::State<AppState>,
    account: Account,
) -> Result<Html<String>, AppError> {
    let html = state.templates.render(
        "front.html",
        minijinja::context! { user => account.user.as_ref().map(|u| u.name.clone()) },
    )?;
    Ok(Html(html))
}
