//! The cached entry point of every search (the pages and the API): one
//! page of results per query, kept under the `search` and `item_list:all`
//! tags and each hit's item tag, so an item save invalidates it.

use bytes::Bytes;

use super::{SEARCH_TAG, SearchError, SearchRequest, SearchResults};
use crate::cache::{CacheTag, Loaded};
use crate::db::DbError;
use crate::state::AppState;

/// One page of results for `req`, through the cache (pages up to
/// [`MAX_CACHED_PAGE`](super::MAX_CACHED_PAGE)).
/// A type that does not exist is an error, found when the results are
/// computed (a cached page was computed while it existed).
pub async fn search(state: &AppState, req: &SearchRequest) -> Result<SearchResults, SearchError> {
    let engine = state.search.backend();
    if req.page > super::MAX_CACHED_PAGE {
        return compute(state, req).await;
    }
    let key = req.cache_key(engine.name())?;
    let cached = state
        .cache
        .get_or_load(&key, || async {
            let results = compute(state, req).await?;
            let mut tags = vec![CacheTag::new(SEARCH_TAG)?, CacheTag::new("item_list:all")?];
            tags.extend(results.results.iter().map(|h| crate::item::item_tag(h.id)));
            let bytes = serde_json::to_vec(&results)
                .map_err(|e| SearchError::Index(format!("results: {e}")))?;
            Ok::<_, SearchError>(Some(Loaded {
                bytes: Bytes::from(bytes),
                tags,
            }))
        })
        .await?;
    match cached {
        Some(c) => serde_json::from_slice(&c.bytes)
            .map_err(|e| SearchError::Index(format!("cached results: {e}"))),
        None => compute(state, req).await,
    }
}

/// Results straight from the engine.
async fn compute(state: &AppState, req: &SearchRequest) -> Result<SearchResults, SearchError> {
    if let Some(t) = &req.item_type
        && !type_exists(state, t).await?
    {
        return Err(SearchError::UnknownType(t.clone()));
    }
    state.search.backend().search(req).await
}

/// Whether item type `name` exists, through the kernel's type cache.
async fn type_exists(state: &AppState, name: &str) -> Result<bool, SearchError> {
    match crate::item::get_type(&state.db, name).await {
        Ok(_) => Ok(true),
        Err(crate::item::ItemError::TypeNotFound(_)) => Ok(false),
        Err(crate::item::ItemError::Db(e)) => Err(e.into()),
        Err(e) => Err(SearchError::Db(DbError::Unavailable(e.to_string()))),
    }
}

/// Drops every cached search result (after the index changed other than
/// through an item write).
pub async fn forget_results(state: &AppState) {
    if let Ok(tag) = CacheTag::new(SEARCH_TAG) {
        state.cache.invalidate(&[tag]).await;
    }
}
