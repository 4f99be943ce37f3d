//! `/user/login`, `/user/logout`, `/user/me`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::access::{self, Account, CSRF_COOKIE, CsrfExempt};
use super::{User, UserError, flood, password, session};
use crate::error::{AppError, ErrorBody};
use crate::http::{BodyKind, body_kind};
use crate::state::AppState;
use crate::user::settings::CookieSecure;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login_page, login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

/// Routes of this router that the CSRF rule leaves alone.
pub const CSRF_EXEMPT: &[CsrfExempt] = &[CsrfExempt {
    method: "POST",
    path: "/user/login",
    reason: "no session to take a token from yet: the form's token is checked against the \
             pre-session cookie by the handler, and a JSON body cannot be sent cross-site \
             without a CORS preflight the kernel never grants",
}];

/// JSON login body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub name: String,
    pub password: String,
}

/// The browser login form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct LoginForm {
    name: String,
    password: String,
    csrf_token: Option<String>,
    destination: Option<String>,
}

/// The signed-in account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MeResponse {
    pub user: User,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// The token browser scripts send as `X-CSRF-Token` (session logins only).
    pub csrf_token: Option<String>,
}

fn me_response(account: &Account) -> Option<MeResponse> {
    let user = account.user.clone()?;
    Some(MeResponse {
        user,
        roles: account.roles.clone(),
        permissions: account.permissions.iter().cloned().collect(),
        csrf_token: account.session.as_ref().map(|(_, s)| s.csrf_token.clone()),
    })
}

fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    match state.config.session.cookie_secure {
        CookieSecure::Always => true,
        CookieSecure::Never => false,
        CookieSecure::Auto => access::is_tls(headers),
    }
}

fn cookie_header(name: &str, value: &str, secure: bool, remove: bool) -> HeaderValue {
    let mut c = cookie::Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure);
    if remove {
        c = c.max_age(cookie::time::Duration::ZERO);
    }
    // Names are constants and values URL-safe base64, so this is a valid
    // header value.
    HeaderValue::from_str(&c.build().to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// A local path to go to after login, or `None`. Accepted only when the
/// value, and the value percent-decoded once more, both start with exactly
/// one `/` and hold no backslash and no control character (a browser drops
/// tabs and newlines, so `/\t/evil.example` would be `//evil.example`): no
/// scheme, no authority, nothing a `Location` header cannot carry.
fn safe_destination(d: Option<&str>) -> Option<&str> {
    fn is_local_path(p: &str) -> bool {
        let mut chars = p.chars();
        chars.next() == Some('/')
            && !matches!(chars.next(), Some('/'))
            && !p.chars().any(|c| c == '\\' || c.is_control())
    }
    let d = d?;
    let decoded = percent_encoding::percent_decode_str(d).decode_utf8().ok()?;
    (is_local_path(d) && is_local_path(&decoded)).then_some(d)
}

/// A 303 to `location` (a path [`safe_destination`] accepted, or `/`).
fn see_other(location: &str) -> Response {
    let value = HeaderValue::try_from(location).unwrap_or(HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response()
}

/// `GET /user/login?destination=`: where the form goes after signing in.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LoginPageParams {
    /// A local path (`/admin`); anything else is ignored.
    destination: Option<String>,
}

/// The HTML login form (sets the `trovato_csrf` cookie its form posts
/// back before a session exists).
#[utoipa::path(
    get, path = "/user/login", tag = "user",
    params(LoginPageParams),
    responses((status = 200, description = "The login page", body = String, content_type = "text/html")),
    security((), ("session" = []), ("bearer" = []))
)]
async fn login_page(
    State(state): State<AppState>,
    account: Account,
    headers: HeaderMap,
    params: Result<Query<LoginPageParams>, QueryRejection>,
) -> Result<Response, AppError> {
    // A malformed query is no reason to refuse the login form.
    let destination = params.ok().and_then(|Query(p)| p.destination);
    let page = LoginPage {
        status: StatusCode::OK,
        error: None,
        destination: safe_destination(destination.as_deref()),
    };
    render_login(&state, &account, &headers, page).await
}

