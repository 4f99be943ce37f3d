//! Where plugins hook into item writes: `tap_item_insert`,
//! `tap_item_update` and `tap_item_delete` receive the item as JSON. They
//! run after the write committed and after its cache invalidation (see
//! [`super::write::Effects`]), in plugin weight order, and they never fail
//! the write: each invocation's outcome is logged and counted by the
//! plugin runtime.

use super::Item;
use crate::plugin::Tap;
use crate::state::AppState;

/// Fires `tap` for `item` with every plugin implementing it.
pub(super) async fn fire(state: &AppState, tap: Tap, item: &Item) {
    if state.plugins.implementors(tap).is_empty() {
        return;
    }
    let outcomes = state.plugins.invoke_all(tap, item).await;
    tracing::debug!(item = %item.id, tap = tap.name(), plugins = outcomes.len(), "item tap dispatched");
}
