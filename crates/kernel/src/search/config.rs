//! What is indexed: `search_field_config` (type, field, weight, and who set
//! it) and each type's language (`search_type`). Administrators set a
//! type's fields through [`update`]; plugins declare theirs in
//! `tap_item_update_index` ([`sync_plugins`]). A change that alters what a
//! type's vectors would hold starts a `search.reindex` batch of that type
//! in the same transaction, so the index follows the configuration by
//! itself.
//!
//! A configuration change holds the type's search lock exclusively (the
//! trigger takes it shared for every indexed write, see migration
//! `0008_search.sql`): writes indexed under the old configuration commit
//! before the reindex lists its targets, later ones see the new one.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{SEARCH_TAG, SearchError, Weight};
use crate::batch::ops::{OperationInfo, TargetFailure};
use crate::batch::{BatchError, BatchStatus, NewBatch};
use crate::cache::CacheTag;
use crate::db::timed;
use crate::item::field::{FieldKind, RefTarget};
use crate::item::{Effects, FieldDef};
use crate::plugin::tap::Tap;
use crate::state::AppState;
use crate::user::permission;

/// The advisory lock class of the per-type search lock (the trigger uses
/// the same number).
const LOCK_CLASS: i32 = 23_972;

/// Who set a field's weight: an administrator, or a plugin.
pub const ADMIN: &str = "admin";

/// The batch operation that recomputes a type's index entries.
pub const REINDEX: &str = "search.reindex";

/// One indexed field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldConfig {
    pub field: String,
    pub weight: Weight,
    /// `admin`, or the plugin that declared it.
    pub source: String,
}

/// A field of the type that could be indexed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldChoice {
    pub name: String,
    pub label: String,
    /// Indexed now (see `fields`).
    pub indexed: bool,
}

/// What is indexed of one item type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TypeConfig {
    #[serde(rename = "type")]
    pub item_type: String,
    pub label: String,
    /// The text search configuration its items are indexed in.
    pub language: String,
    /// The title is always indexed at weight A; these come with it.
    pub fields: Vec<FieldConfig>,
    /// Every field of the type that can be indexed (text, integers, dates,
    /// references to items and category terms).
    pub indexable: Vec<FieldChoice>,
}

/// One field an administrator indexes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldWeight {
    pub field: String,
    pub weight: Weight,
}

/// `PUT /api/search/config/{type}`: the administrator's fields of the type
/// (replacing the previous ones; plugins' fields stay) and its language.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    /// A text search configuration of the database (`english`, `german`,
    /// `simple`, ...); absent: unchanged.
    #[serde(default)]
    pub language: Option<String>,
    pub fields: Vec<FieldWeight>,
}

/// What an update did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConfigOutcome {
    pub config: TypeConfig,
    /// The reindex it started, if the configuration changed.
    pub reindex: Option<BatchStatus>,
}

/// Whether a field of this kind has text to index.
pub fn indexable(def: &FieldDef) -> bool {
    !matches!(
        def.kind,
        FieldKind::File
            | FieldKind::Boolean
            | FieldKind::Reference {
                target: RefTarget::User
            }
    )
}

/// The text search configurations the database has.
pub async fn languages(db: &PgPool) -> Result<Vec<String>, SearchError> {
    Ok(
        sqlx::query_scalar("SELECT cfgname::text FROM pg_ts_config ORDER BY cfgname")
            .fetch_all(db)
            .await?,
    )
}

/// Every type's configuration, by type name.
pub async fn load_all(db: &PgPool) -> Result<Vec<TypeConfig>, SearchError> {
    let types = crate::item::store::list_types(db)
        .await
        .map_err(item_error)?;
    let mut rows = field_rows(db, None).await?;
    let langs: BTreeMap<String, String> =
        sqlx::query_as("SELECT type, language::text FROM search_type")
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
    Ok(types
        .into_iter()
        .map(|t| {
            let fields = rows.remove(&t.type_name).unwrap_or_default();
            let language = langs
                .get(&t.type_name)
                .cloned()
                .unwrap_or_else(|| "english".into());
            shape(t, language, fields)
        })
        .collect())
}

