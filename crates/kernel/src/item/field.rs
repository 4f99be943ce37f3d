//! Field definitions of an item type and the validation of field values.
//!
//! Values follow `{"field_x": {"value": ...}}`; a reference holds
//! `{"target_id": "<uuid>"}`, a file `{"file_id": "<uuid>"}`; a
//! multi-value field (cardinality other than 1) holds an array of those. A
//! value a client sends has exactly its one member: any other is refused
//! ([`FieldValues::refusals`]), so nothing the kernel does not understand
//! is stored. Validation collects every failure, so one 422 lists them all.
//!
//! A field is known by its `name`, which is the key of its values in every
//! item: `label` is only what editors read. There is no renaming a field:
//! definitions without an earlier field's name remove that field (and its
//! values), and a new name is a new field (see `item::schema`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// What a field holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FieldKind {
    /// Text of at most `max_length` characters (default 255).
    Text {
        #[serde(default)]
        max_length: Option<u32>,
    },
    /// A 64-bit integer within `[min, max]` when given.
    Integer {
        #[serde(default)]
        min: Option<i64>,
        #[serde(default)]
        max: Option<i64>,
    },
    Boolean,
    /// A reference (`target_id`) to an item, user or category term.
    Reference {
        target: RefTarget,
    },
    /// A file reference (`file_id`).
    File,
    /// An ISO 8601 date (`2024-05-01`) or date-time with offset.
    Date,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RefTarget {
    Item,
    User,
    Term,
}

/// One field of an item type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldDef {
    /// Machine name: `field_` followed by `[a-z0-9_]`.
    pub name: String,
    pub label: String,
    #[serde(flatten)]
    pub kind: FieldKind,
    #[serde(default)]
    pub required: bool,
    /// How many values: 1 (a single object), 0 for unlimited, or N (an
    /// array of at most N).
    #[serde(default = "one")]
    pub cardinality: u32,
}

fn one() -> u32 {
    1
}

/// Failures keyed by field name, each a list of messages.
pub type Failures = BTreeMap<String, Vec<String>>;

pub fn failures_json(f: &Failures) -> Value {
    json!({ "fields": f })
}

/// Checks a type's field definitions themselves.
pub fn check_defs(defs: &[FieldDef]) -> Failures {
    let mut out = Failures::new();
    let mut seen = BTreeSet::new();
    for d in defs {
        let mut errs = Vec::new();
        let name_ok = d.name.len() <= 64
            && d.name
                .strip_prefix("field_")
                .is_some_and(crate::text::is_name_chars);
        if !name_ok {
            errs.push("name must be `field_` followed by lowercase letters, digits or _".into());
        }
        if !seen.insert(d.name.clone()) {
            errs.push("defined twice".into());
        }
        if d.label.trim().is_empty() {
            errs.push("label must not be blank".into());
        }
        match &d.kind {
            FieldKind::Integer {
                min: Some(lo),
                max: Some(hi),
            } if lo > hi => errs.push("min must not exceed max".into()),
            FieldKind::Text {
                max_length: Some(0),
            } => errs.push("max_length must be at least 1".into()),
            _ => {}
        }
        if !errs.is_empty() {
            out.insert(d.name.clone(), errs);
        }
    }
    out
}

/// The `fields` member of an item body (creating, updating: wherever a
/// client sends field values), read strictly: a key given twice, at any
/// depth, is not silently resolved to the last one (as `serde_json::Map`
/// would) but recorded, and [`FieldValues::refusals`] reports it as a
/// failure of its field, with every value member the field does not hold.
/// Both rules hold for what a client sends, not for values stored before
/// them: an item saves as long as what is sent now is clean.
#[derive(Debug, Clone, Default)]
pub struct FieldValues {
    values: Map<String, Value>,
    /// (field, message) for each key given more than once.
    duplicates: Vec<(String, String)>,
}

impl FieldValues {
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    pub fn into_values(self) -> Map<String, Value> {
        self.values
    }

    /// What the body itself is refused for, by field: keys given twice and
    /// members of values their field (in `defs`) does not hold. The values'
    /// other checks are [`validate`]'s.
    pub fn refusals(&self, defs: &[FieldDef]) -> Failures {
        let mut out = Failures::new();
        for (name, message) in &self.duplicates {
            out.entry(name.clone()).or_default().push(message.clone());
        }
        for def in defs {
            let values: Vec<(String, &Value)> = match self.values.get(&def.name) {
                Some(Value::Array(a)) if def.cardinality != 1 => a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("[{i}] "), v))
                    .collect(),
                Some(v) => vec![(String::new(), v)],
                None => continue,
            };
            let prop = value_member(&def.kind);
            for (at, v) in values {
                let Some(obj) = v.as_object() else { continue };
                for member in obj.keys().filter(|k| *k != prop) {
                    out.entry(def.name.clone()).or_default().push(format!(
                        "{at}has an unknown member `{member}`: a value holds only `{prop}`"
                    ));
                }
            }
        }
        out
    }
}

