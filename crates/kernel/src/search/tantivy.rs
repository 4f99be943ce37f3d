//! The tantivy engine: an embedded index under `<data_dir>/search/tantivy`,
//! fed through the kernel's `search` queue so an item write never waits
//! for the index. It holds live, published items only, ranks by BM25 with
//! each weight's field boosted by [`Weight::factor`], and reads queries in
//! the syntax of PostgreSQL's `websearch_to_tsquery` (see [`parse`]).
//!
//! Limitation: every item type is analysed as English (Snowball stemmer,
//! PostgreSQL's English stop words), whatever text search configuration
//! the type has in PostgreSQL.
//!
//! One process per index directory holds the writer (tantivy's lock file);
//! others on the machine read, and their index calls fail with
//! [`SearchError::Index`] (the queue retries them) until they can take the
//! writer.
//!
//! Where it differs from PostgreSQL: a group of a query made of exclusions
//! only (`-word`, or `a or -b`'s second half) matches nothing, where
//! PostgreSQL matches every item without the word.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use futures::future::BoxFuture;
use sqlx::PgConnection;
use tantivy::collector::sort_key::{SortBySimilarityScore, SortByString};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::directory::error::LockError;
use tantivy::indexer::UserOperation;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, EnableScoring, Explanation, Occur, PhraseQuery,
    Query, Scorer, TermQuery,
};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::snippet::{SnippetGenerator, collapse_overlapped_ranges};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{
    DocId, DocSet, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Score, SegmentReader,
    TantivyDocument, TantivyError, Term,
};
use uuid::Uuid;

use super::{
    Document, SearchBackend, SearchError, SearchHit, SearchRequest, SearchResults, SearchSettings,
    Weight, snippet_html,
};

/// The analyzer every text field uses, as registered on the index.
const ANALYZER: &str = "trovato_english";

/// Tokens this long (in bytes) or longer are dropped, as PostgreSQL drops
/// words it cannot index.
const MAX_TOKEN_BYTES: usize = 100;

/// Terms of one query beyond this many are ignored, so a long query cannot
/// build an unbounded tantivy query.
const MAX_CLAUSES: usize = 256;

/// The longest snippet cut from a match, in characters (about
/// `ts_headline`'s 35 words).
const SNIPPET_CHARS: usize = 200;

/// Words a snippet shows from the start of the body when nothing in it
/// matched.
const LEAD_WORDS: usize = 30;

/// The writer's memory budget bounds, in bytes: tantivy's per-thread floor
/// and ceiling (not exported by it), so any budget opens a writer (with
/// fewer threads when small).
const WRITER_BUDGET_MIN: usize = 15_000_000;
const WRITER_BUDGET_MAX: usize = u32::MAX as usize - 1_000_000;

/// PostgreSQL's `english` stop words (`english.stop`, the Snowball list),
/// so the same words are ignored by both engines.
const STOP_WORDS: &str = "\
    i me my myself we our ours ourselves you your yours yourself yourselves he him his \
    himself she her hers herself it its itself they them their theirs themselves what which \
    who whom this that these those am is are was were be been being have has had having do \
    does did doing a an the and but if or because as until while of at by for with about \
    against between into through during before after above below to from up down in out on \
    off over under again further then once here there when where why how all any both each \
    few more most other some such no nor not only own same so than too very s t can will \
    just don should now";

/// The embedded index. Cheap to share: the engine sits behind an `Arc` so
/// blocking work can move a handle onto tokio's blocking pool.
pub struct TantivySearch {
    engine: Arc<Engine>,
    /// Where the items are read from when one is indexed.
    db: sqlx::PgPool,
}

impl TantivySearch {
    /// Opens the index in `dir`, creating the directory and an empty index
    /// when missing. The writer buffers `settings.tantivy_writer_mb` MiB.
    /// When another process holds the writer, the index opens for reading
    /// only; any other failure (a directory that cannot be created, an
    /// index of another schema) is an error, so the kernel fails at start.
    pub fn open(
        dir: &Path,
        settings: &SearchSettings,
        db: sqlx::PgPool,
    ) -> Result<Self, SearchError> {
        Ok(Self {
            engine: Arc::new(Engine::open(dir, settings)?),
            db,
        })
    }

    /// Applies `ops` and waits for the commit that holds them.
    async fn apply(&self, ops: Vec<Op>) -> Result<(), SearchError> {
        if ops.is_empty() {
            return Ok(());
        }
        let engine = self.engine.clone();
        blocking(move || engine.apply(ops)).await
    }
}

/// Runs `work` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, SearchError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(SearchError::Index),
        Err(e) => Err(SearchError::Index(format!("index task failed: {e}"))),
    }
}

