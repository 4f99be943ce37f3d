//! The one write path for items.
//!
//! Every write of an item is a [`Write`]: creating, updating and deleting
//! one, and the two steps of a stage publish (a live item takes a stage's
//! revision; an item created in the stage becomes live). [`apply`] runs a
//! write inside a transaction the caller owns: it locks and validates, writes
//! the row and its revision, runs the [`WriteHook`]s, and records in
//! [`Effects`] what must follow the commit (cache tags, taps, hooks' work
//! outside the database). A caller may apply many writes in one transaction
//! (a publish does); the first error leaves the transaction to be rolled
//! back, and nothing of it happens.
//!
//! [`commit`] commits the transaction and runs the effects as one task of
//! the kernel's [`Tasks`](crate::tasks::Tasks): once a write is committed,
//! its invalidation and taps run to the end even if the request that made it
//! is dropped (a client that disconnects), and shutdown waits for them. A
//! request dropped before [`commit`] rolls back: nothing was written, so
//! nothing follows.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::OnceLock;

use chrono::Utc;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::field::RefTarget;
use super::{
    Item, ItemError, ItemPatch, ItemStatus, ItemType, NewItem, change_tags, references, store, taps,
};
use crate::cache::CacheTag;
use crate::plugin::Tap;
use crate::stage::id::StageId;
use crate::state::AppState;

/// The name of the task that commits a write and runs its effects.
const COMMIT_TASK: &str = "item write";

/// One write of one item.
#[derive(Debug, Clone)]
pub enum Write {
    /// A new item in `stage`, with its first revision.
    Create {
        stage: StageId,
        author: Option<Uuid>,
        new: NewItem,
    },
    /// `patch` applied as seen from `stage`: a live item edited in another
    /// stage gets a stage revision (the live row is untouched); otherwise
    /// the row itself changes. Either way a revision is written.
    Update {
        stage: StageId,
        id: Uuid,
        editor: Option<Uuid>,
        patch: ItemPatch,
    },
    /// Deletes the item and its revisions; inside a stage only an item
    /// created in that stage. Refused ([`ItemError::InUse`]) while current
    /// values of other items reference it (see [`references`]).
    Delete { stage: StageId, id: Uuid },
    /// Publishing `stage`: live item `id` takes the stage's `revision`.
    /// The caller holds the stage row `FOR UPDATE`.
    PublishRevision {
        stage: StageId,
        id: Uuid,
        revision: Uuid,
    },
    /// Publishing `stage`: item `id`, created in it, becomes live. The
    /// caller holds the stage row `FOR UPDATE`.
    PublishCreated { stage: StageId, id: Uuid },
}

/// What a write did to an item, as hooks and taps see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

impl ChangeKind {
    /// The tap fired for it. A publish is an update of each item it
    /// changes, also of one created in the stage: that item's
    /// `tap_item_insert` fired when it was created there.
    pub fn tap(self) -> Tap {
        match self {
            ChangeKind::Created => Tap::ItemInsert,
            ChangeKind::Updated => Tap::ItemUpdate,
            ChangeKind::Deleted => Tap::ItemDelete,
        }
    }
}

/// Who made a write: an account editing (checked against what it may
/// reference), or a stage publish (which moves revisions already checked
/// when they were written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An edit by this user (`None`: anonymous or the system).
    Edit {
        by: Option<Uuid>,
    },
    Publish,
}

/// One applied write.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: ChangeKind,
    pub origin: Origin,
    /// The stage whose view of the item changed: `live` for a publish.
    pub stage: StageId,
    /// The item after the write; for a delete, as it was.
    pub item: Item,
}

/// A subsystem that follows item writes (file usage, the search index).
///
/// Hooks run inside the write's transaction, after the kernel wrote the
/// row and its revision, in the order [`install_hooks`] gave. A hook's error fails
/// the write (for a publish: the whole publish) and nothing of it is
/// committed; report a client's mistake as [`ItemError::Invalid`]. Work
/// outside the database (deleting a stored object whose last use went
/// away) must not happen here: queue it with [`Effects::after_commit`].
pub trait WriteHook: Send + Sync {
    fn name(&self) -> &'static str;

