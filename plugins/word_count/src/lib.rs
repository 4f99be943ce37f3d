//! `tap_item_update_index`: returns the item with `word_count` (words in the
//! title and in every string `value` of its fields) and `stamped_by`.
//! Called with `null` (the kernel asking which fields plugins index), it
//! declares none.

use serde_json::{Map, Value};
use trovato_plugin_sdk::taps;

/// The item with its word count added; `[]` (no search fields) for
/// `null`. Anything else cannot be read as the tap's input (the invocation
/// traps and the kernel reports it).
pub fn update_index(input: Option<Map<String, Value>>) -> Value {
    match input {
        None => Value::Array(Vec::new()),
        Some(item) => Value::Object(stamp(item)),
    }
}

/// `item` with `word_count` and `stamped_by`.
fn stamp(mut item: Map<String, Value>) -> Map<String, Value> {
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
    item
}

/// Words in `text`, exactly as `text.split_whitespace().count()` counts
/// them: runs of characters that are not Unicode white space. ASCII, which
/// is most text, goes eight bytes at a time; anything else a character at
/// a time. Several times faster than `split_whitespace`, natively and in
/// WebAssembly alike.
pub fn count_words(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut words = 0;
    // Whether the previous character was white space (the text starts
    // after some).
    let mut after_space = true;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let x = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if x & HIGH == 0 {
                let space = ascii_space(x);
                // A word starts at each byte that is not space and follows
                // one; byte k's predecessor is byte k-1, or the carry.
                let before = (space << 8) | if after_space { 0x80 } else { 0 };
                words += (!space & HIGH & before).count_ones() as usize;
                after_space = space >> 63 != 0;
                i += 8;
                continue;
            }
        }
        let (space, len) = match bytes[i] {
            b if b.is_ascii() => (b == b' ' || b.wrapping_sub(b'\t') < 5, 1),
            // A character of several bytes starts here: `i` only ever stops
            // on a character boundary.
            _ => text[i..]
                .chars()
                .next()
                .map_or((true, 1), |c| (c.is_whitespace(), c.len_utf8())),
        };
        words += usize::from(after_space && !space);
        after_space = space;
        i += len;
    }
    words
}

/// The high bit of every byte of a `u64`.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// For eight ASCII bytes, the high bit of each byte that is ASCII white
/// space as `char::is_whitespace` has it: ' ' and '\t' '\n' '\x0B' '\x0C'
/// '\r' (0x09..=0x0D). Every byte is below 0x80, so per-byte additions
/// never carry into the next byte.
fn ascii_space(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let at_least_tab = (x + ONES * (0x80 - 0x09)) & HIGH;
    let past_cr = (x + ONES * (0x80 - 0x0E)) & HIGH;
    let y = x ^ (ONES * u64::from(b' '));
    let nonzero = ((y & !HIGH) + !HIGH) | y;
    (at_least_tab & !past_cr) | (!nonzero & HIGH)
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
        let out = update_index(Some(map));
        assert_eq!(out["word_count"], 5);
    }

    #[test]
    fn null_declares_no_search_fields_and_a_non_object_is_not_an_input() {
        assert_eq!(update_index(None), Value::Array(Vec::new()));
        assert!(serde_json::from_str::<Option<Map<String, Value>>>("[1, 2]").is_err());
    }

    #[test]
    fn counts_words_as_split_whitespace_does() {
        let samples = [
            "",
            " ",
            "one",
            "  two  words ",
            "tab\tnew\nline\rcr\x0bvt\x0cff",
            "\u{a0}nbsp\u{a0}sep\u{85}nel",
            "ideographic\u{3000}space and\u{2003}em\u{2028}ls",
            "héllo wörld ñ 日本語 テキスト",
            "\u{1680}\u{2000}\u{200a}\u{202f}\u{205f}",
            "zero\u{200b}width is not space",
            "\u{1c}\u{1f} separators are not white space",
        ];
        for s in samples {
            assert_eq!(count_words(s), s.split_whitespace().count(), "{s:?}");
        }
        // Long runs, so the eight-byte path meets every boundary.
        let mixed = "ab  c\td\u{a0}e f\u{3000}g héllo\r\nwörld  x ";
        for n in 0..40 {
            let s = format!("{}{}", "x ".repeat(n % 9), mixed.repeat(n));
            assert_eq!(count_words(&s), s.split_whitespace().count(), "{s:?}");
            if let Some(t) = s.get(..s.len() / 3 * 3) {
                assert_eq!(count_words(t), t.split_whitespace().count(), "{t:?}");
            }
        }
        // Every character up to U+3000, alone and between words.
        for c in (0..=0x3000u32).filter_map(char::from_u32) {
            for s in [
                c.to_string(),
                format!("a{c}b"),
                format!("{c}{c}x"),
                format!("abcdefg{c}hijklmnop{c}"),
                format!("{c}bcdefgh ijklmno{c}"),
            ] {
                assert_eq!(count_words(&s), s.split_whitespace().count(), "{c:?}");
            }
        }
    }
}
