//! Field values as people read them: each field of a type with its label
//! and its values formatted by kind (dates written out, references and
//! terms by name with a link where there is a page, files as links or, for
//! images, as images). Used by the item page, the admin form and the
//! stage diff.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::field::RefTarget;
use super::{FieldDef, FieldKind, ItemError, ItemType};
use crate::cache::CacheTag;
use crate::db::timed;
use crate::state::AppState;

/// One value as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShownValue {
    pub text: String,
    /// Where the value links to.
    pub href: Option<String>,
    /// For an image file: its URL.
    pub image: Option<String>,
}

/// One field with its values as shown.
#[derive(Debug, Clone, Serialize)]
pub struct ShownField {
    pub name: String,
    pub label: String,
    pub kind: &'static str,
    pub values: Vec<ShownValue>,
}

/// A file as the pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct ShownFile {
    pub id: Uuid,
    pub filename: String,
    pub url: String,
    pub image: bool,
}

/// Names of everything some field values reference, looked up at once.
#[derive(Debug, Default)]
pub struct Names {
    pub items: BTreeMap<Uuid, String>,
    pub users: BTreeMap<Uuid, String>,
    pub terms: BTreeMap<Uuid, String>,
    pub files: BTreeMap<Uuid, ShownFile>,
}

impl Names {
    /// The cache tags of the referenced items, users and terms: a page
    /// showing their names goes stale when they change.
    pub fn tags(&self) -> Vec<CacheTag> {
        self.items
            .keys()
            .map(|id| super::item_tag(*id))
            .chain(self.users.keys().map(|id| crate::user::user_tag(*id)))
            .chain(self.terms.keys().map(|id| CacheTag::for_id("term", *id)))
            .collect()
    }
}

/// The kind's name as the pages write it.
pub fn kind_name(kind: &FieldKind) -> &'static str {
    match kind {
        FieldKind::Text { .. } => "text",
        FieldKind::Integer { .. } => "integer",
        FieldKind::Boolean => "boolean",
        FieldKind::Date => "date",
        FieldKind::File => "file",
        FieldKind::Reference {
            target: RefTarget::Item,
        } => "item reference",
        FieldKind::Reference {
            target: RefTarget::User,
        } => "user reference",
        FieldKind::Reference {
            target: RefTarget::Term,
        } => "term reference",
    }
}

/// The values of `def` in `fields`, as a list (one for a single value).
pub fn values_of<'a>(def: &FieldDef, fields: &'a Value) -> Vec<&'a Value> {
    match fields.get(&def.name) {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v) => vec![v],
    }
}

fn member<'a>(kind: &FieldKind, v: &'a Value) -> Option<&'a Value> {
    let prop = match kind {
        FieldKind::Reference { .. } => "target_id",
        FieldKind::File => "file_id",
        _ => "value",
    };
    v.get(prop)
}

/// The id a reference or file value holds.
pub fn id_of(kind: &FieldKind, v: &Value) -> Option<Uuid> {
    member(kind, v)?.as_str()?.parse().ok()
}

