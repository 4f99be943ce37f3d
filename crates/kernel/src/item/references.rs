//! Where items reference an item, a user or a term, and the rule that
//! keeps those references true.
//!
//! A reference is the `target_id` of a reference field. The references
//! that count are those of each item's *current* values: its row (a live
//! item, or one created in a stage and not yet published) and the stage
//! revisions not yet published (a live item edited in a stage). Those are
//! the values a save or a publish validates again; earlier revisions are
//! history and are never validated again, so they do not count.
//!
//! The rule: what a current value references is not deleted. A term, a
//! category holding referenced terms, or a referenced item is refused
//! with 409 and the list of its uses ([`uses_of`]); a user delete asks
//! [`references_to_user`]. An item's `author` is not a reference field:
//! the schema sets it to null when the user goes (`ON DELETE SET NULL`),
//! and an item without an author still saves.
//!
//! Edits and deletes cannot race: an edit's validation locks every target
//! it finds `FOR KEY SHARE` (`store::missing_references`) until the edit
//! commits, and a delete first locks its target's row (`FOR UPDATE`, or
//! the `DELETE` itself), then looks for uses. Whichever comes second sees
//! the other committed: the edit finds the target gone (422), or the
//! delete finds the new use (409). A publish takes no such locks: it moves
//! values already committed (as stage revisions or rows), which a delete
//! already counts as uses.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::ItemError;
use super::field::RefTarget;
use crate::db::timed;

/// One reference of a current value to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ItemReference {
    /// The referencing item.
    pub item: Uuid,
    /// Its title as that stage shows it.
    pub title: String,
    /// `live`, or the stage whose unpublished values hold the reference.
    pub stage: String,
    /// The reference field.
    pub field: String,
    /// The referenced item, user or term.
    pub target: Uuid,
}

/// How many uses an error's details list (the total is always given).
pub const USES_LISTED: usize = 50;

/// The JSON details of a refusal: the first [`USES_LISTED`] uses and how
/// many there are.
pub fn uses_json(uses: &[ItemReference]) -> Value {
    json!({
        "uses": uses.iter().take(USES_LISTED).collect::<Vec<_>>(),
        "total": uses.len(),
    })
}

/// "3 items" / "1 item": how many distinct items `uses` come from.
pub fn items_phrase(uses: &[ItemReference]) -> String {
    let mut items: Vec<Uuid> = uses.iter().map(|u| u.item).collect();
    items.sort();
    items.dedup();
    match items.len() {
        1 => "1 item".to_owned(),
        n => format!("{n} items"),
    }
}

fn target_name(target: RefTarget) -> &'static str {
    match target {
        RefTarget::Item => "item",
        RefTarget::User => "user",
        RefTarget::Term => "term",
    }
}

/// The uses of any of `ids` (all of kind `target`) by current values, in
/// stage, item and field order; `except` leaves out references held by that
/// item itself (an item being deleted may reference itself).
///
/// Takes no locks: call it after locking the targets (see the module
/// docs), in the same transaction as the delete.
pub async fn uses_of(
    db: &mut PgConnection,
    target: RefTarget,
    ids: &[Uuid],
    except: Option<Uuid>,
) -> Result<Vec<ItemReference>, ItemError> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    // Ids compared in their simple form (32 lowercase hex digits), whatever
    // form a client stored (hyphenated, upper case, braced, `urn:uuid:`).
    let simple: Vec<String> = ids.iter().map(|id| id.simple().to_string()).collect();
    let rows: Vec<(Uuid, String, String, String, String)> = timed(
        "item.reference_uses",
        sqlx::query_as(
            "WITH defs AS (
                 SELECT t.type, d ->> 'name' AS field
                 FROM item_type t CROSS JOIN LATERAL jsonb_array_elements(t.fields) d
                 WHERE d ->> 'kind' = 'reference' AND d ->> 'target' = $1
             ),
             current_values AS (
                 SELECT i.id AS item, i.type, i.title, i.stage_id AS stage, i.fields
                 FROM item i
                 UNION ALL
                 SELECT i.id, i.type, r.title, a.stage_id, r.fields
                 FROM stage_association a
                 JOIN item_revision r ON r.id = a.revision_id
                 JOIN item i ON i.id = a.item_id
             ),
             refs AS (
                 SELECT c.item, c.title, c.stage, d.field,
                        lower(replace(btrim(regexp_replace(e ->> 'target_id', '^urn:uuid:', '', 'i'),
                                            '{}'), '-', '')) AS target
                 FROM current_values c
                 JOIN defs d ON d.type = c.type
                 CROSS JOIN LATERAL jsonb_array_elements(
                     CASE jsonb_typeof(c.fields -> d.field)
                         WHEN 'array' THEN c.fields -> d.field
                         ELSE jsonb_build_array(c.fields -> d.field)
                     END) AS e
                 WHERE jsonb_typeof(e) = 'object' AND jsonb_typeof(e -> 'target_id') = 'string'
             )
             SELECT DISTINCT item, title, stage, field, target FROM refs
             WHERE target = ANY($2) AND ($3::uuid IS NULL OR item <> $3)
             ORDER BY stage, item, field, target",
        )
        .bind(target_name(target))
        .bind(&simple)
        .bind(except)
        .fetch_all(&mut *db),
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(item, title, stage, field, target)| {
            // Always a UUID: it equals one of `simple`.
            let target = Uuid::parse_str(&target).ok()?;
            Some(ItemReference {
                item,
                title,
                stage,
                field,
                target,
            })
        })
        .collect())
}

