//! A stage's id, the one thing of stages every subsystem names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A string that is not a stage id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stage id `{0}`: use 1-32 of a-z, 0-9, _ starting with a letter")]
pub struct InvalidStageId(pub String);

impl crate::error::HttpError for InvalidStageId {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        (
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_stage_id",
        )
    }
}

/// A stage id: `live` or `[a-z][a-z0-9_]{0,31}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StageId(String);

impl StageId {
    pub fn parse(raw: &str) -> Result<Self, InvalidStageId> {
        if crate::text::is_machine_name(raw, 32) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidStageId(raw.to_owned()))
        }
    }

    pub fn live() -> Self {
        Self(crate::cache::LIVE.to_owned())
    }

    pub fn is_live(&self) -> bool {
        self.0 == crate::cache::LIVE
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