/// Looks up the names of everything the values in `all` reference.
pub async fn names(
    state: &AppState,
    defs: &[FieldDef],
    all: &[&Value],
) -> Result<Names, ItemError> {
    let mut want: BTreeMap<&'static str, BTreeSet<Uuid>> = BTreeMap::new();
    for fields in all {
        for def in defs {
            let bucket = match &def.kind {
                FieldKind::Reference {
                    target: RefTarget::Item,
                } => "item",
                FieldKind::Reference {
                    target: RefTarget::User,
                } => "users",
                FieldKind::Reference {
                    target: RefTarget::Term,
                } => "category_tag",
                FieldKind::File => "file",
                _ => continue,
            };
            for v in values_of(def, fields) {
                if let Some(id) = id_of(&def.kind, v) {
                    want.entry(bucket).or_default().insert(id);
                }
            }
        }
    }
    let mut names = Names::default();
    for (table, ids) in want {
        let ids: Vec<Uuid> = ids.into_iter().collect();
        if table == "file" {
            let sql = format!(
                "SELECT {} FROM file_managed WHERE id = ANY($1) AND status < 2",
                crate::file::COLUMNS
            );
            let files: Vec<crate::file::FileRecord> = timed(
                "file.find_many",
                sqlx::query_as(&sql).bind(&ids).fetch_all(&state.db),
            )
            .await?;
            for f in files {
                names.files.insert(
                    f.id,
                    ShownFile {
                        id: f.id,
                        url: state.files.url_of(&f),
                        image: f.filemime.starts_with("image/"),
                        filename: f.filename,
                    },
                );
            }
            continue;
        }
        let (column, target) = match table {
            "item" => ("title", &mut names.items),
            "users" => ("name", &mut names.users),
            _ => ("name", &mut names.terms),
        };
        // `table` and `column` are the constants above, never input.
        let rows: Vec<(Uuid, String)> = timed(
            "names.lookup",
            sqlx::query_as(&format!(
                "SELECT id, {column} FROM {table} WHERE id = ANY($1)"
            ))
            .bind(&ids)
            .fetch_all(&state.db),
        )
        .await?;
        target.extend(rows);
    }
    Ok(names)
}

/// `2024-05-01` as `1 May 2024`; a date-time with its time in UTC.
pub fn readable_date(raw: &str) -> String {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return d.format("%-d %B %Y").to_string();
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return readable_time(t.with_timezone(&chrono::Utc));
    }
    raw.to_owned()
}

/// A moment as the pages write it.
pub fn readable_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%-d %B %Y, %H:%M UTC").to_string()
}

/// One value of `def` as shown.
pub fn show_value(def: &FieldDef, v: &Value, names: &Names) -> ShownValue {
    let plain = |text: String| ShownValue {
        text,
        href: None,
        image: None,
    };
    let inner = member(&def.kind, v);
    match &def.kind {
        FieldKind::Text { .. } => plain(inner.and_then(Value::as_str).unwrap_or("").to_owned()),
        FieldKind::Integer { .. } => plain(inner.map(Value::to_string).unwrap_or_default()),
        FieldKind::Boolean => plain(
            if inner.and_then(Value::as_bool) == Some(true) {
                "Yes"
            } else {
                "No"
            }
            .to_owned(),
        ),
        FieldKind::Date => plain(readable_date(inner.and_then(Value::as_str).unwrap_or(""))),
        FieldKind::Reference { target } => {
            let Some(id) = id_of(&def.kind, v) else {
                return plain(String::new());
            };
            match target {
                RefTarget::Item => ShownValue {
                    text: names
                        .items
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| "(deleted item)".into()),
                    href: Some(format!("/item/{id}")),
                    image: None,
                },
                RefTarget::User => plain(
                    names
                        .users
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| "(deleted user)".into()),
                ),
                RefTarget::Term => ShownValue {
                    text: names
                        .terms
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| "(deleted term)".into()),
                    href: Some(format!("/term/{id}")),
                    image: None,
                },
            }
        }
        FieldKind::File => match id_of(&def.kind, v).and_then(|id| names.files.get(&id)) {
            Some(f) => ShownValue {
                text: f.filename.clone(),
                href: Some(f.url.clone()),
                image: f.image.then(|| f.url.clone()),
            },
            None => plain("(missing file)".into()),
        },
    }
}

/// Every field of `t` that has a value in `fields`, as shown.
pub fn show(t: &ItemType, fields: &Value, names: &Names) -> Vec<ShownField> {
    t.fields
        .iter()
        .filter_map(|def| {
            let values: Vec<ShownValue> = values_of(def, fields)
                .into_iter()
                .map(|v| show_value(def, v, names))
                .collect();
            (!values.is_empty()).then(|| ShownField {
                name: def.name.clone(),
                label: def.label.clone(),
                kind: kind_name(&def.kind),
                values,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_like_people_write_them() {
        assert_eq!(readable_date("2024-05-01"), "1 May 2024");
        assert_eq!(
            readable_date("2024-05-01T14:30:00+02:00"),
            "1 May 2024, 12:30 UTC"
        );
        assert_eq!(readable_date("someday"), "someday");
    }
}
