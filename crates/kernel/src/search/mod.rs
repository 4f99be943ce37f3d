//! Search (spec §13), live only: what is indexed, how a query is read, the
//! engines behind [`SearchBackend`], and the cached entry point
//! [`query::search`].
//!
//! - [`config`]: `search_field_config` and each type's language, managed
//!   by administrators and by plugins' `tap_item_update_index`; a change
//!   reindexes the type as a batch.
//! - [`hook`]: the item write hook (plugins' extra text per item, and the
//!   engine's follow-up of the write).
//! - [`pg`]: the PostgreSQL engine (the default): the `item_search_update`
//!   trigger of migration `0008_search.sql` keeps `item.search_vector`
//!   equal to what the configuration says, in the write's transaction.
//! - [`tantivy`]: an embedded tantivy index fed through the `search` queue
//!   ([`feed`]).
//! - [`query`]: the cached entry point every page and the API use.
//! - [`routes`]: `GET /search`, `GET /api/search`, the configuration API
//!   and `/admin/search`.
//!
//! Only live, published items are found: `stage_id = 'live'` and
//! `status = 1`. A stage preview searches live (the page says so).

pub mod config;
pub mod feed;
pub mod hook;
pub mod pg;
pub mod query;
pub mod routes;
pub mod settings;
pub mod tantivy;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::batch::error::BatchError;
use crate::cache::{CacheError, CacheKey};
use crate::db::DbError;
use crate::observe::health::{ProbeName, Probes};
use crate::queue::QueueError;

pub use settings::{SearchBackendKind, SearchSettings};

/// The tag of every cached search result: dropped when the configuration
/// changes, a reindex chunk commits, or the tantivy index commits. Item
/// writes drop results through `item_list:all`, which they are tagged
/// with too.
pub const SEARCH_TAG: &str = "search";

/// The highest page number a query may ask for.
pub const MAX_PAGE: u32 = 1_000;

/// Pages beyond this one are read without the cache, so the keys one
/// visitor can create stay bounded (as listings do).
pub const MAX_CACHED_PAGE: u32 = crate::item::list::ListSpec::MAX_CACHED_PAGE;

/// The probe `/health` runs for an engine other than PostgreSQL.
pub const SEARCH_PROBE: ProbeName = ProbeName::new("search");

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the query `q` is required")]
    QueryRequired,
    #[error("the query is longer than {max} characters")]
    QueryTooLong { max: usize },
    #[error("page must be between 1 and {MAX_PAGE}")]
    BadPage,
    #[error("per_page must be between 1 and {max}")]
    BadPerPage { max: u32 },
    #[error("`{0}` is not an item type")]
    UnknownType(String),
    #[error("`{field}` is not a field of item type `{item_type}`")]
    UnknownField { item_type: String, field: String },
    #[error("`{0}` is named twice")]
    DuplicateField(String),
    #[error("`{field}` is declared by plugin `{plugin}`; the plugin sets its weight")]
    DeclaredByPlugin { field: String, plugin: String },
    #[error("`{0}` is not a text search configuration of the database")]
    UnknownLanguage(String),
    #[error("the search index is unavailable: {0}")]
    Index(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<sqlx::Error> for SearchError {
    fn from(e: sqlx::Error) -> Self {
        SearchError::Db(e.into())
    }
}

impl From<CacheError> for SearchError {
    fn from(e: CacheError) -> Self {
        SearchError::Db(DbError::Unavailable(format!("cache: {e}")))
    }
}

impl crate::error::HttpError for SearchError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            SearchError::QueryRequired => (S::BAD_REQUEST, "query_required"),
            SearchError::QueryTooLong { .. } => (S::BAD_REQUEST, "query_too_long"),
            SearchError::BadPage => (S::BAD_REQUEST, "invalid_page"),
            SearchError::BadPerPage { .. } => (S::BAD_REQUEST, "invalid_per_page"),
            SearchError::UnknownType(_) => (S::NOT_FOUND, "item_type_not_found"),
            SearchError::UnknownField { .. } => (S::UNPROCESSABLE_ENTITY, "unknown_field"),
            SearchError::DuplicateField(_) => (S::UNPROCESSABLE_ENTITY, "duplicate_field"),
            SearchError::DeclaredByPlugin { .. } => {
                (S::UNPROCESSABLE_ENTITY, "field_declared_by_plugin")
            }
            SearchError::UnknownLanguage(_) => (S::UNPROCESSABLE_ENTITY, "unknown_language"),
            SearchError::Index(_) => (S::SERVICE_UNAVAILABLE, "search_unavailable"),
            SearchError::Db(e) => e.status_code(),
            SearchError::Batch(e) => e.status_code(),
            SearchError::Queue(e) => e.status_code(),
        }
    }
}