/// What the login page shows besides the form.
struct LoginPage<'a> {
    status: StatusCode,
    error: Option<&'a str>,
    /// Carried in the form, already checked by [`safe_destination`].
    destination: Option<&'a str>,
}

/// The login page. Signed in, its logout form carries the session's token;
/// signed out, the login form carries the token bound to the `trovato_csrf`
/// cookie (set here when the browser has none).
async fn render_login(
    state: &AppState,
    account: &Account,
    headers: &HeaderMap,
    page: LoginPage<'_>,
) -> Result<Response, AppError> {
    let (csrf, new_cookie) = match &account.session {
        Some((_, s)) => (s.csrf_token.clone(), None),
        None => {
            let (pre_session, new) = match access::cookie(headers, CSRF_COOKIE) {
                Some(c) if c.len() >= 32 => (c, false),
                _ => (session::random_token(), true),
            };
            let token = access::login_form_token(&state.kv, &pre_session).await?;
            (token, new.then_some(pre_session))
        }
    };
    let html = state.templates.render(
        "login.html",
        minijinja::context! {
            user => account.user.as_ref().map(|u| u.name.clone()),
            csrf_token => csrf,
            error => page.error,
            destination => page.destination,
        },
    )?;
    let mut resp = (page.status, Html(html)).into_response();
    if let Some(pre_session) = new_cookie {
        resp.headers_mut().append(
            header::SET_COOKIE,
            cookie_header(CSRF_COOKIE, &pre_session, secure(state, headers), false),
        );
    }
    Ok(resp)
}

