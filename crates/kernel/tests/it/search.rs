//! Search: one suite run against both engines (PostgreSQL and tantivy) —
//! ranking, snippets, query syntax, hostile text, paging, live only,
//! cache invalidation, configuration changes that reindex by themselves —
//! plus the PostgreSQL vector checks, the refusals, and the settings page
//! in a real Chromium.

use std::time::Duration;

use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use trovato::search::SearchBackendKind;

use crate::harness::browser::Browser;
use crate::harness::content::{PASSWORD, error_body, expect_json};
use crate::harness::{TestApp, eventually};

/// How long a test waits for the tantivy engine to take writes: its feed
/// commits the index (an fsync each), slow in an unoptimised build on a
/// loaded machine.
const INDEXING: Duration = Duration::from_secs(120);

/// A kernel with the given engine, signed in as an administrator, with
/// the `doc` type (a summary and a body, both text, and term tags) and
/// workers for the batch queue and the engine's feed.
struct Site {
    app: TestApp,
    cancel: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Site {
    async fn start(engine: SearchBackendKind) -> Self {
        Self::start_with(engine, |_| {}).await
    }

    async fn start_with(
        engine: SearchBackendKind,
        configure: impl FnOnce(&mut trovato::Config),
    ) -> Self {
        let data_dir = crate::harness::services::scratch_root()
            .join(format!("data-{}", uuid::Uuid::now_v7().simple()));
        let app = TestApp::spawn_with(
            |c| {
                c.search.backend = engine;
                c.server.data_dir = data_dir;
                configure(c);
            },
            axum::Router::new(),
        )
        .await;
        app.sign_in_as_admin().await;
        let r = app
            .create_item_type(
                "doc",
                json!([
                    {"name": "field_summary", "label": "Summary", "kind": "text", "max_length": 500},
                    {"name": "field_body", "label": "Body", "kind": "text", "max_length": 2000},
                    {"name": "field_tags", "label": "Tags", "kind": "reference", "target": "term", "cardinality": 0},
                    {"name": "field_flag", "label": "Flag", "kind": "boolean"},
                ]),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let cancel = CancellationToken::new();
        let mut queues = vec![trovato::batch::queue_info()];
        queues.extend(trovato::search::feed::queues(&app.state.search));
        let state = app.state.clone();
        let c = cancel.clone();
        let workers = vec![tokio::spawn(async move {
            let limits = trovato::queue::worker::RunLimits {
                concurrency: 4,
                until: None,
                until_empty: false,
                grace: Duration::from_secs(30),
            };
            trovato::queue::worker::run(&state, queues, limits, &c).await;
        })];
        Self {
            app,
            cancel,
            workers,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        for w in self.workers {
            let _ = w.await;
        }
    }

    /// Sets the indexed fields of `doc` and waits for the reindex it
    /// starts to finish.
    async fn configure(&self, fields: Value, language: Option<&str>) -> Value {
        let mut body = json!({ "fields": fields });
        if let Some(l) = language {
            body["language"] = json!(l);
        }
        let r = self
            .app
            .json_request(reqwest::Method::PUT, "/api/search/config/doc")
            .json(&body)
            .send()
            .await
            .expect("PUT config");
        let out = expect_json(r, StatusCode::OK).await;
        if let Some(id) = out["reindex"]["id"].as_str() {
            self.wait_batch(id).await;
        }
        out
    }

    async fn wait_batch(&self, id: &str) -> Value {
        let seen = std::sync::Mutex::new(Value::Null);
        let done = eventually(INDEXING, || {
            let path = format!("/batch/{id}/status");
            let app = &self.app;
            let seen = &seen;
            async move {
                let v: Value = app.get(&path).await.json().await.unwrap_or(Value::Null);
                let fin = matches!(v["state"].as_str(), Some("done" | "failed" | "cancelled"));
                *seen.lock().expect("lock") = v;
                fin
            }
        })
        .await;
        let last = seen.into_inner().expect("lock");
        assert!(done.is_some(), "batch {id} never ended: {last}");
        assert_eq!(last["state"], "done", "{last}");
        last
    }

    /// Waits until the engine has taken every write so far: the tantivy
    /// feed's queue is empty (a job is deleted once its item is indexed and
    /// committed). The PostgreSQL engine indexes in the write itself.
    async fn indexed(&self) {
        let db = &self.app.state.db;
        let done = eventually(INDEXING, || async {
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM queue_item WHERE queue = 'search'")
                    .fetch_one(db)
                    .await
                    .unwrap_or(-1);
            left == 0
        })
        .await;
        assert!(done.is_some(), "the search feed never emptied");
    }

    async fn doc(&self, title: &str, summary: &str, body: &str) -> String {
        self.doc_with(json!({"type": "doc", "title": title,
            "fields": {"field_summary": {"value": summary}, "field_body": {"value": body}}}))
            .await
    }

    async fn doc_with(&self, item: Value) -> String {
        let r = self.app.post_item(item, None).await;
        let v = expect_json(r, StatusCode::CREATED).await;
        v["id"].as_str().expect("id").to_owned()
    }

    async fn search(&self, query: &str) -> Value {
        let r = self
            .app
            .client
            .get(self.app.url("/api/search"))
            .query(&[("q", query)])
            .send()
            .await
            .expect("GET /api/search");
        expect_json(r, StatusCode::OK).await
    }

    /// Waits until `query` finds exactly `titles`, in that order (the
    /// tantivy engine indexes through its queue).
    async fn expect_titles(&self, query: &str, titles: &[&str]) -> Value {
        let seen = std::sync::Mutex::new(Value::Null);
        let ok = eventually(INDEXING, || {
            let seen = &seen;
            async move {
                let v = self.search(query).await;
                let got = result_titles(&v);
                *seen.lock().expect("lock") = v;
                got == titles
            }
        })
        .await;
        let last = seen.into_inner().expect("lock");
        assert!(ok.is_some(), "`{query}` never found {titles:?}: {last}");
        last
    }
}

fn result_titles(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The same suite against each engine.
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(trovato::search::SearchBackendKind::Postgres).await;
                }
            )*
        }
        mod tantivy {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(trovato::search::SearchBackendKind::Tantivy).await;
                }
            )*
        }
    };
}