/// A tsvector weight: A (highest) to D.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Weight {
    A,
    B,
    C,
    D,
}

impl Weight {
    pub const ALL: [Weight; 4] = [Weight::A, Weight::B, Weight::C, Weight::D];

    pub fn as_str(self) -> &'static str {
        match self {
            Weight::A => "A",
            Weight::B => "B",
            Weight::C => "C",
            Weight::D => "D",
        }
    }

    pub fn parse(s: &str) -> Option<Weight> {
        Weight::ALL.into_iter().find(|w| w.as_str() == s)
    }

    /// The factor PostgreSQL's `ts_rank_cd` gives the weight by default;
    /// the other engines boost by the same factors.
    pub fn factor(self) -> f32 {
        match self {
            Weight::A => 1.0,
            Weight::B => 0.4,
            Weight::C => 0.2,
            Weight::D => 0.1,
        }
    }
}

/// A query as the API and the page take it, before it is checked.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawQuery {
    /// Web-search syntax: words, `"quoted phrases"`, `or`, `-word`
    /// (required by `/api/search`; not blank, at most
    /// `search.max_query_chars` characters).
    pub q: Option<String>,
    /// Only items of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub item_type: Option<String>,
    /// 1-based page number (at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub page: Option<u32>,
    /// Results per page (at most 50).
    #[param(minimum = 1, maximum = 50)]
    pub per_page: Option<u32>,
}

/// A checked query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchRequest {
    /// The user's text with control characters replaced by spaces and
    /// surrounding space trimmed; never empty.
    pub query: String,
    pub item_type: Option<String>,
    pub page: u32,
    pub per_page: u32,
}

impl SearchRequest {
    /// Checks `raw` against `settings`: a missing or blank query, one too
    /// long, a page or page size out of range, a malformed type name are
    /// errors (4xx). Control characters (NUL among them, which PostgreSQL
    /// text cannot hold) become spaces.
    pub fn parse(raw: &RawQuery, settings: &SearchSettings) -> Result<Self, SearchError> {
        let text = raw.q.as_deref().unwrap_or("");
        if text.chars().count() > settings.max_query_chars {
            return Err(SearchError::QueryTooLong {
                max: settings.max_query_chars,
            });
        }
        let query: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim()
            .to_owned();
        if query.is_empty() {
            return Err(SearchError::QueryRequired);
        }
        let page = raw.page.unwrap_or(1);
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(SearchError::BadPage);
        }
        let per_page = raw.per_page.unwrap_or(settings.per_page);
        if !(1..=settings::MAX_PER_PAGE).contains(&per_page) {
            return Err(SearchError::BadPerPage {
                max: settings::MAX_PER_PAGE,
            });
        }
        let item_type = match raw.item_type.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) if crate::text::is_machine_name(t, 32) => Some(t.to_owned()),
            Some(t) => return Err(SearchError::UnknownType(t.to_owned())),
        };
        Ok(Self {
            query,
            item_type,
            page,
            per_page,
        })
    }

    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }

    fn cache_key(&self, engine: &str) -> Result<CacheKey, CacheError> {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!(
                "{}\u{0}{}\u{0}{}\u{0}{}",
                self.item_type.as_deref().unwrap_or(""),
                self.page,
                self.per_page,
                self.query
            )
            .as_bytes(),
        );
        CacheKey::new(format!(
            "search:{engine}:{}",
            crate::text::hex(digest.as_ref())
        ))
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub item_type: String,
    pub title: String,
    /// The engine's score (higher is better; comparable within one
    /// result list only).
    pub rank: f32,
    /// Text around the matches, HTML-escaped, the matches in `<mark>`.
    pub snippet: String,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchResults {
    pub query: String,
    /// Every match, on every page; when `total_exact` is false, the
    /// number of matches ranked (`search.max_ranked`), and there are more.
    pub total: u64,
    /// False when the query matched more items than the engine ranks.
    pub total_exact: bool,
    pub page: u32,
    pub per_page: u32,
    pub results: Vec<SearchHit>,
    /// The engine that answered.
    pub engine: String,
}