    fn in_transaction<'a>(
        &'a self,
        state: &'a AppState,
        tx: &'a mut PgConnection,
        change: &'a Change,
        effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), ItemError>>;
}

/// The write hooks, in the order they run, as the kernel installed them
/// at boot ([`install_hooks`]). The kernel's own effects, cache
/// invalidation and the item taps, are not hooks: [`apply`] records them
/// for every write.
static HOOKS: OnceLock<&'static [&'static dyn WriteHook]> = OnceLock::new();

/// Installs the subsystems that follow item writes, in the order their
/// hooks run. The kernel does this when it connects, naming every such
/// subsystem in one list (so this module knows none of them). The list is
/// the process's: the first one installed stays.
pub fn install_hooks(hooks: &'static [&'static dyn WriteHook]) {
    if HOOKS.set(hooks).is_err() {
        tracing::debug!("write hooks already installed");
    }
}

fn hooks() -> &'static [&'static dyn WriteHook] {
    HOOKS.get().copied().unwrap_or_default()
}

/// What follows the commit of one or more writes. Built by [`apply`],
/// run by [`commit`].
#[derive(Default)]
pub struct Effects {
    tags: BTreeSet<CacheTag>,
    changes: Vec<Change>,
    after_commit: Vec<(&'static str, BoxFuture<'static, ()>)>,
}

impl Effects {
    /// Adds cache tags to invalidate after the commit.
    pub fn invalidate(&mut self, tags: impl IntoIterator<Item = CacheTag>) {
        self.tags.extend(tags);
    }

    /// Queues `work` to run after the commit, after the invalidation and
    /// the taps. It runs only if the transaction committed; it cannot fail
    /// the write, so it must log its own failures.
    pub fn after_commit(
        &mut self,
        name: &'static str,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        self.after_commit.push((name, Box::pin(work)));
    }

    /// The writes applied so far, in order.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// The tags that will be invalidated.
    pub fn tags(&self) -> impl Iterator<Item = &CacheTag> {
        self.tags.iter()
    }

    fn record(&mut self, change: Change) {
        self.invalidate(change_tags(
            &change.stage,
            change.item.id,
            &change.item.item_type,
        ));
        self.changes.push(change);
    }

    /// Invalidates every tag at once, then fires each change's tap in
    /// order, then runs the hooks' queued work. Call only after commit.
    async fn run(self, state: &AppState) {
        let tags: Vec<CacheTag> = self.tags.into_iter().collect();
        state.cache.invalidate(&tags).await;
        for change in &self.changes {
            taps::fire(state, change.kind.tap(), &change.item).await;
        }
        for (name, work) in self.after_commit {
            tracing::debug!(effect = name, "running post-commit effect");
            work.await;
        }
    }
}

/// Applies `write` inside `tx` and records its effects in `effects`.
/// Returns the item as the write left it (for a delete, as it was).
pub async fn apply(
    state: &AppState,
    tx: &mut PgConnection,
    write: Write,
    effects: &mut Effects,
) -> Result<Item, ItemError> {
    let change = match write {
        Write::Create { stage, author, new } => create(tx, stage, author, new).await?,
        Write::Update {
            stage,
            id,
            editor,
            patch,
        } => update(tx, stage, id, editor, patch).await?,
        Write::Delete { stage, id } => delete(tx, stage, id).await?,
        Write::PublishRevision {
            stage,
            id,
            revision,
        } => publish_revision(tx, &stage, id, revision).await?,
        Write::PublishCreated { stage, id } => publish_created(tx, &stage, id).await?,
    };
    for hook in hooks() {
        tracing::debug!(hook = hook.name(), item = %change.item.id, "write hook");
        hook.in_transaction(state, tx, &change, effects).await?;
    }
    let item = change.item.clone();
    effects.record(change);
    Ok(item)
}

