//! Batch operations: the kernel's, and those plugins declare in
//! `tap_batch_info` (their chunks go to the plugin's `tap_batch_chunk`).

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::BatchError;
use crate::item::{Effects, ItemPatch, ItemStatus};
use crate::plugin::tap::Tap;
use crate::stage::StageId;
use crate::state::AppState;
use crate::user::permission;

/// One target that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TargetFailure {
    pub target: String,
    pub error: String,
}

/// What an operation is, as `GET /api/batch/operations` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperationInfo {
    pub name: String,
    pub description: String,
    /// Who may start it.
    pub permission: String,
    pub chunk_size: usize,
    /// A chunk that keeps failing ends the whole batch.
    pub aborts_on_failure: bool,
    /// The parameters it takes.
    pub params: String,
}

/// A registered batch operation.
pub trait Operation: Send + Sync {
    fn info(&self) -> OperationInfo;

    fn name(&self) -> String {
        self.info().name
    }

    fn chunk_size(&self) -> usize {
        self.info().chunk_size
    }

    fn aborts_on_failure(&self) -> bool {
        self.info().aborts_on_failure
    }

    /// The targets `params` name (checked: a bad parameter is an error).
    fn targets<'a>(
        &'a self,
        state: &'a AppState,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<String>, BatchError>>;

    /// Applies the operation to `targets` inside `tx` (the chunk's record
    /// commits with it), adding post-commit effects to `effects`. Returns
    /// the targets that failed; an `Err` fails the whole chunk (retried).
    #[allow(clippy::too_many_arguments)]
    fn run_chunk<'a>(
        &'a self,
        state: &'a AppState,
        tx: &'a mut PgConnection,
        effects: &'a mut Effects,
        params: &'a Value,
        owner: Option<Uuid>,
        targets: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TargetFailure>, String>>;
}

fn bad(operation: &str, message: impl Into<String>) -> BatchError {
    BatchError::BadParams {
        operation: operation.to_owned(),
        message: message.into(),
    }
}

/// `items.publish` / `items.unpublish`: set live items' status;
/// `items.delete`: delete live items (one that other items reference is
/// refused and reported). Each through the one item write path (revision,
/// taps, cache tags).
struct SetStatus {
    /// The status to set; `None` deletes.
    status: Option<ItemStatus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemTargets {
    /// Every live item of this type.
    #[serde(rename = "type")]
    item_type: Option<String>,
    /// These items.
    ids: Option<Vec<Uuid>>,
}

impl SetStatus {
    fn op_name(&self) -> &'static str {
        match self.status {
            Some(ItemStatus::Published) => "items.publish",
            Some(ItemStatus::Unpublished) => "items.unpublish",
            None => "items.delete",
        }
    }
}

impl Operation for SetStatus {
    fn info(&self) -> OperationInfo {
        let (verb, perm) = match self.status {
            Some(ItemStatus::Published) => ("Publish", permission::EDIT_ANY_CONTENT),
            Some(ItemStatus::Unpublished) => ("Unpublish", permission::EDIT_ANY_CONTENT),
            None => ("Delete", permission::DELETE_ANY_CONTENT),
        };
        OperationInfo {
            name: self.op_name().into(),
            description: format!("{verb} live items: every item of a type, or the listed ones"),
            permission: perm.into(),
            chunk_size: 100,
            aborts_on_failure: false,
            params: r#"{"type": "<item type>"} or {"ids": ["<item id>", ...]}"#.into(),
        }
    }