both_engines!(
    title_ranks_first_and_snippets_are_escaped_with_marks,
    only_live_published_items_are_found,
    web_search_syntax_phrases_or_and_exclusion,
    hostile_queries_never_fail,
    pages_are_bounded,
    a_save_invalidates_cached_results,
    a_configuration_change_reindexes_and_changes_results,
    removing_an_indexed_field_from_the_type_removes_its_text_from_the_index,
);

async fn removing_an_indexed_field_from_the_type_removes_its_text_from_the_index(
    engine: SearchBackendKind,
) {
    let site = Site::start(engine).await;
    site.configure(json!([{"field": "field_summary", "weight": "B"}]), None)
        .await;
    site.doc("Savanna notes", "a zebra at dawn", "").await;
    site.expect_titles("zebra", &["Savanna notes"]).await;
    let before = trovato::search::config::last_reindex(&site.app.state.db, "doc")
        .await
        .expect("last reindex")
        .map(|b| b.id);
    let r = site
        .app
        .json_request(reqwest::Method::PUT, "/api/item-types/doc")
        .json(&json!({"label": "Doc", "fields": [
            {"name": "field_body", "label": "Body", "kind": "text", "max_length": 2000},
            {"name": "field_tags", "label": "Tags", "kind": "reference", "target": "term", "cardinality": 0},
            {"name": "field_flag", "label": "Flag", "kind": "boolean"}]}))
        .send()
        .await
        .expect("PUT type");
    expect_json(r, StatusCode::OK).await;
    let config = trovato::search::config::load(&site.app.state.db, "doc")
        .await
        .expect("config");
    assert!(config.fields.is_empty(), "{config:?}");
    let batch = trovato::search::config::last_reindex(&site.app.state.db, "doc")
        .await
        .expect("last reindex")
        .expect("a reindex started");
    assert_ne!(Some(batch.id), before, "a new reindex");
    site.wait_batch(&batch.id.to_string()).await;
    site.expect_titles("zebra", &[]).await;
    site.expect_titles("savanna", &["Savanna notes"]).await;
    site.stop().await;
}

