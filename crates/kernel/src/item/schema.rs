//! Changing an item type's definition while it has items.
//!
//! A field is known by its `name`, the key of its values (see [`field`]'s
//! module docs). [`update_type`] compares the new definitions with the
//! stored ones, and existing items follow in the same transaction:
//!
//! - A field whose name is no longer defined is removed, and so are its
//!   values: from every item row of the type and from every stage revision
//!   not yet published, so those items save and publish as before. Earlier
//!   revisions keep them as history. (Values of no defined field, left by
//!   an older kernel, go the same way.)
//! - A change of `label` alone needs nothing: it is not a rename. A new
//!   `name` is a new field; to rename one, add the new field, copy the
//!   values over, then remove the old one.
//! - A new field, or one whose kind, limits, cardinality or `required`
//!   changed, is checked against every current value (rows and unpublished
//!   stage revisions), as a save would check it; so is `has_title` turned
//!   on. If any value fails, nothing changes and the update is refused with
//!   409 `item_type_conflict`, naming each field and how many items fail.
//!
//! Locks, in this order: the type row `FOR UPDATE` (a create holds it
//! `FOR SHARE`, so items created under the old definitions are committed
//! and checked), then every item row of the type in id order
//! `FOR NO KEY UPDATE` (saves and publishes lock item rows too, publishes in
//! id order as well), so no value changes between the check and the
//! commit.
//!
//! [`field`]: super::field

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::field::{self, FieldDef, RefTarget, References};
use super::{Effects, ItemError, ItemType, live_tags, store, write};
use crate::db::timed;
use crate::state::AppState;

/// Current values the new definitions of a type refuse, by field (or
/// `title`).
#[derive(Debug, Default)]
pub struct TypeConflicts {
    fields: BTreeMap<String, Conflict>,
}

#[derive(Debug)]
struct Conflict {
    items: BTreeSet<Uuid>,
    /// The first failure seen: (item, message).
    example: (Uuid, String),
}

impl TypeConflicts {
    fn add(&mut self, field: &str, item: Uuid, message: String) {
        self.fields
            .entry(field.to_owned())
            .or_insert_with(|| Conflict {
                items: BTreeSet::new(),
                example: (item, message),
            })
            .items
            .insert(item);
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// How many items hold a value of `field` the new definition refuses.
    pub fn items(&self, field: &str) -> usize {
        self.fields.get(field).map_or(0, |c| c.items.len())
    }

    pub fn message(&self) -> String {
        let list: Vec<String> = self
            .fields
            .iter()
            .map(|(name, c)| format!("{name} ({})", count(c.items.len())))
            .collect();
        format!(
            "existing items hold values the new definitions refuse: {}",
            list.join(", ")
        )
    }

    /// `{"fields": {name: [message]}, "items": {name: count}}`, the first
    /// in the shape of a validation failure.
    pub fn details(&self) -> Value {
        let mut fields = Map::new();
        let mut items = Map::new();
        for (name, c) in &self.fields {
            let (item, message) = &c.example;
            fields.insert(
                name.clone(),
                json!([format!(
                    "{} would fail; e.g. item {item}: {message}",
                    count(c.items.len())
                )]),
            );
            items.insert(name.clone(), json!(c.items.len()));
        }
        json!({ "fields": fields, "items": items })
    }
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 item".to_owned()
    } else {
        format!("{n} items")
    }
}

/// Whether existing values must be checked against `def`: a new field, or
/// one changed in anything but its label.
fn needs_check(old: &[FieldDef], def: &FieldDef) -> bool {
    match old.iter().find(|o| o.name == def.name) {
        None => true,
        Some(o) => {
            let mut relabelled = o.clone();
            relabelled.label = def.label.clone();
            relabelled != *def
        }
    }
}

