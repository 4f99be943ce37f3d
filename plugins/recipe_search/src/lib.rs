//! The search example: `tap_item_update_index` in both of its roles.
//!
//! - Called with `null`, it declares the fields it indexes: the
//!   `field_ingredients` of the `recipe` type, at weight B.
//! - Called with a recipe, it adds the other names of the ingredients it
//!   knows (British and American kitchen words) as extra text at weight C,
//!   so a search for "eggplant" finds a recipe that says "aubergine".

use serde_json::{Value, json};
use trovato_plugin_sdk::taps;

/// The item type this plugin indexes.
pub const RECIPE: &str = "recipe";

/// The field it declares.
pub const INGREDIENTS: &str = "field_ingredients";

/// Names of one ingredient on either side of the Atlantic.
const OTHER_NAMES: &[(&str, &str)] = &[
    ("aubergine", "eggplant"),
    ("courgette", "zucchini"),
    ("coriander", "cilantro"),
    ("rocket", "arugula"),
    ("swede", "rutabaga"),
    ("mangetout", "snowpea"),
];

/// `tap_item_update_index`: declarations for `null`, extra text for a
/// recipe, nothing for anything else.
pub fn update_index(input: Value) -> Value {
    if input.is_null() {
        return json!([{ "type": RECIPE, "field": INGREDIENTS, "weight": "B" }]);
    }
    if input.get("type").and_then(Value::as_str) != Some(RECIPE) {
        return Value::Null;
    }
    let text = ingredients_text(&input);
    let names = other_names(&text);
    if names.is_empty() {
        return Value::Null;
    }
    json!({ "search_text": [{ "weight": "C", "text": names.join(" ") }] })
}

/// The ingredients' text: one string value, or every value of a list.
fn ingredients_text(item: &Value) -> String {
    match item.pointer(&format!("/fields/{INGREDIENTS}/value")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(values)) => values
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The other name of each known ingredient in `text`, once each, in the
/// table's order.
pub fn other_names(text: &str) -> Vec<&'static str> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let has = |name: &str| words.iter().any(|w| w == name);
    OTHER_NAMES
        .iter()
        .filter_map(|&(uk, us)| {
            if has(uk) {
                Some(us)
            } else if has(us) {
                Some(uk)
            } else {
                None
            }
        })
        .collect()
}

taps! { tap_item_update_index => update_index }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_declares_the_ingredients_field() {
        assert_eq!(
            update_index(Value::Null),
            json!([{"type": "recipe", "field": "field_ingredients", "weight": "B"}])
        );
    }

    #[test]
    fn a_recipe_gets_the_other_names_of_its_ingredients() {
        let item = json!({"type": "recipe", "title": "Moussaka",
            "fields": {"field_ingredients": {"value": "2 Aubergines? no: aubergine, lamb, cilantro"}}});
        assert_eq!(
            update_index(item),
            json!({"search_text": [{"weight": "C", "text": "eggplant coriander"}]})
        );
    }

    #[test]
    fn other_items_and_unknown_ingredients_add_nothing() {
        let other =
            json!({"type": "page", "fields": {"field_ingredients": {"value": "aubergine"}}});
        assert_eq!(update_index(other), Value::Null);
        let plain = json!({"type": "recipe", "fields": {"field_ingredients": {"value": "lamb"}}});
        assert_eq!(update_index(plain), Value::Null);
        let list = json!({"type": "recipe", "fields": {"field_ingredients": {"value": ["rocket", "swede"]}}});
        assert_eq!(
            update_index(list),
            json!({"search_text": [{"weight": "C", "text": "arugula rutabaga"}]})
        );
    }
}