/// The one member a value of `kind` holds.
fn value_member(kind: &FieldKind) -> &'static str {
    match kind {
        FieldKind::Reference { .. } => "target_id",
        FieldKind::File => "file_id",
        _ => "value",
    }
}

impl<'de> Deserialize<'de> for FieldValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = FieldValues;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of field values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldValues, A::Error> {
        let mut out = FieldValues::default();
        while let Some(name) = map.next_key::<String>()? {
            let mut nested = Vec::new();
            let value = map.next_value_seed(Strict {
                path: String::new(),
                duplicates: &mut nested,
            })?;
            out.duplicates.extend(
                nested
                    .into_iter()
                    .map(|path| (name.clone(), format!("{path} is given more than once"))),
            );
            if out.values.insert(name.clone(), value).is_some() {
                out.duplicates
                    .push((name, "is given more than once".to_owned()));
            }
        }
        Ok(out)
    }
}

/// Reads any JSON value like `serde_json::Value` does, recording the path
/// of each object key seen twice (the last value is kept, and the caller
/// refuses the body).
struct Strict<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text cannot hold NaN or infinities, so this is never null.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict {
            path: format!("{}[{}]", self.path, out.len()),
            duplicates: &mut *self.duplicates,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                format!("`{key}`")
            } else {
                format!("{}.`{key}`", self.path)
            };
            let v = map.next_value_seed(Strict {
                path: path.clone(),
                duplicates: &mut *self.duplicates,
            })?;
            if out.insert(key, v).is_some() {
                self.duplicates.push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

/// References found while validating, to be checked against the database.
#[derive(Debug, Default)]
pub struct References {
    /// (field name, target kind, id)
    pub refs: Vec<(String, RefTarget, Uuid)>,
}

/// Validates `fields` against `defs`: unknown fields, missing required
/// fields, shapes and limits. Collects references for the caller to check.
pub fn validate(defs: &[FieldDef], fields: &Map<String, Value>) -> (Failures, References) {
    let mut out = Failures::new();
    let mut refs = References::default();
    for name in fields.keys() {
        if !defs.iter().any(|d| &d.name == name) {
            out.entry(name.clone())
                .or_default()
                .push("is not a field of this type".into());
        }
    }
    for def in defs {
        let mut errs = Vec::new();
        match fields.get(&def.name) {
            None | Some(Value::Null) => {
                if def.required {
                    errs.push("is required".into());
                }
            }
            Some(v) if def.cardinality == 1 => {
                check_value(def, v, None, &mut errs, &mut refs);
            }
            Some(Value::Array(values)) => {
                if def.required && values.is_empty() {
                    errs.push("is required".into());
                }
                if def.cardinality > 1 && values.len() > def.cardinality as usize {
                    errs.push(format!("holds at most {} values", def.cardinality));
                }
                for (i, v) in values.iter().enumerate() {
                    check_value(def, v, Some(i), &mut errs, &mut refs);
                }
            }
            Some(_) => errs.push("must be an array of values".into()),
        }
        if !errs.is_empty() {
            out.entry(def.name.clone()).or_default().extend(errs);
        }
    }
    (out, refs)
}

fn check_value(
    def: &FieldDef,
    v: &Value,
    index: Option<usize>,
    errs: &mut Vec<String>,
    refs: &mut References,
) {
    let at = index.map(|i| format!("[{i}] ")).unwrap_or_default();
    let Some(obj) = v.as_object() else {
        errs.push(format!("{at}must be an object"));
        return;
    };
    let prop = value_member(&def.kind);
    let Some(inner) = obj.get(prop) else {
        errs.push(format!("{at}must have `{prop}`"));
        return;
    };
    match &def.kind {
        FieldKind::Text { max_length } => match inner.as_str() {
            Some(s) => {
                let max = max_length.unwrap_or(255) as usize;
                let len = s.chars().count();
                if len > max {
                    errs.push(format!("{at}is {len} characters; at most {max} allowed"));
                }
            }
            None => errs.push(format!("{at}must be a string")),
        },
        FieldKind::Integer { min, max } => match inner.as_i64() {
            Some(n) => {
                if let Some(lo) = min
                    && n < *lo
                {
                    errs.push(format!("{at}must be at least {lo}"));
                }
                if let Some(hi) = max
                    && n > *hi
                {
                    errs.push(format!("{at}must be at most {hi}"));
                }
            }
            None => errs.push(format!("{at}must be an integer")),
        },
        FieldKind::Boolean => {
            if !inner.is_boolean() {
                errs.push(format!("{at}must be true or false"));
            }
        }
        FieldKind::Date => {
            let ok = inner.as_str().is_some_and(|s| {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
                    || chrono::DateTime::parse_from_rfc3339(s).is_ok()
            });
            if !ok {
                errs.push(format!(
                    "{at}must be a date (YYYY-MM-DD) or RFC 3339 date-time"
                ));
            }
        }
        FieldKind::Reference { target } => match inner.as_str().and_then(|s| s.parse().ok()) {
            Some(id) => refs.refs.push((def.name.clone(), *target, id)),
            None => errs.push(format!("{at}target_id must be a UUID")),
        },
        FieldKind::File => {
            if inner
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
                .is_none()
            {
                errs.push(format!("{at}file_id must be a UUID"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Vec<FieldDef> {
        serde_json::from_value(json!([
            {"name": "field_body", "label": "Body", "kind": "text", "max_length": 5, "required": true},
            {"name": "field_n", "label": "N", "kind": "integer", "min": 1, "max": 3},
            {"name": "field_tags", "label": "Tags", "kind": "reference", "target": "term", "cardinality": 0},
        ]))
        .expect("valid defs")
    }

    #[test]
    fn every_failing_field_is_listed() {
        let fields = json!({
            "field_n": {"value": 9},
            "field_x": {"value": 1},
            "field_tags": [{"target_id": "nope"}],
        });
        let (f, _) = validate(&defs(), fields.as_object().expect("object"));
        assert_eq!(
            f.keys().cloned().collect::<Vec<_>>(),
            ["field_body", "field_n", "field_tags", "field_x"]
        );
    }

    #[test]
    fn valid_values_pass_and_references_are_collected() {
        let id = Uuid::now_v7();
        let fields = json!({
            "field_body": {"value": "hello"},
            "field_tags": [{"target_id": id.to_string()}],
        });
        let (f, refs) = validate(&defs(), fields.as_object().expect("object"));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(refs.refs.len(), 1);
    }

    #[test]
    fn text_length_counts_characters_not_bytes() {
        let fields = json!({"field_body": {"value": "ééééé"}});
        let (f, _) = validate(&defs(), fields.as_object().expect("object"));
        assert!(f.is_empty(), "{f:?}");
    }

    fn strict(body: &str) -> FieldValues {
        serde_json::from_str(body).expect("an object")
    }

    #[test]
    fn a_field_given_twice_is_a_failure_of_that_field() {
        let fields = strict(
            r#"{"field_body": {"value": "a"}, "field_n": {"value": 2}, "field_body": {"value": "b"}}"#,
        );
        let f = fields.refusals(&defs());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f["field_body"], ["is given more than once"]);
    }

    #[test]
    fn a_member_given_twice_inside_a_value_is_named_by_its_path() {
        let id = Uuid::now_v7();
        let fields = strict(&format!(
            r#"{{"field_body": {{"value": "a", "value": "b"}},
                "field_tags": [{{"target_id": "{id}"}}, {{"target_id": "{id}", "target_id": "{id}"}}]}}"#
        ));
        let f = fields.refusals(&defs());
        assert_eq!(f["field_body"], ["`value` is given more than once"]);
        assert_eq!(f["field_tags"], ["[1].`target_id` is given more than once"]);
    }

    #[test]
    fn strict_reading_keeps_every_json_value_as_serde_json_does() {
        let body = r#"{"field_x": {"value": [1, -2, 3.5, 18446744073709551615, "s", true, null, {"a": {}}]}}"#;
        let fields = strict(body);
        let plain: Map<String, Value> = serde_json::from_str(body).expect("object");
        assert_eq!(fields.values(), &plain);
        assert!(fields.duplicates.is_empty());
        assert!(serde_json::from_str::<FieldValues>("[]").is_err());
    }

    #[test]
    fn unknown_members_of_a_value_are_refused_by_name() {
        let fields = strict(&format!(
            r#"{{"field_body": {{"value": "x", "extra": "<script>"}},
                "field_tags": [{{"target_id": "{}", "value": 1}}]}}"#,
            Uuid::now_v7()
        ));
        let f = fields.refusals(&defs());
        assert_eq!(
            f["field_body"],
            ["has an unknown member `extra`: a value holds only `value`"]
        );
        assert_eq!(
            f["field_tags"],
            ["[0] has an unknown member `value`: a value holds only `target_id`"]
        );
    }
}