/// Replaces the stored definition of `t` (already checked in itself),
/// removing the values of removed fields or refusing a change existing
/// values cannot satisfy; see the module docs.
pub async fn update_type(state: &AppState, t: &ItemType) -> Result<ItemType, ItemError> {
    let mut tx = state.db.begin().await?;
    let old = lock_type(&mut tx, &t.type_name)
        .await?
        .ok_or_else(|| ItemError::TypeNotFound(t.type_name.clone()))?;
    lock_items(&mut tx, &t.type_name).await?;
    let checked: Vec<FieldDef> = t
        .fields
        .iter()
        .filter(|d| needs_check(&old.fields, d))
        .cloned()
        .collect();
    let check_title = t.has_title && !old.has_title;
    if !checked.is_empty() || check_title {
        let conflicts = conflicts(&mut tx, &t.type_name, &checked, check_title).await?;
        if !conflicts.is_empty() {
            return Err(ItemError::TypeConflict(conflicts));
        }
    }
    if !store::update_type(&mut *tx, t).await? {
        return Err(ItemError::TypeNotFound(t.type_name.clone()));
    }
    let defined: Vec<String> = t.fields.iter().map(|d| d.name.clone()).collect();
    let changed = remove_undefined_values(&mut tx, &t.type_name, &defined).await?;
    let mut effects = Effects::default();
    // Pages showing the type's labels (item pages) carry its tag.
    effects.invalidate(super::type_tag(&t.type_name));
    for id in changed {
        effects.invalidate(live_tags(id, &t.type_name));
    }
    write::commit(state, tx, effects).await?;
    Ok(t.clone())
}