async fn title_ranks_first_and_snippets_are_escaped_with_marks(engine: SearchBackendKind) {
    let site = Site::start(engine).await;
    site.configure(json!([{"field": "field_body", "weight": "C"}]), None)
        .await;
    site.doc(
        "Notes",
        "",
        "a <b>long</b> story about a marathon & its runners",
    )
    .await;
    site.doc("Marathon training", "", "plans").await;
    let v = site
        .expect_titles("marathon", &["Marathon training", "Notes"])
        .await;
    assert_eq!(v["total"], 2);
    assert_eq!(v["engine"], engine_name(engine));
    let snippet = v["results"][1]["snippet"].as_str().expect("snippet");
    assert!(snippet.contains("<mark>marathon</mark>"), "{snippet}");
    assert!(!snippet.contains("<b>"), "HTML is escaped: {snippet}");
    assert!(snippet.contains("&amp;"), "{snippet}");
    let without_marks = snippet.replace("<mark>", "").replace("</mark>", "");
    assert!(
        !without_marks.contains('<'),
        "only <mark> is added: {snippet}"
    );
    // The page shows the same, the snippet's marks intact.
    let html = site
        .app
        .get("/search?q=marathon")
        .await
        .text()
        .await
        .expect("page");
    assert!(html.contains("<mark>marathon</mark>"), "{html}");
    assert!(html.contains("2 results"), "{html}");
    site.stop().await;
}

fn engine_name(engine: SearchBackendKind) -> &'static str {
    match engine {
        SearchBackendKind::Postgres => "postgres",
        SearchBackendKind::Tantivy => "tantivy",
    }
}

