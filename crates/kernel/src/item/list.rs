//! What a listing of items asks for: the type, the order and the page,
//! with the bounds every listing (and search) respects.

use serde::{Deserialize, Serialize};

/// Sort column of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    Created,
    Changed,
    Title,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    Desc,
}

/// A validated listing request.
#[derive(Debug, Clone)]
pub struct ListSpec {
    /// `None`: every type.
    pub item_type: Option<String>,
    pub sort: SortKey,
    pub order: SortOrder,
    pub page: u32,
    pub per_page: u32,
    /// Promoted items first (sticky ones first among them), then the rest,
    /// each group in `sort` order: the front page.
    pub promoted_first: bool,
}

impl ListSpec {
    pub const MAX_PER_PAGE: u32 = 100;
    /// Listing pages beyond this one are not cached.
    pub const MAX_CACHED_PAGE: u32 = 50;
}
