//! Who is making the request, and what they may do.
//!
//! [`Account`] is an extractor: a bearer token, else the session cookie,
//! else anonymous. Administrators hold every permission.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::session::{self, Session};
use super::{User, UserError, role, token};
use crate::error::AppError;
use crate::state::AppState;

/// How the request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Anonymous,
    Session,
    Token,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub user: Option<User>,
    pub roles: Vec<String>,
    pub permissions: BTreeSet<String>,
    /// The session cookie's token and the session, when authenticated by one.
    pub session: Option<(String, Session)>,
    pub method: AuthMethod,
}

impl Account {
    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == role::ADMINISTRATOR)
    }

    pub fn has(&self, perm: &str) -> bool {
        self.is_admin() || self.permissions.contains(perm)
    }

    /// `Ok` when the account holds `perm`; 401 for anonymous, 403 otherwise.
    pub fn require(&self, perm: &str) -> Result<(), AppError> {
        if self.has(perm) {
            Ok(())
        } else if !self.is_authenticated() {
            Err(AppError::Unauthenticated)
        } else {
            Err(AppError::Forbidden(format!(
                "requires the `{perm}` permission"
            )))
        }
    }

    /// Checks a CSRF token submitted with a browser form. The expected token
    /// is the session's; before login it is the `trovato_csrf` cookie set by
    /// the page that rendered the form (double submit).
    pub fn check_csrf(&self, headers: &HeaderMap, submitted: Option<&str>) -> Result<(), AppError> {
        let expected = match &self.session {
            Some((_, s)) => Some(s.csrf_token.clone()),
            None => cookie(headers, CSRF_COOKIE),
        };
        match (expected, submitted) {
            (Some(e), Some(s)) if !e.is_empty() && constant_time_eq(e.as_bytes(), s.as_bytes()) => {
                Ok(())
            }
            _ => Err(AppError::Csrf),
        }
    }

    async fn anonymous(state: &AppState) -> Result<Self, UserError> {
        let roles = vec![role::ANONYMOUS.to_owned()];
        let permissions = state.permissions.of(&state.db, &roles).await?;
        Ok(Self {
            user: None,
            roles,
            permissions,
            session: None,
            method: AuthMethod::Anonymous,
        })
    }

    /// The account of `user`, with its roles and permissions.
    pub(crate) async fn for_user(
        state: &AppState,
        user: User,
        session: Option<(String, Session)>,
        method: AuthMethod,
    ) -> Result<Self, UserError> {
        let mut roles = vec![role::AUTHENTICATED.to_owned()];
        roles.extend(super::roles_of(&state.db, user.id).await?);
        let permissions = state.permissions.of(&state.db, &roles).await?;
        Ok(Self {
            user: Some(user),
            roles,
            permissions,
            session,
            method,
        })
    }

    /// Resolves the account of a request from its headers.
    pub async fn resolve(state: &AppState, headers: &HeaderMap) -> Result<Self, AppError> {
        if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
            let bearer = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(AppError::Unauthenticated)?;
            let user_id = token::authenticate(&state.db, bearer.trim())
                .await?
                .ok_or(AppError::Unauthenticated)?;
            let user = super::find_by_id(&state.db, user_id)
                .await?
                .filter(|u| u.status == 1)
                .ok_or(AppError::Unauthenticated)?;
            return Ok(Self::for_user(state, user, None, AuthMethod::Token).await?);
        }
        if let Some(tok) = cookie(headers, session::COOKIE) {
            match session::load(&state.kv, &tok, state.config.session.idle_timeout()).await {
                Ok(Some(s)) => {
                    if let Some(user) = super::find_by_id(&state.db, s.user_id)
                        .await?
                        .filter(|u| u.status == 1)
                    {
                        return Ok(Self::for_user(
                            state,
                            user,
                            Some((tok, s)),
                            AuthMethod::Session,
                        )
                        .await?);
                    }
                    // Deleted or blocked user: the session is void.
                    if let Err(e) = session::destroy(&state.kv, &tok).await {
                        tracing::warn!(error = %e, "could not destroy a void session");
                    }
                }
                Ok(None) => {}
                // Sessions live in Redis; without it the visitor is served
                // as anonymous rather than with an error.
                Err(e) => tracing::warn!(error = %e, "session store unavailable"),
            }
        }
        Ok(Self::anonymous(state).await?)
    }
}

impl FromRequestParts<AppState> for Account {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(a) = parts.extensions.get::<Account>() {
            return Ok(a.clone());
        }
        let account = Self::resolve(state, &parts.headers).await?;
        parts.extensions.insert(account.clone());
        Ok(account)
    }
}

/// The double-submit CSRF cookie used by forms shown before login.
pub const CSRF_COOKIE: &str = "trovato_csrf";

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// True when the request reached the reverse proxy over TLS.
pub fn is_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
