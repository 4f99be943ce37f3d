//! The PostgreSQL engine: `item.search_vector`, kept by the
//! `item_search_update` trigger (migration `0008_search.sql`), matched
//! with `websearch_to_tsquery` in each type's language, ranked by
//! `ts_rank_cd` with the weights, snippets by `ts_headline`.

use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{SearchBackend, SearchError, SearchHit, SearchRequest, SearchResults, snippet_html};
use crate::db::timed;

/// The engine over the site's own database.
pub struct PgSearch {
    pub db: sqlx::PgPool,
    /// `search.max_ranked`: matches ranked at most per query.
    pub max_ranked: u32,
}

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

/// One page of results, its total and snippets: `search_page` (migration
/// `0011_search_speed.sql`) turns the text into its tsquery, then runs the
/// page's statement planned for that tsquery, so a rare word goes through
/// the GIN index and a common one reads rows in order until enough match.
/// At most `$5 + 1` matches are ranked (the first found): ranking and
/// counting every match of a word half the site holds costs a heap read
/// per match, so a broader query ranks a sample and says its total is
/// inexact.
const QUERY: &str = "SELECT total, ids, types, titles, ranks, snippets
                     FROM search_page($1, $2, $3, $4, $5)";

/// The query [`PgSearch::search`] runs, for benchmarks comparing the
/// endpoint with the SQL alone (parameters: text, type or NULL, limit,
/// offset, `search.max_ranked`).
pub const SEARCH_SQL: &str = QUERY;

impl SearchBackend for PgSearch {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn index_item(&self, id: Uuid) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(async move {
            let mut conn = self.db.acquire().await?;
            recompute(&mut conn, &[id]).await.map(|_| ())
        })
    }

    fn delete_item(&self, _id: Uuid) -> BoxFuture<'_, Result<(), SearchError>> {
        // The vector goes with the row.
        Box::pin(async { Ok(()) })
    }

    fn reindex<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<u64, SearchError>> {
        Box::pin(recompute(tx, ids))
    }

    fn search<'a>(
        &'a self,
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
                    .bind(i64::from(self.max_ranked))
                    .fetch_one(&self.db),
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
            let ranked = u64::from(self.max_ranked);
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
