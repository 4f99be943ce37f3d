//! The one HTTP error type. Subsystem errors convert into it with `From`, and
//! [`AppError::status`] is the single place that decides status codes.
//!
//! The body is always `{"error": "<machine_code>", "message": "...",
//! "details": ...}`. Internal causes are logged once, inside the request
//! span, and never sent to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::cache::CacheError;
use crate::category::CategoryError;
use crate::db::DbError;
use crate::item::ItemError;
use crate::kv::KvError;
use crate::plugin::PluginError;
use crate::stage::StageError;
use crate::tasks::TaskError;
use crate::user::UserError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("validation failed")]
    Validation { details: Value },
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("missing or invalid CSRF token")]
    Csrf,
    #[error("{0} not found")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Item(#[from] ItemError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    Category(#[from] CategoryError),
    /// A bug or an unexpected state; the message is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON error body every failing response carries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured detail (for example the failing fields), or null.
    #[schema(value_type = Object, nullable)]
    pub details: Value,
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// Status, machine code, and whether the cause is internal (logged, not
    /// shown). The one exhaustive match that maps errors to statuses.
    fn classify(&self) -> (StatusCode, &'static str, bool) {
        use StatusCode as S;
        match self {
            AppError::BadRequest { code, .. } => (S::BAD_REQUEST, code, false),
            AppError::Validation { .. } => (S::UNPROCESSABLE_ENTITY, "validation_failed", false),
            AppError::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated", false),
            AppError::Forbidden(_) => (S::FORBIDDEN, "forbidden", false),
            AppError::Csrf => (S::FORBIDDEN, "csrf_token_invalid", false),
            AppError::NotFound(_) => (S::NOT_FOUND, "not_found", false),
            AppError::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed", false),
            AppError::Conflict(_) => (S::CONFLICT, "conflict", false),
            AppError::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large", false),
            AppError::UnsupportedMediaType(_) => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", false)
            }
            AppError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", true),
            AppError::User(e) => match e {
                UserError::InvalidCredentials => (S::UNAUTHORIZED, "invalid_credentials", false),
                UserError::TooManyLoginAttempts { .. } => {
                    (S::TOO_MANY_REQUESTS, "too_many_attempts", false)
                }
                UserError::NameTaken => (S::CONFLICT, "name_taken", false),
                UserError::InvalidName(_) => (S::UNPROCESSABLE_ENTITY, "invalid_name", false),
                UserError::InvalidEmail(_) => (S::UNPROCESSABLE_ENTITY, "invalid_email", false),
                UserError::WeakPassword(_) => (S::UNPROCESSABLE_ENTITY, "weak_password", false),
                UserError::NotFound(_) => (S::NOT_FOUND, "not_found", false),
                UserError::RoleNotFound(_) => (S::NOT_FOUND, "role_not_found", false),
                UserError::RoleExists(_) => (S::CONFLICT, "role_exists", false),
                UserError::InvalidRole(_) => (S::UNPROCESSABLE_ENTITY, "invalid_role", false),
                UserError::BuiltInRole(_) => (S::CONFLICT, "role_built_in", false),
                UserError::AdministratorOnly => (S::FORBIDDEN, "forbidden", false),
                UserError::LastAdministrator => (S::CONFLICT, "last_administrator", false),
                UserError::Db(e) => Self::classify_db(e),
                UserError::Kv(_) => (S::SERVICE_UNAVAILABLE, "redis_unavailable", true),
                UserError::Hash(_) => (S::INTERNAL_SERVER_ERROR, "internal", true),
            },
            AppError::Plugin(e) => match e {
                PluginError::NotFound { .. } => (S::NOT_FOUND, "plugin_not_found", false),
                PluginError::Disabled { .. } => (S::CONFLICT, "plugin_disabled", false),
                PluginError::CircularDependency { .. }
                | PluginError::MissingDependency { .. }
                | PluginError::InvalidManifest { .. }
                | PluginError::InvalidModule { .. }
                | PluginError::UnknownImport { .. }
                | PluginError::MissingExport { .. }
                | PluginError::MissingMemory { .. }
                | PluginError::TapNotImplemented { .. }
                | PluginError::Trap { .. }
                | PluginError::StackOverflow { .. }
                | PluginError::Timeout { .. }
                | PluginError::OutOfMemory { .. }
                | PluginError::OutputTooLarge { .. }
                | PluginError::BadOutput { .. }
                | PluginError::InvalidUtf8 { .. }
                | PluginError::Serialization { .. }
                | PluginError::WasmExecution { .. } => {
                    (S::INTERNAL_SERVER_ERROR, "plugin_failed", true)
                }
            },
            AppError::Db(e) => Self::classify_db(e),
            AppError::Kv(_) => (S::SERVICE_UNAVAILABLE, "redis_unavailable", true),
            AppError::Cache(e) => match e {
                CacheError::Backend(_) => (S::SERVICE_UNAVAILABLE, "redis_unavailable", true),
                CacheError::InvalidName(_) | CacheError::Corrupt(_) => {
                    (S::INTERNAL_SERVER_ERROR, "internal", true)
                }
            },
            AppError::Item(e) => Self::classify_item(e),
            AppError::Stage(e) => match e {
                StageError::InvalidId(_) => (S::UNPROCESSABLE_ENTITY, "invalid_stage_id", false),
                StageError::NotFound(_) => (S::NOT_FOUND, "stage_not_found", false),
                StageError::Exists(_) => (S::CONFLICT, "stage_exists", false),
                StageError::PublishLive => (S::CONFLICT, "stage_is_live", false),
                StageError::ItemInvalid { .. } => {
                    (S::UNPROCESSABLE_ENTITY, "stage_item_invalid", false)
                }
                StageError::Item(e) => Self::classify_item(e),
                StageError::Db(e) => Self::classify_db(e),
            },
            AppError::Category(e) => match e {
                CategoryError::NotFound(_) => (S::NOT_FOUND, "category_not_found", false),
                CategoryError::TermNotFound(_) => (S::NOT_FOUND, "term_not_found", false),
                CategoryError::Exists(_) => (S::CONFLICT, "category_exists", false),
                CategoryError::TermExists => (S::CONFLICT, "term_exists", false),
                CategoryError::HasChildren(_) => (S::CONFLICT, "term_has_children", false),
                CategoryError::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "validation_failed", false),
                CategoryError::Db(e) => Self::classify_db(e),
                CategoryError::Decode(_) => (S::INTERNAL_SERVER_ERROR, "internal", true),
            },
            AppError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", true),
        }
    }

    fn classify_item(e: &ItemError) -> (StatusCode, &'static str, bool) {
        use StatusCode as S;
        match e {
            ItemError::NotFound(_) => (S::NOT_FOUND, "item_not_found", false),
            ItemError::TypeNotFound(_) => (S::NOT_FOUND, "item_type_not_found", false),
            ItemError::TypeExists(_) => (S::CONFLICT, "item_type_exists", false),
            ItemError::TypeInUse(_) => (S::CONFLICT, "item_type_in_use", false),
            ItemError::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "validation_failed", false),
            ItemError::StageConflict(_) => (S::CONFLICT, "stage_conflict", false),
            ItemError::Db(e) => Self::classify_db(e),
            ItemError::Decode(_) => (S::INTERNAL_SERVER_ERROR, "internal", true),
            ItemError::Task(TaskError::ShuttingDown(_)) => {
                (S::SERVICE_UNAVAILABLE, "shutting_down", false)
            }
            ItemError::Task(TaskError::Panicked(_)) => (S::INTERNAL_SERVER_ERROR, "internal", true),
        }
    }

    fn classify_db(e: &DbError) -> (StatusCode, &'static str, bool) {
        use StatusCode as S;
        match e {
            DbError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "database_unavailable", true),
            DbError::InvalidText(_) => (S::UNPROCESSABLE_ENTITY, "invalid_text", false),
            DbError::Query(_) | DbError::Migrate(_) => (S::INTERNAL_SERVER_ERROR, "internal", true),
        }
    }

    fn public_message(&self, internal: bool, status: StatusCode) -> String {
        if internal {
            status
                .canonical_reason()
                .unwrap_or("internal error")
                .to_owned()
        } else {
            self.to_string()
        }
    }

    fn details(&self) -> Value {
        match self {
            AppError::Validation { details } => details.clone(),
            AppError::Item(ItemError::Invalid(f))
            | AppError::Stage(StageError::Item(ItemError::Invalid(f)))
            | AppError::Category(CategoryError::Invalid(f)) => crate::item::field::failures_json(f),
            AppError::Stage(e @ StageError::ItemInvalid { .. }) => e.details(),
            _ => Value::Null,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, internal) = self.classify();
        if internal {
            // Logged here, inside the request span, once.
            tracing::error!(error = %self, error_debug = ?self, "request failed");
        }
        let mut resp = error_response(
            status,
            code,
            &self.public_message(internal, status),
            self.details(),
        );
        if let Some(after) = self.retry_after() {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, after.into());
        }
        resp
    }
}

impl AppError {
    /// Whole seconds for `Retry-After`, for errors that end by themselves.
    fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::User(e) => e.retry_after_secs(),
            _ => None,
        }
    }
}

/// Builds a JSON error response; also used for framework rejections.
pub fn error_response(status: StatusCode, code: &str, message: &str, details: Value) -> Response {
    let body = ErrorBody {
        error: code.to_owned(),
        message: message.to_owned(),
        details,
    };
    (status, Json(body)).into_response()
}

/// The machine code used for a bare status (framework rejections, fallbacks).
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}
