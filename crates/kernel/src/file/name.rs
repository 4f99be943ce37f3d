//! The name a file is offered under. It is only ever shown and sent in
//! `Content-Disposition`; storage keys are generated
//! ([`StorageKey`](super::storage::StorageKey)), never taken from it.
//!
//! A name that tries to be a path or hides its real shape (path separators,
//! encoded separators, control characters, bidirectional overrides) is
//! refused rather than repaired, so the client learns what was wrong. An
//! otherwise ordinary name is tidied: NFC, no leading dots or spaces, no
//! characters other systems reserve.

use unicode_normalization::UnicodeNormalization;

/// The longest name, in bytes of UTF-8.
pub const MAX_BYTES: usize = 255;
/// The name of a file uploaded without one (plus its extension).
pub const FALLBACK: &str = "file";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the file name must not contain a path (`/`, `\\` or an encoded separator)")]
    Path,
    #[error("the file name must not contain control characters")]
    Control,
    #[error("the file name must not contain bidirectional control characters")]
    Bidi,
    #[error("the file name is {0} bytes long; at most 255 are allowed")]
    TooLong(usize),
}

/// Characters that reorder how text is displayed (`evil\u{202E}gnp.exe`
/// shows as `evilexe.png`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks and tidies a client's file name; `None` or a name that tidies to
/// nothing becomes [`FALLBACK`].
pub fn sanitize(raw: Option<&str>) -> Result<String, NameError> {
    let Some(raw) = raw else {
        return Ok(FALLBACK.into());
    };
    if raw.len() > MAX_BYTES * 4 {
        // Far too long to be worth normalising first.
        return Err(NameError::TooLong(raw.len()));
    }
    let lower = raw.to_ascii_lowercase();
    if raw.contains(['/', '\\']) || lower.contains("%2f") || lower.contains("%5c") {
        return Err(NameError::Path);
    }
    if raw.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if raw.chars().any(is_bidi_control) {
        return Err(NameError::Bidi);
    }
    let nfc: String = raw.nfc().collect();
    if nfc.len() > MAX_BYTES {
        return Err(NameError::TooLong(nfc.len()));
    }
    let tidy: String = nfc
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        .chars()
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c => c,
        })
        .collect();
    Ok(if tidy.is_empty() {
        FALLBACK.into()
    } else {
        tidy
    })
}

/// The extension of `name` (after the last dot), lowercased, if any.
pub fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty() && ext.len() <= 16).then(|| ext.to_lowercase())
}

/// `name` with `.ext` appended, the stem shortened (at a character
/// boundary) when the result would exceed [`MAX_BYTES`].
pub fn with_extension(name: &str, ext: &str) -> String {
    let suffix = format!(".{ext}");
    let room = MAX_BYTES.saturating_sub(suffix.len());
    let mut end = name.len().min(room);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &name[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_hidden_shapes_are_refused() {
        for (raw, want) in [
            ("../etc/passwd", NameError::Path),
            ("..%2fetc%2fpasswd", NameError::Path),
            ("..%2Fx", NameError::Path),
            ("/etc/passwd", NameError::Path),
            ("C:\\boot.ini", NameError::Path),
            ("a\0.png", NameError::Control),
            ("a\n.png", NameError::Control),
            ("evil\u{202E}gnp.exe", NameError::Bidi),
            ("x\u{2067}.png", NameError::Bidi),
        ] {
            assert_eq!(sanitize(Some(raw)), Err(want), "{raw:?}");
        }
        let long = "é".repeat(10_000);
        assert!(matches!(sanitize(Some(&long)), Err(NameError::TooLong(_))));
        let just_over = format!("{}.txt", "a".repeat(252));
        assert_eq!(sanitize(Some(&just_over)), Err(NameError::TooLong(256)));
    }

    #[test]
    fn ordinary_names_are_tidied() {
        assert_eq!(sanitize(Some("photo.png")).as_deref(), Ok("photo.png"));
        assert_eq!(sanitize(Some("..hidden.txt")).as_deref(), Ok("hidden.txt"));
        assert_eq!(sanitize(Some("  a:b?.txt  ")).as_deref(), Ok("a_b_.txt"));
        assert_eq!(sanitize(Some("...")).as_deref(), Ok(FALLBACK));
        assert_eq!(sanitize(None).as_deref(), Ok(FALLBACK));
        // NFC: e + combining acute becomes one character.
        assert_eq!(
            sanitize(Some("cafe\u{301}.txt")).as_deref(),
            Ok("caf\u{e9}.txt")
        );
    }

    #[test]
    fn extensions_are_found_and_added_within_the_limit() {
        assert_eq!(extension("a.PNG").as_deref(), Some("png"));
        assert_eq!(extension("archive.tar.gz").as_deref(), Some("gz"));
        assert_eq!(extension("noext"), None);
        assert_eq!(extension(".bashrc"), None);
        let long = "é".repeat(127); // 254 bytes
        let named = with_extension(&long, "png");
        assert!(named.len() <= MAX_BYTES, "{}", named.len());
        assert!(named.ends_with(".png"));
    }
}
