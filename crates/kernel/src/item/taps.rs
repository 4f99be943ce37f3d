//! Where plugins hook into item writes: `tap_item_insert`,
//! `tap_item_update` and `tap_item_delete` receive the item as JSON. They
//! run after the write committed and after its cache invalidation, in
//! plugin weight order, and they never fail the write: each invocation's
//! outcome is logged and counted by the plugin runtime.

use super::Item;
use crate::plugin::Tap;
use crate::state::AppState;

/// After an item was created.
pub async fn item_inserted(state: &AppState, item: &Item) {
    fire(state, Tap::ItemInsert, item).await;
}

/// After an item was saved (live row or stage revision).
pub async fn item_updated(state: &AppState, item: &Item) {
    fire(state, Tap::ItemUpdate, item).await;
}

/// After an item was deleted.
pub async fn item_deleted(state: &AppState, item: &Item) {
    fire(state, Tap::ItemDelete, item).await;
}

async fn fire(state: &AppState, tap: Tap, item: &Item) {
    if state.plugins.implementors(tap).is_empty() {
        return;
    }
    let outcomes = state.plugins.invoke_all(tap, item).await;
    tracing::debug!(item = %item.id, tap = tap.name(), plugins = outcomes.len(), "item tap dispatched");
}