/// Commits `tx`, then runs `effects`, as one task that runs to the end
/// even if the caller is dropped. Refused (and rolled back) once shutdown
/// has begun.
pub async fn commit(
    state: &AppState,
    tx: Transaction<'static, Postgres>,
    effects: Effects,
) -> Result<(), ItemError> {
    let st = state.clone();
    state
        .tasks
        .finish(COMMIT_TASK, async move {
            tx.commit().await?;
            effects.run(&st).await;
            Ok::<_, ItemError>(())
        })
        .await?
}

/// Applies one write in a transaction of its own and commits it.
pub async fn write_one(state: &AppState, write: Write) -> Result<Item, ItemError> {
    let mut tx = state.db.begin().await?;
    let mut effects = Effects::default();
    let item = apply(state, &mut tx, write, &mut effects).await?;
    commit(state, tx, effects).await?;
    Ok(item)
}

async fn item_type(tx: &mut PgConnection, name: &str) -> Result<ItemType, ItemError> {
    store::find_type(&mut *tx, name)
        .await?
        .ok_or_else(|| ItemError::TypeNotFound(name.to_owned()))
}

/// Validates the stored values a publish moves to live against the type.
async fn check(tx: &mut PgConnection, item: &Item) -> Result<(), ItemError> {
    let t = item_type(tx, &item.item_type).await?;
    let fields = item.fields.as_object().cloned().unwrap_or_default();
    super::validate_stored(tx, &t, &item.title, &fields).await
}

async fn create(
    tx: &mut PgConnection,
    stage: StageId,
    author: Option<Uuid>,
    new: NewItem,
) -> Result<Change, ItemError> {
    store::hold_stage(&mut *tx, stage.as_str()).await?;
    let t = store::find_type_for_share(&mut *tx, &new.item_type)
        .await?
        .ok_or_else(|| ItemError::invalid("type", format!("unknown type `{}`", new.item_type)))?;
    let title = if t.has_title {
        new.title.clone()
    } else {
        String::new()
    };
    let refused = new.fields.refusals(&t.fields);
    let fields = new.fields.into_values();
    super::validate_values(tx, &t, &title, &fields, refused).await?;
    let now = Utc::now();
    let item = Item {
        id: Uuid::now_v7(),
        item_type: t.type_name.clone(),
        title,
        author,
        status: new.status.unwrap_or(ItemStatus::Published),
        created: now,
        changed: now,
        promote: new.promote,
        sticky: new.sticky,
        fields: Value::Object(fields),
        stage_id: stage.as_str().to_owned(),
        revision_id: Some(Uuid::now_v7()),
    };
    store::insert_item(&mut *tx, &item).await?;
    store::insert_revision(&mut *tx, &item, stage.as_str(), author, "Created").await?;
    Ok(Change {
        kind: ChangeKind::Created,
        origin: Origin::Edit { by: author },
        stage,
        item,
    })
}

