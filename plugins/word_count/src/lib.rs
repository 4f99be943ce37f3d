//! `tap_item_update_index`: returns the item with `word_count` (words in the
//! title and in every string `value` of its fields) and `stamped_by`.

use serde_json::{Map, Value};
use trovato_plugin_sdk::taps;

/// The item with its word count added. Anything but a JSON object is an
/// error (the invocation traps and the kernel reports it).
pub fn update_index(mut item: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut words = item
        .get("title")
        .and_then(Value::as_str)
        .map_or(0, count_words);
    if let Some(Value::Object(fields)) = item.get("fields") {
        for field in fields.values() {
            if let Some(text) = field.get("value").and_then(Value::as_str) {
                words += count_words(text);
            }
        }
    }
    item.insert("word_count".into(), Value::from(words));
    item.insert("stamped_by".into(), Value::from("word_count"));
    Ok(item)
}

fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

taps! { tap_item_update_index => update_index }

// Every invocation gets a fresh instance: nothing needs reusing.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: trovato_plugin_sdk::FreshInstanceAllocator =
    trovato_plugin_sdk::FreshInstanceAllocator;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_title_and_field_words() {
        let item = serde_json::json!({
            "title": "Hello big world",
            "fields": {"field_body": {"value": "two words"}, "field_n": {"value": 3}}
        });
        let Value::Object(map) = item else {
            unreachable!()
        };
        let out = update_index(map).expect("ok");
        assert_eq!(out["word_count"], 5);
    }
}
