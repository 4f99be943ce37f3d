//! Stages: named workspaces upstream of `live`. Editing a live item inside
//! a stage writes a revision associated with the stage and leaves the live
//! row untouched; items created inside a stage belong to it until it is
//! published. Publishing applies every change to live in one transaction,
//! each through the item write path, and then invalidates the stage's cache
//! (tag `stage:{id}`) and the live tags of every item it changed, and fires
//! `tap_item_update` for each.

pub mod admin;
pub mod id;
pub mod routes;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::cache::CacheTag;
use crate::db::{DbError, timed};
use crate::error::AppError;
use crate::item::{self, Effects, Failures, ItemError, Write};
use crate::state::AppState;
use crate::user::{Account, permission};

pub use id::{InvalidStageId, StageId};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    InvalidId(#[from] InvalidStageId),
    #[error("stage `{0}` not found")]
    NotFound(String),
    #[error("stage `{0}` already exists")]
    Exists(String),
    #[error("the live stage cannot be published")]
    PublishLive,
    /// The working stage is a setting of a browser session.
    #[error(
        "the working stage is a setting of a browser session; API clients pass `?stage=` or the `X-Trovato-Stage` header with each request"
    )]
    SessionOnly,
    /// An item no longer validates against its type; nothing was published.
    #[error("item {item} cannot be published: invalid values")]
    ItemInvalid { item: Uuid, failures: Failures },
    #[error(transparent)]
    Item(#[from] ItemError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl crate::error::HttpError for StageError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            StageError::InvalidId(_) => (S::UNPROCESSABLE_ENTITY, "invalid_stage_id"),
            StageError::NotFound(_) => (S::NOT_FOUND, "stage_not_found"),
            StageError::Exists(_) => (S::CONFLICT, "stage_exists"),
            StageError::PublishLive => (S::CONFLICT, "stage_is_live"),
            StageError::SessionOnly => (S::FORBIDDEN, "stage_session_only"),
            StageError::ItemInvalid { .. } => (S::UNPROCESSABLE_ENTITY, "stage_item_invalid"),
            StageError::Item(e) => e.status_code(),
            StageError::Db(e) => e.status_code(),
        }
    }

    fn error_details(&self) -> Value {
        match self {
            StageError::Item(e) => e.error_details(),
            other => other.details(),
        }
    }
}

impl From<sqlx::Error> for StageError {
    fn from(e: sqlx::Error) -> Self {
        StageError::Db(e.into())
    }
}

