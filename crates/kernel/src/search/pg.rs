//! The PostgreSQL engine: `item.search_vector`, kept by the
//! `item_search_update` trigger (migration `0008_search.sql`), matched
//! with `websearch_to_tsquery` in each type's language, ranked by
//! `ts_rank_cd` with the weights, snippets by `ts_headline`.

use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{SearchBackend, SearchError, SearchHit, SearchRequest, SearchResults, snippet_html};
use crate::db::timed;
use crate::item::{Change, Effects};
use crate::state::AppState;

pub struct PgSearch;

/// Recomputes the vectors of `ids` as the configuration says now.
pub async fn recompute(conn: &mut PgConnection, ids: &[Uuid]) -> Result<u64, SearchError> {
    let done = timed(
        "search.reindex",
        sqlx::query(
            "UPDATE item
             SET search_vector = item_search_vector(type, title, fields, search_extra)
             WHERE id = ANY($1)",
        )
        .bind(ids)
        .execute(&mut *conn),
    )
    .await?;
    Ok(done.rows_affected())
}

/// One page of results, its total and snippets in one statement: the
/// matches are ranked once, the page is cut from them, and only the page's
/// rows get a headline. At most `$5 + 1` matches are ranked (the first
/// found): ranking and counting every match of a word half the site holds
/// costs a heap read per match, so a broader query ranks a sample and says
/// its total is inexact.
const QUERY: &str = "
WITH q AS MATERIALIZED (
    SELECT search_query($1, $2) AS q
),
hits AS MATERIALIZED (
    SELECT i.id, ts_rank_cd(i.search_vector, q.q) AS rank
    FROM item i, q
    WHERE i.stage_id = 'live' AND i.status = 1
      AND i.search_vector @@ q.q
      AND ($2::text IS NULL OR i.type = $2)
    LIMIT $5 + 1
),
ranked AS (
    SELECT id, rank FROM hits ORDER BY rank DESC, id LIMIT $5
),
page AS (
    SELECT id, rank FROM ranked ORDER BY rank DESC, id LIMIT $3 OFFSET $4
)
SELECT
    (SELECT count(*) FROM hits) AS total,
    COALESCE(array_agg(p.id ORDER BY p.rank DESC, p.id), '{}') AS ids,
    COALESCE(array_agg(i.type ORDER BY p.rank DESC, p.id), '{}') AS types,
    COALESCE(array_agg(i.title ORDER BY p.rank DESC, p.id), '{}') AS titles,
    COALESCE(array_agg(p.rank ORDER BY p.rank DESC, p.id), '{}') AS ranks,
    COALESCE(array_agg(
        ts_headline(search_language(i.type),
                    translate(item_search_body(i.type, i.fields, i.search_extra), chr(1) || chr(2), ''),
                    q.q,
                    format('StartSel=%s, StopSel=%s, MaxWords=35, MinWords=12, MaxFragments=2, FragmentDelimiter=\" … \"', chr(1), chr(2)))
        ORDER BY p.rank DESC, p.id), '{}') AS snippets
FROM page p
JOIN item i ON i.id = p.id
CROSS JOIN q
";

/// The query [`PgSearch::search`] runs, for benchmarks comparing the
/// endpoint with the SQL alone (parameters: text, type or NULL, limit,
/// offset, `search.max_ranked`).
pub const SEARCH_SQL: &str = QUERY;

impl SearchBackend for PgSearch {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn on_write<'a>(
        &'a self,
        _state: &'a AppState,
        _tx: &'a mut PgConnection,
        _change: &'a Change,
        _effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), SearchError>> {
        // The trigger indexed the row in this transaction.
        Box::pin(async { Ok(()) })
    }

    fn index_item(&self, state: &AppState, id: Uuid) -> BoxFuture<'_, Result<(), SearchError>> {
        let db = state.db.clone();
        Box::pin(async move {
            let mut conn = db.acquire().await?;
            recompute(&mut conn, &[id]).await.map(|_| ())
        })
    }

    fn delete_item(&self, _state: &AppState, _id: Uuid) -> BoxFuture<'_, Result<(), SearchError>> {
        // The vector goes with the row.
        Box::pin(async { Ok(()) })
    }

    fn reindex<'a>(
        &'a self,
        _state: &'a AppState,
        tx: &'a mut PgConnection,
        ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<u64, SearchError>> {
        Box::pin(recompute(tx, ids))
    }

    fn search<'a>(
        &'a self,
        state: &'a AppState,
        req: &'a SearchRequest,
    ) -> BoxFuture<'a, Result<SearchResults, SearchError>> {
        Box::pin(async move {
            #[derive(sqlx::FromRow)]
            struct Row {
                total: i64,
                ids: Vec<Uuid>,
                types: Vec<String>,
                titles: Vec<String>,
                ranks: Vec<f32>,
                snippets: Vec<String>,
            }
            let row: Row = timed(
                "search.query",
                sqlx::query_as(QUERY)
                    .bind(&req.query)
                    .bind(req.item_type.as_deref())
                    .bind(i64::from(req.per_page))
                    .bind(req.offset() as i64)
                    .bind(i64::from(state.config.search.max_ranked))
                    .fetch_one(&state.db),
            )
            .await?;
            let results = row
                .ids
                .into_iter()
                .zip(row.types)
                .zip(row.titles)
                .zip(row.ranks)
                .zip(row.snippets)
                .map(|((((id, item_type), title), rank), snippet)| SearchHit {
                    id,
                    item_type,
                    title,
                    rank,
                    snippet: snippet_html(&snippet),
                })
                .collect();
            let ranked = u64::from(state.config.search.max_ranked);
            let matched = row.total.max(0) as u64;
            Ok(SearchResults {
                query: req.query.clone(),
                total: matched.min(ranked),
                total_exact: matched <= ranked,
                page: req.page,
                per_page: req.per_page,
                results,
                engine: self.name().to_owned(),
            })
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(async { Ok(()) })
    }
}