impl SearchBackend for TantivySearch {
    fn name(&self) -> &'static str {
        "tantivy"
    }

    fn fed_by_queue(&self) -> bool {
        true
    }

    /// Only the process that holds (or can take) the index writer works
    /// the feed: one that cannot write the index leaves its jobs to the
    /// one that can.
    fn works_feed(&self) -> bool {
        self.engine.take_writer()
    }

    fn index_item(&self, id: Uuid) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(async move {
            let docs = {
                let mut conn = self.db.acquire().await?;
                super::documents(&mut conn, &[id]).await?
            };
            let op = match docs.into_iter().find(|d| d.id == id) {
                Some(doc) if doc.searchable => Op::Upsert(doc),
                _ => Op::Delete(id),
            };
            self.apply(vec![op]).await
        })
    }

    fn delete_item(&self, id: Uuid) -> BoxFuture<'_, Result<(), SearchError>> {
        Box::pin(self.apply(vec![Op::Delete(id)]))
    }

    /// Returns how many of `ids` have a row (as the PostgreSQL engine
    /// counts the rows it recomputed); the others are removed. The index
    /// commits before the chunk's transaction does: should that roll back,
    /// the entries hold what the rolled-back rows said until the chunk is
    /// run again.
    fn reindex<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<u64, SearchError>> {
        Box::pin(async move {
            let mut docs: BTreeMap<Uuid, Document> = super::documents(tx, ids)
                .await?
                .into_iter()
                .map(|d| (d.id, d))
                .collect();
            let found = docs.len() as u64;
            let unique: BTreeSet<Uuid> = ids.iter().copied().collect();
            let ops = unique
                .into_iter()
                .map(|id| match docs.remove(&id) {
                    Some(doc) if doc.searchable => Op::Upsert(doc),
                    _ => Op::Delete(id),
                })
                .collect();
            self.apply(ops).await?;
            Ok(found)
        })
    }

    fn search<'a>(
        &'a self,
        req: &'a SearchRequest,
    ) -> BoxFuture<'a, Result<SearchResults, SearchError>> {
        let engine = self.engine.clone();
        let req = req.clone();
        Box::pin(blocking(move || engine.search(&req)))
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), SearchError>> {
        let engine = self.engine.clone();
        Box::pin(blocking(move || {
            engine.index.load_metas().map_err(|e| e.to_string())?;
            engine.reader.searcher().num_docs();
            Ok(())
        }))
    }
}

/// A change to the index.
#[derive(Debug)]
enum Op {
    /// Replace the item's entry (or add it).
    Upsert(Document),
    /// Remove the item's entry, if any.
    Delete(Uuid),
}

/// The schema's fields.
#[derive(Debug, Clone, Copy)]
struct Fields {
    /// The item id, hyphenated: deletes go by this term; fast, so ties in
    /// score are ordered by id as PostgreSQL orders them.
    id: Field,
    item_type: Field,
    title: Field,
    /// One field per weight, A to D, holding the text parts at that weight
    /// (the title aside). Indexed only: snippets come from `body`.
    weights: [Field; 4],
    /// Every part but the title, in the configuration's order, stored for
    /// snippets (PostgreSQL's `item_search_body`).
    body: Field,
}

fn schema() -> Schema {
    let mut b = Schema::builder();
    let text = |stored: bool| {
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions);
        let options = TextOptions::default().set_indexing_options(indexing);
        if stored {
            options.set_stored()
        } else {
            options
        }
    };
    b.add_text_field("id", STRING | STORED | FAST);
    b.add_text_field("type", STRING | STORED);
    b.add_text_field("title", text(true));
    for w in Weight::ALL {
        b.add_text_field(&weight_field_name(w), text(false));
    }
    b.add_text_field("body", STORED);
    b.build()
}

fn weight_field_name(w: Weight) -> String {
    w.as_str().to_ascii_lowercase()
}

impl Fields {
    fn of(schema: &Schema) -> Result<Self, String> {
        let get = |name: &str| {
            schema
                .get_field(name)
                .map_err(|e| format!("the index has no field `{name}`: {e}"))
        };
        Ok(Self {
            id: get("id")?,
            item_type: get("type")?,
            title: get("title")?,
            weights: [
                get(&weight_field_name(Weight::A))?,
                get(&weight_field_name(Weight::B))?,
                get(&weight_field_name(Weight::C))?,
                get(&weight_field_name(Weight::D))?,
            ],
            body: get("body")?,
        })
    }

    fn weight(&self, w: Weight) -> Field {
        match w {
            Weight::A => self.weights[0],
            Weight::B => self.weights[1],
            Weight::C => self.weights[2],
            Weight::D => self.weights[3],
        }
    }

    /// Every field a query term is looked for in, with its boost.
    fn searched(&self) -> [(Field, f32); 5] {
        [
            (self.title, Weight::A.factor()),
            (self.weights[0], Weight::A.factor()),
            (self.weights[1], Weight::B.factor()),
            (self.weights[2], Weight::C.factor()),
            (self.weights[3], Weight::D.factor()),
        ]
    }
}