async fn lock_type(tx: &mut PgConnection, name: &str) -> Result<Option<ItemType>, ItemError> {
    // The row lock first; then the definition as now committed.
    let found: Option<String> = timed(
        "item_type.lock",
        sqlx::query_scalar("SELECT type FROM item_type WHERE type = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx),
    )
    .await?;
    match found {
        Some(_) => store::find_type(&mut *tx, name).await,
        None => Ok(None),
    }
}

async fn lock_items(tx: &mut PgConnection, item_type: &str) -> Result<(), ItemError> {
    timed(
        "item.lock_type_items",
        sqlx::query("SELECT 1 FROM item WHERE type = $1 ORDER BY id FOR NO KEY UPDATE")
            .bind(item_type)
            .execute(&mut *tx),
    )
    .await?;
    Ok(())
}

/// Every current value of the type's items that `checked` (and, with
/// `check_title`, a required title) refuses.
async fn conflicts(
    tx: &mut PgConnection,
    item_type: &str,
    checked: &[FieldDef],
    check_title: bool,
) -> Result<TypeConflicts, ItemError> {
    let names: Vec<String> = checked.iter().map(|d| d.name.clone()).collect();
    // Values without any checked field can only fail a required field or
    // the title; otherwise they are left out.
    let every_value = check_title || checked.iter().any(|d| d.required);
    let mut out = TypeConflicts::default();
    let mut refs: Vec<(Uuid, String, RefTarget, Uuid)> = Vec::new();
    {
        let mut rows = sqlx::query_as::<_, (Uuid, String, Value)>(
            "WITH current_values AS (
                 SELECT i.id, i.title, i.fields FROM item i WHERE i.type = $1
                 UNION ALL
                 SELECT i.id, r.title, r.fields
                 FROM stage_association a
                 JOIN item_revision r ON r.id = a.revision_id
                 JOIN item i ON i.id = a.item_id
                 WHERE i.type = $1
             )
             SELECT id, title,
                    (SELECT COALESCE(jsonb_object_agg(k, v), '{}'::jsonb)
                     FROM jsonb_each(fields) AS x(k, v) WHERE k = ANY($2))
             FROM current_values
             WHERE $3 OR fields ?| $2",
        )
        .bind(item_type)
        .bind(&names)
        .bind(every_value)
        .fetch(&mut *tx);
        while let Some((item, title, fields)) = rows.try_next().await? {
            if check_title && title.trim().is_empty() {
                out.add("title", item, "the title is blank".to_owned());
            }
            let values = match fields {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            let (failures, found) = field::validate(checked, &values);
            for (name, messages) in failures {
                out.add(&name, item, messages.join("; "));
            }
            refs.extend(
                found
                    .refs
                    .into_iter()
                    .map(|(name, target, id)| (item, name, target, id)),
            );
        }
    }
    let distinct: BTreeSet<(String, RefTarget, Uuid)> = refs
        .iter()
        .map(|(_, name, target, id)| (name.clone(), *target, *id))
        .collect();
    let missing: BTreeSet<(String, RefTarget, Uuid)> = store::missing_references(
        &mut *tx,
        &References {
            refs: distinct.into_iter().collect(),
        },
        false,
    )
    .await?
    .into_iter()
    .collect();
    for (item, name, target, id) in refs {
        if missing.contains(&(name.clone(), target, id)) {
            out.add(
                &name,
                item,
                format!("{target:?} {id} does not exist").to_lowercase(),
            );
        }
    }
    Ok(out)
}

/// Removes every value of a field not in `defined` from the type's item
/// rows and unpublished stage revisions; returns the items changed.
async fn remove_undefined_values(
    tx: &mut PgConnection,
    item_type: &str,
    defined: &[String],
) -> Result<BTreeSet<Uuid>, ItemError> {
    let rows: Vec<Uuid> = timed(
        "item.remove_undefined_values",
        sqlx::query_scalar(
            "UPDATE item SET fields =
                 (SELECT COALESCE(jsonb_object_agg(k, v), '{}'::jsonb)
                  FROM jsonb_each(fields) AS x(k, v) WHERE k = ANY($2))
             WHERE type = $1
               AND EXISTS (SELECT 1 FROM jsonb_object_keys(fields) AS k WHERE k <> ALL($2))
             RETURNING id",
        )
        .bind(item_type)
        .bind(defined)
        .fetch_all(&mut *tx),
    )
    .await?;
    let revisions: Vec<Uuid> = timed(
        "item_revision.remove_undefined_values",
        sqlx::query_scalar(
            "UPDATE item_revision r SET fields =
                 (SELECT COALESCE(jsonb_object_agg(k, v), '{}'::jsonb)
                  FROM jsonb_each(r.fields) AS x(k, v) WHERE k = ANY($2))
             FROM stage_association a JOIN item i ON i.id = a.item_id
             WHERE a.revision_id = r.id AND i.type = $1
               AND EXISTS (SELECT 1 FROM jsonb_object_keys(r.fields) AS k WHERE k <> ALL($2))
             RETURNING r.item_id",
        )
        .bind(item_type)
        .bind(defined)
        .fetch_all(&mut *tx),
    )
    .await?;
    Ok(rows.into_iter().chain(revisions).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(v: Value) -> Vec<FieldDef> {
        serde_json::from_value(v).expect("defs")
    }

    #[test]
    fn a_label_change_needs_no_check_and_anything_else_does() {
        let old = defs(json!([{"name": "field_a", "label": "A", "kind": "text"}]));
        let relabelled = defs(json!([{"name": "field_a", "label": "Alpha", "kind": "text"}]));
        assert!(!needs_check(&old, &relabelled[0]));
        for changed in [
            json!({"name": "field_a", "label": "A", "kind": "text", "max_length": 3}),
            json!({"name": "field_a", "label": "A", "kind": "integer"}),
            json!({"name": "field_a", "label": "A", "kind": "text", "required": true}),
            json!({"name": "field_a", "label": "A", "kind": "text", "cardinality": 2}),
            json!({"name": "field_b", "label": "A", "kind": "text"}),
        ] {
            let d: FieldDef = serde_json::from_value(changed).expect("def");
            assert!(needs_check(&old, &d), "{d:?}");
        }
    }

    #[test]
    fn conflicts_count_items_once_per_field() {
        let mut c = TypeConflicts::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        c.add("field_a", a, "too long".into());
        c.add("field_a", a, "too long".into());
        c.add("field_a", b, "too long".into());
        c.add("title", b, "the title is blank".into());
        assert_eq!(c.items("field_a"), 2);
        assert_eq!(
            c.message(),
            "existing items hold values the new definitions refuse: field_a (2 items), title (1 item)"
        );
        assert_eq!(c.details()["items"]["field_a"], 2);
        assert_eq!(
            c.details()["fields"]["field_a"][0],
            format!("2 items would fail; e.g. item {a}: too long")
        );
    }
}