async fn only_live_published_items_are_found(engine: SearchBackendKind) {
    let site = Site::start(engine).await;
    site.doc("Okapi live", "", "").await;
    site.doc_with(json!({"type": "doc", "title": "Okapi hidden", "status": "unpublished"}))
        .await;
    let r = site.app.create_stage("draft").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = site
        .app
        .post_item(
            json!({"type": "doc", "title": "Okapi staged"}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    site.indexed().await;
    site.expect_titles("okapi", &["Okapi live"]).await;
    // A stage preview searches live, and says so.
    let html = site
        .app
        .get("/search?q=okapi&stage=draft")
        .await
        .text()
        .await
        .expect("page");
    assert!(html.contains("id=\"live-only\""), "{html}");
    assert!(html.contains("Okapi live") && !html.contains("Okapi staged"));
    // Publishing the stage brings its item into the results.
    let r = site.app.publish_stage("draft").await;
    assert!(r.status().is_success(), "{:?}", r.text().await);
    site.expect_titles("okapi", &["Okapi live", "Okapi staged"])
        .await
        .to_string();
    site.stop().await;
}

async fn web_search_syntax_phrases_or_and_exclusion(engine: SearchBackendKind) {
    let site = Site::start(engine).await;
    site.configure(json!([{"field": "field_body", "weight": "B"}]), None)
        .await;
    site.doc("Alpha", "", "red fox jumps").await;
    site.doc("Beta", "", "fox red jumps").await;
    site.doc("Gamma", "", "blue whale").await;
    site.indexed().await;
    let sorted = |v: &Value| {
        let mut t = result_titles(v);
        t.sort();
        t
    };
    site.expect_titles("\"red fox\"", &["Alpha"]).await;
    assert_eq!(sorted(&site.search("red fox").await), ["Alpha", "Beta"]);
    assert_eq!(
        sorted(&site.search("whale or fox").await),
        ["Alpha", "Beta", "Gamma"]
    );
    assert_eq!(sorted(&site.search("fox -\"red fox\"").await), ["Beta"]);
    assert_eq!(sorted(&site.search("jumps -beta").await), ["Alpha"]);
    assert!(result_titles(&site.search("fox whale").await).is_empty());
    site.stop().await;
}

async fn hostile_queries_never_fail(engine: SearchBackendKind) {
    let site = Site::start(engine).await;
    site.doc("Plain words", "", "").await;
    site.expect_titles("plain", &["Plain words"]).await;
    let long = "a".repeat(10_000);
    let hostile = [
        "\"unbalanced",
        "((plain",
        "plain))",
        "plain:*",
        "& | ! <-> <2>",
        "!plain & (words | ",
        "\\ \\\\ \\'",
        "plain\u{0}words",
        "the and of",
        "🦀🔥 plain",
        "שלום עולם",
        "مرحبا",
        "' OR 1=1 --",
        "-",
        "\"\"",
        "or or or",
        "-plain",
        "*",
        ":",
        "%",
        "plain \u{202e}words",
    ];
    for q in hostile {
        let r = site
            .app
            .client
            .get(site.app.url("/api/search"))
            .query(&[("q", q)])
            .send()
            .await
            .expect("GET");
        let status = r.status();
        let body: Value = r.json().await.expect("JSON");
        assert!(status == StatusCode::OK, "{q:?}: {status} {body}");
        assert!(body["results"].is_array(), "{q:?}: {body}");
        let page = site
            .app
            .client
            .get(site.app.url("/search"))
            .query(&[("q", q)])
            .send()
            .await
            .expect("GET page");
        assert_eq!(page.status(), StatusCode::OK, "{q:?}");
    }
    // NUL is a space: the words around it are still found.
    let v = site.search("plain\u{0}words").await;
    assert_eq!(result_titles(&v), ["Plain words"]);
    let r = site
        .app
        .client
        .get(site.app.url("/api/search"))
        .query(&[("q", long.as_str())])
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::BAD_REQUEST, "query_too_long").await;
    site.stop().await;
}

async fn pages_are_bounded(engine: SearchBackendKind) {
    let site = Site::start(engine).await;
    for i in 0..25 {
        site.doc(&format!("Gnu {i:02}"), "", "").await;
    }
    let seen = std::sync::Mutex::new(Value::Null);
    let ok = eventually(INDEXING, || async {
        let v = site.search("gnu").await;
        let all = v["total"] == 25;
        *seen.lock().expect("lock") = v["total"].clone();
        all
    })
    .await;
    let pending: Vec<(i32, String)> = sqlx::query_as(
        "SELECT attempts, coalesce(last_error, '') FROM queue_item WHERE queue = 'search'",
    )
    .fetch_all(&site.app.state.db)
    .await
    .unwrap_or_default();
    assert!(
        ok.is_some(),
        "25 items indexed; the last total was {}, feed jobs left: {pending:?}",
        seen.into_inner().expect("lock")
    );
    let page = |n: u32| {
        let app = &site.app;
        async move {
            app.client
                .get(app.url("/api/search"))
                .query(&[("q", "gnu"), ("per_page", "10"), ("page", &n.to_string())])
                .send()
                .await
                .expect("GET")
        }
    };
    let mut seen = Vec::new();
    for n in 1..=3 {
        let v = expect_json(page(n).await, StatusCode::OK).await;
        assert_eq!(v["total"], 25);
        seen.extend(result_titles(&v));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25, "three pages hold every result once");
    let past = expect_json(page(4).await, StatusCode::OK).await;
    assert_eq!(past["results"], json!([]));
    assert_eq!(past["total"], 25);
    error_body(page(0).await, StatusCode::BAD_REQUEST, "invalid_page").await;
    error_body(page(1001).await, StatusCode::BAD_REQUEST, "invalid_page").await;
    let r = site
        .app
        .client
        .get(site.app.url("/api/search?q=gnu&per_page=51"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::BAD_REQUEST, "invalid_per_page").await;
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broad_postgres_query_ranks_a_bounded_sample_and_says_so() {
    let site = Site::start_with(SearchBackendKind::Postgres, |c| c.search.max_ranked = 50).await;
    for i in 0..60 {
        site.doc(&format!("Yak note {i:02}"), "", "").await;
    }
    site.doc("Yak alone", "", "").await;
    let broad = site.search("yak").await;
    assert_eq!(broad["total"], 50, "{broad}");
    assert_eq!(broad["total_exact"], false, "{broad}");
    assert_eq!(
        broad["results"].as_array().map(Vec::len),
        Some(10),
        "{broad}"
    );
    let r = site
        .app
        .client
        .get(site.app.url("/api/search"))
        .query(&[("q", "yak"), ("per_page", "50"), ("page", "2")])
        .send()
        .await
        .expect("GET");
    let past = expect_json(r, StatusCode::OK).await;
    assert_eq!(past["results"], json!([]), "pages end with the sample");
    let narrow = site.search("yak -note").await;
    assert_eq!(narrow["total"], 1, "{narrow}");
    assert_eq!(narrow["total_exact"], true, "{narrow}");
    assert_eq!(result_titles(&narrow), vec!["Yak alone".to_owned()]);
    let page = site
        .app
        .get("/search?q=yak")
        .await
        .text()
        .await
        .expect("page");
    assert!(page.contains("More than 50 results"), "{page}");
    site.stop().await;
}

async fn a_save_invalidates_cached_results(engine: SearchBackendKind) {
    let site = Site::start(engine).await;
    let id = site.doc("Zebra crossing", "", "").await;
    site.expect_titles("zebra", &["Zebra crossing"]).await;
    // Cached now; a rename must show at once (PostgreSQL) or once indexed.
    let r = site
        .app
        .update_item(&id, json!({"title": "Zebra stripes"}), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    site.expect_titles("zebra", &["Zebra stripes"]).await;
    site.indexed().await;
    assert!(result_titles(&site.search("crossing").await).is_empty());
    let r = site
        .app
        .json_request(reqwest::Method::DELETE, &format!("/api/items/{id}"))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success());
    site.expect_titles("zebra", &[]).await;
    site.stop().await;
}

async fn a_configuration_change_reindexes_and_changes_results(engine: SearchBackendKind) {
    let site = Site::start(engine).await;
    site.doc("First", "koala", "nothing").await;
    site.doc("Second", "nothing", "koala koala").await;
    // Neither field is indexed yet.
    site.expect_titles("first", &["First"]).await;
    assert!(result_titles(&site.search("koala").await).is_empty());
    let out = site
        .configure(
            json!([{"field": "field_summary", "weight": "A"}, {"field": "field_body", "weight": "D"}]),
            None,
        )
        .await;
    assert_eq!(out["reindex"]["operation"], "search.reindex");
    site.expect_titles("koala", &["First", "Second"]).await;
    // Reweighted, the other one ranks first.
    site.configure(
        json!([{"field": "field_summary", "weight": "D"}, {"field": "field_body", "weight": "A"}]),
        None,
    )
    .await;
    site.expect_titles("koala", &["Second", "First"]).await;
    // Removed, the body no longer matches.
    site.configure(json!([{"field": "field_summary", "weight": "D"}]), None)
        .await;
    site.expect_titles("koala", &["First"]).await;
    // Unchanged: no reindex.
    let out = site
        .configure(json!([{"field": "field_summary", "weight": "D"}]), None)
        .await;
    assert_eq!(out["reindex"], Value::Null);
    site.stop().await;
}

/// The stored vector always equals what the configuration says: after
/// each change every row's vector is recomputed (the reindex is real).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_vectors_equal_the_configuration_after_every_change() {
    let site = Site::start(SearchBackendKind::Postgres).await;
    let c = sqlx::query(
        "INSERT INTO category (id, label) VALUES ('tags', 'Tags');
         ",
    )
    .execute(&site.app.state.db)
    .await;
    assert!(c.is_ok());
    let term = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO category_tag (id, category_id, name) VALUES ($1, 'tags', 'Gardening')",
    )
    .bind(term)
    .execute(&site.app.state.db)
    .await
    .expect("term");
    for i in 0..40 {
        site.doc_with(
            json!({"type": "doc", "title": format!("Doc {i}"), "fields": {
                "field_summary": {"value": format!("summary {i}")},
                "field_body": {"value": "body words"},
                "field_tags": [{"target_id": term.to_string()}],
            }}),
        )
        .await;
    }
    let mismatched = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM item
             WHERE search_vector IS DISTINCT FROM item_search_vector(type, title, fields, search_extra)",
        )
        .fetch_one(&site.app.state.db)
        .await
        .expect("count")
    };
    let with_body = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM item WHERE search_vector @@ to_tsquery('english', 'bodi')",
        )
        .fetch_one(&site.app.state.db)
        .await
        .expect("count")
    };
    assert_eq!(mismatched().await, 0);
    assert_eq!(with_body().await, 0);
    for fields in [
        json!([{"field": "field_body", "weight": "B"}]),
        json!([{"field": "field_body", "weight": "C"}, {"field": "field_tags", "weight": "A"}]),
        json!([]),
    ] {
        // The configuration changes first; until the reindex, rows lag.
        site.configure(fields.clone(), None).await;
        assert_eq!(mismatched().await, 0, "after {fields}");
    }
    assert_eq!(with_body().await, 0);
    site.configure(json!([{"field": "field_tags", "weight": "B"}]), None)
        .await;
    // A term reference is indexed by the term's name.
    assert_eq!(result_titles(&site.search("gardening").await).len(), 10);
    assert_eq!(site.search("gardening").await["total"], 40);
    site.stop().await;
}