/// One type's configuration.
pub async fn load(db: &PgPool, item_type: &str) -> Result<TypeConfig, SearchError> {
    let t = crate::item::store::find_type(db, item_type)
        .await
        .map_err(item_error)?
        .ok_or_else(|| SearchError::UnknownType(item_type.to_owned()))?;
    let fields = field_rows(db, Some(item_type))
        .await?
        .remove(item_type)
        .unwrap_or_default();
    let language: Option<String> =
        sqlx::query_scalar("SELECT language::text FROM search_type WHERE type = $1")
            .bind(item_type)
            .fetch_optional(db)
            .await?;
    Ok(shape(
        t,
        language.unwrap_or_else(|| "english".into()),
        fields,
    ))
}

fn shape(t: crate::item::ItemType, language: String, fields: Vec<FieldConfig>) -> TypeConfig {
    let indexable = t
        .fields
        .iter()
        .filter(|d| indexable(d))
        .map(|d| FieldChoice {
            name: d.name.clone(),
            label: d.label.clone(),
            indexed: fields.iter().any(|f| f.field == d.name),
        })
        .collect();
    TypeConfig {
        item_type: t.type_name,
        label: t.label,
        language,
        fields,
        indexable,
    }
}

async fn field_rows(
    db: impl sqlx::PgExecutor<'_>,
    item_type: Option<&str>,
) -> Result<BTreeMap<String, Vec<FieldConfig>>, SearchError> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT bundle, field_name, weight, source FROM search_field_config
         WHERE $1::text IS NULL OR bundle = $1
         ORDER BY bundle, field_name",
    )
    .bind(item_type)
    .fetch_all(db)
    .await?;
    let mut out: BTreeMap<String, Vec<FieldConfig>> = BTreeMap::new();
    for (bundle, field, weight, source) in rows {
        if let Some(weight) = Weight::parse(&weight) {
            out.entry(bundle).or_default().push(FieldConfig {
                field,
                weight,
                source,
            });
        }
    }
    Ok(out)
}

fn item_error(e: crate::item::ItemError) -> SearchError {
    match e {
        crate::item::ItemError::Db(e) => SearchError::Db(e),
        crate::item::ItemError::TypeNotFound(t) => SearchError::UnknownType(t),
        other => SearchError::Db(crate::db::DbError::Unavailable(other.to_string())),
    }
}

/// Takes `item_type`'s search lock for the rest of `tx`.
async fn lock_type(tx: &mut PgConnection, item_type: &str) -> Result<(), SearchError> {
    timed(
        "search.lock",
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(item_type)
            .execute(&mut *tx),
    )
    .await?;
    Ok(())
}