async fn update(
    tx: &mut PgConnection,
    stage: StageId,
    id: Uuid,
    editor: Option<Uuid>,
    patch: ItemPatch,
) -> Result<Change, ItemError> {
    store::hold_stage(&mut *tx, stage.as_str()).await?;
    let mut item = store::find_for_update(&mut *tx, stage.as_str(), id)
        .await?
        .ok_or(ItemError::NotFound(id))?;
    let t = item_type(tx, &item.item_type).await?;
    if let Some(title) = patch.title
        && t.has_title
    {
        item.title = title;
    }
    if let Some(s) = patch.status {
        item.status = s;
    }
    if let Some(p) = patch.promote {
        item.promote = p;
    }
    if let Some(s) = patch.sticky {
        item.sticky = s;
    }
    let mut fields = match std::mem::take(&mut item.fields) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    // Only what the body sends is held to the body's rules; stored values
    // are validated as values.
    let body = patch.fields.unwrap_or_default();
    let refused = body.refusals(&t.fields);
    for (k, v) in body.into_values() {
        if v.is_null() {
            fields.remove(&k);
        } else {
            fields.insert(k, v);
        }
    }
    super::validate_values(tx, &t, &item.title, &fields, refused).await?;
    item.fields = Value::Object(fields);
    item.changed = Utc::now();
    let rev = Uuid::now_v7();
    item.revision_id = Some(rev);
    let log = patch.log.unwrap_or_default();
    store::insert_revision(&mut *tx, &item, stage.as_str(), editor, &log).await?;
    if item.stage_id == stage.as_str() {
        store::update_row(&mut *tx, &item).await?;
    } else {
        // A live item seen from a stage: record the stage's version only.
        store::associate(&mut *tx, stage.as_str(), id, rev).await?;
    }
    Ok(Change {
        kind: ChangeKind::Updated,
        origin: Origin::Edit { by: editor },
        stage,
        item,
    })
}

async fn delete(tx: &mut PgConnection, stage: StageId, id: Uuid) -> Result<Change, ItemError> {
    store::hold_stage(&mut *tx, stage.as_str()).await?;
    let item = store::find_for_delete(&mut *tx, stage.as_str(), id)
        .await?
        .ok_or(ItemError::NotFound(id))?;
    if item.stage_id != stage.as_str() {
        return Err(ItemError::StageConflict(format!(
            "item {id} is live; delete it in live, not in stage `{stage}`"
        )));
    }
    // The row is locked FOR UPDATE: every save that referenced the item has
    // committed, and none can reference it until this one ends.
    let uses = references::uses_of(tx, RefTarget::Item, &[id], Some(id)).await?;
    if !uses.is_empty() {
        return Err(ItemError::InUse { id, uses });
    }
    store::delete_item(&mut *tx, id).await?;
    Ok(Change {
        kind: ChangeKind::Deleted,
        origin: Origin::Edit { by: None },
        stage,
        item,
    })
}

async fn publish_revision(
    tx: &mut PgConnection,
    stage: &StageId,
    id: Uuid,
    revision: Uuid,
) -> Result<Change, ItemError> {
    let mut item = store::find_for_update(&mut *tx, crate::cache::LIVE, id)
        .await?
        .ok_or(ItemError::NotFound(id))?;
    let rev = store::find_revision(&mut *tx, revision)
        .await?
        .filter(|r| r.item_id == id && r.stage_id == stage.as_str())
        .ok_or_else(|| {
            ItemError::StageConflict(format!(
                "revision {revision} is not stage `{stage}`'s revision of item {id}"
            ))
        })?;
    item.title = rev.title;
    item.status = rev.status;
    item.promote = rev.promote;
    item.sticky = rev.sticky;
    item.fields = rev.fields;
    item.revision_id = Some(revision);
    item.changed = Utc::now();
    check(tx, &item).await?;
    store::update_row(&mut *tx, &item).await?;
    Ok(Change {
        kind: ChangeKind::Updated,
        origin: Origin::Publish,
        stage: StageId::live(),
        item,
    })
}

async fn publish_created(
    tx: &mut PgConnection,
    stage: &StageId,
    id: Uuid,
) -> Result<Change, ItemError> {
    let mut item = store::find_for_update(&mut *tx, stage.as_str(), id)
        .await?
        .filter(|i| i.stage_id == stage.as_str())
        .ok_or(ItemError::NotFound(id))?;
    check(tx, &item).await?;
    item.stage_id = crate::cache::LIVE.to_owned();
    item.changed = Utc::now();
    store::update_row(&mut *tx, &item).await?;
    Ok(Change {
        kind: ChangeKind::Updated,
        origin: Origin::Publish,
        stage: StageId::live(),
        item,
    })
}