/// Lower-cased, PostgreSQL's English stop words removed, Snowball-stemmed.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(
            STOP_WORDS.split_whitespace().map(str::to_owned),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The tokens of `text` with their positions.
fn analyze(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(usize, String)> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while let Some(t) = stream.next() {
        out.push((t.position, t.text.clone()));
    }
    out
}

/// The engine: the index, its reader, and the one writer.
///
/// Group commit: writers add their operations holding `writer` shared and
/// join the open [`Batch`]; the first of them to settle it commits,
/// holding `writer` exclusively, which closes the batch (a new one opens
/// in its place) and commits every operation added to it. The others wait
/// on the batch for that commit's outcome. So a call returns once its
/// change is committed, and concurrent calls share one commit.
struct Engine {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
    /// The writer's memory budget, in bytes.
    budget: usize,
    writer: RwLock<WriterSlot>,
}

struct WriterSlot {
    /// `None` while another process holds the index's writer lock, or
    /// after a failed commit; taken again by the next index call.
    writer: Option<IndexWriter>,
}

impl Engine {
    /// The index in `dir` (see [`TantivySearch::open`]).
    fn open(dir: &Path, settings: &SearchSettings) -> Result<Self, SearchError> {
        let at = |e: &dyn std::fmt::Display| SearchError::Index(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| at(&e))?;
        let directory = MmapDirectory::open(dir).map_err(|e| at(&e))?;
        let index = Index::open_or_create(directory, schema()).map_err(|e| {
            at(&format!(
                "{e} (an index of another version: remove the directory and reindex)"
            ))
        })?;
        let budget = settings
            .tantivy_writer_mb
            .saturating_mul(1024 * 1024)
            .clamp(WRITER_BUDGET_MIN, WRITER_BUDGET_MAX);
        Engine::new(index, budget).map_err(|e| at(&e))
    }

    fn new(index: Index, budget: usize) -> Result<Self, String> {
        let fields = Fields::of(&index.schema())?;
        let analyzer = analyzer();
        index.tokenizers().register(ANALYZER, analyzer.clone());
        // Reloads on other processes' commits; this one's own commits
        // reload explicitly, so a search right after one sees it.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(|e| format!("index reader: {e}"))?;
        let writer = match open_writer(&index, budget) {
            Ok(w) => Some(w),
            Err(WriterError::Busy(e)) => {
                tracing::warn!(error = %e, "the search index writer is held by another process; this one only reads until it can take it");
                None
            }
            Err(WriterError::Other(e)) => return Err(e),
        };
        Ok(Self {
            index,
            reader,
            fields,
            analyzer,
            budget,
            writer: RwLock::new(WriterSlot { writer }),
        })
    }

    /// Whether this process holds the index writer, taking it if it is
    /// free.
    fn take_writer(&self) -> bool {
        let mut slot = self.writer.write().unwrap_or_else(PoisonError::into_inner);
        if slot.writer.is_none()
            && let Ok(w) = open_writer(&self.index, self.budget)
        {
            slot.writer = Some(w);
        }
        slot.writer.is_some()
    }

    /// Applies `ops` (in order) and returns once they are committed.
    fn apply(&self, ops: Vec<Op>) -> Result<(), String> {
        let operations: Vec<UserOperation> = ops
            .into_iter()
            .flat_map(|op| match op {
                Op::Upsert(doc) => vec![
                    UserOperation::Delete(self.id_term(doc.id)),
                    UserOperation::Add(self.to_doc(&doc)),
                ],
                Op::Delete(id) => vec![UserOperation::Delete(self.id_term(id))],
            })
            .collect();
        let mut slot = self.writer.write().unwrap_or_else(PoisonError::into_inner);
        if slot.writer.is_none() {
            slot.writer = Some(open_writer(&self.index, self.budget).map_err(String::from)?);
        }
        let Some(writer) = slot.writer.as_mut() else {
            return Err("no index writer".to_owned());
        };
        writer.run(operations).map_err(|e| format!("index: {e}"))?;
        if let Err(e) = writer.commit() {
            slot.writer = None;
            return Err(format!("index commit: {e}"));
        }
        drop(slot);
        if let Err(e) = self.reader.reload() {
            tracing::warn!(error = %e, "search index reader reload failed");
        }
        Ok(())
    }

    fn id_term(&self, id: Uuid) -> Term {
        Term::from_field_text(self.fields.id, &id.to_string())
    }

    fn to_doc(&self, doc: &Document) -> TantivyDocument {
        let f = &self.fields;
        let mut out = TantivyDocument::new();
        out.add_text(f.id, doc.id.to_string());
        out.add_text(f.item_type, &doc.item_type);
        out.add_text(f.title, unmarked(&doc.title));
        let body = body_parts(doc);
        for (w, text) in body {
            out.add_text(f.weight(*w), unmarked(text));
        }
        let joined: Vec<String> = body.iter().map(|(_, t)| unmarked(t)).collect();
        out.add_text(f.body, joined.join(" … "));
        out
    }