/// Replaces the administrator's fields of `item_type` (and its language,
/// when given). When that changes what is indexed, a reindex batch of the
/// type starts in the same transaction; nothing is written when any part
/// is refused.
pub async fn update(
    state: &AppState,
    owner: Option<Uuid>,
    item_type: &str,
    change: ConfigUpdate,
) -> Result<ConfigOutcome, SearchError> {
    let t = crate::item::store::find_type(&state.db, item_type)
        .await
        .map_err(item_error)?
        .ok_or_else(|| SearchError::UnknownType(item_type.to_owned()))?;
    let mut wanted: BTreeMap<String, Weight> = BTreeMap::new();
    for f in &change.fields {
        if !t.fields.iter().any(|d| d.name == f.field && indexable(d)) {
            return Err(SearchError::UnknownField {
                item_type: item_type.to_owned(),
                field: f.field.clone(),
            });
        }
        if wanted.insert(f.field.clone(), f.weight).is_some() {
            return Err(SearchError::DuplicateField(f.field.clone()));
        }
    }
    if let Some(lang) = &change.language
        && !languages(&state.db).await?.contains(lang)
    {
        return Err(SearchError::UnknownLanguage(lang.clone()));
    }
    let mut tx = state.db.begin().await?;
    lock_type(&mut tx, item_type).await?;
    let current = field_rows(&mut *tx, Some(item_type))
        .await?
        .remove(item_type)
        .unwrap_or_default();
    if let Some(f) = current
        .iter()
        .find(|f| f.source != ADMIN && wanted.contains_key(&f.field))
    {
        return Err(SearchError::DeclaredByPlugin {
            field: f.field.clone(),
            plugin: f.source.clone(),
        });
    }
    let had: BTreeMap<String, Weight> = current
        .iter()
        .filter(|f| f.source == ADMIN)
        .map(|f| (f.field.clone(), f.weight))
        .collect();
    let old_language: Option<String> =
        sqlx::query_scalar("SELECT language::text FROM search_type WHERE type = $1")
            .bind(item_type)
            .fetch_optional(&mut *tx)
            .await?;
    let language_changes = change
        .language
        .as_ref()
        .is_some_and(|l| *l != old_language.as_deref().unwrap_or("english"));
    if had == wanted && !language_changes {
        drop(tx);
        return Ok(ConfigOutcome {
            config: load(&state.db, item_type).await?,
            reindex: None,
        });
    }
    timed(
        "search.config",
        sqlx::query(
            "DELETE FROM search_field_config
             WHERE bundle = $1 AND source = 'admin' AND NOT (field_name = ANY($2))",
        )
        .bind(item_type)
        .bind(wanted.keys().cloned().collect::<Vec<_>>())
        .execute(&mut *tx),
    )
    .await?;
    for (field, weight) in &wanted {
        sqlx::query(
            "INSERT INTO search_field_config (id, bundle, field_name, weight, source)
             VALUES ($1, $2, $3, $4, 'admin')
             ON CONFLICT (bundle, field_name) DO UPDATE SET weight = EXCLUDED.weight",
        )
        .bind(Uuid::now_v7())
        .bind(item_type)
        .bind(field)
        .bind(weight.as_str())
        .execute(&mut *tx)
        .await?;
    }
    if let Some(lang) = change.language.as_ref().filter(|_| language_changes) {
        sqlx::query(
            "INSERT INTO search_type (type, language) VALUES ($1, $2::regconfig)
             ON CONFLICT (type) DO UPDATE SET language = EXCLUDED.language",
        )
        .bind(item_type)
        .bind(lang)
        .execute(&mut *tx)
        .await?;
    }
    let batch = start_reindex_in(state, tx, owner, Some(item_type)).await?;
    super::query::forget_results(state).await;
    tracing::info!(item_type, batch = %batch.id, "search configuration changed; reindexing");
    Ok(ConfigOutcome {
        config: load(&state.db, item_type).await?,
        reindex: Some(batch),
    })
}

async fn start_reindex_in(
    state: &AppState,
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    owner: Option<Uuid>,
    item_type: Option<&str>,
) -> Result<BatchStatus, SearchError> {
    let params = match item_type {
        Some(t) => json!({ "type": t }),
        None => json!({}),
    };
    Ok(crate::batch::start_in(
        state,
        tx,
        owner,
        NewBatch {
            operation: REINDEX.into(),
            params,
        },
    )
    .await?)
}

/// Starts a reindex of `item_type` (or of every type).
pub async fn reindex(
    state: &AppState,
    owner: Option<Uuid>,
    item_type: Option<&str>,
) -> Result<BatchStatus, SearchError> {
    if let Some(t) = item_type {
        load(&state.db, t).await?;
    }
    start_reindex_in(state, state.db.begin().await?, owner, item_type).await
}

/// The last reindex batch of `item_type`.
pub async fn last_reindex(
    db: &PgPool,
    item_type: &str,
) -> Result<Option<BatchStatus>, SearchError> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM batch WHERE operation = $1 AND params ->> 'type' = $2
         ORDER BY created DESC LIMIT 1",
    )
    .bind(REINDEX)
    .bind(item_type)
    .fetch_optional(db)
    .await?;
    match id {
        Some(id) => Ok(Some(crate::batch::load(db, id).await?)),
        None => Ok(None),
    }
}

/// A field a plugin's `tap_item_update_index` declares (called with
/// `null`; it answers with a list of these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredField {
    #[serde(rename = "type")]
    pub item_type: String,
    pub field: String,
    pub weight: Weight,
}

