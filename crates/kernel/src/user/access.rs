//! Who is making the request, what they may do, and whether a browser
//! session really sent it.
//!
//! [`Account`] is an extractor: a bearer token, else the session cookie,
//! else anonymous. Administrators hold every permission.
//!
//! CSRF is one rule for the whole router, [`require_csrf`] (applied once in
//! `app.rs`): every request with an unsafe method that carries the session
//! cookie and no `Authorization` header must present the session's CSRF
//! token, whatever its body. A route is left out only by a [`CsrfExempt`]
//! entry that says why. Before login there is no session: the login form's
//! token is bound to the `trovato_csrf` cookie by [`login_form_token`].

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::session::{self, Session};
use super::{User, UserError, role, token};
use crate::error::AppError;
use crate::http::{BodyKind, body_kind};
use crate::kv::{Kv, KvError};
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
        let mut permissions = state.permissions.of(&state.db, &roles).await?;
        // Administrators hold every permission: shown as every declared one.
        if roles.iter().any(|r| r == role::ADMINISTRATOR) {
            let registry = state.permissions.registry();
            permissions.extend(registry.all().map(|p| p.name.clone()));
        }
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

// ---------------------------------------------------------------- CSRF

/// The header scripts send the session's CSRF token in (the token is in
/// `GET /user/me`).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The form field browsers send the token in: a field of an urlencoded
/// form, or the *first* part of a multipart form (the rule reads no
/// further, so an upload is never buffered to find it).
pub const CSRF_FIELD: &str = "csrf_token";

/// The cookie holding the random value the login form's token is bound to.
pub const CSRF_COOKIE: &str = "trovato_csrf";

/// How much of a multipart body is read, at most, to find its first part.
const MULTIPART_PREFIX_LIMIT: usize = 16 * 1024;

/// A route the CSRF rule leaves alone, and why. The subsystem owning the
/// route declares it beside its router; `app.rs` hands the lists to
/// [`CsrfRule::new`]. A misspelt entry exempts nothing: the route stays
/// protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrfExempt {
    /// Upper-case method, e.g. `POST`.
    pub method: &'static str,
    /// The route template as registered, e.g. `/user/login`.
    pub path: &'static str,
    /// Why no session token is needed.
    pub reason: &'static str,
}

/// The state of [`require_csrf`]: the application and the exempt routes.
#[derive(Clone)]
pub struct CsrfRule {
    state: AppState,
    exempt: Arc<[CsrfExempt]>,
}

impl CsrfRule {
    pub fn new<'a>(state: AppState, exempt: impl IntoIterator<Item = &'a [CsrfExempt]>) -> Self {
        Self {
            state,
            exempt: exempt.into_iter().flatten().copied().collect(),
        }
    }

    /// The exemption of `method path`, if it has one.
    pub fn exemption(&self, method: &Method, path: &str) -> Option<&CsrfExempt> {
        self.exempt
            .iter()
            .find(|e| e.method == method.as_str() && e.path == path)
    }

    /// Passes `req` on (with its body intact and its [`Account`] resolved)
    /// when it needs no token or presents the right one.
    async fn check(&self, mut req: Request) -> Result<Request, AppError> {
        if req.method().is_safe() {
            return Ok(req);
        }
        // Unmatched paths reach the 404 fallback, which changes nothing.
        let Some(route) = req.extensions().get::<MatchedPath>() else {
            return Ok(req);
        };
        if self.exemption(req.method(), route.as_str()).is_some() {
            return Ok(req);
        }
        // Bearer tokens are never sent by a browser on its own, and without
        // the session cookie the request carries no ambient credential.
        if req.headers().contains_key(header::AUTHORIZATION)
            || cookie(req.headers(), session::COOKIE).is_none()
        {
            return Ok(req);
        }
        let account = Account::resolve(&self.state, req.headers()).await?;
        let expected = match (&account.method, &account.session) {
            (AuthMethod::Session, Some((_, s))) => Some(s.csrf_token.clone()),
            // An expired or void session: the request is anonymous.
            _ => None,
        };
        // The handler's `Account` extractor reuses this one.
        req.extensions_mut().insert(account);
        let Some(expected) = expected else {
            return Ok(req);
        };
        let (submitted, req) = submitted_token(req).await?;
        verify(&expected, submitted.as_deref())?;
        Ok(req)
    }
}

/// The CSRF rule as middleware: a session request with an unsafe method
/// gets 403 `csrf_token_missing` without a token and `csrf_token_invalid`
/// with a wrong one, before the handler runs.
pub async fn require_csrf(State(rule): State<CsrfRule>, req: Request, next: Next) -> Response {
    match rule.check(req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Compares a submitted token with the expected one in constant time.
/// Absent or empty is `CsrfTokenMissing`; anything else that differs is
/// `CsrfTokenInvalid`.
pub fn verify(expected: &str, submitted: Option<&[u8]>) -> Result<(), UserError> {
    match submitted {
        None | Some([]) => Err(UserError::CsrfTokenMissing),
        Some(s) if !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(s)) => Ok(()),
        Some(_) => Err(UserError::CsrfTokenInvalid),
    }
}

/// The token the request presents (header, else form field, else first
/// multipart part) and the request with its body put back.
async fn submitted_token(req: Request) -> Result<(Option<Vec<u8>>, Request), AppError> {
    if let Some(v) = req.headers().get(CSRF_HEADER) {
        let token = v.as_bytes().to_vec();
        return Ok((Some(token), req));
    }
    if body_kind(req.headers()) == BodyKind::Form {
        let (parts, body) = req.into_parts();
        // The body limit layer outside bounds this read.
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(body_error)?;
        let token = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.into_owned().into_bytes());
        return Ok((token, Request::from_parts(parts, Body::from(bytes))));
    }
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
        })
        .and_then(|ct| multer::parse_boundary(ct).ok());
    match boundary {
        Some(boundary) => multipart_token(req, &boundary).await,
        None => Ok((None, req)),
    }
}