impl StageError {
    pub fn details(&self) -> Value {
        match self {
            StageError::ItemInvalid { item, failures } => {
                json!({ "item": item, "fields": failures })
            }
            _ => Value::Null,
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Stage {
    pub id: String,
    pub label: String,
    pub upstream: Option<String>,
    pub created: DateTime<Utc>,
}

/// What a publish changed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublishReport {
    pub stage: String,
    /// Live items that took the stage's revision.
    pub updated: Vec<Uuid>,
    /// Items created in the stage, now live.
    pub created: Vec<Uuid>,
}

pub async fn create(
    db: impl PgExecutor<'_>,
    id: &StageId,
    label: &str,
) -> Result<Stage, StageError> {
    let r = timed(
        "stage.insert",
        sqlx::query_as::<_, Stage>(
            "INSERT INTO stage (id, label, upstream) VALUES ($1, $2, 'live')
             RETURNING id, label, upstream, created",
        )
        .bind(id.as_str())
        .bind(label)
        .fetch_one(db),
    )
    .await
    .map_err(DbError::from);
    match r {
        Ok(s) => Ok(s),
        Err(e) if e.constraint() == Some("stage_pkey") => Err(StageError::Exists(id.to_string())),
        Err(e) => Err(e.into()),
    }
}

pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Stage>, StageError> {
    Ok(timed(
        "stage.list",
        sqlx::query_as::<_, Stage>(
            "SELECT id, label, upstream, created FROM stage ORDER BY (id <> 'live'), id",
        )
        .fetch_all(db),
    )
    .await?)
}

pub async fn exists(db: impl PgExecutor<'_>, id: &StageId) -> Result<bool, StageError> {
    Ok(timed(
        "stage.exists",
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM stage WHERE id = $1)")
            .bind(id.as_str())
            .fetch_one(db),
    )
    .await?)
}

/// Applies every change of `stage` to live in one transaction: stage
/// revisions of live items replace the live values, items created in the
/// stage become live. Each change is a write of the item write path
/// ([`item::write::apply`]), so it is validated again against its type, and
/// after the commit every changed item's live cache tags and the stage's
/// tag are invalidated and `tap_item_update` fires for each changed item.
/// The first item that fails validation rolls the whole publish back.
///
/// Two stages may hold revisions of the same live item. Publishes are
/// serialised on the item rows (locked in id order, so two publishes sharing
/// items wait for each other instead of deadlocking), and each applies its
/// stage's revision as it stands: the publish that commits last wins, and
/// the item's earlier values stay in its revision history.
pub async fn publish(state: &AppState, stage: &StageId) -> Result<PublishReport, StageError> {
    if stage.is_live() {
        return Err(StageError::PublishLive);
    }
    let mut tx = state.db.begin().await?;
    // Serialises concurrent publishes and edits of the same stage (edits
    // hold it FOR SHARE). The stage row is the first lock taken, edits take
    // theirs in the same order; see `item::store::hold_stage`.
    let found: Option<String> = timed(
        "stage.lock",
        sqlx::query_scalar("SELECT id FROM stage WHERE id = $1 FOR UPDATE")
            .bind(stage.as_str())
            .fetch_optional(&mut *tx),
    )
    .await?;
    if found.is_none() {
        return Err(StageError::NotFound(stage.to_string()));
    }

    #[derive(sqlx::FromRow)]
    struct Change {
        item_id: Uuid,
        /// The stage's revision of a live item; none for an item born in
        /// the stage.
        revision_id: Option<Uuid>,
    }
    // Lock every item the publish touches, in id order: any two
    // transactions locking several items this way wait for each other
    // rather than deadlock. (FOR UPDATE cannot follow a UNION.)
    timed(
        "stage.lock_items",
        sqlx::query(
            "SELECT 1 FROM item WHERE stage_id = $1
                OR id IN (SELECT item_id FROM stage_association WHERE stage_id = $1)
             ORDER BY id FOR UPDATE",
        )
        .bind(stage.as_str())
        .execute(&mut *tx),
    )
    .await?;
    // Live items with a stage revision first, then items born in the stage.
    let changes = timed(
        "stage.changes",
        sqlx::query_as::<_, Change>(
            "SELECT item_id, revision_id, false AS born
             FROM stage_association WHERE stage_id = $1
             UNION ALL
             SELECT id, NULL, true FROM item WHERE stage_id = $1
             ORDER BY born, item_id",
        )
        .bind(stage.as_str())
        .fetch_all(&mut *tx),
    )
    .await?;

    let mut report = PublishReport {
        stage: stage.to_string(),
        updated: vec![],
        created: vec![],
    };
    let mut effects = Effects::default();
    effects.invalidate(CacheTag::stage(stage.as_str()));
    for c in changes {
        let write = match c.revision_id {
            Some(revision) => Write::PublishRevision {
                stage: stage.clone(),
                id: c.item_id,
                revision,
            },
            None => Write::PublishCreated {
                stage: stage.clone(),
                id: c.item_id,
            },
        };
        match item::write::apply(state, &mut tx, write, &mut effects).await {
            Ok(_) => {}
            Err(ItemError::Invalid(failures)) => {
                return Err(StageError::ItemInvalid {
                    item: c.item_id,
                    failures,
                });
            }
            Err(e) => return Err(e.into()),
        }
        match c.revision_id {
            Some(_) => report.updated.push(c.item_id),
            None => report.created.push(c.item_id),
        }
    }
    timed(
        "stage.clear_associations",
        sqlx::query("DELETE FROM stage_association WHERE stage_id = $1")
            .bind(stage.as_str())
            .execute(&mut *tx),
    )
    .await?;
    item::write::commit(state, tx, effects).await?;
    for id in report.updated.iter().chain(&report.created) {
        tracing::debug!(item = %id, stage = %stage, "published");
    }
    Ok(report)
}

/// The Redis key holding the stage a browser session works in, beside the
/// session itself (same slot, same token hash, same idle lifetime); `None`
/// for a token no session can have.
fn session_stage_key(state: &AppState, token: &str) -> Option<String> {
    crate::user::session::companion_key(&state.kv, token, STAGE_COMPANION)
}

/// The name of the stage choice among a session's companion keys.
const STAGE_COMPANION: &str = "stage";

fn idle_secs(state: &AppState) -> u64 {
    state.config.session.idle_timeout_secs.max(1)
}

/// Remembers `stage` as the session's working stage (`live` forgets it).
pub async fn select_for_session(
    state: &AppState,
    token: &str,
    stage: &StageId,
) -> Result<(), crate::kv::KvError> {
    let Some(key) = session_stage_key(state, token) else {
        return Ok(());
    };
    if stage.is_live() {
        let _: i64 = state.kv.query(redis::cmd("DEL").arg(key)).await?;
    } else {
        let _: () = state
            .kv
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(stage.as_str())
                    .arg("EX")
                    .arg(idle_secs(state)),
            )
            .await?;
    }
    Ok(())
}