/// After `item_type`'s fields changed: the indexed fields it no longer has
/// (or that are no longer indexable) leave the configuration, and the type
/// is reindexed, so no engine keeps the removed text; then the plugins'
/// declarations are applied again. Failures are logged, not the caller's.
pub async fn type_changed(state: &AppState, item_type: &str) {
    if let Err(e) = prune_fields(state, item_type).await {
        tracing::warn!(item_type, error = %e, "search fields of a changed type not pruned");
    }
    apply_plugins(state).await;
}

async fn prune_fields(
    state: &AppState,
    item_type: &str,
) -> Result<Option<BatchStatus>, SearchError> {
    let mut tx = state.db.begin().await?;
    lock_type(&mut tx, item_type).await?;
    let Some(t) = crate::item::store::find_type(&mut *tx, item_type)
        .await
        .map_err(item_error)?
    else {
        return Ok(None);
    };
    let kept: Vec<String> = t
        .fields
        .iter()
        .filter(|f| indexable(f))
        .map(|f| f.name.clone())
        .collect();
    let removed = timed(
        "search.prune_fields",
        sqlx::query(
            "DELETE FROM search_field_config
             WHERE bundle = $1 AND field_name <> ALL($2)",
        )
        .bind(item_type)
        .bind(&kept)
        .execute(&mut *tx),
    )
    .await?
    .rows_affected();
    if removed == 0 {
        return Ok(None);
    }
    let batch = start_reindex_in(state, tx, None, Some(item_type)).await?;
    super::query::forget_results(state).await;
    tracing::info!(item_type, removed, batch = %batch.id, "indexed fields left with the type's fields; reindexing");
    Ok(Some(batch))
}

/// [`sync_plugins`] where its failure is not the caller's: logged. Run when
/// a kernel starts and after an item type is created or changed.
pub async fn apply_plugins(state: &AppState) {
    if let Err(e) = sync_plugins(state).await {
        tracing::warn!(error = %e, "plugins' search fields not applied");
    }
}

/// Makes the plugin rows of `search_field_config` what the active plugins
/// declare: new declarations are added (a plugin takes over a field an
/// administrator had set), changed weights updated, and rows of plugins
/// that no longer declare them removed. Each type that changed is
/// reindexed. A declaration naming a missing type or field is skipped with
/// a warning.
pub async fn sync_plugins(state: &AppState) -> Result<Vec<BatchStatus>, SearchError> {
    let mut declared: BTreeMap<String, BTreeMap<String, (Weight, String)>> = BTreeMap::new();
    for (plugin, fields) in state
        .plugins
        .declarations::<DeclaredField>(Tap::ItemUpdateIndex)
        .await
    {
        for d in fields {
            let ok = match crate::item::store::find_type(&state.db, &d.item_type).await {
                Ok(Some(t)) => t.fields.iter().any(|f| f.name == d.field && indexable(f)),
                Ok(None) => {
                    // A plugin may index a type this site does not have.
                    tracing::debug!(%plugin, item_type = %d.item_type, "tap_item_update_index declared a field of a missing type; skipped");
                    continue;
                }
                Err(e) => return Err(item_error(e)),
            };
            if !ok {
                tracing::warn!(%plugin, item_type = %d.item_type, field = %d.field, "tap_item_update_index declared a field that is not an indexable field of the type; skipped");
                continue;
            }
            declared
                .entry(d.item_type)
                .or_default()
                .insert(d.field, (d.weight, plugin.clone()));
        }
    }
    let with_plugin_rows: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT bundle FROM search_field_config WHERE source <> 'admin'",
    )
    .fetch_all(&state.db)
    .await?;
    let mut types: Vec<String> = declared.keys().cloned().collect();
    types.extend(with_plugin_rows);
    types.sort();
    types.dedup();
    let mut started = Vec::new();
    for item_type in types {
        let want = declared.remove(&item_type).unwrap_or_default();
        let mut tx = state.db.begin().await?;
        lock_type(&mut tx, &item_type).await?;
        let current = field_rows(&mut *tx, Some(&item_type))
            .await?
            .remove(&item_type)
            .unwrap_or_default();
        let mut changed = false;
        for f in current.iter().filter(|f| f.source != ADMIN) {
            if !want.contains_key(&f.field) {
                sqlx::query(
                    "DELETE FROM search_field_config WHERE bundle = $1 AND field_name = $2",
                )
                .bind(&item_type)
                .bind(&f.field)
                .execute(&mut *tx)
                .await?;
                changed = true;
            }
        }
        for (field, (weight, plugin)) in &want {
            let same = current
                .iter()
                .any(|f| f.field == *field && f.weight == *weight && f.source == *plugin);
            if same {
                continue;
            }
            sqlx::query(
                "INSERT INTO search_field_config (id, bundle, field_name, weight, source)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (bundle, field_name)
                 DO UPDATE SET weight = EXCLUDED.weight, source = EXCLUDED.source",
            )
            .bind(Uuid::now_v7())
            .bind(&item_type)
            .bind(field)
            .bind(weight.as_str())
            .bind(plugin)
            .execute(&mut *tx)
            .await?;
            changed = true;
        }
        if changed {
            let batch = start_reindex_in(state, tx, None, Some(&item_type)).await?;
            tracing::info!(%item_type, batch = %batch.id, "plugins changed the search fields; reindexing");
            started.push(batch);
        }
    }
    if !started.is_empty() {
        super::query::forget_results(state).await;
    }
    Ok(started)
}

