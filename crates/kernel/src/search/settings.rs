//! The `[search]` section: which engine answers queries, and the bounds of
//! a query.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The search engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SearchBackendKind {
    /// PostgreSQL full-text search on the item table: indexed in the
    /// write's own transaction, serves any number of machines.
    Postgres,
    /// An embedded tantivy index under the data directory, fed through the
    /// `search` queue: BM25 ranking, one machine.
    Tantivy,
}

/// The `[search]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Search")]
pub struct SearchSettings {
    /// Search engine: `postgres` (the item table's full-text index) or `tantivy` (an embedded index under the data directory, fed through the `search` queue).
    #[arg(
        id = "search.backend",
        long = "search-backend",
        env = "TROVATO_SEARCH_BACKEND",
        value_enum
    )]
    pub backend: SearchBackendKind,
    /// Longest query accepted, in characters; a longer one is a 400.
    #[arg(
        id = "search.max_query_chars",
        long = "search-max-query-chars",
        env = "TROVATO_SEARCH_MAX_QUERY_CHARS",
        value_name = "N"
    )]
    pub max_query_chars: usize,
    /// Results per page when the request does not say (at most 50).
    #[arg(
        id = "search.per_page",
        long = "search-per-page",
        env = "TROVATO_SEARCH_PER_PAGE",
        value_name = "N"
    )]
    pub per_page: u32,
    /// Matches a PostgreSQL query ranks at most: a query matching more ranks the first this many found and reports its total as at least this many.
    #[arg(
        id = "search.max_ranked",
        long = "search-max-ranked",
        env = "TROVATO_SEARCH_MAX_RANKED",
        value_name = "N"
    )]
    pub max_ranked: u32,
    /// Memory the tantivy index writer buffers before it flushes a segment, in MiB.
    #[arg(
        id = "search.tantivy_writer_mb",
        long = "search-tantivy-writer-mb",
        env = "TROVATO_SEARCH_TANTIVY_WRITER_MB",
        value_name = "MIB"
    )]
    pub tantivy_writer_mb: usize,
}

/// The most results one page holds.
pub const MAX_PER_PAGE: u32 = 50;

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            backend: SearchBackendKind::Postgres,
            max_query_chars: 256,
            per_page: 10,
            max_ranked: 1_000,
            tantivy_writer_mb: 64,
        }
    }
}

impl SearchSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=4096).contains(&self.max_query_chars) {
            return Err(ConfigError::invalid::<Self>(
                "search.max_query_chars",
                "must be between 1 and 4096",
            ));
        }
        if !(1..=MAX_PER_PAGE).contains(&self.per_page) {
            return Err(ConfigError::invalid::<Self>(
                "search.per_page",
                format!("must be between 1 and {MAX_PER_PAGE}"),
            ));
        }
        if !(MAX_PER_PAGE..=1_000_000).contains(&self.max_ranked) {
            return Err(ConfigError::invalid::<Self>(
                "search.max_ranked",
                format!("must be between {MAX_PER_PAGE} and 1000000"),
            ));
        }
        if !(15..=4096).contains(&self.tantivy_writer_mb) {
            return Err(ConfigError::invalid::<Self>(
                "search.tantivy_writer_mb",
                "must be between 15 and 4096",
            ));
        }
        Ok(())
    }
}