/// Deletes each session's stage choice whose session is gone (ended by
/// logout, or expired while its stage choice was slid by reads): cron's
/// session bookkeeping. Returns how many it forgot.
pub async fn forget_ended_sessions(state: &AppState) -> Result<u64, crate::kv::KvError> {
    use crate::user::session;
    // Pairs of (stage choice, session) keys, all of one slot; deletes a
    // choice whose session is gone, atomically per pair.
    const FORGET: &str = r"
local n = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    n = n + redis.call('DEL', KEYS[i])
  end
end
return n";
    let script = redis::Script::new(FORGET);
    let mut scan = state
        .kv
        .scan(&session::companion_pattern(STAGE_COMPANION))
        .await?;
    let mut forgotten = 0u64;
    while let Some(keys) = scan.next_batch().await? {
        // One invocation per slot group: on a cluster a script's keys
        // must share a slot.
        let mut groups: std::collections::BTreeMap<String, Vec<(String, String)>> =
            Default::default();
        for key in keys {
            let Some(session_key) = session::session_of_companion(&state.kv, &key, STAGE_COMPANION)
            else {
                continue;
            };
            // All but the digest: the same for every key of one group.
            let group = key
                .rsplit_once(':')
                .map_or(key.as_str(), |(g, _)| g)
                .to_owned();
            groups.entry(group).or_default().push((key, session_key));
        }
        for pairs in groups.values() {
            let mut inv = script.prepare_invoke();
            for (choice, session) in pairs {
                inv.key(choice).key(session);
            }
            let n: u64 = state.kv.script(inv).await?;
            forgotten += n;
        }
    }
    Ok(forgotten)
}

/// The session's working stage, if one was selected (sliding its lifetime
/// like the session's). Without Redis the session works in live.
async fn session_stage(state: &AppState, token: &str) -> Option<String> {
    let key = session_stage_key(state, token)?;
    match state
        .kv
        .query::<Option<String>>(redis::cmd("GETEX").arg(key).arg("EX").arg(idle_secs(state)))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "session stage unavailable; using live");
            None
        }
    }
}

