//! Field definitions of an item type and the validation of field values.
//!
//! Values follow `{"field_x": {"value": ...}}`; a reference holds
//! `{"target_id": "<uuid>"}`, a file `{"file_id": "<uuid>", ...}`; a
//! multi-value field (cardinality other than 1) holds an array of those.
//! Validation collects every failure, so one 422 lists them all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    let mut seen = std::collections::BTreeSet::new();
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
    let (prop, inner) = match &def.kind {
        FieldKind::Reference { .. } => ("target_id", obj.get("target_id")),
        FieldKind::File => ("file_id", obj.get("file_id")),
        _ => ("value", obj.get("value")),
    };
    let Some(inner) = inner else {
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
}