    fn search(&self, req: &SearchRequest) -> Result<SearchResults, String> {
        let mut analyzer = self.analyzer.clone();
        let groups = parse(&req.query, |t| analyze(&mut analyzer, t));
        let mut results = SearchResults {
            query: req.query.clone(),
            total: 0,
            // BM25 with block-max pruning counts every match cheaply.
            total_exact: true,
            page: req.page,
            per_page: req.per_page,
            results: Vec::new(),
            engine: "tantivy".to_owned(),
        };
        let Some(query) = self.query(&groups, req.item_type.as_deref()) else {
            return Ok(results);
        };
        let searcher = self.reader.searcher();
        let offset = usize::try_from(req.offset()).map_err(|e| e.to_string())?;
        let top = TopDocs::with_limit((req.per_page as usize).max(1))
            .and_offset(offset)
            .order_by((
                SortBySimilarityScore,
                (SortByString::for_field("id"), Order::Asc),
            ));
        let (hits, total) = searcher
            .search(&query, &(top, Count))
            .map_err(|e| format!("search: {e}"))?;
        results.total = total as u64;
        if hits.is_empty() {
            return Ok(results);
        }
        let snippets = self.snippets(&searcher, &groups)?;
        for ((rank, _), address) in hits {
            let doc: TantivyDocument = searcher
                .doc(address)
                .map_err(|e| format!("stored document: {e}"))?;
            let text = |field: Field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            let id = text(self.fields.id);
            let id = Uuid::parse_str(&id).map_err(|e| format!("stored id `{id}`: {e}"))?;
            results.results.push(SearchHit {
                id,
                item_type: text(self.fields.item_type),
                title: text(self.fields.title),
                rank,
                snippet: snippet(&snippets, &text(self.fields.body)),
            });
        }
        Ok(results)
    }

    /// The tantivy query for `groups` (OR of ANDs), or `None` when nothing
    /// can match.
    fn query(&self, groups: &[Group], item_type: Option<&str>) -> Option<Box<dyn Query>> {
        let mut alternatives: Vec<Box<dyn Query>> = groups
            .iter()
            .filter(|g| !g.must.is_empty())
            .map(|g| {
                let clauses = g
                    .must
                    .iter()
                    .map(|c| (Occur::Must, self.clause(c)))
                    .chain(g.must_not.iter().map(|c| {
                        let clause = Box::new(Exclusion(self.clause(c))) as Box<dyn Query>;
                        (Occur::MustNot, clause)
                    }))
                    .collect();
                Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>
            })
            .collect();
        let matching: Box<dyn Query> = match alternatives.len() {
            0 => return None,
            1 => alternatives.pop()?,
            _ => Box::new(BooleanQuery::new(
                alternatives
                    .into_iter()
                    .map(|q| (Occur::Should, q))
                    .collect(),
            )),
        };
        Some(match item_type {
            None => matching,
            Some(t) => {
                let of_type = TermQuery::new(
                    Term::from_field_text(self.fields.item_type, t),
                    IndexRecordOption::Basic,
                );
                // A filter: scores nothing, so ranks stay BM25's.
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, matching),
                    (
                        Occur::Must,
                        Box::new(ConstScoreQuery::new(Box::new(of_type), 0.0)),
                    ),
                ]))
            }
        })
    }

    /// A word or phrase, in any field, each boosted by its weight.
    fn clause(&self, clause: &Clause) -> Box<dyn Query> {
        let per_field = self
            .fields
            .searched()
            .into_iter()
            .map(|(field, boost)| {
                let q: Box<dyn Query> = match clause.as_slice() {
                    [(_, token)] => Box::new(TermQuery::new(
                        Term::from_field_text(field, token),
                        IndexRecordOption::WithFreqs,
                    )),
                    tokens => Box::new(PhraseQuery::new_with_offset(
                        tokens
                            .iter()
                            .map(|(at, token)| (*at, Term::from_field_text(field, token)))
                            .collect(),
                    )),
                };
                (
                    Occur::Should,
                    Box::new(BoostQuery::new(q, boost)) as Box<dyn Query>,
                )
            })
            .collect();
        Box::new(BooleanQuery::new(per_field))
    }

    /// A snippet generator for the query's positive tokens (rarer ones
    /// count more, as tantivy's own generator scores them).
    fn snippets(
        &self,
        searcher: &tantivy::Searcher,
        groups: &[Group],
    ) -> Result<SnippetGenerator, String> {
        let mut terms: BTreeMap<String, f32> = BTreeMap::new();
        let tokens = groups
            .iter()
            .flat_map(|g| g.must.iter())
            .flat_map(|c| c.iter().map(|(_, t)| t));
        for token in tokens {
            if terms.contains_key(token) {
                continue;
            }
            let mut freq = 0u64;
            for field in self.fields.weights {
                freq += searcher
                    .doc_freq(&Term::from_field_text(field, token))
                    .map_err(|e| format!("doc freq: {e}"))?;
            }
            terms.insert(token.clone(), 1.0 / (1.0 + freq as f32));
        }
        Ok(SnippetGenerator::new(
            terms,
            self.analyzer.clone(),
            self.fields.body,
            SNIPPET_CHARS,
        ))
    }
}