/// An item as an engine indexes it: its weighted text parts exactly as the
/// configuration says (read through the same SQL the trigger uses).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: Uuid,
    pub item_type: String,
    pub title: String,
    /// The type's text search configuration (`english`, ...).
    pub language: String,
    /// Live and published: the only items search may find.
    pub searchable: bool,
    /// Title at A first, then the configured fields, then plugins' text.
    pub parts: Vec<(Weight, String)>,
}

/// The documents of `ids` that exist, read through `conn`.
pub async fn documents(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<Document>, SearchError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        item_type: String,
        title: String,
        language: String,
        searchable: bool,
        weights: Vec<String>,
        bodies: Vec<String>,
    }
    let rows: Vec<Row> = crate::db::timed(
        "search.documents",
        sqlx::query_as(
            "SELECT i.id, i.type AS item_type, i.title,
                    search_language(i.type)::text AS language,
                    (i.stage_id = 'live' AND i.status = 1) AS searchable,
                    p.weights, p.bodies
             FROM item i
             CROSS JOIN LATERAL (
                 SELECT COALESCE(array_agg(weight::text ORDER BY part, ord), '{}') AS weights,
                        COALESCE(array_agg(body ORDER BY part, ord), '{}') AS bodies
                 FROM search_parts(i.type, i.title, i.fields, i.search_extra)
                 WHERE body IS NOT NULL AND body <> ''
             ) p
             WHERE i.id = ANY($1)
             ORDER BY i.id",
        )
        .bind(ids)
        .fetch_all(&mut *conn),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Document {
            id: r.id,
            item_type: r.item_type,
            title: r.title,
            language: r.language,
            searchable: r.searchable,
            parts: r
                .weights
                .iter()
                .zip(r.bodies)
                .filter_map(|(w, b)| Weight::parse(w).map(|w| (w, b)))
                .collect(),
        })
        .collect())
}

/// A search engine. The PostgreSQL one is the default; another is a new
/// file implementing this trait and a [`SearchBackendKind`]. An engine
/// holds what it reads and writes (the database pool, its own index), so
/// it sees none of the kernel's other state.
pub trait SearchBackend: Send + Sync {
    fn name(&self) -> &'static str;

    /// Whether item writes reach the engine through the kernel's `search`
    /// queue ([`feed`]): an engine of its own is fed after the write, so a
    /// write never waits for it. The PostgreSQL engine needs no feed: its
    /// trigger indexes the row in the write's transaction.
    fn fed_by_queue(&self) -> bool {
        false
    }

    /// Whether this process should work the feed (where it can write the
    /// index).
    fn works_feed(&self) -> bool {
        false
    }

    /// Indexes item `id` from its stored row (removing it from the index
    /// when it is not live and published, or gone).
    fn index_item(&self, id: Uuid) -> BoxFuture<'_, Result<(), SearchError>>;

    /// Removes item `id` from the index.
    fn delete_item(&self, id: Uuid) -> BoxFuture<'_, Result<(), SearchError>>;

    /// Recomputes the index entries of `ids` from their rows read through
    /// `tx` (a reindex batch chunk's transaction). Returns how many items
    /// were indexed.
    fn reindex<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<u64, SearchError>>;

    /// One page of live, published items matching `req`, best first.
    fn search<'a>(
        &'a self,
        req: &'a SearchRequest,
    ) -> BoxFuture<'a, Result<SearchResults, SearchError>>;

    /// For `/health`: whether the engine answers.
    fn probe(&self) -> BoxFuture<'_, Result<(), SearchError>>;
}

/// The configured engine.
#[derive(Clone)]
pub struct Search {
    backend: Arc<dyn SearchBackend>,
    kind: SearchBackendKind,
    settings: SearchSettings,
}

impl Search {
    /// Opens the engine `settings` name over `db` (the tantivy index
    /// under `data_dir`).
    pub fn open(
        settings: &SearchSettings,
        data_dir: &std::path::Path,
        db: &sqlx::PgPool,
    ) -> Result<Self, SearchError> {
        let backend: Arc<dyn SearchBackend> = match settings.backend {
            SearchBackendKind::Postgres => Arc::new(pg::PgSearch {
                db: db.clone(),
                max_ranked: settings.max_ranked,
            }),
            SearchBackendKind::Tantivy => Arc::new(tantivy::TantivySearch::open(
                &data_dir.join("search").join("tantivy"),
                settings,
                db.clone(),
            )?),
        };
        Ok(Self {
            backend,
            kind: settings.backend,
            settings: settings.clone(),
        })
    }