/// The stage a request reads and writes in: `?stage=`, else the
/// `X-Trovato-Stage` header, else the stage selected for the browser
/// session, else live.
///
/// One rule for the query and the header: a malformed id is 422, a stage
/// the account may not work in is 401/403 *before* its existence is looked
/// up (so without stage access an existing and a missing stage get the same
/// answer), and only then is a missing stage 404. A session's stage the
/// account may no longer work in, or that no longer exists, is live.
#[derive(Debug, Clone)]
pub struct SelectedStage(pub StageId);

pub const STAGE_HEADER: &str = "x-trovato-stage";

impl FromRequestParts<AppState> for SelectedStage {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let from_query = parts.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "stage")
                .map(|(_, v)| StageId::parse(v.trim()))
        });
        let from_header = parts.headers.get(STAGE_HEADER).map(|v| match v.to_str() {
            Ok(raw) => StageId::parse(raw.trim()),
            Err(_) => Err(InvalidStageId(
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )),
        });
        // A malformed header is refused even when the query names the stage.
        let from_header = from_header.transpose()?;
        let requested = from_query.transpose()?.or(from_header);
        let id = match requested {
            Some(id) if id.is_live() => return Ok(Self(id)),
            Some(id) => id,
            None => {
                return match crate::user::access::cookie(
                    &parts.headers,
                    crate::user::session::COOKIE,
                ) {
                    Some(token) => Ok(Self(session_stage_or_live(parts, state, &token).await?)),
                    // No stage named and no session: live, without resolving
                    // the account (the anonymous page path).
                    None => Ok(Self(StageId::live())),
                };
            }
        };
        let account = Account::from_request_parts(parts, state).await?;
        require_access(&account, &id)?;
        if !exists(&state.db, &id).await? {
            return Err(StageError::NotFound(id.to_string()).into());
        }
        Ok(Self(id))
    }
}

/// The working stage of `account`'s browser session (what the admin pages'
/// stage switcher shows): the selected stage while the account may work in
/// it and it exists; live otherwise, and for accounts without a session.
pub async fn working_stage(state: &AppState, account: &Account) -> StageId {
    let Some((token, _)) = &account.session else {
        return StageId::live();
    };
    let Some(id) = session_stage(state, token)
        .await
        .and_then(|raw| StageId::parse(&raw).ok())
        .filter(|id| !id.is_live())
    else {
        return StageId::live();
    };
    if !may_work_in(account, &id) || !exists(&state.db, &id).await.unwrap_or(false) {
        return StageId::live();
    }
    id
}

/// The browser session's working stage, when its account may still work in
/// it and it still exists; live otherwise.
async fn session_stage_or_live(
    parts: &mut Parts,
    state: &AppState,
    token: &str,
) -> Result<StageId, AppError> {
    let Some(id) = session_stage(state, token)
        .await
        .and_then(|raw| StageId::parse(&raw).ok())
        .filter(|id| !id.is_live())
    else {
        return Ok(StageId::live());
    };
    let account = Account::from_request_parts(parts, state).await?;
    if require_access(&account, &id).is_err() || !exists(&state.db, &id).await? {
        return Ok(StageId::live());
    }
    Ok(id)
}

/// Working in a stage other than live is for editors: `edit any content`
/// or `administer stages`.
pub fn require_access(account: &Account, stage: &StageId) -> Result<(), AppError> {
    if may_work_in(account, stage) {
        Ok(())
    } else if !account.is_authenticated() {
        Err(AppError::Unauthenticated)
    } else {
        Err(AppError::Forbidden(format!(
            "working in a stage requires `{}` or `{}`",
            permission::EDIT_ANY_CONTENT,
            permission::ADMINISTER_STAGES
        )))
    }
}

/// Whether `account` may read and write in `stage` (everyone may in live).
pub fn may_work_in(account: &Account, stage: &StageId) -> bool {
    stage.is_live()
        || account.has(permission::EDIT_ANY_CONTENT)
        || account.has(permission::ADMINISTER_STAGES)
}