    fn targets<'a>(
        &'a self,
        state: &'a AppState,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<String>, BatchError>> {
        Box::pin(async move {
            let name = self.op_name();
            let p: ItemTargets =
                serde_json::from_value(params.clone()).map_err(|e| bad(name, e.to_string()))?;
            let ids: Vec<Uuid> = match (p.item_type, p.ids) {
                (Some(t), None) => {
                    if crate::item::store::find_type(&state.db, &t)
                        .await
                        .map_err(|e| bad(name, e.to_string()))?
                        .is_none()
                    {
                        return Err(bad(name, format!("no item type `{t}`")));
                    }
                    sqlx::query_scalar(
                        "SELECT id FROM item WHERE type = $1 AND stage_id = 'live' ORDER BY created, id",
                    )
                    .bind(&t)
                    .fetch_all(&state.db)
                    .await?
                }
                (None, Some(ids)) => ids,
                _ => return Err(bad(name, "give either `type` or `ids`")),
            };
            Ok(ids.iter().map(Uuid::to_string).collect())
        })
    }

    fn run_chunk<'a>(
        &'a self,
        state: &'a AppState,
        tx: &'a mut PgConnection,
        effects: &'a mut Effects,
        _params: &'a Value,
        owner: Option<Uuid>,
        targets: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TargetFailure>, String>> {
        Box::pin(async move {
            let mut failures = Vec::new();
            for target in targets {
                let Ok(id) = target.parse::<Uuid>() else {
                    failures.push(TargetFailure {
                        target: target.clone(),
                        error: "not an item id".into(),
                    });
                    continue;
                };
                // Each item in a savepoint: one that fails leaves the others.
                sqlx::query("SAVEPOINT target")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                let write = match self.status {
                    Some(status) => crate::item::write::Write::Update {
                        stage: StageId::live(),
                        id,
                        editor: owner,
                        patch: ItemPatch {
                            status: Some(status),
                            log: Some(format!("batch {}", self.op_name())),
                            ..ItemPatch::default()
                        },
                    },
                    None => crate::item::write::Write::Delete {
                        stage: StageId::live(),
                        id,
                    },
                };
                match crate::item::write::apply(state, tx, write, effects).await {
                    Ok(_) => {
                        sqlx::query("RELEASE SAVEPOINT target")
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Err(crate::item::ItemError::Db(e)) => return Err(e.to_string()),
                    Err(e) => {
                        sqlx::query("ROLLBACK TO SAVEPOINT target")
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| e.to_string())?;
                        failures.push(TargetFailure {
                            target: target.clone(),
                            error: e.to_string(),
                        });
                    }
                }
            }
            Ok(failures)
        })
    }
}

/// `files.recount`: each file's status from its actual uses (permanent
/// while an item revision uses it, else temporary, which cleanup expires).
struct FilesRecount;

impl Operation for FilesRecount {
    fn info(&self) -> OperationInfo {
        OperationInfo {
            name: "files.recount".into(),
            description: "Recount every file's uses and correct its status (permanent while used, temporary otherwise)".into(),
            permission: permission::ADMINISTER_FILES.into(),
            chunk_size: 500,
            aborts_on_failure: false,
            params: "{}".into(),
        }
    }

    fn targets<'a>(
        &'a self,
        state: &'a AppState,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<String>, BatchError>> {
        Box::pin(async move {
            if params.as_object().is_none_or(|o| !o.is_empty()) {
                return Err(bad("files.recount", "takes no parameters: {}"));
            }
            let ids: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM file_managed WHERE status < 2 ORDER BY created, id",
            )
            .fetch_all(&state.db)
            .await?;
            Ok(ids.iter().map(Uuid::to_string).collect())
        })
    }

    fn run_chunk<'a>(
        &'a self,
        _state: &'a AppState,
        tx: &'a mut PgConnection,
        _effects: &'a mut Effects,
        _params: &'a Value,
        _owner: Option<Uuid>,
        targets: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TargetFailure>, String>> {
        Box::pin(async move {
            let ids: Vec<Uuid> = targets.iter().filter_map(|t| t.parse().ok()).collect();
            sqlx::query(
                "UPDATE file_managed f SET
                     status = CASE WHEN EXISTS (SELECT 1 FROM file_usage u WHERE u.file_id = f.id)
                                   THEN 1 ELSE 0 END,
                     changed = now()
                 WHERE f.id = ANY($1) AND f.status < 2
                   AND f.status <> CASE WHEN EXISTS (SELECT 1 FROM file_usage u WHERE u.file_id = f.id)
                                        THEN 1 ELSE 0 END",
            )
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
            Ok(targets
                .iter()
                .filter(|t| t.parse::<Uuid>().is_err())
                .map(|t| TargetFailure {
                    target: t.clone(),
                    error: "not a file id".into(),
                })
                .collect())
        })
    }
}

