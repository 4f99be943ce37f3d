//! The one HTTP error type. A subsystem's error enum implements
//! [`HttpError`] in the subsystem's own module, with the one exhaustive
//! match that decides its statuses, and converts into [`AppError`] with `?`.
//! This module is core: it imports no subsystem.
//!
//! The body is always `{"error": "<machine_code>", "message": "...",
//! "details": ...}`. A 5xx is internal: its cause is logged once, inside the
//! request span, and never sent to the client.

use std::error::Error;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// How a subsystem's error answers a request.
pub trait HttpError: Error + Send + Sync + 'static {
    /// The status and machine code; the subsystem's one exhaustive match
    /// (no `_` arm). A 5xx status makes the error internal.
    fn status_code(&self) -> (StatusCode, &'static str);

    /// Structured detail for the body (for example the failing fields).
    fn error_details(&self) -> Value {
        Value::Null
    }

    /// Whole seconds for `Retry-After`, for errors that end by themselves.
    fn retry_after(&self) -> Option<u64> {
        None
    }
}

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
    /// Well-formed JSON (or form) that is not the schema's shape: an
    /// unknown or missing member, a value of the wrong type.
    #[error("{0}")]
    InvalidBody(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A subsystem's error, which decides its own status.
    #[error("{0}")]
    Subsystem(Box<dyn HttpError>),
    /// A bug or an unexpected state; the message is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl<E: HttpError> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError::Subsystem(Box::new(e))
    }
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

    /// The subsystem error inside, if it is an `E`.
    pub fn downcast_ref<E: HttpError>(&self) -> Option<&E> {
        match self {
            AppError::Subsystem(e) => (&**e as &dyn Error).downcast_ref::<E>(),
            _ => None,
        }
    }

    /// Status and machine code: the one exhaustive match for the kernel's
    /// own variants; a subsystem's error answers for itself.
    fn classify(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            AppError::BadRequest { code, .. } => (S::BAD_REQUEST, code),
            AppError::Validation { .. } => (S::UNPROCESSABLE_ENTITY, "validation_failed"),
            AppError::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated"),
            AppError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            AppError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            AppError::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::Conflict(_) => (S::CONFLICT, "conflict"),
            AppError::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AppError::UnsupportedMediaType(_) => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            AppError::InvalidBody(_) => (S::UNPROCESSABLE_ENTITY, "invalid_body"),
            AppError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Subsystem(e) => e.status_code(),
            AppError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
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
            AppError::Subsystem(e) => e.error_details(),
            _ => Value::Null,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.classify();
        let internal = status.is_server_error();
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
            AppError::Subsystem(e) => e.retry_after(),
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
