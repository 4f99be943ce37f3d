//! What can go wrong with a batch.

use uuid::Uuid;

use crate::db::DbError;
use crate::queue::QueueError;

/// Targets one batch may have.
pub const MAX_TARGETS: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch {0} not found")]
    NotFound(String),
    #[error("no batch operation named `{0}`")]
    UnknownOperation(String),
    #[error("invalid parameters for `{operation}`: {message}")]
    BadParams { operation: String, message: String },
    #[error("a batch has at most {MAX_TARGETS} targets; this one would have {0}")]
    TooManyTargets(usize),
    #[error("batch {0} has already ended")]
    Ended(Uuid),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Db(e.into())
    }
}

impl crate::error::HttpError for BatchError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            BatchError::NotFound(_) => (S::NOT_FOUND, "batch_not_found"),
            BatchError::UnknownOperation(_) => (S::UNPROCESSABLE_ENTITY, "unknown_operation"),
            BatchError::BadParams { .. } => (S::UNPROCESSABLE_ENTITY, "invalid_params"),
            BatchError::TooManyTargets(_) => (S::UNPROCESSABLE_ENTITY, "too_many_targets"),
            BatchError::Ended(_) => (S::CONFLICT, "batch_ended"),
            BatchError::Db(e) => e.status_code(),
            BatchError::Queue(e) => e.status_code(),
        }
    }
}
