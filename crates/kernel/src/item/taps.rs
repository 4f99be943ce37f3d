//! The seam where plugins hook into item writes. Plugins are wired in by
//! the plugin subsystem: these functions are where `tap_item_insert`,
//! `tap_item_update` and `tap_item_delete` (and `tap_item_update_index`)
//! are to be invoked. They run after the write committed and after its
//! cache invalidation, and they must not fail the write.

use super::Item;
use crate::state::AppState;

/// After an item was created.
pub fn item_inserted(_state: &AppState, item: &Item) {
    tracing::debug!(item = %item.id, "item inserted");
}

/// After an item was saved (live row or stage revision).
pub fn item_updated(_state: &AppState, item: &Item) {
    tracing::debug!(item = %item.id, "item updated");
}

/// After an item was deleted.
pub fn item_deleted(_state: &AppState, item: &Item) {
    tracing::debug!(item = %item.id, "item deleted");
}