enum WriterError {
    /// Another process holds the writer lock.
    Busy(String),
    Other(String),
}

impl From<WriterError> for String {
    fn from(e: WriterError) -> Self {
        match e {
            WriterError::Busy(e) | WriterError::Other(e) => e,
        }
    }
}

fn open_writer(index: &Index, budget: usize) -> Result<IndexWriter, WriterError> {
    index.writer(budget).map_err(|e| match e {
        TantivyError::LockFailure(LockError::LockBusy, _) => {
            WriterError::Busy(format!("index writer: another process holds it: {e}"))
        }
        other => WriterError::Other(format!("index writer: {other}")),
    })
}

/// The parts of `doc` other than its title (part 0, at A, when the title
/// is not empty: `documents()` leaves out empty parts).
fn body_parts(doc: &Document) -> &[(Weight, String)] {
    match doc.parts.split_first() {
        Some(((Weight::A, first), rest)) if !doc.title.is_empty() && *first == doc.title => rest,
        _ => &doc.parts,
    }
}

/// `text` without the match markers snippets use (as the PostgreSQL
/// engine strips them before `ts_headline`).
fn unmarked(text: &str) -> String {
    text.replace(['\u{1}', '\u{2}'], "")
}

/// The HTML snippet of `body`: the best fragment with its matches marked,
/// else the body's first words.
fn snippet(generator: &SnippetGenerator, body: &str) -> String {
    let found = generator.snippet(body);
    if found.is_empty() {
        let lead: Vec<&str> = body.split_whitespace().take(LEAD_WORDS).collect();
        return snippet_html(&lead.join(" "));
    }
    snippet_html(&marked(
        found.fragment(),
        &collapse_overlapped_ranges(found.highlighted()),
    ))
}

/// `fragment` with U+0001 before and U+0002 after each of `ranges`
/// (sorted, disjoint byte ranges; one that is not is skipped).
fn marked(fragment: &str, ranges: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(fragment.len() + 2 * ranges.len());
    let mut at = 0;
    for r in ranges {
        let (Some(before), Some(hit)) = (fragment.get(at..r.start), fragment.get(r.clone())) else {
            continue;
        };
        out.push_str(before);
        out.push('\u{1}');
        out.push_str(hit);
        out.push('\u{2}');
        at = r.end;
    }
    out.push_str(fragment.get(at..).unwrap_or(""));
    out
}

// ---------------------------------------------------------------------
// The query syntax: PostgreSQL's `websearch_to_tsquery`.
// ---------------------------------------------------------------------

/// A word or phrase as analysed: its tokens with their offsets from the
/// first (a stop word inside a phrase leaves a gap, as in PostgreSQL's
/// `<2>`). Never empty.
type Clause = Vec<(usize, String)>;

/// The clauses that must all match, and those that must not.
#[derive(Debug, Default, PartialEq, Eq)]
struct Group {
    must: Vec<Clause>,
    must_not: Vec<Clause>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.must.is_empty() && self.must_not.is_empty()
    }
}

/// What the user typed, split.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lexeme {
    Word { negated: bool, text: String },
    Phrase { negated: bool, text: String },
    Or,
}

/// Splits `q` as `websearch_to_tsquery` does: whitespace and parentheses
/// separate; `"..."` is a phrase (to the closing quote, or the end);
/// `-` at the start of a word or before a quote excludes it; the word `or`
/// (any case) outside quotes is the operator. Every other character
/// belongs to a word and is left to the analyzer.
fn lex(q: &str) -> Vec<Lexeme> {
    fn separates(c: char) -> bool {
        c.is_whitespace() || c == '(' || c == ')'
    }
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if separates(c) {
            i += 1;
            continue;
        }
        let negated = c == '-';
        if negated {
            i += 1;
        }
        if chars.get(i) == Some(&'"') {
            let start = i + 1;
            let end = chars[start..]
                .iter()
                .position(|&c| c == '"')
                .map_or(chars.len(), |n| start + n);
            out.push(Lexeme::Phrase {
                negated,
                text: chars[start..end].iter().collect(),
            });
            i = end + 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !separates(chars[i]) && chars[i] != '"' {
            i += 1;
        }
        let text: String = chars[start..i].iter().collect();
        if text.is_empty() {
            continue;
        }
        if !negated && text.eq_ignore_ascii_case("or") {
            out.push(Lexeme::Or);
        } else {
            out.push(Lexeme::Word { negated, text });
        }
    }
    out
}