/// What the first part of a (possibly cut) multipart prefix shows.
enum FirstPart {
    Token(Vec<u8>),
    Other,
    Incomplete,
}

async fn first_part(prefix: Bytes, boundary: &str) -> FirstPart {
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(prefix) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    match multipart.next_field().await {
        Ok(Some(field)) if field.name() == Some(CSRF_FIELD) => match field.bytes().await {
            Ok(b) => FirstPart::Token(b.to_vec()),
            Err(_) => FirstPart::Incomplete,
        },
        Ok(_) => FirstPart::Other,
        Err(_) => FirstPart::Incomplete,
    }
}

/// Reads a multipart body only until its first part is complete (at most
/// [`MULTIPART_PREFIX_LIMIT`] bytes); the token is that part when it is
/// named `csrf_token`. The bytes read are put back in front of the rest of
/// the stream, so the handler sees the body unchanged.
async fn multipart_token(
    req: Request,
    boundary: &str,
) -> Result<(Option<Vec<u8>>, Request), AppError> {
    let (parts, body) = req.into_parts();
    let mut rest = body.into_data_stream();
    let mut prefix = BytesMut::new();
    let mut ended = false;
    let token = loop {
        match first_part(prefix.clone().freeze(), boundary).await {
            FirstPart::Token(t) => break Some(t),
            FirstPart::Other => break None,
            FirstPart::Incomplete if ended || prefix.len() >= MULTIPART_PREFIX_LIMIT => break None,
            FirstPart::Incomplete => match rest.next().await {
                Some(chunk) => prefix.extend_from_slice(&chunk.map_err(body_error)?),
                None => ended = true,
            },
        }
    };
    let prefix = prefix.freeze();
    let body = if ended {
        Body::from(prefix)
    } else {
        Body::from_stream(futures::stream::once(async move { Ok(prefix) }).chain(rest))
    };
    Ok((token, Request::from_parts(parts, body)))
}

/// A body that could not be read: too large (the body limit) or broken.
fn body_error(e: axum::Error) -> AppError {
    let too_large = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(|e| e.is::<http_body_util::LengthLimitError>());
    if too_large {
        AppError::PayloadTooLarge
    } else {
        AppError::bad_request("invalid_body", format!("could not read the body: {e}"))
    }
}

/// The login form's token for the `trovato_csrf` cookie value `pre_session`:
/// base64url(HMAC-SHA256(site secret, value)). A cookie planted in the
/// browser is useless without the matching token, which only the kernel can
/// compute.
pub async fn login_form_token(kv: &Kv, pre_session: &str) -> Result<String, AppError> {
    let mac = login_mac(kv, pre_session).await?;
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        mac.finalize().into_bytes(),
    ))
}

/// Checks a login form's token against the request's `trovato_csrf` cookie.
pub async fn check_login_form_token(
    kv: &Kv,
    headers: &HeaderMap,
    submitted: Option<&str>,
) -> Result<(), AppError> {
    let submitted = match submitted {
        None | Some("") => return Err(UserError::CsrfTokenMissing.into()),
        Some(s) => s,
    };
    let Some(pre_session) = cookie(headers, CSRF_COOKIE) else {
        return Err(UserError::CsrfTokenInvalid.into());
    };
    let Ok(tag) =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, submitted)
    else {
        return Err(UserError::CsrfTokenInvalid.into());
    };
    login_mac(kv, &pre_session)
        .await?
        .verify_slice(&tag)
        .map_err(|_| UserError::CsrfTokenInvalid.into())
}

async fn login_mac(kv: &Kv, pre_session: &str) -> Result<Hmac<Sha256>, AppError> {
    let secret = site_secret(kv).await?;
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(secret.as_bytes())
        .map_err(|e| AppError::Internal(format!("login token key: {e}")))?;
    mac.update(b"login-csrf:");
    mac.update(pre_session.as_bytes());
    Ok(mac)
}

/// The secret every kernel process shares: a random value stored once in
/// Redis (`<prefix>csrf:secret`, no expiry). The first process to need it
/// creates it; the rest read it. Were Redis to lose it, a new one is made
/// and login forms shown before that must be reloaded, like the sessions
/// that were lost with it.
async fn site_secret(kv: &Kv) -> Result<String, KvError> {
    let fresh = session::random_token();
    // `SET NX GET` answers the value already there, or nil when it set ours.
    let existing: Option<String> = kv
        .query(
            redis::cmd("SET")
                .arg(kv.key("csrf:secret"))
                .arg(&fresh)
                .arg("NX")
                .arg("GET"),
        )
        .await?;
    Ok(existing.unwrap_or(fresh))
}