/// Log in with a name and password (JSON, or the HTML form with its CSRF
/// token). Unknown user and wrong password give the same 401.
#[utoipa::path(
    post, path = "/user/login", tag = "user",
    request_body(description = "JSON, or the HTML form with its CSRF token",
        content((LoginRequest = "application/json"), (LoginForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = MeResponse),
        (status = 303, description = "Form login succeeded; redirect to `destination`"),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Invalid user name or password (the form gets the login page again)",
            content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 403, description = "Form post without a valid CSRF token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Neither JSON nor a form", body = ErrorBody),
        (status = 429, description = "Too many failed logins from this address (see Retry-After)",
            headers(("Retry-After" = u64, description = "Seconds until logins are accepted again")),
            content((ErrorBody = "application/json"), (String = "text/html"))),
    ),
    security(())
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    account: Account,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, AppError> {
    // Served without connection info (an embedding program's own server):
    // every client counts as one.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let client = flood::client_address(peer, &headers, &state.config.login.trusted_proxies);
    match body_kind(&headers) {
        BodyKind::Json => {
            let Json(body) = Json::<LoginRequest>::from_request(req, &state).await?;
            let (token, account) =
                authenticate(&state, &account, client, &body.name, &body.password).await?;
            let mut resp = Json(me_response(&account)).into_response();
            resp.headers_mut().append(
                header::SET_COOKIE,
                cookie_header(session::COOKIE, &token, secure(&state, &headers), false),
            );
            Ok(resp)
        }
        BodyKind::Form => {
            let Form(body) = Form::<LoginForm>::from_request(req, &state).await?;
            match &account.session {
                Some((_, s)) => {
                    access::verify(&s.csrf_token, body.csrf_token.as_deref().map(str::as_bytes))?
                }
                None => {
                    access::check_login_form_token(&state.kv, &headers, body.csrf_token.as_deref())
                        .await?;
                }
            }
            let destination = safe_destination(body.destination.as_deref());
            let page = |status, error| LoginPage {
                status,
                error,
                destination,
            };
            match authenticate(&state, &account, client, &body.name, &body.password).await {
                Ok((token, _)) => {
                    let mut resp = see_other(destination.unwrap_or("/"));
                    resp.headers_mut().append(
                        header::SET_COOKIE,
                        cookie_header(session::COOKIE, &token, secure(&state, &headers), false),
                    );
                    Ok(resp)
                }
                Err(e) => match e.downcast_ref::<UserError>() {
                    Some(UserError::InvalidCredentials) => {
                        render_login(
                            &state,
                            &account,
                            &headers,
                            page(
                                StatusCode::UNAUTHORIZED,
                                Some("Invalid user name or password."),
                            ),
                        )
                        .await
                    }
                    Some(e @ UserError::TooManyLoginAttempts { .. }) => {
                        let message = format!("{}.", capitalised(&e.to_string()));
                        let mut resp = render_login(
                            &state,
                            &account,
                            &headers,
                            page(StatusCode::TOO_MANY_REQUESTS, Some(&message)),
                        )
                        .await?;
                        if let Some(secs) = e.retry_after_secs() {
                            resp.headers_mut()
                                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                        }
                        Ok(resp)
                    }
                    _ => Err(e),
                },
            }
        }
        BodyKind::Other => Err(AppError::UnsupportedMediaType(
            "send application/json or application/x-www-form-urlencoded".into(),
        )),
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Verifies credentials and starts a fresh session (any previous session of
/// this browser is ended, so a planted session id is useless). Refused
/// without checking the password while flood control blocks `client`.
async fn authenticate(
    state: &AppState,
    current: &Account,
    client: IpAddr,
    name: &str,
    pass: &str,
) -> Result<(String, Account), AppError> {
    let limits = state.config.login.limits();
    let attempt = flood::Attempt::new(&state.kv, client, name);
    attempt.begin(&state.kv, &limits).await?;
    let found = super::find_credentials(&state.db, name).await?;
    let (user, hash) = match found {
        Some((u, h)) if u.status == 1 => (Some(u), Some(h)),
        _ => (None, None),
    };
    let ok = password::verify(pass.to_owned(), hash).await?;
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => {
            tracing::info!(client = %client, "login failed");
            return Err(UserError::InvalidCredentials.into());
        }
    };
    attempt.succeeded(&state.kv, &limits).await?;
    if let Some((old, _)) = &current.session {
        session::destroy(&state.kv, old).await?;
    }
    let (token, sess) =
        session::create(&state.kv, user.id, state.config.session.idle_timeout()).await?;
    tracing::info!(user_id = %user.id, "login");
    let account = Account::for_user(
        state,
        user,
        Some((token.clone(), sess)),
        access::AuthMethod::Session,
    )
    .await?;
    Ok((token, account))
}

/// End the current session. Like every unsafe request of a session, it
/// needs the session's CSRF token (header or form field).
#[utoipa::path(
    post, path = "/user/logout", tag = "user",
    responses(
        (status = 204, description = "Logged out; the session is gone"),
        (status = 303, description = "Form logout; redirect to /"),
        (status = 401, description = "Not logged in with a session", body = ErrorBody),
        (status = 403, description = "Without the session's CSRF token", body = ErrorBody),
    ),
    security(("session" = []))
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    account: Account,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let Some((token, _)) = &account.session else {
        return Err(AppError::Unauthenticated);
    };
    let is_form = body_kind(&headers) == BodyKind::Form;
    session::destroy(&state.kv, token).await?;
    let clear = cookie_header(session::COOKIE, "", secure(&state, &headers), true);
    let mut resp = if is_form {
        see_other("/")
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    resp.headers_mut().append(header::SET_COOKIE, clear);
    Ok(resp)
}

/// The current user, roles and permissions.
#[utoipa::path(
    get, path = "/user/me", tag = "user",
    responses(
        (status = 200, description = "The signed-in account", body = MeResponse),
        (status = 401, description = "Anonymous", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = []))
)]
pub(crate) async fn me(account: Account) -> Result<Json<MeResponse>, AppError> {
    me_response(&account)
        .map(Json)
        .ok_or(AppError::Unauthenticated)
}