/// `cache.rebuild_listings`: invalidate the cached listings of item types
/// (each listing is rebuilt on its next request).
struct RebuildListings;

impl Operation for RebuildListings {
    fn info(&self) -> OperationInfo {
        OperationInfo {
            name: "cache.rebuild_listings".into(),
            description: "Drop the cached listings of every item type (or the listed ones); each is rebuilt on its next request".into(),
            permission: permission::ADMINISTER_SITE.into(),
            chunk_size: 50,
            aborts_on_failure: false,
            params: r#"{} or {"types": ["<item type>", ...]}"#.into(),
        }
    }

    fn targets<'a>(
        &'a self,
        state: &'a AppState,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<String>, BatchError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                types: Option<Vec<String>>,
            }
            let p: P = serde_json::from_value(params.clone())
                .map_err(|e| bad("cache.rebuild_listings", e.to_string()))?;
            let all: Vec<String> = sqlx::query_scalar("SELECT type FROM item_type ORDER BY type")
                .fetch_all(&state.db)
                .await?;
            match p.types {
                None => Ok(all),
                Some(types) => {
                    if let Some(t) = types.iter().find(|t| !all.contains(t)) {
                        return Err(bad("cache.rebuild_listings", format!("no item type `{t}`")));
                    }
                    Ok(types)
                }
            }
        })
    }

    fn run_chunk<'a>(
        &'a self,
        _state: &'a AppState,
        _tx: &'a mut PgConnection,
        effects: &'a mut Effects,
        _params: &'a Value,
        _owner: Option<Uuid>,
        targets: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TargetFailure>, String>> {
        Box::pin(async move {
            let mut tags =
                vec![crate::cache::CacheTag::new("item_list:all").map_err(|e| e.to_string())?];
            for t in targets {
                tags.push(
                    crate::cache::CacheTag::new(format!("item_list:{t}"))
                        .map_err(|e| e.to_string())?,
                );
            }
            effects.invalidate(tags);
            Ok(Vec::new())
        })
    }
}

/// `noop`: does nothing to each of `count` numbered targets; for trying
/// the batch machinery and measuring it.
struct Noop;

impl Operation for Noop {
    fn info(&self) -> OperationInfo {
        OperationInfo {
            name: "noop".into(),
            description: "Do nothing to `count` numbered targets (to try and measure batches)"
                .into(),
            permission: permission::ADMINISTER_SITE.into(),
            chunk_size: 100,
            aborts_on_failure: false,
            params: r#"{"count": 1000}"#.into(),
        }
    }

    fn targets<'a>(
        &'a self,
        _state: &'a AppState,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<String>, BatchError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct P {
                count: usize,
            }
            let p: P =
                serde_json::from_value(params.clone()).map_err(|e| bad("noop", e.to_string()))?;
            if p.count > super::MAX_TARGETS {
                return Err(BatchError::TooManyTargets(p.count));
            }
            Ok((0..p.count).map(|n| n.to_string()).collect())
        })
    }

    fn run_chunk<'a>(
        &'a self,
        _state: &'a AppState,
        _tx: &'a mut PgConnection,
        _effects: &'a mut Effects,
        _params: &'a Value,
        _owner: Option<Uuid>,
        _targets: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TargetFailure>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// An operation a plugin declared in `tap_batch_info`; its targets are
/// given in the parameters (`{"targets": [...], ...}`), its chunks go to
/// `tap_batch_chunk`.
struct PluginOperation {
    plugin: String,
    declared: Declared,
}

/// One operation as `tap_batch_info` declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Who may start it (default `administer site`).
    #[serde(default)]
    pub permission: Option<String>,
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
    #[serde(default)]
    pub aborts_on_failure: bool,
}

fn default_chunk() -> usize {
    100
}

/// What `tap_batch_chunk` may answer (no output: every target done).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkOutput {
    #[serde(default)]
    failed: Vec<TargetFailure>,
}