/// Each type's language decides stemming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_language_changes_stemming() {
    let site = Site::start(SearchBackendKind::Postgres).await;
    site.doc("Running shoes", "", "").await;
    site.expect_titles("runs", &["Running shoes"]).await;
    site.configure(json!([]), Some("simple")).await;
    assert!(result_titles(&site.search("runs").await).is_empty());
    site.expect_titles("running", &["Running shoes"]).await;
    let cfg = expect_json(site.app.get("/api/search/config").await, StatusCode::OK).await;
    let doc = cfg["types"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["type"] == "doc"))
        .expect("doc");
    assert_eq!(doc["language"], "simple");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_nothing_is_written() {
    let site = Site::start(SearchBackendKind::Postgres).await;
    let app = &site.app;
    let snapshot = || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM search_field_config")
            .fetch_one(&app.state.db)
            .await
            .expect("count");
        let langs: i64 = sqlx::query_scalar("SELECT count(*) FROM search_type")
            .fetch_one(&app.state.db)
            .await
            .expect("count");
        let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batch")
            .fetch_one(&app.state.db)
            .await
            .expect("count");
        (rows, langs, batches)
    };
    let before = snapshot().await;
    error_body(
        app.get("/api/search").await,
        StatusCode::BAD_REQUEST,
        "query_required",
    )
    .await;
    error_body(
        app.get("/api/search?q=%20%20").await,
        StatusCode::BAD_REQUEST,
        "query_required",
    )
    .await;
    error_body(
        app.get("/api/search?q=x&type=nope").await,
        StatusCode::NOT_FOUND,
        "item_type_not_found",
    )
    .await;
    error_body(
        app.get("/api/search?q=x&page=abc").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    let put = |body: Value, path: &'static str| async move {
        app.json_request(reqwest::Method::PUT, path)
            .json(&body)
            .send()
            .await
            .expect("PUT")
    };
    let cases = [
        (
            json!({"fields": [{"field": "field_nope", "weight": "A"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
        ),
        (
            json!({"fields": [{"field": "field_flag", "weight": "A"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
        ),
        (
            json!({"fields": [{"field": "field_body", "weight": "A"}, {"field": "field_body", "weight": "B"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "duplicate_field",
        ),
        (
            json!({"fields": [], "language": "klingon"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_language",
        ),
    ];
    for (body, status, code) in cases {
        error_body(put(body, "/api/search/config/doc").await, status, code).await;
    }
    let r = put(
        json!({"fields": [{"field": "field_body", "weight": "E"}]}),
        "/api/search/config/doc",
    )
    .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    error_body(
        put(json!({"fields": []}), "/api/search/config/nope").await,
        StatusCode::NOT_FOUND,
        "item_type_not_found",
    )
    .await;
    let r = app
        .client
        .put(app.url("/api/search/config/doc"))
        .header("x-csrf-token", app.csrf_token())
        .header("content-type", "text/plain")
        .body("fields")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = app
        .json_request(reqwest::Method::POST, "/api/search/reindex")
        .json(&json!({"type": "nope"}))
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::NOT_FOUND, "item_type_not_found").await;
    // The settings form refuses a weight that is not A-D.
    let r = app
        .client
        .post(app.url("/admin/search/doc"))
        .form(&[
            ("csrf_token", app.csrf_token()),
            ("language", "english".into()),
            ("w.field_body", "Z".into()),
        ])
        .send()
        .await
        .expect("POST form");
    error_body(r, StatusCode::BAD_REQUEST, "invalid_weight").await;
    assert_eq!(snapshot().await, before, "nothing was written");

    // Who may: anonymous visitors and editors without the permission not.
    let anon = crate::harness::client();
    let r = anon
        .get(app.url("/api/search/config"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let editor = app.create_user("editor", PASSWORD, false).await;
    let token = trovato::user::token::create(&app.state.db, editor.id, "t")
        .await
        .expect("token");
    let r = crate::harness::client()
        .get(app.url("/api/search/config"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(snapshot().await, before);
    site.stop().await;
}

/// The settings page in Chromium: change a weight, watch the reindex
/// finish on the page, see the ranking change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_page_reweights_and_the_ranking_follows_in_a_browser() {
    let site = Site::start(SearchBackendKind::Postgres).await;
    site.configure(
        json!([{"field": "field_summary", "weight": "A"}, {"field": "field_body", "weight": "D"}]),
        None,
    )
    .await;
    for i in 0..300 {
        site.doc(&format!("Filler {i}"), "filler", "filler").await;
    }
    site.doc("Summary match", "platypus", "").await;
    site.doc("Body match", "", "platypus").await;
    site.expect_titles("platypus", &["Summary match", "Body match"])
        .await;
    let browser = Browser::start().await;
    let base = site.app.url("");
    browser.log_in(&base, "admin", PASSWORD).await;
    let c = &browser.client;
    browser
        .open_admin_page(&base, "Search", "section#type-doc form")
        .await;
    browser.screenshot("admin-search").await;
    c.find(Locator::Css("select#w-doc-field_summary option[value='D']"))
        .await
        .expect("summary D")
        .click()
        .await
        .expect("select");
    c.find(Locator::Css("select#w-doc-field_body option[value='A']"))
        .await
        .expect("body A")
        .click()
        .await
        .expect("select");
    // The reindex shown now (the first configuration's) is not the one
    // to wait for.
    let before = c
        .find(Locator::Css("section#type-doc .reindex"))
        .await
        .expect("the last reindex")
        .attr("data-id")
        .await
        .expect("attr")
        .unwrap_or_default();
    c.find(Locator::Css("section#type-doc form button"))
        .await
        .expect("save")
        .click()
        .await
        .expect("click");
    let done = c
        .wait()
        .at_most(Duration::from_secs(120))
        .for_element(Locator::XPath(&format!(
            "//section[@id='type-doc']//div[contains(@class,'reindex') and @data-id!='{before}']\
             //span[contains(@class,'state') and text()='done']"
        )))
        .await;
    if done.is_err() {
        let shot = browser.screenshot("admin-search-not-done").await;
        panic!("the page never showed the reindex done: {}", shot.display());
    }
    let percent = c
        .find(Locator::Css("section#type-doc .reindex .percent"))
        .await
        .expect("percent");
    assert_eq!(percent.text().await.expect("text"), "100");
    browser.screenshot("admin-search-reindexed").await;
    c.goto(&format!("{base}/search?q=platypus"))
        .await
        .expect("search page");
    let first = c
        .find(Locator::Css("ol.results li a"))
        .await
        .expect("a result");
    assert_eq!(first.text().await.expect("text"), "Body match");
    browser.screenshot("search-results").await;
    browser.close().await;
    site.stop().await;
}

/// A non-default engine has a `/health` probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tantivy_engine_reports_in_health() {
    let site = Site::start(SearchBackendKind::Tantivy).await;
    let v: Value = site.app.get("/health").await.json().await.expect("JSON");
    assert!(v.to_string().contains("\"search\""), "{v}");
    let pg = Site::start(SearchBackendKind::Postgres).await;
    let v: Value = pg.app.get("/health").await.json().await.expect("JSON");
    assert!(!v.to_string().contains("\"search\""), "{v}");
    site.stop().await;
    pg.stop().await;
}

/// Two `trovato serve` processes on one machine sharing a tantivy index:
/// the first holds the writer and indexes what either process writes (its
/// own indexer task works the feed, no separate worker), the second reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_tantivy_index_one_writes() {
    let data_dir = crate::harness::services::scratch_root()
        .join(format!("data-{}", uuid::Uuid::now_v7().simple()));
    let data_dir = data_dir.to_string_lossy().into_owned();
    let cluster = crate::harness::Cluster::spawn_with_env(
        2,
        &[
            ("TROVATO_SEARCH_BACKEND", "tantivy"),
            ("TROVATO_DATA_DIR", data_dir.as_str()),
        ],
    )
    .await;
    let pool = cluster.with_admin().await;
    let (writer, reader) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert!(
        reader.logs_contain("held by another process"),
        "the second process only reads"
    );
    let client = crate::harness::client();
    let csrf = crate::harness::content::sign_in_at(&client, &reader.url("")).await;
    let r = client
        .post(reader.url("/api/item-types"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"type": "note", "label": "Note", "description": "",
                      "has_title": true, "title_label": "Title", "plugin": "kernel", "fields": []}))
        .send()
        .await
        .expect("type");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .post(reader.url("/api/items"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"type": "note", "title": "Wombat burrows"}))
        .send()
        .await
        .expect("item");
    assert_eq!(r.status(), StatusCode::CREATED);
    let anon = crate::harness::client();
    for node in [writer, reader] {
        let found = eventually(INDEXING, || async {
            let v: Value = anon
                .get(node.url("/api/search?q=wombat"))
                .send()
                .await
                .expect("GET")
                .json()
                .await
                .unwrap_or(Value::Null);
            result_titles(&v) == ["Wombat burrows"]
        })
        .await;
        assert!(found.is_some(), "{} finds the item", node.url(""));
    }
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_item WHERE queue = 'search'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(jobs, 0, "the feed is worked off");
}

/// The example plugin `recipe_search` through `tap_item_update_index`: it
/// declares `field_ingredients` of `recipe` at weight B (applied when the
/// type is created; administrators cannot change it) and adds each
/// ingredient's other name as text at weight C, stored with the item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_declares_fields_and_adds_text() {
    let from =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/recipe_search");
    assert!(
        from.join("recipe_search.wasm").is_file(),
        "plugins/recipe_search/recipe_search.wasm is missing: run scripts/build-plugins before the tests"
    );
    let dir = crate::harness::services::scratch_root()
        .join(format!("plugins-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(dir.join("recipe_search")).expect("mkdir");
    for f in ["recipe_search.info.toml", "recipe_search.wasm"] {
        std::fs::copy(from.join(f), dir.join("recipe_search").join(f)).expect("copy");
    }
    let app = TestApp::spawn_with(move |c| c.plugin.dir = dir, axum::Router::new()).await;
    app.sign_in_as_admin().await;
    let r = app
        .create_item_type(
            "recipe",
            json!([
                {"name": "field_ingredients", "label": "Ingredients", "kind": "text", "max_length": 2000},
                {"name": "field_method", "label": "Method", "kind": "text", "max_length": 2000},
            ]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let cfg = expect_json(app.get("/api/search/config").await, StatusCode::OK).await;
    let recipe = cfg["types"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["type"] == "recipe"))
        .expect("recipe")
        .clone();
    assert_eq!(
        recipe["fields"],
        json!([{"field": "field_ingredients", "weight": "B", "source": "recipe_search"}])
    );
    let r = app
        .post_item(
            json!({"type": "recipe", "title": "Moussaka",
                "fields": {"field_ingredients": {"value": "aubergine, lamb, tomato"},
                           "field_method": {"value": "bake slowly"}}}),
            None,
        )
        .await;
    let id = expect_json(r, StatusCode::CREATED).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let extra: Value = sqlx::query_scalar("SELECT search_extra FROM item WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.state.db)
        .await
        .expect("row");
    assert_eq!(extra, json!([{"weight": "C", "text": "eggplant"}]));
    let search = |q: &'static str| {
        let app = &app;
        async move {
            let r = app
                .client
                .get(app.url("/api/search"))
                .query(&[("q", q)])
                .send()
                .await
                .expect("GET");
            result_titles(&expect_json(r, StatusCode::OK).await)
        }
    };
    assert_eq!(search("eggplant").await, ["Moussaka"], "the plugin's text");
    assert_eq!(search("lamb").await, ["Moussaka"], "the declared field");
    assert!(search("slowly").await.is_empty(), "an undeclared field");
    // The declared field is the plugin's: an administrator's weight for it
    // is refused and nothing changes.
    let r = app
        .json_request(reqwest::Method::PUT, "/api/search/config/recipe")
        .json(&json!({"fields": [{"field": "field_ingredients", "weight": "D"}]}))
        .send()
        .await
        .expect("PUT");
    error_body(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "field_declared_by_plugin",
    )
    .await;
    let source: Vec<(String, String)> =
        sqlx::query_as("SELECT weight, source FROM search_field_config WHERE bundle = 'recipe'")
            .fetch_all(&app.state.db)
            .await
            .expect("rows");
    assert_eq!(source, [("B".to_owned(), "recipe_search".to_owned())]);
    // A changed ingredient list changes the plugin's text.
    let r = app
        .update_item(
            &id,
            json!({"fields": {"field_ingredients": {"value": "courgette, lamb"}}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(search("eggplant").await.is_empty());
    assert_eq!(search("zucchini").await, ["Moussaka"]);
}