/// `search.reindex`: recompute the index entries of every item of a type
/// (or of every item), plugins' extra text included.
pub struct Reindex;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReindexParams {
    #[serde(rename = "type")]
    item_type: Option<String>,
}

impl crate::batch::ops::Operation for Reindex {
    fn info(&self) -> OperationInfo {
        OperationInfo {
            name: REINDEX.into(),
            description: "Recompute the search index entries of every item of a type (or of every item) as the search configuration says".into(),
            permission: permission::ADMINISTER_SEARCH.into(),
            chunk_size: 500,
            aborts_on_failure: false,
            params: r#"{} or {"type": "<item type>"}"#.into(),
        }
    }

    fn targets<'a>(
        &'a self,
        state: &'a AppState,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<String>, BatchError>> {
        Box::pin(async move {
            let bad = |m: String| BatchError::BadParams {
                operation: REINDEX.into(),
                message: m,
            };
            let p: ReindexParams =
                serde_json::from_value(params.clone()).map_err(|e| bad(e.to_string()))?;
            if let Some(t) = &p.item_type
                && crate::item::store::find_type(&state.db, t)
                    .await
                    .map_err(|e| bad(e.to_string()))?
                    .is_none()
            {
                return Err(bad(format!("no item type `{t}`")));
            }
            let ids: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM item WHERE $1::text IS NULL OR type = $1 ORDER BY id",
            )
            .bind(p.item_type)
            .fetch_all(&state.db)
            .await?;
            Ok(ids.into_iter().map(|id| id.to_string()).collect())
        })
    }

    fn run_chunk<'a>(
        &'a self,
        state: &'a AppState,
        tx: &'a mut PgConnection,
        effects: &'a mut Effects,
        _params: &'a Value,
        _owner: Option<Uuid>,
        targets: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TargetFailure>, String>> {
        Box::pin(async move {
            let mut ids = Vec::with_capacity(targets.len());
            let mut failures = Vec::new();
            for t in targets {
                match t.parse::<Uuid>() {
                    Ok(id) => ids.push(id),
                    Err(_) => failures.push(TargetFailure {
                        target: t.clone(),
                        error: "not an item id".into(),
                    }),
                }
            }
            super::hook::refresh_extra_all(state, tx, &ids)
                .await
                .map_err(|e| e.to_string())?;
            state
                .search
                .backend()
                .reindex(tx, &ids)
                .await
                .map_err(|e| e.to_string())?;
            if let Ok(tag) = CacheTag::new(SEARCH_TAG) {
                effects.invalidate([tag]);
            }
            Ok(failures)
        })
    }
}