impl Operation for PluginOperation {
    fn info(&self) -> OperationInfo {
        OperationInfo {
            name: self.declared.name.clone(),
            description: self.declared.description.clone(),
            permission: self
                .declared
                .permission
                .clone()
                .unwrap_or_else(|| permission::ADMINISTER_SITE.into()),
            chunk_size: self.declared.chunk_size.clamp(1, 10_000),
            aborts_on_failure: self.declared.aborts_on_failure,
            params: format!(
                r#"{{"targets": ["...", ...], ...}} (plugin {})"#,
                self.plugin
            ),
        }
    }

    fn targets<'a>(
        &'a self,
        _state: &'a AppState,
        params: &'a Value,
    ) -> BoxFuture<'a, Result<Vec<String>, BatchError>> {
        Box::pin(async move {
            let name = &self.declared.name;
            let targets = params
                .get("targets")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(name, "`targets` must be an array of strings"))?;
            targets
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(name, "`targets` must be an array of strings"))
                })
                .collect()
        })
    }

    fn run_chunk<'a>(
        &'a self,
        state: &'a AppState,
        _tx: &'a mut PgConnection,
        _effects: &'a mut Effects,
        params: &'a Value,
        _owner: Option<Uuid>,
        targets: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<TargetFailure>, String>> {
        Box::pin(async move {
            let mut params = params.clone();
            if let Some(o) = params.as_object_mut() {
                o.remove("targets");
            }
            let input = serde_json::json!({
                "operation": self.declared.name,
                "params": params,
                "targets": targets,
            });
            let out = state
                .plugins
                .invoke(&self.plugin, Tap::BatchChunk.name(), &input)
                .await
                .map_err(|e| e.to_string())?;
            match out {
                None => Ok(Vec::new()),
                Some(raw) => serde_json::from_str::<ChunkOutput>(raw.get())
                    .map(|o| o.failed)
                    .map_err(|e| format!("tap_batch_chunk output not understood: {e}")),
            }
        })
    }
}

/// The kernel's operations.
fn kernel_ops() -> Vec<Arc<dyn Operation>> {
    let mut ops: Vec<Arc<dyn Operation>> = vec![
        Arc::new(SetStatus {
            status: Some(ItemStatus::Published),
        }),
        Arc::new(SetStatus {
            status: Some(ItemStatus::Unpublished),
        }),
        Arc::new(SetStatus { status: None }),
        Arc::new(FilesRecount),
        Arc::new(RebuildListings),
        Arc::new(Noop),
    ];
    if let Some(subsystem_ops) = SUBSYSTEM_OPS.get() {
        ops.extend(subsystem_ops());
    }
    ops
}

/// The operations subsystems above the batch runner provide (a search
/// reindex), as the kernel installed them at boot.
static SUBSYSTEM_OPS: OnceLock<OperationList> = OnceLock::new();

/// What makes a list of operations.
pub type OperationList = fn() -> Vec<Arc<dyn Operation>>;

/// Installs the operations of subsystems the batch runner cannot name
/// (they depend on it). The kernel does this when it connects; the first
/// list installed stays.
pub fn install_subsystem_ops(ops: OperationList) {
    if SUBSYSTEM_OPS.set(ops).is_err() {
        tracing::debug!("subsystem batch operations already installed");
    }
}

/// Every operation: the kernel's, then each active plugin's
/// `tap_batch_info` (names in the plugin's namespace, `<plugin>.<name>`).
pub async fn all(state: &AppState) -> Vec<Arc<dyn Operation>> {
    let mut ops = kernel_ops();
    for (plugin, declared) in state.plugins.declarations::<Declared>(Tap::BatchInfo).await {
        for d in declared {
            if !crate::queue::in_namespace(&plugin, &d.name) || d.name == plugin {
                tracing::warn!(%plugin, operation = %d.name, "tap_batch_info declared an operation outside `<plugin>.<name>`");
                continue;
            }
            if ops.iter().any(|o| o.name() == d.name) {
                continue;
            }
            ops.push(Arc::new(PluginOperation {
                plugin: plugin.clone(),
                declared: d,
            }));
        }
    }
    ops
}

/// The operation named `name`.
pub async fn find(state: &AppState, name: &str) -> Option<Arc<dyn Operation>> {
    if let Some(op) = kernel_ops().into_iter().find(|o| o.name() == name) {
        return Some(op);
    }
    all(state).await.into_iter().find(|o| o.name() == name)
}