/// Reads `q` into alternatives (OR) of groups (AND, with exclusions), as
/// `websearch_to_tsquery` binds them: `a b or c` is `(a & b) | c`. Each
/// word and phrase goes through `analyze`; one that yields no token
/// (punctuation, stop words) is dropped, and so is an `or` with nothing on
/// one side. A word that yields several tokens (`e-mail`) is a phrase, as
/// in PostgreSQL. At most [`MAX_CLAUSES`] clauses are kept.
fn parse(q: &str, mut analyze: impl FnMut(&str) -> Vec<(usize, String)>) -> Vec<Group> {
    let mut groups = Vec::new();
    let mut current = Group::default();
    let mut or_pending = false;
    let mut clauses = 0;
    for lexeme in lex(q) {
        let (negated, text) = match lexeme {
            Lexeme::Or => {
                or_pending = true;
                continue;
            }
            Lexeme::Word { negated, text } | Lexeme::Phrase { negated, text } => (negated, text),
        };
        let tokens = analyze(&text);
        let Some(first) = tokens.first().map(|(at, _)| *at) else {
            continue;
        };
        let clause: Clause = tokens
            .into_iter()
            .map(|(at, t)| (at.saturating_sub(first), t))
            .collect();
        if or_pending && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
        }
        or_pending = false;
        let list = if negated {
            &mut current.must_not
        } else {
            &mut current.must
        };
        if !list.contains(&clause) {
            list.push(clause);
            clauses += 1;
        }
        if clauses >= MAX_CLAUSES {
            break;
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// An excluded clause (`-word`, `-"a phrase"`). Tantivy probes the
/// documents a query excludes with `seek_danger`, and its phrase scorer
/// asserts that a probe never goes backwards, which an exclusion's probe
/// may (its scorer starts at its first match, past the probed document).
/// This wrapper answers those probes with plain forward seeks instead.
#[derive(Debug)]
struct Exclusion(Box<dyn Query>);

impl Clone for Exclusion {
    fn clone(&self) -> Self {
        Exclusion(self.0.box_clone())
    }
}

impl Query for Exclusion {
    fn weight(
        &self,
        scoring: EnableScoring<'_>,
    ) -> tantivy::Result<Box<dyn tantivy::query::Weight>> {
        Ok(Box::new(ExclusionWeight(self.0.weight(scoring)?)))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.0.query_terms(visitor);
    }
}

struct ExclusionWeight(Box<dyn tantivy::query::Weight>);

impl tantivy::query::Weight for ExclusionWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(ForwardSeeks(self.0.scorer(reader, boost)?)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.0.explain(reader, doc)
    }
}

/// A scorer whose `seek_danger` is the trait's safe default: seek only
/// when the probed document is ahead.
struct ForwardSeeks(Box<dyn Scorer>);

impl DocSet for ForwardSeeks {
    fn advance(&mut self) -> DocId {
        self.0.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.0.seek(target)
    }

    fn doc(&self) -> DocId {
        self.0.doc()
    }

    fn size_hint(&self) -> u32 {
        self.0.size_hint()
    }
}

impl Scorer for ForwardSeeks {
    fn score(&mut self) -> Score {
        self.0.score()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(q: &str) -> Vec<Group> {
        let mut a = analyzer();
        parse(q, |t| analyze(&mut a, t))
    }

    fn words(ws: &[&str]) -> Vec<Clause> {
        ws.iter().map(|w| vec![(0, (*w).to_owned())]).collect()
    }

    #[test]
    fn words_are_all_required_and_stemmed() {
        assert_eq!(
            tokens("Running shoes"),
            vec![Group {
                must: words(&["run", "shoe"]),
                must_not: vec![],
            }]
        );
    }

    #[test]
    fn or_separates_alternatives_and_binds_loosest() {
        assert_eq!(
            tokens("red shoes OR boots"),
            vec![
                Group {
                    must: words(&["red", "shoe"]),
                    must_not: vec![],
                },
                Group {
                    must: words(&["boot"]),
                    must_not: vec![],
                },
            ]
        );
        // A dangling `or` is dropped, at either end or doubled.
        assert_eq!(tokens("or boots or"), tokens("boots"));
        assert_eq!(tokens("a1 or or b1").len(), 2);
    }

    #[test]
    fn quotes_make_a_phrase_with_stop_word_gaps() {
        assert_eq!(
            tokens("\"shoes of red\" laces"),
            vec![Group {
                must: vec![
                    vec![(0, "shoe".to_owned()), (2, "red".to_owned())],
                    vec![(0, "lace".to_owned())],
                ],
                must_not: vec![],
            }]
        );
        // Inside quotes `or` is only a (stop) word.
        assert_eq!(tokens("\"cats or dogs\"")[0].must.len(), 1);
        // A word of several tokens is a phrase.
        assert_eq!(tokens("e-mail")[0].must[0].len(), 2);
    }

    #[test]
    fn a_leading_dash_excludes_a_word_or_a_phrase() {
        assert_eq!(
            tokens("shoes -red -\"high heels\""),
            vec![Group {
                must: words(&["shoe"]),
                must_not: vec![
                    vec![(0, "red".to_owned())],
                    vec![(0, "high".to_owned()), (1, "heel".to_owned())],
                ],
            }]
        );
        // A dash inside a word or alone is not an operator.
        assert!(tokens("shoes - red")[0].must_not.is_empty());
    }

    #[test]
    fn hostile_input_parses_without_panicking() {
        let long = "x".repeat(10_000);
        let many = "word ".repeat(5_000);
        let distinct: String = (0..2_000).map(|n| format!("w{n} -x{n} or ")).collect();
        let hostile = [
            "\"unbalanced",
            "\"",
            "-",
            "-\"",
            "((a) b",
            ")))(((",
            "foo:* & bar | !baz",
            "\\\\ \\\" \\",
            "&|!:*<->",
            long.as_str(),
            many.as_str(),
            distinct.as_str(),
            "🦀🔥 emoji",
            "שלום עולם مرحبا",
            "the and of or",
            "or",
            "-or -the",
            "\u{202e}rtl override\u{202c}",
        ];
        for q in hostile {
            let groups = tokens(q);
            let clauses: usize = groups.iter().map(|g| g.must.len() + g.must_not.len()).sum();
            assert!(clauses <= MAX_CLAUSES, "{q}");
        }
        assert!(tokens("the and of or").is_empty());
        assert!(tokens("&|!:*").is_empty());
        assert_eq!(tokens("foo:*")[0].must, words(&["foo"]));
    }

    #[test]
    fn the_stop_words_are_postgresqls_english_list() {
        let words: Vec<&str> = STOP_WORDS.split_whitespace().collect();
        assert_eq!(words.len(), 127);
        assert_eq!(words.iter().collect::<BTreeSet<_>>().len(), 127);
        assert!(tokens("the").is_empty() && tokens("don").is_empty());
    }

    #[test]
    fn marks_wrap_each_range_and_skip_bad_ones() {
        let one = |r: Range<usize>| vec![r];
        assert_eq!(marked("red shoes", &one(4..9)), "red \u{1}shoes\u{2}");
        assert_eq!(marked("ab", &[0..1, 0..1, 5..9]), "\u{1}a\u{2}b");
        // Not a char boundary: skipped, never a panic.
        assert_eq!(marked("é", &one(0..1)), "é");
    }

    // --- The engine on an in-memory index (no database needed). ---

    fn engine() -> Engine {
        Engine::new(Index::create_in_ram(schema()), WRITER_BUDGET_MIN).unwrap()
    }

    fn doc(n: u128, item_type: &str, title: &str, parts: &[(Weight, &str)]) -> Document {
        let mut all = vec![(Weight::A, title.to_owned())];
        all.extend(parts.iter().map(|(w, t)| (*w, (*t).to_owned())));
        Document {
            id: Uuid::from_u128(n),
            item_type: item_type.to_owned(),
            title: title.to_owned(),
            language: "english".to_owned(),
            searchable: true,
            parts: all,
        }
    }

    fn req(q: &str) -> SearchRequest {
        SearchRequest {
            query: q.to_owned(),
            item_type: None,
            page: 1,
            per_page: 10,
        }
    }

    fn sorted(mut ids: Vec<u128>) -> Vec<u128> {
        ids.sort_unstable();
        ids
    }

    fn ids(e: &Engine, r: SearchRequest) -> Vec<u128> {
        e.search(&r)
            .unwrap()
            .results
            .iter()
            .map(|h| h.id.as_u128())
            .collect()
    }

    fn sample() -> Engine {
        let e = engine();
        e.apply(vec![
            Op::Upsert(doc(
                1,
                "article",
                "Red shoes",
                &[(Weight::C, "Running in the rain")],
            )),
            Op::Upsert(doc(
                2,
                "article",
                "Blue boots",
                &[(Weight::B, "Boots made of red leather")],
            )),
            Op::Upsert(doc(
                3,
                "page",
                "Shoes of red",
                &[(Weight::D, "<b>fine</b> & shoes")],
            )),
        ])
        .unwrap();
        e
    }

    #[test]
    fn an_indexed_item_is_found_at_once_and_gone_after_its_delete() {
        let e = sample();
        assert_eq!(ids(&e, req("rain")), vec![1]);
        e.apply(vec![Op::Delete(Uuid::from_u128(1))]).unwrap();
        assert!(ids(&e, req("rain")).is_empty());
        // An upsert replaces the entry rather than adding a second one.
        e.apply(vec![Op::Upsert(doc(2, "article", "Blue boots", &[]))])
            .unwrap();
        e.apply(vec![Op::Upsert(doc(2, "article", "Blue boots", &[]))])
            .unwrap();
        assert_eq!(e.search(&req("boots")).unwrap().total, 1);
    }

    #[test]
    fn and_or_phrase_negation_and_type_filter_select_as_postgres_would() {
        let e = sample();
        assert_eq!(sorted(ids(&e, req("red shoes"))), vec![1, 3]);
        assert_eq!(ids(&e, req("rain or leather")).len(), 2);
        assert_eq!(ids(&e, req("\"red shoes\"")), vec![1]);
        assert_eq!(ids(&e, req("\"shoes of red\"")), vec![3]);
        assert_eq!(sorted(ids(&e, req("red -boots"))), vec![1, 3]);
        assert_eq!(ids(&e, req("red -\"red shoes\"")).len(), 2);
        let mut r = req("red");
        r.item_type = Some("page".into());
        assert_eq!(ids(&e, r), vec![3]);
        assert!(ids(&e, req("-red")).is_empty());
    }

    #[test]
    fn a_title_match_outranks_a_lower_weight_match_and_ties_go_by_id() {
        let e = engine();
        e.apply(vec![
            Op::Upsert(doc(9, "t", "Other", &[(Weight::D, "lantern")])),
            Op::Upsert(doc(8, "t", "Lantern", &[])),
            Op::Upsert(doc(5, "t", "Same", &[(Weight::B, "kettle")])),
            Op::Upsert(doc(4, "t", "Same", &[(Weight::B, "kettle")])),
        ])
        .unwrap();
        assert_eq!(ids(&e, req("lantern")), vec![8, 9]);
        assert_eq!(ids(&e, req("kettle")), vec![4, 5]);
        let mut second = req("kettle");
        second.per_page = 1;
        second.page = 2;
        let page = e.search(&second).unwrap();
        assert_eq!((page.total, page.results.len()), (2, 1));
        assert_eq!(page.results[0].id.as_u128(), 5);
    }

    #[test]
    fn snippets_mark_body_matches_and_escape_html() {
        let e = sample();
        let hits = e.search(&req("fine")).unwrap().results;
        assert_eq!(
            hits[0].snippet,
            "&lt;b&gt;<mark>fine</mark>&lt;/b&gt; &amp; shoes"
        );
        assert_eq!(hits[0].title, "Shoes of red");
        assert_eq!(hits[0].item_type, "page");
        // A title-only match shows the start of the body, unmarked.
        let hits = e.search(&req("blue")).unwrap().results;
        assert_eq!(hits[0].snippet, "Boots made of red leather");
    }

    #[test]
    fn hostile_queries_return_results_or_nothing_never_an_error() {
        let e = sample();
        let long = "red ".repeat(2_500);
        for q in [
            "\"red",
            "red)",
            "red:*",
            "&|!",
            "\\",
            long.as_str(),
            "🦀",
            "שלום",
            "the of",
        ] {
            e.search(&req(q)).unwrap();
        }
        assert_eq!(e.search(&req("the of")).unwrap().total, 0);
        // An unclosed quote runs to the end of the query.
        assert_eq!(ids(&e, req("\"red")), ids(&e, req("red")));
    }

    #[test]
    fn a_second_opener_of_a_directory_reads_but_cannot_write() {
        let dir = std::env::temp_dir().join(format!("trovato-tantivy-{}", Uuid::new_v4()));
        let settings = SearchSettings::default();
        let first = Engine::open(&dir, &settings).unwrap();
        let second = Engine::open(&dir, &settings).unwrap();
        first
            .apply(vec![Op::Upsert(doc(1, "t", "Shared lantern", &[]))])
            .unwrap();
        assert!(second.apply(vec![Op::Delete(Uuid::from_u128(1))]).is_err());
        second.reader.reload().unwrap();
        assert_eq!(ids(&second, req("lantern")), vec![1]);
        // Once the holder is gone, the writer is taken on the next call.
        drop(first);
        second.apply(vec![Op::Delete(Uuid::from_u128(1))]).unwrap();
        assert!(ids(&second, req("lantern")).is_empty());
        drop(second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_writers_each_return_once_their_change_is_searchable() {
        let e = Arc::new(engine());
        let threads: Vec<_> = (0..8u128)
            .map(|n| {
                let e = e.clone();
                std::thread::spawn(move || e.apply(vec![Op::Upsert(doc(n, "t", "Lantern", &[]))]))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(e.search(&req("lantern")).unwrap().total, 8);
    }
}