    pub fn backend(&self) -> &dyn SearchBackend {
        &*self.backend
    }

    pub fn kind(&self) -> SearchBackendKind {
        self.kind
    }

    pub fn settings(&self) -> &SearchSettings {
        &self.settings
    }

    /// Adds the engine's probe to `/health` (none for PostgreSQL, which
    /// the kernel's own probe covers).
    pub fn add_probe(&self, probes: &mut Probes) {
        if self.kind == SearchBackendKind::Postgres {
            return;
        }
        let backend = self.backend.clone();
        probes.add(SEARCH_PROBE, move || {
            let backend = backend.clone();
            async move { backend.probe().await.map_err(|e| e.to_string()) }
        });
    }
}

/// Escapes `text` for HTML, turning the engine's match markers (U+0001
/// before a match, U+0002 after it) into `<mark>` and `</mark>`. Any other
/// control character is dropped.
pub fn snippet_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut open = false;
    for c in text.chars() {
        match c {
            '\u{1}' if !open => {
                out.push_str("<mark>");
                open = true;
            }
            '\u{2}' if open => {
                out.push_str("</mark>");
                open = false;
            }
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    if open {
        out.push_str("</mark>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(q: &str) -> RawQuery {
        RawQuery {
            q: Some(q.to_owned()),
            ..RawQuery::default()
        }
    }

    #[test]
    fn control_characters_become_spaces_and_blank_queries_are_refused() {
        let s = SearchSettings::default();
        let r = SearchRequest::parse(&raw(" a\u{0}b\u{1b}c "), &s).unwrap();
        assert_eq!(r.query, "a b c");
        assert!(matches!(
            SearchRequest::parse(&raw(" \u{0} \t"), &s),
            Err(SearchError::QueryRequired)
        ));
        assert!(matches!(
            SearchRequest::parse(&RawQuery::default(), &s),
            Err(SearchError::QueryRequired)
        ));
    }

    #[test]
    fn length_page_and_page_size_are_bounded() {
        let s = SearchSettings::default();
        let long = "é".repeat(s.max_query_chars + 1);
        assert!(matches!(
            SearchRequest::parse(&raw(&long), &s),
            Err(SearchError::QueryTooLong { .. })
        ));
        let exact = "é".repeat(s.max_query_chars);
        assert!(SearchRequest::parse(&raw(&exact), &s).is_ok());
        for page in [0, MAX_PAGE + 1] {
            let q = RawQuery {
                page: Some(page),
                ..raw("x")
            };
            assert!(matches!(
                SearchRequest::parse(&q, &s),
                Err(SearchError::BadPage)
            ));
        }
        let q = RawQuery {
            per_page: Some(51),
            ..raw("x")
        };
        assert!(matches!(
            SearchRequest::parse(&q, &s),
            Err(SearchError::BadPerPage { .. })
        ));
        let q = RawQuery {
            item_type: Some("Bad Type".into()),
            ..raw("x")
        };
        assert!(matches!(
            SearchRequest::parse(&q, &s),
            Err(SearchError::UnknownType(_))
        ));
    }

    #[test]
    fn snippets_are_escaped_with_only_marks_added() {
        assert_eq!(
            snippet_html("<b>x</b> & \u{1}shoes\u{2} \"q\" \u{1}open"),
            "&lt;b&gt;x&lt;/b&gt; &amp; <mark>shoes</mark> &quot;q&quot; <mark>open</mark>"
        );
        assert_eq!(snippet_html("\u{2}stray\u{7}"), "stray");
    }

    #[test]
    fn cache_keys_differ_by_every_part_and_are_valid() {
        let a = SearchRequest {
            query: "x".into(),
            item_type: None,
            page: 1,
            per_page: 10,
        };
        let mut b = a.clone();
        b.page = 2;
        let mut c = a.clone();
        c.item_type = Some("article".into());
        let keys: std::collections::BTreeSet<String> = [&a, &b, &c]
            .iter()
            .map(|r| r.cache_key("postgres").unwrap().as_str().to_owned())
            .collect();
        assert_eq!(keys.len(), 3);
    }
}