/// The references of current item values (live rows, rows of items created
/// in a stage, unpublished stage revisions) to user `user` through user
/// reference fields: what a user delete must refuse to break.
///
/// Contract for the caller (the user delete): call it inside the
/// transaction that deletes the user, *after* that transaction locked the
/// user's row (`SELECT ... FROM users WHERE id = $1 FOR UPDATE`, or the
/// `DELETE` itself). Item saves lock the users they reference
/// `FOR KEY SHARE` while validating, so once the row lock is held no save
/// can add a reference this misses. When it returns a non-empty list, roll
/// back and answer 409 with [`uses_json`] as details: deleting the user
/// would leave those items unsaveable and the stages holding them
/// unpublishable (`user … does not exist`). Authorship is not listed: the
/// schema sets `author` to null when the user goes, and the item stays
/// valid.
pub async fn references_to_user(
    db: &mut PgConnection,
    user: Uuid,
) -> Result<Vec<ItemReference>, ItemError> {
    uses_of(db, RefTarget::User, &[user], None).await
}

/// One published live item that references a term, as a term's page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct TermUse {
    pub id: Uuid,
    pub title: String,
    #[sqlx(rename = "type")]
    pub item_type: String,
    pub created: chrono::DateTime<chrono::Utc>,
}

/// The published live items whose term reference fields hold `term`,
/// sticky ones first, then the newest: `limit` from `offset`, and how many
/// there are.
pub async fn live_items_with_term(
    db: &sqlx::PgPool,
    term: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<TermUse>, i64), ItemError> {
    // Ids compared in their simple form, as in `uses_of`.
    const HITS: &str = "WITH defs AS (
             SELECT t.type, d ->> 'name' AS field
             FROM item_type t CROSS JOIN LATERAL jsonb_array_elements(t.fields) d
             WHERE d ->> 'kind' = 'reference' AND d ->> 'target' = 'term'
         ),
         hits AS (
             SELECT DISTINCT i.id, i.title, i.type, i.created, i.sticky
             FROM item i
             JOIN defs d ON d.type = i.type
             CROSS JOIN LATERAL jsonb_array_elements(
                 CASE jsonb_typeof(i.fields -> d.field)
                     WHEN 'array' THEN i.fields -> d.field
                     ELSE jsonb_build_array(i.fields -> d.field)
                 END) AS e
             WHERE i.stage_id = 'live' AND i.status = 1
               AND jsonb_typeof(e) = 'object' AND jsonb_typeof(e -> 'target_id') = 'string'
               AND lower(replace(btrim(regexp_replace(e ->> 'target_id', '^urn:uuid:', '', 'i'),
                                       '{}'), '-', '')) = $1
         )";
    let simple = term.simple().to_string();
    let total: i64 = timed(
        "item.term_uses_count",
        sqlx::query_scalar(&format!("{HITS} SELECT count(*) FROM hits"))
            .bind(&simple)
            .fetch_one(db),
    )
    .await?;
    let items = timed(
        "item.term_uses",
        sqlx::query_as::<_, TermUse>(&format!(
            "{HITS} SELECT id, title, type, created FROM hits
             ORDER BY sticky DESC, created DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(&simple)
        .bind(limit)
        .bind(offset)
        .fetch_all(db),
    )
    .await?;
    Ok((items, total))
}
